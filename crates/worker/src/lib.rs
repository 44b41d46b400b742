//! The ingest worker: consumes every provider queue and applies each event exactly once.
//!
//! - [`config`]: settings from the environment, validated at start;
//! - `handler`: the ingest handler — decode, one store transaction per batch of deliveries (group
//!   commit, a savepoint per event) — whose verdicts the
//!   shared consumer runtime (`intake_runtime`) turns into acks, retries and dead letters;
//! - `sweeper`: parked-event timeouts, raw-event retention, gauges.
//!
//! Each worker also runs the dead-letter recorder on the dead-letter queue (one Postgres row per
//! dead letter), unless `INTAKE_RECORD_DEAD_LETTERS=false`.
//! - [`metrics`]: metric names.
//!
//! [`run`] is the whole process minus logging and the recorder, so tests run workers in-process
//! on `127.0.0.1:0`. Shutdown is a parameter: when it resolves the worker stops consuming, lets
//! in-flight events finish and ack (up to the grace period), and returns; anything unacked is
//! redelivered by the broker.
#![forbid(unsafe_code)]

pub mod config;
mod handler;
pub mod metrics;
mod sweeper;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use intake_broker::{ConsumerConfig, PublisherConfig};
use intake_runtime::process::{self, RoleServices};
use intake_runtime::{ConsumerRuntime, DeadLetterRecorder};
use intake_store::{ApplyOptions, StoreError};
use tokio::net::TcpListener;

use crate::handler::IngestHandler;

pub use config::{ConfigError, WorkerConfig};
pub use handler::AfterCommitHook;

/// Why the worker could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be prepared.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The ops HTTP server failed.
    #[error("ops server: {0}")]
    Http(#[from] std::io::Error),
}

/// Optional hooks for tests (fault injection); production passes `Hooks::default()`.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Called after each committed event, before its delivery is acked.
    pub after_commit: Option<AfterCommitHook>,
    /// Publish retries and dead letters through this AMQP URL instead (a test's TCP proxy), so a
    /// test can block publishing while consuming goes on.
    pub publish_amqp_url: Option<secrecy::SecretString>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("after_commit", &self.after_commit.is_some())
            .field("publish_amqp_url", &self.publish_amqp_url.is_some())
            .finish()
    }
}

/// Runs a worker until `shutdown` resolves.
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    run_with(config, listener, shutdown, Hooks::default()).await
}

/// [`run`] with test hooks.
pub async fn run_with(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    hooks: Hooks,
) -> Result<(), WorkerError> {
    let valid = config.validate()?;
    metrics::describe();
    let services = process::start_role(
        &config.store_config(valid.keys.clone()),
        PublisherConfig {
            amqp_url: hooks
                .publish_amqp_url
                .clone()
                .unwrap_or_else(|| config.broker.amqp_url.clone()),
            topology: valid.topology.clone(),
            channels: config.publish_channels.max(1),
            confirm_timeout: Duration::from_millis(config.confirm_timeout_ms),
            role: "worker-publisher",
        },
        shutdown,
    )
    .await?;
    let RoleServices {
        stop,
        store,
        publisher,
    } = services;
    let consumer =
        |role: &'static str, queues: Vec<String>, prefetch: u16, concurrency: usize| ConsumerConfig {
            amqp_url: config.broker.amqp_url.clone(),
            topology: valid.topology.clone(),
            queues,
            prefetch,
            concurrency,
            role,
        };
    let ingest = ConsumerRuntime::new(
        "worker",
        consumer(
            "worker-consumer",
            valid
                .providers
                .iter()
                .map(|p| valid.topology.provider_queue(*p))
                .collect(),
            config.prefetch,
            config.batching().deliveries_in_flight(),
        ),
        publisher.clone(),
    );
    // Every worker also records the dead-letter queue's messages (competing consumers: any number
    // of workers share the job), so each dead letter becomes one row however it got there.
    let recorder = config.record_dead_letters.then(|| {
        ConsumerRuntime::new(
            "dead_letters",
            consumer(
                "worker-dead-letters",
                vec![valid.topology.dead_letter_queue()],
                20,
                2,
            ),
            publisher.clone(),
        )
    });
    let mut watched = vec![ingest.clone()];
    watched.extend(recorder.clone());
    let ready = process::readiness(store.clone(), publisher.clone(), watched, config.stuck_after());
    let http = process::serve_ops(listener, ready, &stop);

    let sweeper = sweeper::Sweeper {
        store: store.clone(),
        publisher: publisher.clone(),
        topology: valid.topology.clone(),
        interval: Duration::from_millis(config.sweep_interval_ms),
        retention: sweeper::Retention {
            raw_events: days(config.raw_retention_days),
            inbox: days(config.dedupe_window_days),
            published_outbox: days(config.outbox_retention_days),
            resolved_dead_letters: days(config.dead_letter_retention_days),
        },
    };
    let sweeper = tokio::spawn(sweeper.run(stop.clone()));

    let handler = Arc::new(IngestHandler {
        store: store.clone(),
        topology: valid.topology.clone(),
        options: ApplyOptions {
            park_limit: config.park_limit_secs.map(Duration::from_secs),
        },
        db_timeout: config.db_timeout(),
        after_commit: hooks.after_commit,
    });
    process::wait_for_publisher(&publisher, &stop, "worker").await;
    tracing::info!(?config, "worker starting");
    let recording = recorder.map(|recorder| {
        let (store, topology, stop) = (store.clone(), valid.topology.clone(), stop.clone());
        tokio::spawn(async move {
            recorder
                .run(Arc::new(DeadLetterRecorder::new(store, topology)), stop)
                .await;
        })
    });
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    process::drain_within(
        ingest.run_batched(handler, config.batching(), stop.clone()),
        &stop,
        grace,
        "worker",
    )
    .await;
    if let Some(recording) = recording {
        let _ = recording.await;
    }
    let _ = sweeper.await;
    publisher.close().await;
    process::finish_ops(http).await?;
    tracing::info!("worker stopped");
    Ok(())
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n.saturating_mul(86_400))
}
