//! The receiver's configuration, read from environment variables (12-factor) with defaults for
//! a local run, and validated at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use intake_broker::BrokerSettings;

use crate::limits::Rate;

/// Receiver settings. Every field can be set by the environment variable named in `env`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "intake-receiver",
    about = "Webhook receiver: 200 only once RabbitMQ confirmed"
)]
pub struct ReceiverConfig {
    /// Address the HTTP server listens on.
    #[arg(long, env = "INTAKE_LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    /// RabbitMQ and naming settings shared by every intake process.
    #[command(flatten)]
    pub broker: BrokerSettings,

    /// Path of a TOML file declaring endpoints (see README). Optional if `INTAKE_ENDPOINTS` is set.
    #[arg(long, env = "INTAKE_ENDPOINTS_FILE")]
    pub endpoints_file: Option<PathBuf>,

    /// Endpoints as inline TOML (same format as the file); added to those from the file.
    #[arg(long, env = "INTAKE_ENDPOINTS")]
    pub endpoints_toml: Option<String>,

    /// Largest accepted request body in bytes; larger bodies get 413.
    #[arg(long, env = "INTAKE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Longest wait for RabbitMQ's publisher confirm before answering 503 (milliseconds).
    #[arg(long, env = "INTAKE_CONFIRM_TIMEOUT_MS", default_value_t = 5000)]
    pub confirm_timeout_ms: u64,

    /// Longest time a client may take to send its body before getting 408 (milliseconds).
    #[arg(long, env = "INTAKE_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,

    /// `Retry-After` seconds sent with a 503.
    #[arg(long, env = "INTAKE_RETRY_AFTER_SECS", default_value_t = 5)]
    pub retry_after_secs: u64,

    /// Confirm-mode channels publishes are spread over.
    #[arg(long, env = "INTAKE_PUBLISH_CHANNELS", default_value_t = 4)]
    pub publish_channels: usize,

    /// Most connections open at once; further clients wait in the TCP backlog.
    #[arg(long, env = "INTAKE_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,

    /// A connection without a byte in either direction for this long is closed (seconds). Must
    /// exceed the body and confirm timeouts.
    #[arg(long, env = "INTAKE_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Most webhook requests in flight at once (past the header checks, until answered); the
    /// next ones get 503 + Retry-After at once. Bounds memory (each may buffer a whole body)
    /// and the publishes waiting on a slow broker.
    #[arg(long, env = "INTAKE_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,

    /// Rate limit of every endpoint that declares none, as `N/period` (`100/s`, `600/m`,
    /// `50/10s`): beyond it, 429 + Retry-After. Unset: no limit.
    #[arg(long, env = "INTAKE_RATE_LIMIT")]
    pub rate_limit: Option<Rate>,

    /// Longest wait for in-flight requests on shutdown before closing anyway (seconds).
    #[arg(long, env = "INTAKE_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

impl ReceiverConfig {
    /// Defaults as for a local run, with no endpoints (tests fill them in).
    pub fn local_defaults() -> ReceiverConfig {
        ReceiverConfig::parse_from(["intake-receiver"])
    }

    /// The confirm deadline.
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.confirm_timeout_ms)
    }

    /// The idle connection timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The body read deadline.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_holds_no_secret() {
        let mut config = ReceiverConfig::local_defaults();
        config.broker.amqp_url = "amqp://intake:amqp-pass-42@rabbit:5672/%2f".into();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("amqp-pass-42") && !shown.contains("rabbit"),
            "{shown}"
        );
        assert!(shown.contains("max_body_bytes"), "{shown}");
    }

    #[test]
    fn abuse_limits_default_to_a_cap_and_no_rate() {
        let config = ReceiverConfig::local_defaults();
        assert_eq!(config.max_in_flight, 256);
        assert_eq!(config.rate_limit, None);
        let config = ReceiverConfig::try_parse_from(["r", "--rate-limit", "600/m", "--max-in-flight", "8"])
            .expect("valid");
        assert_eq!(config.rate_limit, Some("600/m".parse().expect("rate")));
        assert_eq!(config.max_in_flight, 8);
        let err = ReceiverConfig::try_parse_from(["r", "--rate-limit", "fast"]).expect_err("invalid");
        assert!(err.to_string().contains("rate-limit"), "{err}");
    }
}
