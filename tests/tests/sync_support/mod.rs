//! Shared by the `sync_*` tests: a fresh database and queue prefix per test, a fake HealthSherpa,
//! the sync process (relay + worker) in-process, and two ways of changing a contact — through
//! the real path (a Spark envelope on the broker, applied by the ingest worker) or by applying a
//! decoded Spark snapshot with the store directly (the same transaction, minus the broker hop).

#![allow(dead_code)]

pub mod fake;

use std::net::SocketAddr;
use std::time::Duration;

use intake_broker::{Publisher, Topology};
use intake_core::{Envelope, Provider};
use intake_it::pg::{TestDb, fresh_database};
use intake_it::{AMQP_URL, QueueProbe, Taken, wait_until};
use intake_store::{ApplyOptions, Store, StoreConfig};
use intake_sync::{Hooks, SyncConfig, SyncError};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use fake::{FakeHealthSherpa, Mode};

/// Short tiers so retries happen within a test.
pub const TEST_TIERS: &str = "100ms,200ms,300ms";
/// Generous bound for anything asynchronous to happen.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// The agent email v1 searches fall back to.
pub const AGENT_EMAIL: &str = "agent@example.com";

/// One test's world.
pub struct SyncWorld {
    pub db: TestDb,
    pub store: Store,
    pub topology: Topology,
    pub publisher: Publisher,
    pub probe: QueueProbe,
    pub hs: FakeHealthSherpa,
}

/// A process (sync or ingest worker) running in-process.
pub struct Running<E> {
    pub addr: SocketAddr,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), E>>,
}

impl<E: std::fmt::Debug> Running<E> {
    /// Graceful stop (as on SIGTERM); panics if the process failed.
    pub async fn stop(self) {
        self.stop.cancel();
        self.handle.await.expect("task").expect("clean stop");
    }
}

/// A sync process on a Tokio runtime of its own, so a test can kill it the way a crash would:
/// [`Crashable::crash`] drops every task of the instance at once — its handlers mid-flight, its
/// AMQP connection (unacked deliveries go back to the queue; nothing is acked or nacked on the
/// way) and its Postgres connections (their advisory locks end with the session).
pub struct Crashable {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Crashable {
    /// Kills the instance (no graceful stop, no drain).
    pub fn crash(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Crashable {
    fn drop(&mut self) {
        // A runtime cannot be dropped inside another one (a test that failed before `crash`).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A Spark contact snapshot as the Spark webhook sends it.
pub fn spark_contact(spark_id: &str, first: &str, last: Option<&str>, email: &str) -> Value {
    json!({
        "details": {
            "id": spark_id,
            "first_name": first,
            "last_name": last,
            "email": email,
            "mobile_phone": "201-555-0100",
            "home_address": "14 Aspen Drive, North Caldwell, NJ 07006",
            "agent": {"full_name": "Dwight Harris", "email": "dwight.harris@example.com"}
        },
        "phi": {
            "dob": "1959-08-22",
            "mbi": "1EG4-TE5-MK73",
            "part_a_enrollment_date": "2024-01-01",
            "part_b_enrollment_date": "2024-02-01"
        }
    })
}

impl SyncWorld {
    pub async fn new(tag: &str, mode: Mode) -> SyncWorld {
        let db = fresh_database(tag).await;
        let store = Store::new(&StoreConfig::new(
            db.url.clone(),
            intake_it::test_keys(),
            4,
            Duration::from_secs(5),
        ))
        .expect("store");
        store.migrate().await.expect("migrate");
        let (topology, publisher) = intake_it::test_broker(tag, TEST_TIERS).await;
        SyncWorld {
            db,
            store,
            topology,
            publisher,
            probe: QueueProbe::connect().await,
            hs: FakeHealthSherpa::start(mode).await,
        }
    }

    /// Sync settings for this world: its database, prefix, fake HealthSherpa and short tiers.
    pub fn sync_config(&self) -> SyncConfig {
        let mut c = SyncConfig::local_defaults();
        c.listen_addr = "127.0.0.1:0".parse().expect("addr");
        c.broker.amqp_url = AMQP_URL.to_owned().into();
        c.database_url = self.db.url.clone().into();
        c.keys = intake_it::test_key_settings();
        c.broker.queue_prefix = self.topology.prefix().to_owned();
        c.broker.retry_tiers = TEST_TIERS.to_owned();
        c.broker.queue_expires_secs = Some(intake_it::TEST_QUEUE_EXPIRY_SECS);
        c.relay_interval_ms = 50;
        c.shutdown_grace_secs = 5;
        c.healthsherpa_base_url = self.hs.base_url();
        c.healthsherpa_timeout_ms = 2000;
        match self.hs.mode {
            Mode::ApiKey => {
                c.healthsherpa_auth_mode = "api_key".into();
                c.healthsherpa_api_key = Some(fake::API_KEY.into());
                c.healthsherpa_agent_email = Some(AGENT_EMAIL.into());
            }
            Mode::OAuth => {
                c.healthsherpa_auth_mode = "oauth".into();
                c.healthsherpa_client_id = fake::CLIENT_ID.into();
                c.healthsherpa_client_secret = Some(fake::CLIENT_SECRET.into());
            }
        }
        c
    }

    pub async fn start_sync(&self, config: SyncConfig) -> Running<SyncError> {
        self.start_sync_with(config, Hooks::default()).await
    }

    pub async fn start_sync_with(&self, config: SyncConfig, hooks: Hooks) -> Running<SyncError> {
        let listener = tokio::net::TcpListener::bind(config.listen_addr)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let handle = tokio::spawn(intake_sync::run_with(
            config,
            listener,
            stop.clone().cancelled_owned(),
            hooks,
        ));
        Running { addr, stop, handle }
    }

    /// Starts a sync process that a test can [`Crashable::crash`]; it never stops otherwise.
    pub fn start_crashable_sync(&self, config: SyncConfig, hooks: Hooks) -> Crashable {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("crashable-sync")
            .enable_all()
            .build()
            .expect("runtime");
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::bind(config.listen_addr)
                .await
                .expect("bind");
            let result = intake_sync::run_with(config, listener, std::future::pending::<()>(), hooks).await;
            panic!("a crashable sync instance never returns, yet returned {result:?}");
        });
        Crashable {
            runtime: Some(runtime),
        }
    }

    /// Waits until `queue` has exactly `n` consumers; panics with the last count after [`DEADLINE`].
    pub async fn wait_consumers(&self, queue: &str, n: u32) {
        let ok = wait_until(DEADLINE, || async { self.probe.consumers(queue).await == n }).await;
        assert!(
            ok,
            "{queue} has {} consumers, not {n}",
            self.probe.consumers(queue).await
        );
    }

    /// Starts an ingest worker for Spark envelopes on this world's prefix and database.
    pub async fn start_ingest(&self) -> Running<intake_worker::WorkerError> {
        let mut c = intake_worker::WorkerConfig::local_defaults();
        c.listen_addr = "127.0.0.1:0".parse().expect("addr");
        c.broker.amqp_url = AMQP_URL.to_owned().into();
        c.database_url = self.db.url.clone().into();
        c.keys = intake_it::test_key_settings();
        c.broker.queue_prefix = self.topology.prefix().to_owned();
        c.broker.retry_tiers = TEST_TIERS.to_owned();
        c.broker.queue_expires_secs = Some(intake_it::TEST_QUEUE_EXPIRY_SECS);
        c.providers = "spark".into();
        c.concurrency = 8;
        c.db_pool_size = 10;
        c.shutdown_grace_secs = 5;
        let listener = tokio::net::TcpListener::bind(c.listen_addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let handle = tokio::spawn(intake_worker::run(c, listener, stop.clone().cancelled_owned()));
        Running { addr, stop, handle }
    }

    /// Changes a contact the real way: a Spark envelope published as the receiver does (the
    /// ingest worker applies it and writes the outbox row).
    pub async fn publish_contact(&self, snapshot: &Value) -> Envelope {
        let body = serde_json::to_vec(snapshot).expect("json");
        let envelope = Envelope::new("ep-spark", Provider::Spark, vec![], body.into());
        self.publisher.publish_envelope(&envelope).await.expect("publish");
        envelope
    }

    /// Changes a contact by applying the snapshot with the store, as the ingest worker would.
    pub async fn apply_contact(&self, snapshot: &Value) {
        let body = serde_json::to_vec(snapshot).expect("json");
        let envelope = Envelope::new("ep-spark", Provider::Spark, vec![], body.into());
        for event in intake_providers::decode(&envelope).expect("decodes") {
            self.store
                .apply(&envelope, &event, ApplyOptions::default())
                .await
                .expect("applies");
        }
    }

    /// `(healthsherpa_id, redirect_url, synced_seq)` of a contact, if it has a sync row.
    pub async fn sync_row(&self, spark_id: &str) -> Option<(Option<String>, Option<String>, i64)> {
        self.db
            .client()
            .await
            .query_opt(
                "SELECT healthsherpa_id, redirect_url, synced_seq FROM healthsherpa_sync WHERE spark_id = $1",
                &[&spark_id],
            )
            .await
            .expect("sync row")
            .map(|r| (r.get(0), r.get(1), r.get(2)))
    }

    /// The contact's highest outbox id (what a sync of its latest state covers).
    pub async fn latest_seq(&self, spark_id: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(
                "SELECT COALESCE(max(id), 0) FROM outbox WHERE contact_id = $1",
                &[&spark_id],
            )
            .await
            .expect("outbox")
            .get(0)
    }

    /// Waits until the contact's latest change is synced; returns its HealthSherpa id and URL.
    pub async fn wait_synced(&self, spark_id: &str) -> (String, String) {
        let ok = wait_until(DEADLINE, || async {
            let latest = self.latest_seq(spark_id).await;
            latest > 0
                && self
                    .sync_row(spark_id)
                    .await
                    .is_some_and(|(id, _, seq)| id.is_some() && seq >= latest)
        })
        .await;
        let row = self.sync_row(spark_id).await;
        assert!(ok, "contact {spark_id} not synced in time (row {row:?})");
        let (id, url, _) = row.expect("row");
        (id.expect("id"), url.expect("redirect url"))
    }

    /// Waits until `n` messages sit in the dead-letter queue and takes them.
    pub async fn take_dead_letters(&self, n: u32) -> Vec<Taken> {
        let queue = self.topology.dead_letter_queue();
        let ok = wait_until(DEADLINE, || async { self.probe.count(&queue).await >= n }).await;
        assert!(ok, "{n} dead letters expected");
        self.probe.drain(&queue).await
    }

    pub async fn cleanup(self) {
        self.publisher.close().await;
        self.probe.cleanup(&self.topology).await;
        self.db.drop_database().await;
    }
}

/// A string header of a taken message.
pub fn header(message: &Taken, name: &str) -> Option<String> {
    use intake_broker::lapin::types::AMQPValue;
    match message.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}
