//! Shared by the `worker_*` tests: a fresh database and queue prefix per test, in-process
//! workers, publishing envelopes as the receiver would, and reading results from Postgres.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use intake_broker::{Publisher, Topology};
use intake_core::{Envelope, Provider};
use intake_it::pg::{TestDb, fresh_database};
use intake_it::{AMQP_URL, QueueProbe, wait_until};
use intake_worker::{Hooks, WorkerConfig, WorkerError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Short tiers so retries happen within a test (about 9 s in all before a dead letter).
pub const TEST_TIERS: &str = "200ms,500ms,1s,2s,5s";

/// One test's world: its database, its queue prefix, a publisher standing in for the receiver.
pub struct World {
    pub db: TestDb,
    pub topology: Topology,
    pub publisher: Publisher,
    pub probe: QueueProbe,
}

/// A worker running in-process.
pub struct RunningWorker {
    pub addr: SocketAddr,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), WorkerError>>,
}

impl RunningWorker {
    /// Graceful stop (as on SIGTERM); returns the worker's result.
    pub async fn stop(self) -> Result<(), WorkerError> {
        self.stop.cancel();
        self.handle.await.expect("worker task")
    }
}

impl World {
    pub async fn new(tag: &str) -> World {
        let db = fresh_database(tag).await;
        let (topology, publisher) = intake_it::test_broker(tag, TEST_TIERS).await;
        World {
            db,
            topology,
            publisher,
            probe: QueueProbe::connect().await,
        }
    }

    /// Worker settings for this world: its database and prefix, quick sweeps, short tiers.
    pub fn worker_config(&self) -> WorkerConfig {
        let mut config = WorkerConfig::local_defaults();
        config.listen_addr = "127.0.0.1:0".parse().expect("addr");
        config.broker.amqp_url = AMQP_URL.to_owned().into();
        config.database_url = self.db.url.clone().into();
        config.keys = intake_it::test_key_settings();
        config.broker.queue_prefix = self.topology.prefix().to_owned();
        config.broker.retry_tiers = TEST_TIERS.to_owned();
        config.broker.queue_expires_secs = Some(intake_it::TEST_QUEUE_EXPIRY_SECS);
        config.concurrency = 8;
        config.db_pool_size = 10;
        config.db_timeout_ms = 2000;
        config.sweep_interval_ms = 200;
        config.shutdown_grace_secs = 5;
        config
    }

    pub async fn start_worker(&self, config: WorkerConfig) -> RunningWorker {
        self.start_worker_with(config, Hooks::default()).await
    }

    pub async fn start_worker_with(&self, config: WorkerConfig, hooks: Hooks) -> RunningWorker {
        if std::env::var_os("INTAKE_TEST_LOG").is_some() {
            intake_telemetry::init_tracing();
        }
        let listener = tokio::net::TcpListener::bind(config.listen_addr)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let handle = tokio::spawn(intake_worker::run_with(
            config,
            listener,
            stop.clone().cancelled_owned(),
            hooks,
        ));
        RunningWorker { addr, stop, handle }
    }

    /// Starts a worker whose deliveries are counted on their own (the `after_commit` hook: every
    /// delivery this worker committed, whatever its outcome), so a test can tell workers apart.
    pub async fn start_counting_worker(&self) -> (RunningWorker, Arc<AtomicUsize>) {
        let committed = Arc::new(AtomicUsize::new(0));
        let hooks = Hooks {
            after_commit: Some({
                let committed = committed.clone();
                Arc::new(move |batch: &[&intake_core::Envelope]| {
                    committed.fetch_add(batch.len(), Ordering::SeqCst);
                })
            }),
            ..Hooks::default()
        };
        let worker = self.start_worker_with(self.worker_config(), hooks).await;
        (worker, committed)
    }

    /// Waits until `provider`'s queue has exactly `n` consumers (workers started and consuming),
    /// so messages published next are shared among them; panics after `deadline`.
    pub async fn wait_consumers(&self, provider: Provider, n: u32, deadline: Duration) {
        let queue = self.topology.provider_queue(provider);
        let ok = wait_until(deadline, || async { self.probe.consumers(&queue).await == n }).await;
        assert!(
            ok,
            "{queue} has {} consumers, not {n}",
            self.probe.consumers(&queue).await
        );
    }

    /// Publishes a webhook body as the receiver would; returns its envelope.
    pub async fn publish(&self, provider: Provider, body: impl Into<Bytes>) -> Envelope {
        let envelope = Envelope::new("ep-test", provider, vec![], body.into());
        self.publisher.publish_envelope(&envelope).await.expect("publish");
        envelope
    }

    /// A single `bigint`/`count(*)` value.
    pub async fn count(&self, sql: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(sql, &[])
            .await
            .expect(sql)
            .get(0)
    }

    /// Waits until `sql` (a count) returns `n`; panics with the last value after `deadline`.
    pub async fn wait_count(&self, sql: &str, n: i64, deadline: Duration) {
        let client = self.db.client().await;
        let ok = wait_until(deadline, || {
            let client = &client;
            async move {
                client
                    .query_one(sql, &[])
                    .await
                    .map(|r| r.get::<_, i64>(0) == n)
                    .unwrap_or(false)
            }
        })
        .await;
        if !ok {
            let last: i64 = client.query_one(sql, &[]).await.map(|r| r.get(0)).unwrap_or(-1);
            panic!("timed out waiting for {sql} = {n} (last {last})");
        }
    }

    /// Messages ready in the dead-letter queue.
    pub async fn dead_letter_queue_count(&self) -> u32 {
        self.probe.count(&self.topology.dead_letter_queue()).await
    }

    pub async fn cleanup(self) {
        self.publisher.close().await;
        self.probe.cleanup(&self.topology).await;
        self.db.drop_database().await;
    }
}

/// Sum of the samples of metric `name` whose labels contain `label` on a worker's `/metrics`
/// (0 when it cannot be read).
pub async fn metric_sum(addr: SocketAddr, name: &str, label: &str) -> f64 {
    let Ok(response) = reqwest::get(format!("http://{addr}/metrics")).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sum of `intake_worker_events_total` samples with this outcome on a worker's `/metrics`.
pub async fn events_with_outcome(addr: SocketAddr, outcome: &str) -> f64 {
    metric_sum(
        addr,
        "intake_worker_events_total",
        &format!("outcome=\"{outcome}\""),
    )
    .await
}
