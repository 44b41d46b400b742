//! `intake`: the one binary of the system. `main` only wires: parse the command line (settings
//! come from the environment, see `--help`), install logging and the metrics recorder, turn
//! SIGTERM/SIGINT into a cancellation token, and hand over to the subcommand's module.
#![forbid(unsafe_code)]

mod cli;
mod healthcheck;
mod migrate;
mod roles;

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};

// glibc malloc showed up as a fifth of the receiver's CPU profile under load (and a visible share
// of a busy worker's); mimalloc is faster for their many small, short-lived allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        // A container healthcheck runs every few seconds: no logging set-up, just an exit code.
        Command::Healthcheck(args) => return Ok(healthcheck::run(&args).await),
        Command::Receiver(config) => roles::receiver(*config, start()).await?,
        Command::Worker(config) => roles::worker(*config, start()).await?,
        Command::Sync(config) => roles::sync(*config, start()).await?,
        Command::All(args) => roles::all(&args, start()).await?,
        Command::Migrate(args) => migrate::run(&args, start()).await?,
        // Operator commands print for a human (or --json); logs would only get in the way.
        Command::Operate(command) => return Ok(intake_admin::run(command).await),
    }
    Ok(ExitCode::SUCCESS)
}

/// Installs logging and the metrics recorder; the token is cancelled on SIGTERM or SIGINT.
fn start() -> CancellationToken {
    intake_telemetry::init_tracing();
    intake_telemetry::metrics_handle();
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            intake_telemetry::shutdown_signal().await;
            shutdown.cancel();
        }
    });
    shutdown
}
