//! Running roles: one (`intake receiver | worker | sync`) or all of them in one process
//! (`intake all`). Each is its library's `run` with a listener bound here (so a busy port fails
//! at start, naming its variable) and the process's shutdown token.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use intake_receiver::ReceiverConfig;
use intake_sync::SyncConfig;
use intake_worker::WorkerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::AllArgs;

/// `intake receiver`: serves webhooks until `shutdown`.
pub async fn receiver(config: ReceiverConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let endpoints = intake_receiver::load_endpoints(&config)?;
    let listener = bind(config.listen_addr, "INTAKE_LISTEN_ADDR").await?;
    intake_receiver::run(config, endpoints, listener, shutdown.cancelled_owned()).await
}

/// `intake worker`: applies queued webhooks until `shutdown`.
pub async fn worker(config: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    worker_on(config, "INTAKE_LISTEN_ADDR", shutdown).await
}

/// `intake sync`: relays the outbox and syncs HealthSherpa until `shutdown`.
pub async fn sync(config: SyncConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    sync_on(config, "INTAKE_LISTEN_ADDR", shutdown).await
}

async fn worker_on(
    config: WorkerConfig,
    addr_variable: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let listener = bind(config.listen_addr, addr_variable).await?;
    intake_worker::run(config, listener, shutdown.cancelled_owned()).await?;
    Ok(())
}

async fn sync_on(config: SyncConfig, addr_variable: &str, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let listener = bind(config.listen_addr, addr_variable).await?;
    intake_sync::run(config, listener, shutdown.cancelled_owned()).await?;
    Ok(())
}

/// `intake all`: every role in this process, each configured from the environment as when run
/// alone, with its own ops address. The first role to stop (an error, or `shutdown`) stops the
/// others; the first error is returned.
pub async fn all(args: &AllArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Every role reads its settings from the environment only: their flags would collide.
    let receiver_config = ReceiverConfig::try_parse_from(["intake all"])?;
    let mut worker_config = WorkerConfig::try_parse_from(["intake all"])?;
    worker_config.listen_addr = args.worker_listen_addr;
    let mut sync_config = SyncConfig::try_parse_from(["intake all"])?;
    sync_config.listen_addr = args.sync_listen_addr;
    let run_sync = healthsherpa_configured(&sync_config);
    if !run_sync {
        tracing::info!(
            "HealthSherpa credentials not set: outbox relay and sync are off; contact changes wait in the outbox"
        );
    }

    // A role that fails cancels `stop`, which stops the others; a signal cancels it as well.
    let stop = shutdown.child_token();
    let mut roles = JoinSet::new();
    roles.spawn(role(
        "receiver",
        receiver(receiver_config, stop.clone()),
        stop.clone(),
    ));
    roles.spawn(role(
        "worker",
        worker_on(worker_config, "INTAKE_WORKER_LISTEN_ADDR", stop.clone()),
        stop.clone(),
    ));
    if run_sync {
        roles.spawn(role(
            "sync",
            sync_on(sync_config, "INTAKE_SYNC_LISTEN_ADDR", stop.clone()),
            stop.clone(),
        ));
    }
    let mut first_error = None;
    while let Some(joined) = roles.join_next().await {
        let result = joined.unwrap_or_else(|e| Err(anyhow::anyhow!("role task failed: {e}")));
        if let Err(e) = result
            && first_error.is_none()
        {
            first_error = Some(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Runs one role of `intake all`; whenever it returns, the others are told to stop.
async fn role(
    name: &'static str,
    run: impl Future<Output = anyhow::Result<()>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let result = run.await.with_context(|| format!("{name} stopped"));
    if let Err(e) = &result {
        tracing::error!(
            role = name,
            error = format!("{e:#}"),
            "role failed; stopping the others"
        );
    }
    stop.cancel();
    result
}

/// Whether the credentials of the configured HealthSherpa auth mode are set (the sync part of
/// `intake all` runs only then; `intake sync` alone insists on them).
fn healthsherpa_configured(config: &SyncConfig) -> bool {
    match config.healthsherpa_auth_mode.as_str() {
        "oauth" => !config.healthsherpa_client_id.is_empty() && config.healthsherpa_client_secret.is_some(),
        _ => config.healthsherpa_api_key.is_some(),
    }
}

async fn bind(addr: SocketAddr, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {variable} {addr}"))
}
