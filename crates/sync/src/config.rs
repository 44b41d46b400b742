//! The sync process's configuration, read from environment variables with defaults for a local
//! run, validated at start (fail fast, naming the variable). Secrets (`INTAKE_DATABASE_URL`,
//! `HEALTHSHERPA_API_KEY`, `HEALTHSHERPA_CLIENT_SECRET`) come from the environment only — no
//! flag, which would show in `ps` — and are `secrecy` secrets, hidden from `Debug`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use intake_broker::BrokerSettings;
use intake_broker::Topology;
use intake_broker::settings::secret_from_env;
use intake_healthsherpa::{Auth, HealthSherpaConfig};
use intake_store::StoreConfig;
use intake_store::{DatabaseVariables, database_url_from_env};
use secrecy::SecretString;

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
#[derive(Clone, Debug, Parser)]
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

    /// Postgres URL, from `INTAKE_DATABASE_URL` only (may hold a password: never logged, no flag).
    #[arg(skip = database_url_from_env())]
    pub database_url: SecretString,
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
    /// v1 partner API key, from `HEALTHSHERPA_API_KEY` only (secret: no flag).
    #[arg(skip = secret_from_env("HEALTHSHERPA_API_KEY"))]
    pub healthsherpa_api_key: Option<SecretString>,
    /// v1: agent email for searches when the contact names no agent.
    #[arg(long, env = "HEALTHSHERPA_AGENT_EMAIL")]
    pub healthsherpa_agent_email: Option<String>,
    /// v2 OAuth client id.
    #[arg(long, env = "HEALTHSHERPA_CLIENT_ID", default_value = "")]
    pub healthsherpa_client_id: String,
    /// v2 OAuth client secret, from `HEALTHSHERPA_CLIENT_SECRET` only (secret: no flag).
    #[arg(skip = secret_from_env("HEALTHSHERPA_CLIENT_SECRET"))]
    pub healthsherpa_client_secret: Option<SecretString>,
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

    /// The store's settings: pool, client-side and server-side bounds.
    pub fn store_config(&self) -> StoreConfig {
        self.database().store_config()
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
        if let Err((variable, problem)) = self.database().check() {
            return Err(invalid(variable, problem));
        }
        let auth = match self.healthsherpa_auth_mode.as_str() {
            "api_key" => Auth::ApiKey {
                api_key: self.healthsherpa_api_key.clone().unwrap_or_default(),
                default_agent_email: self.healthsherpa_agent_email.clone().filter(|e| !e.is_empty()),
            },
            "oauth" => Auth::OAuth {
                client_id: self.healthsherpa_client_id.clone(),
                client_secret: self.healthsherpa_client_secret.clone().unwrap_or_default(),
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

    /// Parsed from `args`, with the secrets (environment only) unset whatever the environment.
    fn parse(args: &[&str]) -> SyncConfig {
        let mut c = SyncConfig::try_parse_from(std::iter::once("intake-sync").chain(args.iter().copied()))
            .expect("parse");
        c.healthsherpa_api_key = None;
        c.healthsherpa_client_secret = None;
        c
    }

    #[test]
    fn validation_names_the_variable() {
        let e = parse(&[]).validate().expect_err("no API key");
        assert_eq!(e.variable, "HEALTHSHERPA_API_KEY");
        let mut c = parse(&[]);
        c.healthsherpa_api_key = Some("k".into());
        assert!(c.validate().is_ok());
        let e = parse(&["--healthsherpa-auth-mode", "basic"])
            .validate()
            .expect_err("mode");
        assert_eq!(e.variable, "HEALTHSHERPA_AUTH_MODE");
        let mut c = parse(&["--db-pool-size", "3"]);
        c.healthsherpa_api_key = Some("k".into());
        assert_eq!(c.validate().expect_err("pool").variable, "INTAKE_DB_POOL_SIZE");
        let mut c = parse(&["--db-lock-timeout-ms", "20000"]);
        c.healthsherpa_api_key = Some("k".into());
        let e = c.validate().expect_err("lock timeout above the client's");
        assert_eq!(e.variable, "INTAKE_DB_LOCK_TIMEOUT_MS");
        let mut c = parse(&[
            "--healthsherpa-auth-mode",
            "oauth",
            "--healthsherpa-client-id",
            "id",
        ]);
        assert_eq!(
            c.validate().expect_err("no client secret").variable,
            "HEALTHSHERPA_CLIENT_ID / HEALTHSHERPA_CLIENT_SECRET"
        );
        c.healthsherpa_client_secret = Some("cs".into());
        assert!(c.validate().is_ok());
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
    fn secrets_are_no_flags() {
        for flag in [
            "--healthsherpa-api-key",
            "--healthsherpa-client-secret",
            "--database-url",
            "--amqp-url",
        ] {
            assert!(
                SyncConfig::try_parse_from(["intake-sync", flag, "x"]).is_err(),
                "{flag} must not exist"
            );
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = parse(&[]);
        c.healthsherpa_api_key = Some("very-secret-key".into());
        c.healthsherpa_client_secret = Some("cs-123".into());
        c.database_url = "postgres://intake:db-pass-42@db/intake".into();
        c.broker.amqp_url = "amqp://intake:amqp-pass-42@rabbit/%2f".into();
        let shown = format!("{c:?}");
        for secret in ["very-secret-key", "cs-123", "db-pass-42", "amqp-pass-42"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let valid = c.validate().expect("valid");
        let shown = format!("{valid:?}");
        assert!(!shown.contains("very-secret-key"), "{shown}");
    }
}
