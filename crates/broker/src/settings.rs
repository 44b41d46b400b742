//! The broker settings every intake process shares (`INTAKE_AMQP_URL`, `INTAKE_QUEUE_PREFIX`,
//! `INTAKE_RETRY_TIERS`, `INTAKE_QUEUE_EXPIRES_SECS`), declared once and flattened into each
//! binary's configuration, and the validated [`Topology`] they describe.
//!
//! The AMQP URL may hold a password, so it is read from the environment only — never a
//! command-line flag, which would show in `ps` — and kept as a [`SecretString`].

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::Topology;
use crate::topology::parse_retry_tiers;

/// `INTAKE_AMQP_URL` when unset: a local RabbitMQ with its default user.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A secret from environment variable `var`; `None` when unset or empty. Secrets are never
/// command-line flags: a flag's value is visible to every user in `ps`.
pub fn secret_from_env(var: &str) -> Option<SecretString> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(SecretString::from)
}

/// Where RabbitMQ is and how our names on it look. Flatten into a binary's config with
/// `#[command(flatten)]`.
#[derive(Clone, Debug, clap::Args)]
pub struct BrokerSettings {
    /// AMQP URL of RabbitMQ, from `INTAKE_AMQP_URL` only (holds a password: never logged, no flag).
    #[arg(skip = secret_from_env("INTAKE_AMQP_URL").unwrap_or_else(|| DEFAULT_AMQP_URL.into()))]
    pub amqp_url: SecretString,

    /// Prefix of every exchange and queue name.
    #[arg(long, env = "INTAKE_QUEUE_PREFIX", default_value = "intake")]
    pub queue_prefix: String,

    /// Retry delay tiers (comma-separated, units ms/s/m/h); after the last, dead letter.
    #[arg(long, env = "INTAKE_RETRY_TIERS", default_value = "5s,30s,2m,10m,1h,6h")]
    pub retry_tiers: String,

    /// Delete queues unused for this many seconds (`x-expires`). Only for tests and ephemeral
    /// environments; unset (never) in production. Every process of a prefix must agree.
    #[arg(long, env = "INTAKE_QUEUE_EXPIRES_SECS")]
    pub queue_expires_secs: Option<u64>,
}

/// A broker setting that is unusable; names the variable, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct InvalidSetting {
    /// The environment variable to fix.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl BrokerSettings {
    /// Checks the settings and builds the topology they describe.
    pub fn topology(&self) -> Result<Topology, InvalidSetting> {
        let invalid = |variable, problem: &str| InvalidSetting {
            variable,
            problem: problem.to_owned(),
        };
        let url = self.amqp_url.expose_secret();
        if !url.starts_with("amqp://") && !url.starts_with("amqps://") {
            return Err(invalid("INTAKE_AMQP_URL", "must start with amqp:// or amqps://"));
        }
        if self.queue_prefix.is_empty() {
            return Err(invalid("INTAKE_QUEUE_PREFIX", "must not be empty"));
        }
        let tiers = parse_retry_tiers(&self.retry_tiers).map_err(|e| invalid("INTAKE_RETRY_TIERS", &e))?;
        if self.queue_expires_secs == Some(0) {
            return Err(invalid("INTAKE_QUEUE_EXPIRES_SECS", "must be positive when set"));
        }
        Ok(Topology::new(self.queue_prefix.clone(), tiers)
            .with_queue_expiry(self.queue_expires_secs.map(Duration::from_secs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BrokerSettings {
        BrokerSettings {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            queue_prefix: "p".into(),
            retry_tiers: "1s,2m".into(),
            queue_expires_secs: None,
        }
    }

    #[test]
    fn valid_settings_give_the_topology_and_errors_name_the_variable() {
        let topology = settings().topology().expect("valid");
        assert_eq!(topology.prefix(), "p");
        assert_eq!(
            topology.retry_tiers(),
            &[Duration::from_secs(1), Duration::from_secs(120)]
        );
        let mut bad = settings();
        bad.retry_tiers = "5x".into();
        assert_eq!(bad.topology().expect_err("tiers").variable, "INTAKE_RETRY_TIERS");
        let mut bad = settings();
        bad.amqp_url = "http://x".into();
        assert_eq!(bad.topology().expect_err("url").variable, "INTAKE_AMQP_URL");
        assert!(!format!("{:?}", settings()).contains("guest"));
    }

    #[test]
    fn the_amqp_url_is_no_command_line_flag() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            broker: BrokerSettings,
        }
        use clap::Parser;
        assert!(Cli::try_parse_from(["x", "--amqp-url", "amqp://u:p@h/%2f"]).is_err());
        let cli = Cli::try_parse_from(["x", "--queue-prefix", "q"]).expect("parse");
        assert_eq!(cli.broker.queue_prefix, "q");
    }
}
