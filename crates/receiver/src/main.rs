//! `intake-receiver`: reads configuration, installs logging and metrics, serves until SIGTERM.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use intake_receiver::{ReceiverConfig, load_endpoints, run};

// glibc malloc showed up as a fifth of the receiver's CPU profile under load; mimalloc is
// faster for its many small, short-lived allocations and keeps RSS flatter.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    intake_telemetry::init_tracing();
    intake_telemetry::metrics_handle();
    let config = ReceiverConfig::parse();
    let endpoints = load_endpoints(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding INTAKE_LISTEN_ADDR {}", config.listen_addr))?;
    run(config, endpoints, listener, intake_telemetry::shutdown_signal()).await
}
