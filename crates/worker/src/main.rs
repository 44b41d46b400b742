//! `intake-worker`: reads configuration, installs logging and metrics, works until SIGTERM.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use intake_worker::{WorkerConfig, run};

// As in the receiver: glibc malloc is a visible share of a busy worker's CPU; mimalloc is not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    intake_telemetry::init_tracing();
    intake_telemetry::metrics_handle();
    let config = WorkerConfig::parse();
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding INTAKE_LISTEN_ADDR {}", config.listen_addr))?;
    run(config, listener, intake_telemetry::shutdown_signal()).await?;
    Ok(())
}
