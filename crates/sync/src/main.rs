//! `intake-sync`: reads configuration, installs logging and metrics, syncs until SIGTERM.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use intake_sync::{SyncConfig, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    intake_telemetry::init_tracing();
    intake_telemetry::metrics_handle();
    let config = SyncConfig::parse();
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding INTAKE_LISTEN_ADDR {}", config.listen_addr))?;
    run(config, listener, intake_telemetry::shutdown_signal()).await?;
    Ok(())
}
