//! The HealthSherpa CRM sync process: the outbox relay and the sync worker, scalable (any number
//! of either against the same broker and database).
//!
//! - [`config`]: settings from the environment, validated at start;
//! - [`relay`]: outbox rows → `contacts.changed` messages (claim with `FOR UPDATE SKIP LOCKED`,
//!   publish with confirm, mark published);
//! - [`message`]: the versioned message on `{prefix}.q.sync`;
//! - `worker`: the sync handler — one message → coalesce, create-or-update through
//!   `intake_healthsherpa`, store the id and quote URL — run by the shared consumer runtime
//!   (`intake_runtime`: retries via the delay tiers, dead letters recorded in Postgres);
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

use intake_broker::{ConsumerConfig, PublisherConfig};
use intake_healthsherpa::{HealthSherpaClient, HealthSherpaError};
use intake_runtime::ConsumerRuntime;
use intake_runtime::process::{self, RoleServices};
use intake_store::StoreError;
use tokio::net::TcpListener;

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
    let services = process::start_role(
        &config.store_config(),
        PublisherConfig {
            amqp_url: config.broker.amqp_url.clone(),
            topology: valid.topology.clone(),
            channels: 2,
            confirm_timeout: Duration::from_millis(config.confirm_timeout_ms),
            role: "sync-publisher",
        },
        shutdown,
    )
    .await?;
    let RoleServices {
        stop,
        store,
        publisher,
    } = services;
    let runtime = ConsumerRuntime::new(
        "sync",
        ConsumerConfig {
            amqp_url: config.broker.amqp_url.clone(),
            topology: valid.topology.clone(),
            queues: vec![valid.topology.sync_queue()],
            prefetch: config.prefetch,
            concurrency: config.concurrency,
            role: "sync-consumer",
        },
        publisher.clone(),
    );
    // A sync waits on HealthSherpa for at most its timeout per request (a few per message).
    let stuck_after =
        Duration::from_millis(config.healthsherpa_timeout_ms.saturating_mul(6)).max(Duration::from_secs(60));
    let ready = process::readiness(
        store.clone(),
        publisher.clone(),
        vec![runtime.clone()],
        stuck_after,
    );
    let http = process::serve_ops(listener, ready, &stop);

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

    let handler = Arc::new(worker::SyncHandler {
        store,
        client,
        after_create: hooks.after_create,
        after_message: hooks.after_message,
    });
    process::wait_for_publisher(&publisher, &stop, "sync").await;
    tracing::info!(?config, "sync starting");
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    process::drain_within(runtime.run(handler, stop.clone()), &stop, grace, "sync").await;
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    publisher.close().await;
    process::finish_ops(http).await?;
    tracing::info!("sync stopped");
    Ok(())
}
