//! `intake migrate`: applies the Postgres migrations and declares the broker topology — the same
//! `Store::migrate` and `topology::declare` every role runs at start — then exits. Waits up to
//! `INTAKE_MIGRATE_WAIT_SECS` for either service to become reachable, so a deployment can run it
//! as a one-shot job next to services that are still starting.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;
use intake_store::{Store, StoreConfig};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::cli::MigrateArgs;

/// Migrates the database, then declares the topology.
pub async fn run(args: &MigrateArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let topology = args.broker.topology()?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let keys = args.keys.keyring()?;
    let store = Store::new(&StoreConfig::new(
        args.database_url.clone(),
        keys,
        1,
        Duration::from_millis(args.db_timeout_ms),
    ))
    .context("INTAKE_DATABASE_URL")?;
    until_reachable(
        "postgres",
        deadline,
        &shutdown,
        || store.migrate(),
        |e| e.is_retryable(),
    )
    .await
    .context("migrating Postgres")?;
    tracing::info!("database migrated");
    let amqp_url = args.broker.amqp_url.expose_secret();
    until_reachable(
        "rabbitmq",
        deadline,
        &shutdown,
        || intake_broker::topology::declare_at(amqp_url, &topology),
        |e| e.is_retryable(),
    )
    .await
    .context("declaring the broker topology")?;
    tracing::info!(
        prefix = topology.prefix(),
        queues = topology.all_queues().len(),
        exchanges = topology.all_exchanges().len(),
        "broker topology declared"
    );
    Ok(())
}

/// Runs `attempt` until it succeeds, fails for good, `deadline` passes or `shutdown`.
async fn until_reachable<E, F, Fut>(
    service: &str,
    deadline: Instant,
    shutdown: &CancellationToken,
    mut attempt: F,
    retryable: impl Fn(&E) -> bool,
) -> Result<(), E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut wait = Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(e) if retryable(&e) && Instant::now() + wait < deadline && !shutdown.is_cancelled() => {
                tracing::warn!(service, error = %e, retry_in_ms = wait.as_millis() as u64, "not reachable yet");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}
