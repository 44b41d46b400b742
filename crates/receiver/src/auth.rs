//! Sender authentication. Every comparison of a presented credential with a secret runs in
//! constant time; a failure never says which check or which part failed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Constant-time comparison of a presented credential with a secret. Both sides are hashed
/// first so neither the content nor the length of the secret leaks through timing.
pub fn matches(secret: &SecretString, presented: &[u8]) -> bool {
    let a = Sha256::digest(secret.expose_secret().as_bytes());
    let b = Sha256::digest(presented);
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// How an HMAC signature header is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Lowercase or uppercase hex (the default).
    #[default]
    Hex,
    /// Standard base64.
    Base64,
}

/// The Standard Webhooks verifiers of one endpoint (one per configured secret).
pub struct StandardVerifiers(Vec<standardwebhooks::Webhook>);

impl std::fmt::Debug for StandardVerifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StandardVerifiers({} secrets)", self.0.len())
    }
}

/// One authentication check of an endpoint.
#[derive(Debug)]
pub enum AuthCheck {
    /// Header (lowercase name) equals the token.
    HeaderToken { header: String, token: SecretString },
    /// The URL's token segment equals the token.
    PathToken(SecretString),
    /// `Authorization: Bearer <token>`.
    Bearer(SecretString),
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        username: SecretString,
        password: SecretString,
    },
    /// HMAC-SHA256 of the raw body in a header (lowercase name).
    HmacSha256 {
        header: String,
        key: SecretString,
        encoding: SignatureEncoding,
    },
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), 5 min tolerance.
    StandardWebhooks(StandardVerifiers),
}

/// What a request presents; the body only once it has been read. Its `Debug` shows neither
/// credentials nor body bytes.
#[derive(Clone, Copy)]
pub struct Presented<'a> {
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The URL's token segment, if any.
    pub path_token: Option<&'a str>,
    /// The raw body (`None` before it has been read).
    pub body: Option<&'a [u8]>,
}

impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("headers", &self.headers.len())
            .field("path_token", &self.path_token.map(|_| "<redacted>"))
            .field("body_len", &self.body.map(<[u8]>::len))
            .finish()
    }
}

impl AuthCheck {
    /// Builds the Standard Webhooks check from space-separated `whsec_` secrets.
    /// `None` when a secret is not valid base64 (after its `whsec_` prefix) or none is given.
    pub fn standard_webhooks(secrets: &str) -> Option<AuthCheck> {
        let verifiers = secrets
            .split_whitespace()
            .map(|s| standardwebhooks::Webhook::new(s).ok())
            .collect::<Option<Vec<_>>>()?;
        (!verifiers.is_empty()).then_some(AuthCheck::StandardWebhooks(StandardVerifiers(verifiers)))
    }

    /// Whether this check needs the body (and so runs after it has been read).
    pub fn needs_body(&self) -> bool {
        matches!(
            self,
            AuthCheck::HmacSha256 { .. } | AuthCheck::StandardWebhooks(_)
        )
    }

    /// Runs the check. A body check with no body yet fails.
    pub fn verify(&self, req: Presented<'_>) -> bool {
        match self {
            AuthCheck::HeaderToken { header, token } => req
                .headers
                .get(header.as_str())
                .is_some_and(|v| matches(token, v.as_bytes())),
            AuthCheck::PathToken(token) => req.path_token.is_some_and(|t| matches(token, t.as_bytes())),
            AuthCheck::Bearer(token) => {
                authorization(req.headers, "bearer").is_some_and(|t| matches(token, t.as_bytes()))
            }
            AuthCheck::Basic { username, password } => {
                let Some(encoded) = authorization(req.headers, "basic") else {
                    return false;
                };
                let Ok(decoded) = BASE64.decode(encoded.trim()) else {
                    return false;
                };
                let Some(colon) = decoded.iter().position(|b| *b == b':') else {
                    return false;
                };
                // Evaluate both halves so the time taken does not tell which one was wrong.
                let user_ok = matches(username, &decoded[..colon]);
                let pass_ok = matches(password, &decoded[colon + 1..]);
                user_ok & pass_ok
            }
            AuthCheck::HmacSha256 {
                header,
                key,
                encoding,
            } => {
                let (Some(body), Some(value)) = (req.body, req.headers.get(header.as_str())) else {
                    return false;
                };
                let Ok(value) = value.to_str() else { return false };
                let value = value.trim();
                let value = value.strip_prefix("sha256=").unwrap_or(value);
                let signature = match encoding {
                    SignatureEncoding::Hex => hex::decode(value).ok(),
                    SignatureEncoding::Base64 => BASE64.decode(value).ok(),
                };
                let Some(signature) = signature else { return false };
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()) else {
                    return false;
                };
                mac.update(body);
                // verify_slice compares in constant time.
                mac.verify_slice(&signature).is_ok()
            }
            AuthCheck::StandardWebhooks(verifiers) => {
                let Some(body) = req.body else { return false };
                // The crate computes `now - timestamp` unchecked: a timestamp near i64::MIN
                // overflows (a panic where overflow is checked, a timestamp taken as fresh where
                // it is not). Refuse a timestamp outside the tolerance before it looks.
                if !fresh_timestamp(req.headers) {
                    return false;
                }
                // The crate parses every space-separated signature and checks the timestamp
                // tolerance (5 min); any configured secret may have produced a signature.
                verifiers.0.iter().any(|v| v.verify(body, req.headers).is_ok())
            }
        }
    }
}

/// How far a Standard Webhooks timestamp may be from our clock, either way (the spec's 5 min,
/// as the `standardwebhooks` crate checks it).
const STANDARD_TOLERANCE_SECS: u64 = 5 * 60;

/// Whether `webhook-timestamp` holds integer seconds within the tolerance of now.
fn fresh_timestamp(headers: &HeaderMap) -> bool {
    let Some(timestamp) = headers
        .get("webhook-timestamp")
        .and_then(|v| v.to_str().ok()?.parse::<i64>().ok())
    else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    now.abs_diff(timestamp) <= STANDARD_TOLERANCE_SECS
}

/// The credentials of an `Authorization` header with the given scheme (case-insensitive).
fn authorization<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Whether every check passes (all are evaluated, whatever fails first).
pub fn all_pass<'c>(checks: impl IntoIterator<Item = &'c AuthCheck>, req: Presented<'_>) -> bool {
    checks.into_iter().fold(true, |ok, check| check.verify(req) & ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    fn hmac_hex(key: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("key");
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn hmac_accepts_hex_with_or_without_prefix_and_rejects_tampering() {
        let check = AuthCheck::HmacSha256 {
            header: "x-sig".into(),
            key: SecretString::from("k"),
            encoding: SignatureEncoding::Hex,
        };
        let body = br#"{"a":1}"#;
        let sig = hmac_hex("k", body);
        for value in [sig.clone(), format!("sha256={sig}"), sig.to_uppercase()] {
            let h = headers(&[("x-sig", &value)]);
            assert!(
                check.verify(Presented {
                    headers: &h,
                    path_token: None,
                    body: Some(body)
                }),
                "{value}"
            );
        }
        let h = headers(&[("x-sig", &sig)]);
        assert!(!check.verify(Presented {
            headers: &h,
            path_token: None,
            body: Some(br#"{"a":2}"#)
        }));
        assert!(!check.verify(Presented {
            headers: &h,
            path_token: None,
            body: None
        }));
    }

    #[test]
    fn standard_webhooks_refuses_extreme_timestamps_without_overflow() {
        let check = AuthCheck::standard_webhooks("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = br#"{"type":"t"}"#;
        let sign = |ts: i64| {
            standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .expect("secret")
                .sign("msg_1", ts, body)
                .expect("sign")
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        for (ts, ok) in [
            (now, true),
            (now - 200, true),
            (now + 200, true),
            (now - 400, false),
            (now + 400, false),
            (i64::MIN, false),
            (i64::MIN + 1, false),
            (i64::MAX, false),
        ] {
            let h = headers(&[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", &ts.to_string()),
                ("webhook-signature", &sign(ts)),
            ]);
            let presented = Presented {
                headers: &h,
                path_token: None,
                body: Some(body),
            };
            assert_eq!(check.verify(presented), ok, "timestamp {ts}");
        }
    }

    #[test]
    fn basic_needs_both_parts_right() {
        let check = AuthCheck::Basic {
            username: SecretString::from("u"),
            password: SecretString::from("p"),
        };
        let ok = headers(&[("authorization", &format!("Basic {}", BASE64.encode("u:p")))]);
        let bad = headers(&[("authorization", &format!("Basic {}", BASE64.encode("u:x")))]);
        let bearer = headers(&[("authorization", "Bearer p")]);
        assert!(check.verify(Presented {
            headers: &ok,
            path_token: None,
            body: None
        }));
        assert!(!check.verify(Presented {
            headers: &bad,
            path_token: None,
            body: None
        }));
        assert!(!check.verify(Presented {
            headers: &bearer,
            path_token: None,
            body: None
        }));
    }

    #[test]
    fn secrets_and_bodies_never_show_in_debug() {
        let s = SecretString::from("hunter2");
        assert!(matches(&s, b"hunter2"));
        assert!(!matches(&s, b"hunter"));
        let check = AuthCheck::Basic {
            username: SecretString::from("spark-user"),
            password: s,
        };
        let shown = format!("{check:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("spark-user"),
            "{shown}"
        );
        let h = headers(&[("authorization", "Bearer hunter2")]);
        let presented = Presented {
            headers: &h,
            path_token: Some("path-secret"),
            body: Some(br#"{"ssn":"078-05-1120"}"#),
        };
        let shown = format!("{presented:?}");
        for leak in ["hunter2", "path-secret", "078-05-1120"] {
            assert!(!shown.contains(leak), "{shown}");
        }
    }
}
