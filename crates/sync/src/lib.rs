//! The HealthSherpa CRM sync process: the outbox relay and the sync worker, scalable (any number
//! of either against the same broker and database).
//!
//! - [`config`]: settings from the environment, validated at start;
//! - [`relay`]: outbox rows → `contacts.changed` messages (claim with `FOR UPDATE SKIP LOCKED`,
//!   publish with confirm, mark published);
//! - [`message`]: the versioned message on `{prefix}.q.sync`;
//! - `worker`: one message → coalesce, create-or-update through `intake_healthsherpa`, store the
//!   id and quote URL; retries via the broker's delay tiers, dead letters for permanent failures;
//! - [`mapping`]: stored contact → HealthSherpa contact;
//! - [`metrics`]: metric names.
//!
//! [`run`] is the whole process minus logging and the recorder, so tests run it in-process on
//! `127.0.0.1:0`. Shutdown is a parameter: the relay stops, the consumer stops taking messages,
//! in-flight syncs finish (up to the grace period) and ack; anything unacked is redelivered.
#![forbid(unsafe_code)]

pub mod config;
pub mod mapping;
pub mod message;
pub mod metrics;
pub mod relay;
mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use intake_broker::{Consumer, ConsumerConfig, Publisher, PublisherConfig};
use intake_healthsherpa::{HealthSherpaClient, HealthSherpaError};
use intake_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, SyncConfig};
pub use worker::{AfterCreateHook, AfterMessageHook};

/// Why the sync process could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HealthSherpa client could not be built.
    #[error(transparent)]
    Client(#[from] HealthSherpaError),
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
    /// Called after HealthSherpa answered a create, before its id is stored.
    pub after_create: Option<AfterCreateHook>,
    /// Called once a message was handled successfully, before its ack.
    pub after_message: Option<AfterMessageHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("after_create", &self.after_create.is_some())
            .field("after_message", &self.after_message.is_some())
            .finish()
    }
}

/// Runs relay and worker until `shutdown` resolves.
pub async fn run(
    config: SyncConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SyncError> {
    run_with(config, listener, shutdown, Hooks::default()).await
}

/// [`run`] with test hooks.
pub async fn run_with(
    config: SyncConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    hooks: Hooks,
) -> Result<(), SyncError> {
    let valid = config.validate()?;
    metrics::describe();
    let client = HealthSherpaClient::new(valid.healthsherpa.clone())?;
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
        channels: 2,
        confirm_timeout: Duration::from_millis(config.confirm_timeout_ms),
        role: "sync-publisher",
    });
    let consumer = Consumer::new(ConsumerConfig {
        amqp_url: config.broker.amqp_url.clone(),
        topology: valid.topology.clone(),
        queues: vec![valid.topology.sync_queue()],
        prefetch: config.prefetch,
        concurrency: config.concurrency,
        role: "sync-consumer",
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

    let relay = config.relay_enabled.then(|| {
        let relay = relay::Relay {
            store: store.clone(),
            publisher: publisher.clone(),
            topology: valid.topology.clone(),
            interval: Duration::from_millis(config.relay_interval_ms),
            batch: config.relay_batch,
        };
        tokio::spawn(relay.run(stop.clone()))
    });

    let context = Arc::new(worker::Context {
        store,
        publisher: publisher.clone(),
        topology: valid.topology.clone(),
        client,
        after_create: hooks.after_create,
        after_message: hooks.after_message,
    });
    tracing::info!(?config, "sync starting");
    let consuming = consumer.run(
        move |delivery| {
            let context = context.clone();
            async move { worker::handle(&context, delivery).await }
        },
        stop.clone(),
    );
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    tokio::pin!(consuming);
    tokio::select! {
        _ = &mut consuming => {}
        _ = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("shutdown grace period over; unfinished syncs will be redelivered");
        }
    }
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    publisher.close().await;
    match http.await {
        Ok(result) => result?,
        Err(e) => tracing::warn!(error = %e, "ops server task failed"),
    }
    tracing::info!("sync stopped");
    Ok(())
}

/// Migrates, waiting for the database to come up (the process may start before Postgres).
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
