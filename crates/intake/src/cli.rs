//! The command line: one subcommand per role or operator task. Settings are environment
//! variables (each role's flags mirror them); secrets are environment variables only, so they
//! never show in `ps`.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use intake_broker::BrokerSettings;
use intake_receiver::ReceiverConfig;
use intake_store::database_url_from_env;
use intake_sync::SyncConfig;
use intake_worker::WorkerConfig;
use secrecy::SecretString;

const BROKER_SECRET: &str =
    "  INTAKE_AMQP_URL             RabbitMQ URL [default: amqp://guest:guest@127.0.0.1:5672/%2f]";
const DATABASE_SECRET: &str =
    "  INTAKE_DATABASE_URL         Postgres URL [default: postgres://postgres@127.0.0.1:5432/intake]";
const HEALTHSHERPA_SECRETS: &str = "  HEALTHSHERPA_API_KEY        v1 partner API key (api_key mode)
  HEALTHSHERPA_CLIENT_SECRET  v2 OAuth client secret (oauth mode)";
const ENDPOINT_SECRETS: &str =
    "  every secret_env / password_env named in the endpoint TOML (INTAKE_ENDPOINTS_FILE, INTAKE_ENDPOINTS)";

/// `--help` text after a role's options: the secrets it reads, which have no flag.
fn secrets_help(lines: &[&str]) -> String {
    format!("Secrets (environment only, never a flag):\n{}", lines.join("\n"))
}

/// intake: durable webhook ingestion (receiver → RabbitMQ → worker → Postgres → outbox → sync).
#[derive(Debug, Parser)]
#[command(name = "intake", version, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP receiver: authenticates provider webhooks, answers 200 once RabbitMQ confirmed them.
    #[command(after_help = secrets_help(&[BROKER_SECRET, ENDPOINT_SECRETS]))]
    Receiver(Box<ReceiverConfig>),
    /// Ingest worker: applies queued webhooks to Postgres exactly once, in order.
    #[command(after_help = secrets_help(&[BROKER_SECRET, DATABASE_SECRET]))]
    Worker(Box<WorkerConfig>),
    /// Outbox relay and HealthSherpa sync worker.
    #[command(after_help = secrets_help(&[BROKER_SECRET, DATABASE_SECRET, HEALTHSHERPA_SECRETS]))]
    Sync(Box<SyncConfig>),
    /// Every role in one process (small installs, development): receiver, ingest worker, and
    /// the outbox relay + HealthSherpa sync when HealthSherpa credentials are set.
    #[command(
        long_about = "Every role in one process (small installs, development).\n\n\
            Runs the receiver (INTAKE_LISTEN_ADDR, default 0.0.0.0:8080), the ingest worker (ops \
            endpoints on INTAKE_WORKER_LISTEN_ADDR, default 0.0.0.0:9091) and — only when \
            HealthSherpa credentials are set (HEALTHSHERPA_API_KEY, or HEALTHSHERPA_CLIENT_ID and \
            HEALTHSHERPA_CLIENT_SECRET with HEALTHSHERPA_AUTH_MODE=oauth) — the outbox relay and \
            HealthSherpa sync worker (INTAKE_SYNC_LISTEN_ADDR, default 0.0.0.0:9092). Without \
            them, contact changes wait in the outbox until a sync runs.\n\n\
            Every other setting is read from the environment exactly as the single roles read it \
            (see `intake receiver --help`, `intake worker --help`, `intake sync --help`). When one \
            role fails, the others are stopped and intake exits non-zero.",
        after_help = secrets_help(&[BROKER_SECRET, DATABASE_SECRET, ENDPOINT_SECRETS, HEALTHSHERPA_SECRETS])
    )]
    All(AllArgs),
    /// Applies the Postgres migrations and declares the broker topology, then exits (the same
    /// code every role runs at start).
    #[command(after_help = secrets_help(&[BROKER_SECRET, DATABASE_SECRET]))]
    Migrate(MigrateArgs),
    /// Exits 0 when URL answers 200, else 1 (container healthchecks in an image without curl).
    Healthcheck(HealthcheckArgs),
    /// Operator commands: dead-letters, parked, trace, status (settings from the environment,
    /// as the roles read them; exit codes and JSON shapes in README).
    #[command(flatten)]
    Operate(intake_admin::OperatorCommand),
}

/// `intake all`: the addresses that differ from the single roles' (all three would otherwise
/// read `INTAKE_LISTEN_ADDR`).
#[derive(Debug, Args)]
pub struct AllArgs {
    /// Ops endpoints (`/metrics`, `/healthz`, `/readyz`) of the ingest worker.
    #[arg(long, env = "INTAKE_WORKER_LISTEN_ADDR", default_value = "0.0.0.0:9091")]
    pub worker_listen_addr: SocketAddr,
    /// Ops endpoints of the outbox relay and HealthSherpa sync worker.
    #[arg(long, env = "INTAKE_SYNC_LISTEN_ADDR", default_value = "0.0.0.0:9092")]
    pub sync_listen_addr: SocketAddr,
}

/// `intake migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// RabbitMQ and naming settings shared by every intake process.
    #[command(flatten)]
    pub broker: BrokerSettings,
    /// Postgres URL, from `INTAKE_DATABASE_URL` only (may hold a password: never logged, no flag).
    #[arg(skip = database_url_from_env())]
    pub database_url: SecretString,
    /// Longest wait for Postgres and RabbitMQ to become reachable (seconds); then exit 1.
    #[arg(long, env = "INTAKE_MIGRATE_WAIT_SECS", default_value_t = 60)]
    pub wait_secs: u64,
    /// Longest wait to connect to Postgres (milliseconds).
    #[arg(long, env = "INTAKE_DB_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_timeout_ms: u64,
}

/// `intake healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// URL to GET, e.g. `http://127.0.0.1:8080/readyz`.
    pub url: String,
    /// Longest wait for the answer (milliseconds); no answer in time counts as unhealthy.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn secrets_are_no_flags_of_any_subcommand() {
        for args in [
            &["intake", "receiver", "--amqp-url", "amqp://u:p@h/%2f"][..],
            &["intake", "worker", "--database-url", "postgres://u:p@h/db"],
            &["intake", "sync", "--healthsherpa-api-key", "k"],
            &["intake", "sync", "--healthsherpa-client-secret", "s"],
            &["intake", "migrate", "--database-url", "postgres://u:p@h/db"],
            &["intake", "all", "--amqp-url", "amqp://u:p@h/%2f"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} must be refused");
        }
    }
}
