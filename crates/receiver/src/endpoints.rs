//! Endpoints as the operator declares them (TOML) and as the receiver uses them (secrets
//! resolved from the environment, checks ready to run).
//!
//! ```toml
//! [[endpoints]]
//! name = "sparkloop"                 # POST /webhooks/sparkloop
//! provider = "sparkloop"
//! auth = [{ kind = "header_token", header = "SparkLoop-Token", secret_env = "SPARKLOOP_TOKEN" }]
//! rate_limit = "100/s"               # optional; "off" exempts it from INTAKE_RATE_LIMIT
//! ```

use std::collections::HashMap;

use intake_core::Provider;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::auth::{AuthCheck, SignatureEncoding};
use crate::limits::RateSetting;

/// The TOML document: a list of endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsFile {
    /// The declared endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
}

/// One endpoint as declared.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// URL path segment: `POST /webhooks/{name}`.
    pub name: String,
    /// Which provider's payloads arrive here (decides queue and decoder).
    pub provider: Provider,
    /// Checks that must all pass. At least one.
    pub auth: Vec<AuthSpec>,
    /// Requests per period beyond which it answers 429 (`"100/s"`, `"600/m"`), or `"off"`.
    /// Unset: `INTAKE_RATE_LIMIT`, if set.
    #[serde(default)]
    pub rate_limit: Option<RateSetting>,
}

/// One authentication check as declared. Secrets are named by environment variable, never
/// written in the file.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSpec {
    /// A header must equal a secret token (SparkLoop's `SparkLoop-Token`, the default header).
    HeaderToken {
        #[serde(default = "default_token_header")]
        header: String,
        secret_env: String,
    },
    /// The URL must be `POST /webhooks/{name}/{token}` with this token (Spark contact sync).
    PathToken { secret_env: String },
    /// `Authorization: Bearer <token>`.
    Bearer { secret_env: String },
    /// `Authorization: Basic` with this username and the password from `password_env`.
    Basic { username: String, password_env: String },
    /// HMAC-SHA256 of the raw body in `header`, hex or base64, optional `sha256=` prefix.
    HmacSha256 {
        header: String,
        secret_env: String,
        #[serde(default)]
        encoding: SignatureEncoding,
    },
    /// Standard Webhooks signature; the variable may hold several space-separated `whsec_`
    /// secrets (key rotation): a signature by any of them is accepted.
    StandardWebhooks { secret_env: String },
}

fn default_token_header() -> String {
    "SparkLoop-Token".to_owned()
}

/// A configured endpoint, ready to serve.
#[derive(Debug)]
pub struct Endpoint {
    /// The path segment.
    pub name: String,
    /// The provider its payloads belong to.
    pub provider: Provider,
    /// Checks that must all pass.
    pub checks: Vec<AuthCheck>,
    /// Its own rate limit, if declared (else the receiver's default applies).
    pub rate_limit: Option<RateSetting>,
}

impl Endpoint {
    /// Whether the URL must carry a token segment.
    pub fn wants_path_token(&self) -> bool {
        self.checks.iter().any(|c| matches!(c, AuthCheck::PathToken(_)))
    }
}

/// Why the endpoint configuration is unusable. Names variables and endpoints, never values.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML could not be read or parsed.
    #[error("endpoint configuration: {0}")]
    Parse(String),
    /// No endpoint is configured at all.
    #[error("no endpoints configured (set INTAKE_ENDPOINTS_FILE or INTAKE_ENDPOINTS)")]
    NoEndpoints,
    /// A name is not a plain URL path segment.
    #[error("endpoint name {0:?} must be 1-64 characters of a-z, 0-9, '-' or '_'")]
    BadName(String),
    /// Two endpoints share a name.
    #[error("endpoint name {0:?} is declared twice")]
    Duplicate(String),
    /// An endpoint has no authentication.
    #[error("endpoint {0:?} has no auth check; every endpoint must authenticate its sender")]
    NoAuth(String),
    /// A secret's environment variable is unset or empty.
    #[error("endpoint {endpoint:?}: environment variable {var} is not set")]
    MissingSecret { endpoint: String, var: String },
    /// A secret is present but unusable (e.g. not a valid whsec_ key).
    #[error("endpoint {endpoint:?}: environment variable {var} does not hold a valid secret")]
    BadSecret { endpoint: String, var: String },
    /// A `standard` endpoint must check Standard Webhooks signatures.
    #[error("endpoint {0:?} with provider standard needs a standard_webhooks auth check")]
    StandardWithoutSignature(String),
}

/// Parses endpoint TOML.
pub fn parse(toml_text: &str) -> Result<Vec<EndpointSpec>, ConfigError> {
    toml::from_str::<EndpointsFile>(toml_text)
        .map(|f| f.endpoints)
        .map_err(|e| ConfigError::Parse(e.to_string()))
}

/// Resolves specs into endpoints, reading secrets through `env` (normally `std::env::var`).
pub fn resolve(
    specs: Vec<EndpointSpec>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HashMap<String, Endpoint>, ConfigError> {
    if specs.is_empty() {
        return Err(ConfigError::NoEndpoints);
    }
    let mut endpoints = HashMap::new();
    for spec in specs {
        let valid = !spec.name.is_empty()
            && spec.name.len() <= 64
            && spec
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(ConfigError::BadName(spec.name));
        }
        if spec.auth.is_empty() {
            return Err(ConfigError::NoAuth(spec.name));
        }
        if spec.provider == Provider::Standard
            && !spec
                .auth
                .iter()
                .any(|a| matches!(a, AuthSpec::StandardWebhooks { .. }))
        {
            return Err(ConfigError::StandardWithoutSignature(spec.name));
        }
        let secret = |var: &str| -> Result<SecretString, ConfigError> {
            match env(var) {
                Some(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => Err(ConfigError::MissingSecret {
                    endpoint: spec.name.clone(),
                    var: var.to_owned(),
                }),
            }
        };
        let mut checks = Vec::with_capacity(spec.auth.len());
        for auth in &spec.auth {
            let check = match auth {
                AuthSpec::HeaderToken { header, secret_env } => AuthCheck::HeaderToken {
                    header: header.to_ascii_lowercase(),
                    token: secret(secret_env)?,
                },
                AuthSpec::PathToken { secret_env } => AuthCheck::PathToken(secret(secret_env)?),
                AuthSpec::Bearer { secret_env } => AuthCheck::Bearer(secret(secret_env)?),
                AuthSpec::Basic {
                    username,
                    password_env,
                } => AuthCheck::Basic {
                    username: SecretString::from(username.as_str()),
                    password: secret(password_env)?,
                },
                AuthSpec::HmacSha256 {
                    header,
                    secret_env,
                    encoding,
                } => AuthCheck::HmacSha256 {
                    header: header.to_ascii_lowercase(),
                    key: secret(secret_env)?,
                    encoding: *encoding,
                },
                AuthSpec::StandardWebhooks { secret_env } => {
                    AuthCheck::standard_webhooks(secret(secret_env)?.expose_secret()).ok_or_else(|| {
                        ConfigError::BadSecret {
                            endpoint: spec.name.clone(),
                            var: secret_env.clone(),
                        }
                    })?
                }
            };
            checks.push(check);
        }
        if endpoints.contains_key(&spec.name) {
            return Err(ConfigError::Duplicate(spec.name));
        }
        endpoints.insert(
            spec.name.clone(),
            Endpoint {
                name: spec.name,
                provider: spec.provider,
                checks,
                rate_limit: spec.rate_limit,
            },
        );
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        match var {
            "TOKEN" => Some("s3cret".into()),
            "WHSEC" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            _ => None,
        }
    }

    #[test]
    fn resolves_every_auth_kind() {
        let specs = parse(
            r#"
            [[endpoints]]
            name = "spark-a"
            provider = "spark"
            auth = [{ kind = "path_token", secret_env = "TOKEN" }, { kind = "basic", username = "u", password_env = "TOKEN" }]
            [[endpoints]]
            name = "loop"
            provider = "sparkloop"
            auth = [{ kind = "header_token", secret_env = "TOKEN" }]
            [[endpoints]]
            name = "s360"
            provider = "spark360"
            auth = [{ kind = "hmac_sha256", header = "X-Signature", secret_env = "TOKEN", encoding = "base64" }]
            [[endpoints]]
            name = "hs"
            provider = "healthsherpa"
            auth = [{ kind = "bearer", secret_env = "TOKEN" }]
            [[endpoints]]
            name = "std"
            provider = "standard"
            auth = [{ kind = "standard_webhooks", secret_env = "WHSEC" }]
            "#,
        )
        .expect("parse");
        let endpoints = resolve(specs, &env).expect("resolve");
        assert_eq!(endpoints.len(), 5);
        assert!(endpoints["spark-a"].wants_path_token());
        assert!(
            matches!(&endpoints["loop"].checks[0], AuthCheck::HeaderToken { header, .. } if header == "sparkloop-token")
        );
    }

    #[test]
    fn rejects_unsafe_configurations_naming_the_variable_not_the_value() {
        let missing = parse("[[endpoints]]\nname = \"a\"\nprovider = \"spark\"\nauth = [{ kind = \"bearer\", secret_env = \"NOPE\" }]")
            .expect("parse");
        let err = resolve(missing, &env).expect_err("missing secret");
        assert!(err.to_string().contains("NOPE"));
        let no_auth = parse("[[endpoints]]\nname = \"a\"\nprovider = \"spark\"\nauth = []").expect("parse");
        assert!(matches!(resolve(no_auth, &env), Err(ConfigError::NoAuth(_))));
        let bad_name = parse("[[endpoints]]\nname = \"A/b\"\nprovider = \"spark\"\nauth = [{ kind = \"bearer\", secret_env = \"TOKEN\" }]")
            .expect("parse");
        assert!(matches!(resolve(bad_name, &env), Err(ConfigError::BadName(_))));
        let std_no_sig = parse("[[endpoints]]\nname = \"a\"\nprovider = \"standard\"\nauth = [{ kind = \"bearer\", secret_env = \"TOKEN\" }]")
            .expect("parse");
        assert!(matches!(
            resolve(std_no_sig, &env),
            Err(ConfigError::StandardWithoutSignature(_))
        ));
        assert!(matches!(resolve(vec![], &env), Err(ConfigError::NoEndpoints)));
        assert!(parse("[[endpoints]]\nname = \"a\"\nprovider = \"nope\"\nauth = []").is_err());
    }

    #[test]
    fn rate_limits_are_declared_per_endpoint() {
        let toml = |rate: &str| {
            format!(
                "[[endpoints]]\nname = \"a\"\nprovider = \"spark\"\nauth = [{{ kind = \"bearer\", secret_env = \"TOKEN\" }}]\n{rate}"
            )
        };
        let endpoint = |rate: &str| resolve(parse(&toml(rate)).expect("parse"), &env).expect("resolve");
        assert_eq!(endpoint("")["a"].rate_limit, None);
        assert_eq!(
            endpoint("rate_limit = \"off\"")["a"].rate_limit,
            Some(RateSetting::Off)
        );
        assert!(matches!(
            endpoint("rate_limit = \"10/m\"")["a"].rate_limit,
            Some(RateSetting::Limit(_))
        ));
        let err = parse(&toml("rate_limit = \"10 per minute\"")).expect_err("bad rate");
        assert!(err.to_string().contains("N/period"), "{err}");
    }
}
