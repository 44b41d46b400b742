//! The operator commands of `intake`, as a library the binary wires in:
//!
//! - `dead-letters list | show | replay | purge` ([`dead_letters`]): find what failed and replay
//!   it — ordering-aware (a replayed event goes through the worker's ordering rules again) and
//!   dedupe-safe (an event that took effect is not applied twice unless `--force`);
//! - `parked list | release | drop` ([`parked`]);
//! - `trace` ([`trace`]): one webhook's whole life;
//! - `status` ([`status`]): queues, parked events, open dead letters, outbox backlog.
//!
//! Every command prints a table, or with `--json` one JSON document (shapes in README). Exit
//! codes: 0 done, 1 failed (database or broker unreachable…), 2 bad usage, 3 not found, 4
//! refused (e.g. `purge` without `--yes`).
#![forbid(unsafe_code)]

pub mod dead_letters;
pub mod parked;
pub mod status;
pub mod trace;
mod when;

use std::process::ExitCode;
use std::time::Duration;

use intake_broker::{BrokerSettings, Publisher, PublisherConfig, Topology};
use intake_store::{Store, StoreConfig, StoreError};
use secrecy::{ExposeSecret, SecretString};

pub use when::{parse_duration, parse_when};

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: failed (database or broker unreachable, unexpected error).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: what the command names does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code: refused (a confirmation is missing, or the operation would do harm).
pub const EXIT_REFUSED: u8 = 4;

/// Where the operator commands find the system. The same variables as the roles.
#[derive(Clone, clap::Args)]
pub struct AdminConfig {
    /// RabbitMQ and naming settings shared by every intake process.
    #[command(flatten)]
    pub broker: BrokerSettings,

    /// Postgres URL, from `INTAKE_DATABASE_URL` only (may hold a password: never logged, no flag).
    #[arg(skip = intake_store::database_url_from_env())]
    pub database_url: SecretString,

    /// RabbitMQ's Prometheus endpoint, for the unacked counts of `status` (optional).
    #[arg(
        long = "rabbitmq-metrics-url",
        env = "INTAKE_RABBITMQ_METRICS_URL",
        default_value = "http://127.0.0.1:15692"
    )]
    pub rabbitmq_metrics_url: String,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("broker", &self.broker)
            .field("database_url", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A setting or argument is unusable.
    #[error("{0}")]
    Usage(String),
    /// Postgres failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// RabbitMQ failed.
    #[error("broker: {0}")]
    Broker(#[from] intake_broker::BrokerError),
    /// Output could not be written.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

/// What a command needs, opened on demand.
#[derive(Debug)]
pub struct Admin {
    config: AdminConfig,
    topology: Topology,
    store: Store,
}

impl Admin {
    /// Validates the settings and opens the store (connections are made when used).
    pub fn open(config: AdminConfig) -> Result<Admin, AdminError> {
        let topology = config
            .broker
            .topology()
            .map_err(|e| AdminError::Usage(e.to_string()))?;
        let store = Store::new(&StoreConfig::new(
            config.database_url.clone(),
            2,
            Duration::from_secs(10),
        ))?;
        Ok(Admin {
            config,
            topology,
            store,
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// A connected, confirming publisher (for replays); fails if the broker is not reachable
    /// within a few seconds.
    async fn publisher(&self) -> Result<Publisher, AdminError> {
        let publisher = Publisher::start(PublisherConfig {
            amqp_url: self.config.broker.amqp_url.clone(),
            topology: self.topology.clone(),
            channels: 1,
            confirm_timeout: Duration::from_secs(10),
            role: "intake-admin",
        });
        if publisher.wait_connected(Duration::from_secs(10)).await {
            Ok(publisher)
        } else {
            publisher.close().await;
            Err(AdminError::Broker(intake_broker::BrokerError::Unavailable))
        }
    }
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), AdminError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| AdminError::Output(std::io::Error::other(e)))?;
    println!("{text}");
    Ok(())
}

/// Prints rows as an aligned table with a header.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Turns a command's result into an exit code, printing the error (never a secret) on stderr.
pub fn exit_code(result: Result<u8, AdminError>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(AdminError::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The operator subcommands, for the `intake` binary to flatten into its own.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum OperatorCommand {
    /// List, show, replay or purge dead letters.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLettersCommand),
    /// List, release or drop parked events.
    #[command(subcommand)]
    Parked(parked::ParkedCommand),
    /// One webhook's whole life, as a timeline.
    Trace(trace::TraceArgs),
    /// Queues, parked events, open dead letters and outbox backlog right now.
    Status(status::StatusArgs),
}

/// Reads [`AdminConfig`] from the environment only (the same variables as the roles).
#[derive(clap::Parser)]
struct FromEnv {
    #[command(flatten)]
    config: AdminConfig,
}

impl AdminConfig {
    /// The settings from the environment, with the roles' defaults.
    pub fn from_env() -> Result<AdminConfig, AdminError> {
        use clap::Parser;
        FromEnv::try_parse_from(["intake"])
            .map(|f| f.config)
            .map_err(|e| AdminError::Usage(e.to_string()))
    }
}

/// Runs one operator command with settings from the environment; returns the process's exit code.
pub async fn run(command: OperatorCommand) -> ExitCode {
    let result = async {
        let config = AdminConfig::from_env()?;
        let (amqp_url, metrics_url) = (
            config.broker.amqp_url.clone(),
            config.rabbitmq_metrics_url.clone(),
        );
        let admin = Admin::open(config)?;
        match command {
            OperatorCommand::DeadLetters(c) => dead_letters::run(&admin, c).await,
            OperatorCommand::Parked(c) => parked::run(&admin, c).await,
            OperatorCommand::Trace(a) => trace::run(&admin, a).await,
            OperatorCommand::Status(a) => {
                status::run(&admin, amqp_url.expose_secret(), &metrics_url, a).await
            }
        }
    }
    .await;
    exit_code(result)
}
