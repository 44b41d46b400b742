//! [`HealthSherpaError`]: what went wrong with a HealthSherpa call, classified the way the sync
//! worker needs it (retry later, honour `Retry-After`, or dead-letter), and the scrubbing that
//! keeps PHI and credentials out of every message it carries.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;

/// Longest message kept from an error body.
const MAX_MESSAGE_LEN: usize = 300;
/// What a scrubbed value is replaced with.
const REDACTED: &str = "[redacted]";

/// A failed HealthSherpa operation.
#[derive(Debug, thiserror::Error)]
pub enum HealthSherpaError {
    /// A required field is missing or blank: permanent, and no request was made.
    #[error("required field {field} is missing")]
    MissingField {
        /// The field's name (`external_id`, `first_name`, `last_name`, or `agent_email` for a
        /// v1 search).
        field: &'static str,
    },
    /// 429: retry after the given delay (from `Retry-After`, seconds or HTTP date) or our own.
    #[error("rate limited by HealthSherpa")]
    RateLimited {
        /// How long HealthSherpa asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// 5xx, 408, timeout or connection error: retry with backoff.
    #[error("transient HealthSherpa failure: {0}")]
    Transient(String),
    /// Any other 4xx (validation, e.g. 422): permanent. `message` is HealthSherpa's, scrubbed of
    /// every value we sent.
    #[error("rejected by HealthSherpa (HTTP {status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// HealthSherpa's explanation, scrubbed.
        message: String,
    },
    /// Credentials refused (401), after the one token refresh in v2 mode.
    #[error("HealthSherpa refused our credentials")]
    Unauthorized,
    /// A 2xx answer we could not read (assumed shape wrong, or a truncated body).
    #[error("unexpected HealthSherpa response: {0}")]
    InvalidResponse(String),
    /// The client's configuration is unusable.
    #[error("HealthSherpa client configuration: {0}")]
    Config(String),
}

impl HealthSherpaError {
    /// Whether the same call may succeed later (retry through the delay tiers) rather than
    /// being dead-lettered at once. Refused credentials are retried: they are fixed by an
    /// operator rotating a secret, after which the queued contacts should still go out.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            HealthSherpaError::RateLimited { .. }
                | HealthSherpaError::Transient(_)
                | HealthSherpaError::Unauthorized
                | HealthSherpaError::InvalidResponse(_)
        )
    }

    /// The delay HealthSherpa asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HealthSherpaError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// A short, bounded label: the `outcome` of the request metric and the dead-letter reason.
    pub fn kind(&self) -> &'static str {
        match self {
            HealthSherpaError::MissingField { .. } => "missing_field",
            HealthSherpaError::RateLimited { .. } => "rate_limited",
            HealthSherpaError::Transient(_) => "transient",
            HealthSherpaError::Rejected { .. } => "rejected",
            HealthSherpaError::Unauthorized => "unauthorized",
            HealthSherpaError::InvalidResponse(_) => "invalid_response",
            HealthSherpaError::Config(_) => "config",
        }
    }

    /// A transport failure. The URL is dropped from the message: a search URL carries the
    /// external id and the agent's email.
    pub(crate) fn transport(e: reqwest::Error) -> HealthSherpaError {
        let what = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        HealthSherpaError::Transient(format!("{what}: {}", e.without_url()))
    }

    /// The error for a non-success, non-401 answer. `sent` are the values we sent, scrubbed from
    /// any message kept.
    pub(crate) fn from_response(
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
        sent: &[String],
    ) -> HealthSherpaError {
        match status.as_u16() {
            429 => HealthSherpaError::RateLimited { retry_after },
            401 => HealthSherpaError::Unauthorized,
            408 => HealthSherpaError::Transient("HTTP 408".into()),
            s @ 500..=599 => HealthSherpaError::Transient(format!("HTTP {s}")),
            s @ 400..=499 => {
                let message = crate::api::error_message(body).unwrap_or_else(|| format!("HTTP {s}"));
                HealthSherpaError::Rejected {
                    status: s,
                    message: scrub(&message, sent),
                }
            }
            s => HealthSherpaError::InvalidResponse(format!("HTTP {s}")),
        }
    }
}

/// `message` with every sent value (of 2+ characters) replaced by `[redacted]`, cut to a bounded
/// length, so an API that echoes input ("email foo@bar is invalid") never puts PHI in a dead
/// letter or a log line.
pub fn scrub(message: &str, sent: &[String]) -> String {
    let mut values: Vec<&str> = sent
        .iter()
        .map(|v| v.trim())
        .filter(|v| v.chars().count() >= 2)
        .collect();
    // Longest first, so a value containing another is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = message.to_owned();
    for value in values {
        out = replace_ignore_case(&out, value);
    }
    if out.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

fn replace_ignore_case(haystack: &str, needle: &str) -> String {
    let lower_hay = haystack.to_lowercase();
    let lower_needle = needle.to_lowercase();
    // Lower-casing can change byte lengths outside ASCII; then fall back to an exact match.
    if lower_hay.len() != haystack.len() || lower_needle.len() != needle.len() {
        return haystack.replace(needle, REDACTED);
    }
    let mut out = String::with_capacity(haystack.len());
    let mut rest = 0;
    for (at, _) in lower_hay.match_indices(&lower_needle) {
        if at < rest {
            continue;
        }
        out.push_str(&haystack[rest..at]);
        out.push_str(REDACTED);
        rest = at + needle.len();
    }
    out.push_str(&haystack[rest..]);
    out
}

/// Reads a `Retry-After` value: delta seconds or an HTTP date (relative to `now`; a date in the
/// past means "now"). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn statuses_are_classified() {
        let e = |s: u16| {
            HealthSherpaError::from_response(StatusCode::from_u16(s).expect("status"), None, b"", &[])
        };
        assert!(matches!(e(429), HealthSherpaError::RateLimited { .. }));
        assert!(matches!(e(503), HealthSherpaError::Transient(_)) && e(503).is_retryable());
        assert!(matches!(e(408), HealthSherpaError::Transient(_)));
        assert!(matches!(e(422), HealthSherpaError::Rejected { status: 422, .. }) && !e(422).is_retryable());
        assert!(!HealthSherpaError::MissingField { field: "last_name" }.is_retryable());
    }

    #[test]
    fn sent_values_never_survive_in_messages() {
        let sent = vec![
            "ada@example.com".to_owned(),
            "Lovelace".to_owned(),
            "x".to_owned(),
        ];
        let msg = scrub("Email ADA@example.com is invalid for lovelace; x marks", &sent);
        assert_eq!(msg, "Email [redacted] is invalid for [redacted]; x marks");
        assert!(scrub(&"é".repeat(400), &[]).len() <= MAX_MESSAGE_LEN);
    }
}
