//! The worker's configuration, read from environment variables with defaults for a local run, and
//! validated at start (fail fast, naming the variable).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use intake_broker::BrokerSettings;
use intake_broker::Topology;
use intake_core::Provider;
use intake_runtime::Batching;
use intake_store::{DatabaseVariables, KeySettings, Keyring, StoreConfig, database_url_from_env};
use secrecy::SecretString;

/// Largest `INTAKE_BATCH_SIZE`: Postgres caches 64 subtransactions per session.
pub const MAX_BATCH_SIZE: usize = 64;

/// Worker settings. Every field can be set by the environment variable named in `env`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "intake-worker",
    about = "Ingest worker: applies queued webhooks exactly once"
)]
pub struct WorkerConfig {
    /// Address of the `/metrics`, `/healthz`, `/readyz` server.
    #[arg(long, env = "INTAKE_LISTEN_ADDR", default_value = "0.0.0.0:9091")]
    pub listen_addr: SocketAddr,

    /// RabbitMQ and naming settings shared by every intake process.
    #[command(flatten)]
    pub broker: BrokerSettings,

    /// Postgres URL, from `INTAKE_DATABASE_URL` only (may hold a password: never logged, no flag).
    #[arg(skip = database_url_from_env())]
    pub database_url: SecretString,

    /// PHI keys, from `INTAKE_ENCRYPTION_KEYS` and `INTAKE_HMAC_KEY` only (secrets: never logged,
    /// no flag).
    #[arg(skip = KeySettings::from_env())]
    pub keys: KeySettings,

    /// Providers whose queues this worker consumes (comma-separated).
    #[arg(
        long,
        env = "INTAKE_PROVIDERS",
        default_value = "spark,sparkloop,spark360,healthsherpa,standard"
    )]
    pub providers: String,

    /// Unacked deliveries the broker may push per queue.
    #[arg(long, env = "INTAKE_PREFETCH", default_value_t = 200)]
    pub prefetch: u16,

    /// Batch transactions at once (each takes one Postgres connection).
    #[arg(long, env = "INTAKE_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,

    /// Most deliveries applied in one transaction (group commit); 1 applies them one by one.
    #[arg(long, env = "INTAKE_BATCH_SIZE", default_value_t = 32)]
    pub batch_size: usize,

    /// How long a batch that is not full waits for more deliveries (milliseconds) — only while
    /// several arrive at once; a lone delivery on a quiet queue never waits. 0: never.
    #[arg(long, env = "INTAKE_BATCH_LINGER_MS", default_value_t = 2)]
    pub batch_linger_ms: u64,

    /// How long, at most, a batch that is not full keeps gathering deliveries while another
    /// batch's transaction runs (milliseconds): under a moderate stream, a few full batches
    /// instead of many small ones. A backlog fills batches at once; an idle worker never waits.
    /// 0: never.
    #[arg(long, env = "INTAKE_BATCH_GATHER_MS", default_value_t = 20)]
    pub batch_gather_ms: u64,

    /// Postgres connections in the pool (more than the concurrency: maintenance needs one).
    #[arg(long, env = "INTAKE_DB_POOL_SIZE", default_value_t = 12)]
    pub db_pool_size: usize,

    /// Longest time for each step of a batch's transaction — getting a connection and the locks,
    /// each event, saving and committing (milliseconds); past it the deliveries of that
    /// transaction are retried.
    #[arg(long, env = "INTAKE_DB_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_timeout_ms: u64,

    /// Server-side bound on one statement (Postgres `statement_timeout`, milliseconds), so a
    /// statement the worker gave up on stops holding locks; unset: 90 % of INTAKE_DB_TIMEOUT_MS.
    #[arg(long, env = "INTAKE_DB_STATEMENT_TIMEOUT_MS")]
    pub db_statement_timeout_ms: Option<u64>,

    /// Server-side bound on one lock wait, advisory locks included (Postgres `lock_timeout`,
    /// milliseconds); unset: 80 % of INTAKE_DB_TIMEOUT_MS.
    #[arg(long, env = "INTAKE_DB_LOCK_TIMEOUT_MS")]
    pub db_lock_timeout_ms: Option<u64>,

    /// Longest wait for RabbitMQ's confirm of a retry or dead-letter publish (milliseconds).
    #[arg(long, env = "INTAKE_CONFIRM_TIMEOUT_MS", default_value_t = 5000)]
    pub confirm_timeout_ms: u64,

    /// Confirm-mode channels for retry and dead-letter publishes.
    #[arg(long, env = "INTAKE_PUBLISH_CHANNELS", default_value_t = 2)]
    pub publish_channels: usize,

    /// Overrides every ordering rule's park limit (seconds); unset: each rule's own (1 h).
    #[arg(long, env = "INTAKE_PARK_LIMIT_SECS")]
    pub park_limit_secs: Option<u64>,

    /// How often parked events are swept, raw events pruned and gauges refreshed (milliseconds).
    #[arg(long, env = "INTAKE_SWEEP_INTERVAL_MS", default_value_t = 30_000)]
    pub sweep_interval_ms: u64,

    /// How long raw events are kept (days).
    #[arg(long, env = "INTAKE_RAW_RETENTION_DAYS", default_value_t = 30)]
    pub raw_retention_days: u64,

    /// The dedupe window (days): a re-delivery received within it of the first is recognised as
    /// a duplicate; inbox rows older than it are deleted.
    #[arg(long, env = "INTAKE_DEDUPE_WINDOW_DAYS", default_value_t = 30)]
    pub dedupe_window_days: u64,

    /// How long published outbox rows are kept (days).
    #[arg(long, env = "INTAKE_OUTBOX_RETENTION_DAYS", default_value_t = 7)]
    pub outbox_retention_days: u64,

    /// How long dead letters are kept once replayed or purged (days); open ones are kept.
    #[arg(long, env = "INTAKE_DEAD_LETTER_RETENTION_DAYS", default_value_t = 30)]
    pub dead_letter_retention_days: u64,

    /// Record the dead-letter queue's messages in Postgres from this worker (any number of
    /// workers may; at least one must).
    #[arg(long, env = "INTAKE_RECORD_DEAD_LETTERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub record_dead_letters: bool,

    /// With deliveries in flight and none settled for this long (seconds), `/readyz` says the
    /// worker is stuck (503), so an orchestrator restarts it.
    #[arg(long, env = "INTAKE_STUCK_AFTER_SECS", default_value_t = 120)]
    pub stuck_after_secs: u64,

    /// Longest wait for in-flight events on shutdown (seconds); the rest is redelivered.
    #[arg(long, env = "INTAKE_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

/// A setting that cannot work, naming its variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}: {reason}")]
pub struct ConfigError {
    /// The environment variable.
    pub variable: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn invalid(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        reason: reason.into(),
    }
}

/// Settings after validation, in the types the worker uses.
#[derive(Debug, Clone)]
pub struct Validated {
    /// Names and retry tiers.
    pub topology: Topology,
    /// Providers consumed.
    pub providers: Vec<Provider>,
    /// The PHI keys.
    pub keys: Keyring,
}

impl WorkerConfig {
    /// Defaults as for a local run.
    pub fn local_defaults() -> WorkerConfig {
        WorkerConfig::parse_from(["intake-worker"])
    }

    /// Checks every setting; the error names the variable to fix.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let topology = self
            .broker
            .topology()
            .map_err(|e| invalid(e.variable, e.problem))?;
        let providers = self
            .providers
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<Provider>()
                    .map_err(|e| invalid("INTAKE_PROVIDERS", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if providers.is_empty() {
            return Err(invalid("INTAKE_PROVIDERS", "name at least one provider"));
        }
        if self.prefetch == 0 {
            return Err(invalid("INTAKE_PREFETCH", "must be at least 1"));
        }
        if self.concurrency == 0 {
            return Err(invalid("INTAKE_CONCURRENCY", "must be at least 1"));
        }
        // Each event of a batch runs under a savepoint, a Postgres subtransaction; past 64 in
        // one transaction every other session's snapshots get slower (the subtransaction cache
        // of a backend overflows).
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(invalid(
                "INTAKE_BATCH_SIZE",
                format!("must be between 1 and {MAX_BATCH_SIZE}"),
            ));
        }
        if self.db_pool_size < self.concurrency + 1 {
            return Err(invalid(
                "INTAKE_DB_POOL_SIZE",
                "must exceed INTAKE_CONCURRENCY (maintenance needs one)",
            ));
        }
        for (variable, value) in [
            ("INTAKE_DB_TIMEOUT_MS", self.db_timeout_ms),
            ("INTAKE_CONFIRM_TIMEOUT_MS", self.confirm_timeout_ms),
            ("INTAKE_SWEEP_INTERVAL_MS", self.sweep_interval_ms),
            ("INTAKE_RAW_RETENTION_DAYS", self.raw_retention_days),
            ("INTAKE_DEDUPE_WINDOW_DAYS", self.dedupe_window_days),
            ("INTAKE_OUTBOX_RETENTION_DAYS", self.outbox_retention_days),
            (
                "INTAKE_DEAD_LETTER_RETENTION_DAYS",
                self.dead_letter_retention_days,
            ),
            ("INTAKE_STUCK_AFTER_SECS", self.stuck_after_secs),
        ] {
            if value == 0 {
                return Err(invalid(variable, "must be positive"));
            }
        }
        if let Err((variable, problem)) = self.database().check() {
            return Err(invalid(variable, problem));
        }
        let keys = self
            .keys
            .keyring()
            .map_err(|e| invalid(e.variable(), e.to_string()))?;
        Ok(Validated {
            topology,
            providers,
            keys,
        })
    }

    /// How long in-flight work may go without progress before `/readyz` fails.
    pub fn stuck_after(&self) -> Duration {
        Duration::from_secs(self.stuck_after_secs)
    }

    /// Deadline of each step of a batch transaction.
    pub fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }

    /// How deliveries are grouped into transactions.
    pub fn batching(&self) -> Batching {
        Batching {
            max_size: self.batch_size,
            linger: Duration::from_millis(self.batch_linger_ms),
            at_once: self.concurrency,
            gather_while_busy: Duration::from_millis(self.batch_gather_ms),
        }
    }

    /// The database variables, as every role reads them.
    pub fn database(&self) -> DatabaseVariables<'_> {
        DatabaseVariables {
            url: &self.database_url,
            pool_size: self.db_pool_size,
            timeout_ms: self.db_timeout_ms,
            statement_timeout_ms: self.db_statement_timeout_ms,
            lock_timeout_ms: self.db_lock_timeout_ms,
        }
    }

    /// The store's settings: pool, client-side and server-side bounds, and the PHI keys.
    pub fn store_config(&self, keys: Keyring) -> StoreConfig {
        self.database().store_config(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys for these tests only.
    fn test_keys() -> KeySettings {
        KeySettings::new(
            "t1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=",
        )
    }

    #[test]
    fn defaults_are_valid_and_secrets_are_hidden() {
        let mut config = WorkerConfig::local_defaults();
        config.database_url = "postgres://intake:db-pass-42@db:5432/intake".into();
        config.keys = KeySettings::default();
        assert_eq!(config.validate().unwrap_err().variable, "INTAKE_ENCRYPTION_KEYS");
        config.keys = test_keys();
        let v = config.validate().expect("valid");
        assert_eq!(v.providers.len(), 5);
        assert_eq!(v.topology.retry_tiers().len(), 6);
        assert_eq!(config.prefetch, 200);
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("guest")
                && !debug.contains("db-pass-42")
                && !debug.contains("postgres://")
                && !debug.contains("AAECAwQF"),
            "{debug}"
        );
        assert!(WorkerConfig::try_parse_from(["intake-worker", "--database-url", "postgres://x"]).is_err());
    }

    #[test]
    fn a_bad_setting_names_its_variable() {
        let mut config = WorkerConfig::local_defaults();
        config.broker.retry_tiers = "5x".into();
        assert_eq!(config.validate().unwrap_err().variable, "INTAKE_RETRY_TIERS");
        let mut config = WorkerConfig::local_defaults();
        config.providers = "spark,nope".into();
        assert_eq!(config.validate().unwrap_err().variable, "INTAKE_PROVIDERS");
        let mut config = WorkerConfig::local_defaults();
        config.db_pool_size = config.concurrency;
        assert_eq!(config.validate().unwrap_err().variable, "INTAKE_DB_POOL_SIZE");
        let mut config = WorkerConfig::local_defaults();
        config.db_statement_timeout_ms = Some(config.db_timeout_ms + 1);
        assert_eq!(
            config.validate().unwrap_err().variable,
            "INTAKE_DB_STATEMENT_TIMEOUT_MS"
        );
        let mut config = WorkerConfig::local_defaults();
        config.db_lock_timeout_ms = Some(0);
        assert_eq!(
            config.validate().unwrap_err().variable,
            "INTAKE_DB_LOCK_TIMEOUT_MS"
        );
        let mut config = WorkerConfig::local_defaults();
        config.dedupe_window_days = 0;
        assert_eq!(
            config.validate().unwrap_err().variable,
            "INTAKE_DEDUPE_WINDOW_DAYS"
        );
        for batch_size in [0, MAX_BATCH_SIZE + 1] {
            let mut config = WorkerConfig::local_defaults();
            config.batch_size = batch_size;
            assert_eq!(config.validate().unwrap_err().variable, "INTAKE_BATCH_SIZE");
        }
    }

    #[test]
    fn batching_holds_enough_deliveries_for_every_transaction_to_fill() {
        let mut config = WorkerConfig::local_defaults();
        config.concurrency = 3;
        config.batch_size = 10;
        config.batch_linger_ms = 7;
        config.batch_gather_ms = 15;
        let batching = config.batching();
        assert_eq!(batching.at_once, 3);
        assert_eq!(batching.max_size, 10);
        assert_eq!(batching.linger, Duration::from_millis(7));
        assert_eq!(batching.gather_while_busy, Duration::from_millis(15));
        assert_eq!(batching.deliveries_in_flight(), 30);
    }

    #[test]
    fn server_side_bounds_default_a_little_under_the_client_timeout() {
        let mut config = WorkerConfig::local_defaults();
        let keys = test_keys().keyring().expect("keys");
        let store = config.store_config(keys.clone());
        assert_eq!(store.connect_timeout, Duration::from_secs(10));
        assert_eq!(store.statement_timeout, Some(Duration::from_secs(9)));
        assert_eq!(store.lock_timeout, Some(Duration::from_secs(8)));
        config.db_statement_timeout_ms = Some(5000);
        config.db_lock_timeout_ms = Some(1000);
        let store = config.store_config(keys);
        assert_eq!(store.statement_timeout, Some(Duration::from_secs(5)));
        assert_eq!(store.lock_timeout, Some(Duration::from_secs(1)));
    }
}
