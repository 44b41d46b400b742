//! The process wiring every consuming role shares (ingest worker, sync worker): turn the shutdown
//! future into a token, build and migrate the store as soon as Postgres answers, start the
//! confirmed publisher, serve `/metrics` `/healthz` `/readyz`, wait for the broker before
//! consuming, and bound the final drain by the grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use intake_broker::{Publisher, PublisherConfig};
use intake_store::{Store, StoreConfig, StoreError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ConsumerRuntime;

/// What a role needs before it consumes.
#[derive(Debug, Clone)]
pub struct RoleServices {
    /// Cancelled when the role must stop.
    pub stop: CancellationToken,
    /// The store, migrated.
    pub store: Store,
    /// Confirmed publisher for retries, dead letters (and the relay).
    pub publisher: Publisher,
}

/// Starts what every role shares; returns once the database is migrated (waiting for Postgres to
/// come up if needed) or `shutdown` resolved first.
pub async fn start_role(
    store: &StoreConfig,
    publisher: PublisherConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RoleServices, StoreError> {
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let store = Store::new(store)?;
    migrate_when_reachable(&store, &stop).await?;
    let publisher = Publisher::start(publisher);
    Ok(RoleServices {
        stop,
        store,
        publisher,
    })
}

/// Migrates, waiting for the database to come up (a role may start before Postgres).
pub async fn migrate_when_reachable(store: &Store, stop: &CancellationToken) -> Result<(), StoreError> {
    let mut wait = Duration::from_millis(200);
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && !stop.is_cancelled() => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "database not ready");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// `/readyz` for a consuming role: the database answers, the publisher is connected, and every
/// consumer is connected and not stuck (work in flight but nothing settled for `stuck_after`).
pub fn readiness(
    store: Store,
    publisher: Publisher,
    runtimes: Vec<ConsumerRuntime>,
    stuck_after: Duration,
) -> intake_telemetry::ReadinessCheck {
    let runtimes = Arc::new(runtimes);
    Arc::new(move || {
        let (store, publisher, runtimes) = (store.clone(), publisher.clone(), runtimes.clone());
        Box::pin(async move {
            publisher.is_connected()
                && runtimes.iter().all(|r| r.is_healthy(stuck_after))
                && store.ping().await
        })
    })
}

/// Serves the ops endpoints until `stop`.
pub fn serve_ops(
    listener: TcpListener,
    ready: intake_telemetry::ReadinessCheck,
    stop: &CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let stop = stop.clone();
    let router = intake_telemetry::ops_router(ready);
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    })
}

/// Waits until the publisher is connected (retries and dead letters need it: consuming before
/// would only hand deliveries back), or `stop`.
pub async fn wait_for_publisher(publisher: &Publisher, stop: &CancellationToken, role: &str) {
    while !publisher.wait_connected(Duration::from_secs(1)).await {
        if stop.is_cancelled() {
            return;
        }
        tracing::warn!(role, "waiting for the broker before consuming");
    }
}

/// Runs `consuming` (which returns once stopped and drained); after `stop`, waits at most `grace`
/// for it — whatever is unfinished then is redelivered by the broker.
pub async fn drain_within(
    consuming: impl Future<Output = ()>,
    stop: &CancellationToken,
    grace: Duration,
    role: &str,
) {
    tokio::pin!(consuming);
    tokio::select! {
        _ = &mut consuming => {}
        _ = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(role, "shutdown grace period over; unfinished messages will be redelivered");
        }
    }
}

/// Waits for the ops server to finish after `stop`.
pub async fn finish_ops(http: JoinHandle<std::io::Result<()>>) -> std::io::Result<()> {
    match http.await {
        Ok(result) => result,
        Err(e) => {
            tracing::warn!(error = %e, "ops server task failed");
            Ok(())
        }
    }
}
