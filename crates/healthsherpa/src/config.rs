//! How the client reaches HealthSherpa: base URL, authentication mode and timeouts. Plain data;
//! the sync binary reads it from the environment. Credentials are `secrecy` secrets, whose
//! `Debug` never shows them.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::HealthSherpaError;

/// The two integration modes of the partner API.
#[derive(Debug, Clone)]
pub enum Auth {
    /// v1: a partner API key sent with every request ([`crate::api::API_KEY_HEADER`]); searches
    /// carry the agent's email, which must match the agent's HealthSherpa account.
    ApiKey {
        /// The partner API key.
        api_key: SecretString,
        /// Agent email used for searches when the contact names no agent of its own.
        default_agent_email: Option<String>,
    },
    /// v2: OAuth client credentials exchanged for a bearer token at
    /// [`crate::api::TOKEN_PATH`]; searches act as the authenticated agent.
    OAuth {
        /// OAuth client id.
        client_id: String,
        /// OAuth client secret.
        client_secret: SecretString,
        /// Scope requested (HealthSherpa names `partner_api_v2`).
        scope: String,
        /// Refresh a token this long before it expires, so a request never carries one that
        /// runs out on the way.
        refresh_before_expiry: Duration,
    },
}

impl Auth {
    /// The API version segment of the paths (`v1` or `v2`).
    pub fn api_version(&self) -> &'static str {
        match self {
            Auth::ApiKey { .. } => "v1",
            Auth::OAuth { .. } => "v2",
        }
    }
}

/// Everything the client needs.
#[derive(Debug, Clone)]
pub struct HealthSherpaConfig {
    /// Base URL without a trailing slash, e.g. `https://www.healthsherpa.com`; every path in
    /// [`crate::api`] is appended to it.
    pub base_url: String,
    /// Authentication mode.
    pub auth: Auth,
    /// Longest wait for a whole request (connect, send, response body); past it the request is
    /// a transient failure.
    pub request_timeout: Duration,
    /// Longest wait for the TCP/TLS connect.
    pub connect_timeout: Duration,
}

impl HealthSherpaConfig {
    /// A config with default timeouts (10 s per request, 5 s to connect).
    pub fn new(base_url: impl Into<String>, auth: Auth) -> HealthSherpaConfig {
        HealthSherpaConfig {
            base_url: base_url.into(),
            auth,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Checks the config once at start, naming what is wrong.
    pub fn validate(&self) -> Result<(), HealthSherpaError> {
        let url = &self.base_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(HealthSherpaError::Config(format!(
                "base URL must start with http:// or https://, got {url:?}"
            )));
        }
        match &self.auth {
            Auth::ApiKey { api_key, .. } if api_key.expose_secret().is_empty() => {
                Err(HealthSherpaError::Config("v1 API key is empty".into()))
            }
            Auth::OAuth {
                client_id,
                client_secret,
                ..
            } if client_id.is_empty() || client_secret.expose_secret().is_empty() => Err(
                HealthSherpaError::Config("v2 OAuth client id or secret is empty".into()),
            ),
            _ => Ok(()),
        }
    }

    /// The base URL with any trailing slash removed.
    pub(crate) fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let config = HealthSherpaConfig::new(
            "http://x",
            Auth::OAuth {
                client_id: "client".into(),
                client_secret: SecretString::from("s3cr3t-value"),
                scope: "partner_api_v2".into(),
                refresh_before_expiry: Duration::from_secs(60),
            },
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        let v1 = Auth::ApiKey {
            api_key: SecretString::from("key-123456"),
            default_agent_email: None,
        };
        assert!(!format!("{v1:?}").contains("key-123456"));
    }

    #[test]
    fn validation_names_the_problem() {
        let key = Auth::ApiKey {
            api_key: SecretString::from("k"),
            default_agent_email: None,
        };
        assert!(
            HealthSherpaConfig::new("ftp://x", key.clone())
                .validate()
                .is_err()
        );
        assert!(HealthSherpaConfig::new("https://x/", key).validate().is_ok());
        let empty = Auth::ApiKey {
            api_key: SecretString::from(""),
            default_agent_email: None,
        };
        assert!(HealthSherpaConfig::new("https://x", empty).validate().is_err());
    }
}
