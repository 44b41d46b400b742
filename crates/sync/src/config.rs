//! The sync process's configuration, read from environment variables with defaults for a local
//! run, validated at start (fail fast, naming the variable). Secrets are hidden from `Debug`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use intake_broker::BrokerSettings;
use intake_broker::Topology;
use intake_healthsherpa::{Auth, HealthSherpaConfig, Secret};
use intake_store::StoreConfig;

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn invalid(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

/// Sync settings. Every field can be set by the environment variable named in `env`.
#[derive(Clone, Parser)]
#[command(
    name = "intake-sync",
    about = "HealthSherpa CRM sync: outbox relay and sync worker"
)]
pub struct SyncConfig {
    /// Address of the `/metrics`, `/healthz`, `/readyz` server.
    #[arg(long, env = "INTAKE_LISTEN_ADDR", default_value = "0.0.0.0:9092")]
    pub listen_addr: SocketAddr,
    /// RabbitMQ and naming settings shared by every intake process.
    #[command(flatten)]
    pub broker: BrokerSettings,

    /// Postgres URL (may hold a password: never logged).
    #[arg(
        long,
        env = "INTAKE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/intake",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Unacked sync messages the broker may push.
    #[arg(long, env = "INTAKE_SYNC_PREFETCH", default_value_t = 50)]
    pub prefetch: u16,
    /// Sync messages handled at once (each holds a Postgres connection for its contact lock).
    #[arg(long, env = "INTAKE_SYNC_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Postgres connections (at least the concurrency plus 2, for the relay).
    #[arg(long, env = "INTAKE_DB_POOL_SIZE", default_value_t = 12)]
    pub db_pool_size: usize,
    /// Longest wait to connect to Postgres or get a pooled connection (milliseconds).
    #[arg(long, env = "INTAKE_DB_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_timeout_ms: u64,
    /// Server-side bound on one statement (Postgres `statement_timeout`, milliseconds); unset:
    /// 90 % of INTAKE_DB_TIMEOUT_MS.
    #[arg(long, env = "INTAKE_DB_STATEMENT_TIMEOUT_MS")]
    pub db_statement_timeout_ms: Option<u64>,
    /// Server-side bound on one lock wait, the per-contact sync lock included (Postgres
    /// `lock_timeout`, milliseconds); past it the message is retried. Unset: 80 % of
    /// INTAKE_DB_TIMEOUT_MS.
    #[arg(long, env = "INTAKE_DB_LOCK_TIMEOUT_MS")]
    pub db_lock_timeout_ms: Option<u64>,
    /// Longest wait for RabbitMQ's confirm of a publish (milliseconds).
    #[arg(long, env = "INTAKE_CONFIRM_TIMEOUT_MS", default_value_t = 5000)]
    pub confirm_timeout_ms: u64,
    /// Whether this process also runs the outbox relay (any number of relays may run).
    #[arg(long, env = "INTAKE_RELAY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay_enabled: bool,
    /// Pause between outbox polls once it is drained (milliseconds).
    #[arg(long, env = "INTAKE_RELAY_INTERVAL_MS", default_value_t = 200)]
    pub relay_interval_ms: u64,
    /// Outbox rows claimed per relay transaction.
    #[arg(long, env = "INTAKE_RELAY_BATCH", default_value_t = 100)]
    pub relay_batch: i64,
    /// Longest wait for in-flight syncs at shutdown (seconds); unfinished ones are redelivered.
    #[arg(long, env = "INTAKE_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// HealthSherpa base URL (paths of `intake_healthsherpa::api` are appended).
    #[arg(long, env = "HEALTHSHERPA_BASE_URL", default_value = "http://127.0.0.1:8089")]
    pub healthsherpa_base_url: String,
    /// `api_key` (v1, API key + agent email) or `oauth` (v2, client credentials).
    #[arg(long, env = "HEALTHSHERPA_AUTH_MODE", default_value = "api_key")]
    pub healthsherpa_auth_mode: String,
    /// v1 partner API key (secret).
    #[arg(
        long,
        env = "HEALTHSHERPA_API_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub healthsherpa_api_key: String,
    /// v1: agent email for searches when the contact names no agent.
    #[arg(long, env = "HEALTHSHERPA_AGENT_EMAIL")]
    pub healthsherpa_agent_email: Option<String>,
    /// v2 OAuth client id.
    #[arg(long, env = "HEALTHSHERPA_CLIENT_ID", default_value = "")]
    pub healthsherpa_client_id: String,
    /// v2 OAuth client secret (secret).
    #[arg(
        long,
        env = "HEALTHSHERPA_CLIENT_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub healthsherpa_client_secret: String,
    /// v2 OAuth scope.
    #[arg(long, env = "HEALTHSHERPA_SCOPE", default_value = "partner_api_v2")]
    pub healthsherpa_scope: String,
    /// v2: refresh the token this many seconds before it expires.
    #[arg(long, env = "HEALTHSHERPA_TOKEN_REFRESH_SECS", default_value_t = 60)]
    pub healthsherpa_token_refresh_secs: u64,
    /// Longest HealthSherpa request (milliseconds); past it, a transient failure.
    #[arg(long, env = "HEALTHSHERPA_TIMEOUT_MS", default_value_t = 10_000)]
    pub healthsherpa_timeout_ms: u64,
}

impl std::fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncConfig")
            .field("listen_addr", &self.listen_addr)
            .field("broker", &self.broker)
            .field("concurrency", &self.concurrency)
            .field("relay_enabled", &self.relay_enabled)
            .field("healthsherpa_base_url", &self.healthsherpa_base_url)
            .field("healthsherpa_auth_mode", &self.healthsherpa_auth_mode)
            .finish_non_exhaustive()
    }
}

/// What validation derives.
#[derive(Debug, Clone)]
pub struct Valid {
    /// Queue names and tiers.
    pub topology: Topology,
    /// The HealthSherpa client's config.
    pub healthsherpa: HealthSherpaConfig,
}

impl SyncConfig {
    /// The defaults (overridden by any `INTAKE_*` / `HEALTHSHERPA_*` variable that is set), for
    /// tests and local runs that then adjust fields.
    pub fn local_defaults() -> SyncConfig {
        SyncConfig::parse_from(["intake-sync"])
    }

    /// The store's settings: pool, client-side and server-side bounds.
    pub fn store_config(&self) -> StoreConfig {
        let mut store = StoreConfig::new(
            self.database_url.clone(),
            self.db_pool_size,
            Duration::from_millis(self.db_timeout_ms),
        );
        if let Some(ms) = self.db_statement_timeout_ms {
            store.statement_timeout = Some(Duration::from_millis(ms));
        }
        if let Some(ms) = self.db_lock_timeout_ms {
            store.lock_timeout = Some(Duration::from_millis(ms));
        }
        store
    }

    /// Checks every setting, naming the first variable that is wrong.
    pub fn validate(&self) -> Result<Valid, ConfigError> {
        let topology = self
            .broker
            .topology()
            .map_err(|e| invalid(e.variable, e.problem))?;
        if self.db_pool_size < self.concurrency + 2 {
            return Err(invalid(
                "INTAKE_DB_POOL_SIZE",
                "must be at least INTAKE_SYNC_CONCURRENCY + 2",
            ));
        }
        if self.relay_batch < 1 {
            return Err(invalid("INTAKE_RELAY_BATCH", "must be positive"));
        }
        for (variable, value) in [
            ("INTAKE_DB_STATEMENT_TIMEOUT_MS", self.db_statement_timeout_ms),
            ("INTAKE_DB_LOCK_TIMEOUT_MS", self.db_lock_timeout_ms),
        ] {
            match value {
                Some(0) => return Err(invalid(variable, "must be positive")),
                Some(ms) if ms > self.db_timeout_ms => {
                    return Err(invalid(variable, "must not exceed INTAKE_DB_TIMEOUT_MS"));
                }
                _ => {}
            }
        }
        let auth = match self.healthsherpa_auth_mode.as_str() {
            "api_key" => Auth::ApiKey {
                api_key: Secret::new(self.healthsherpa_api_key.clone()),
                default_agent_email: self.healthsherpa_agent_email.clone().filter(|e| !e.is_empty()),
            },
            "oauth" => Auth::OAuth {
                client_id: self.healthsherpa_client_id.clone(),
                client_secret: Secret::new(self.healthsherpa_client_secret.clone()),
                scope: self.healthsherpa_scope.clone(),
                refresh_before_expiry: Duration::from_secs(self.healthsherpa_token_refresh_secs),
            },
            other => {
                return Err(invalid(
                    "HEALTHSHERPA_AUTH_MODE",
                    format!("must be api_key or oauth, got {other:?}"),
                ));
            }
        };
        let mut healthsherpa = HealthSherpaConfig::new(self.healthsherpa_base_url.clone(), auth);
        healthsherpa.request_timeout = Duration::from_millis(self.healthsherpa_timeout_ms);
        healthsherpa.validate().map_err(|e| {
            let variable = match &healthsherpa.auth {
                _ if !healthsherpa.base_url.starts_with("http") => "HEALTHSHERPA_BASE_URL",
                Auth::ApiKey { .. } => "HEALTHSHERPA_API_KEY",
                Auth::OAuth { .. } => "HEALTHSHERPA_CLIENT_ID / HEALTHSHERPA_CLIENT_SECRET",
            };
            invalid(variable, e.to_string())
        })?;
        Ok(Valid {
            topology,
            healthsherpa,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> SyncConfig {
        SyncConfig::try_parse_from(std::iter::once("intake-sync").chain(args.iter().copied())).expect("parse")
    }

    #[test]
    fn validation_names_the_variable() {
        let e = parse(&[]).validate().expect_err("no API key");
        assert_eq!(e.variable, "HEALTHSHERPA_API_KEY");
        assert!(parse(&["--healthsherpa-api-key", "k"]).validate().is_ok());
        let e = parse(&["--healthsherpa-auth-mode", "basic"])
            .validate()
            .expect_err("mode");
        assert_eq!(e.variable, "HEALTHSHERPA_AUTH_MODE");
        let e = parse(&["--healthsherpa-api-key", "k", "--db-pool-size", "3"])
            .validate()
            .expect_err("pool");
        assert_eq!(e.variable, "INTAKE_DB_POOL_SIZE");
        let e = parse(&["--healthsherpa-api-key", "k", "--db-lock-timeout-ms", "20000"])
            .validate()
            .expect_err("lock timeout above the client's");
        assert_eq!(e.variable, "INTAKE_DB_LOCK_TIMEOUT_MS");
    }

    #[test]
    fn server_side_bounds_default_a_little_under_the_client_timeout() {
        let store = parse(&[]).store_config();
        assert_eq!(store.statement_timeout, Some(Duration::from_secs(9)));
        assert_eq!(store.lock_timeout, Some(Duration::from_secs(8)));
        let store =
            parse(&["--db-statement-timeout-ms", "3000", "--db-lock-timeout-ms", "500"]).store_config();
        assert_eq!(store.statement_timeout, Some(Duration::from_secs(3)));
        assert_eq!(store.lock_timeout, Some(Duration::from_millis(500)));
    }

    #[test]
    fn debug_hides_secrets() {
        let c = parse(&[
            "--healthsherpa-api-key",
            "very-secret-key",
            "--healthsherpa-client-secret",
            "cs-123",
        ]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret-key") && !shown.contains("cs-123"));
    }
}
