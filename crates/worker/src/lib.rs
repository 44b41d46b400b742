//! The ingest worker: consumes every provider queue and applies each event exactly once.
//!
//! - [`config`]: settings from the environment, validated at start;
//! - `process`: one delivery — decode, one store transaction per event, then ack; transient
//!   failures go to the next retry tier, permanent ones (and the last attempt) to dead letters;
//! - `sweeper`: parked-event timeouts, raw-event retention, gauges;
//! - [`metrics`]: metric names.
//!
//! [`run`] is the whole process minus logging and the recorder, so tests run workers in-process
//! on `127.0.0.1:0`. Shutdown is a parameter: when it resolves the worker stops consuming, lets
//! in-flight events finish and ack (up to the grace period), and returns; anything unacked is
//! redelivered by the broker.
#![forbid(unsafe_code)]

pub mod config;
pub mod metrics;
mod process;
mod sweeper;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use intake_broker::{Consumer, ConsumerConfig, Publisher, PublisherConfig};
use intake_store::{ApplyOptions, Store, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, WorkerConfig};
pub use process::AfterCommitHook;

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
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("after_commit", &self.after_commit.is_some())
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
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });

    let store = Store::new(&config.store_config())?;
    migrate_when_reachable(&store, &stop).await?;

    let publisher = Publisher::start(PublisherConfig {
        amqp_url: config.broker.amqp_url.clone(),
        topology: valid.topology.clone(),
        channels: config.publish_channels.max(1),
        confirm_timeout: Duration::from_millis(config.confirm_timeout_ms),
        role: "worker-publisher",
    });
    let consumer = Consumer::new(ConsumerConfig {
        amqp_url: config.broker.amqp_url.clone(),
        topology: valid.topology.clone(),
        queues: valid
            .providers
            .iter()
            .map(|p| valid.topology.provider_queue(*p))
            .collect(),
        prefetch: config.prefetch,
        concurrency: config.concurrency,
        role: "worker-consumer",
    });

    let ready: intake_telemetry::ReadinessCheck = {
        let (store, publisher, consumer) = (store.clone(), publisher.clone(), consumer.clone());
        Arc::new(move || {
            let (store, publisher, consumer) = (store.clone(), publisher.clone(), consumer.clone());
            Box::pin(async move { consumer.is_connected() && publisher.is_connected() && store.ping().await })
        })
    };
    let http = {
        let stop = stop.clone();
        let router = intake_telemetry::ops_router(ready);
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
    };

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

    let context = Arc::new(process::Context {
        store,
        publisher: publisher.clone(),
        topology: valid.topology.clone(),
        options: ApplyOptions {
            park_limit: config.park_limit_secs.map(Duration::from_secs),
        },
        db_timeout: config.db_timeout(),
        after_commit: hooks.after_commit,
    });
    // Retries and dead letters need the publisher: consuming before it is up would only hand
    // deliveries back.
    while !publisher.wait_connected(Duration::from_secs(1)).await {
        if stop.is_cancelled() {
            break;
        }
        tracing::warn!("waiting for the broker before consuming");
    }
    tracing::info!(?config, "worker starting");
    let consuming = consumer.run(
        move |delivery| {
            let context = context.clone();
            async move { process::handle(&context, delivery).await }
        },
        stop.clone(),
    );
    // The consumer returns once stopped and drained; bound the drain by the grace period.
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    tokio::pin!(consuming);
    tokio::select! {
        _ = &mut consuming => {}
        _ = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("shutdown grace period over; unfinished events will be redelivered");
        }
    }
    let _ = sweeper.await;
    publisher.close().await;
    match http.await {
        Ok(result) => result?,
        Err(e) => tracing::warn!(error = %e, "ops server task failed"),
    }
    tracing::info!("worker stopped");
    Ok(())
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n.saturating_mul(86_400))
}

/// Migrates, waiting for the database to come up (a worker may start before Postgres).
async fn migrate_when_reachable(store: &Store, stop: &CancellationToken) -> Result<(), StoreError> {
    let mut wait = Duration::from_millis(200);
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && !stop.is_cancelled() => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "database not ready");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}
