//! Abuse limits per request, past the header checks: a cap on webhook requests in flight (503 +
//! `Retry-After` beyond it, `INTAKE_MAX_IN_FLIGHT`) and an optional rate limit per endpoint (429 +
//! `Retry-After` beyond it; `rate_limit` in the endpoint's TOML or `INTAKE_RATE_LIMIT` for all).
//!
//! Both answer at once and cost nothing: a flood is shed before its body is read or a publish is
//! started, so it cannot queue behind the broker or pin memory. The per-connection bounds (count,
//! idle timeout) are the [`listener`](crate::listener)'s; body size and deadline the route's.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use tokio::sync::Semaphore;

use crate::endpoints::Endpoint;
use crate::http::Screened;
use crate::metrics as m;

/// A rate: `requests` per `period`, as a token bucket of `requests` tokens refilled evenly over
/// `period` (governor's GCRA): a burst of up to `requests` passes at once, then one request per
/// `period / requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    requests: NonZeroU32,
    period: Duration,
}

impl Rate {
    /// The governor quota of this rate.
    fn quota(&self) -> Quota {
        // `FromStr` guarantees a refill interval of at least a microsecond, so `with_period`
        // (which refuses only zero) always succeeds; the fallback is never taken.
        Quota::with_period(self.period / self.requests.get())
            .unwrap_or_else(|| Quota::per_second(self.requests))
            .allow_burst(self.requests)
    }
}

impl FromStr for Rate {
    type Err = String;

    /// `N/period`: `100/s`, `6000/m`, `50/10s`, `1000/h` (units `s`, `m`, `h`; a bare unit is one
    /// of it).
    fn from_str(text: &str) -> Result<Rate, String> {
        let invalid = || format!("invalid rate {text:?}: expected N/period such as 100/s, 600/m or 50/10s");
        let (n, period) = text.trim().split_once('/').ok_or_else(invalid)?;
        let requests: NonZeroU32 = n.trim().parse().map_err(|_| invalid())?;
        let period = period.trim();
        let split = period.find(|c: char| !c.is_ascii_digit()).unwrap_or(period.len());
        let (count, unit) = period.split_at(split);
        let count: u64 = if count.is_empty() {
            1
        } else {
            count.parse().map_err(|_| invalid())?
        };
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(invalid()),
        };
        let period = Duration::from_secs(count.checked_mul(unit_secs).ok_or_else(invalid)?);
        if period.is_zero() || period / requests.get() < Duration::from_micros(1) {
            return Err(invalid());
        }
        Ok(Rate { requests, period })
    }
}

/// An endpoint's declared `rate_limit`: a rate, or `"off"` to exempt it from `INTAKE_RATE_LIMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum RateSetting {
    /// Not limited, whatever the default.
    Off,
    /// Limited to this rate.
    Limit(Rate),
}

impl TryFrom<String> for RateSetting {
    type Error = String;

    fn try_from(text: String) -> Result<RateSetting, String> {
        if text.trim() == "off" {
            Ok(RateSetting::Off)
        } else {
            text.parse().map(RateSetting::Limit)
        }
    }
}

/// The limits shared by every webhook request.
#[derive(Debug)]
pub struct Limits {
    /// One permit per request in flight; none left → 503.
    in_flight: Arc<Semaphore>,
    /// Each rate-limited endpoint's bucket, by endpoint name (one bucket for all its senders:
    /// the limit protects what is behind the endpoint, whoever calls it).
    rates: HashMap<String, DefaultDirectRateLimiter>,
}

impl Limits {
    /// `max_in_flight` requests at once (at least 1); each endpoint limited by its own
    /// `rate_limit`, else by `default_rate`, else not at all.
    pub fn new<'a>(
        max_in_flight: usize,
        endpoints: impl IntoIterator<Item = &'a Endpoint>,
        default_rate: Option<Rate>,
    ) -> Limits {
        let rates = endpoints
            .into_iter()
            .filter_map(|endpoint| {
                let rate = match endpoint.rate_limit {
                    Some(RateSetting::Off) => None,
                    Some(RateSetting::Limit(rate)) => Some(rate),
                    None => default_rate,
                }?;
                Some((
                    endpoint.name.clone(),
                    DefaultDirectRateLimiter::direct(rate.quota()),
                ))
            })
            .collect();
        Limits {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            rates,
        }
    }
}

/// Middleware inside `screen` (so only requests that passed the header checks are counted):
/// takes an in-flight place, then a token of the endpoint's rate, then runs the rest of the
/// request holding the place. An overloaded answer (503) spends no rate token.
pub async fn guard(
    State(limits): State<Arc<Limits>>,
    Extension(screened): Extension<Screened>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = screened.endpoint();
    // The semaphore is never closed, so the only error is "no permit left".
    let Ok(_place) = limits.in_flight.clone().try_acquire_owned() else {
        count(endpoint, "in_flight");
        tracing::warn!(endpoint = %endpoint.name, "rejected: too many requests in flight");
        // `screen` adds the configured Retry-After to every 503.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let _gauge = InFlightGauge::enter(&endpoint.name);
    if let Some(limiter) = limits.rates.get(&endpoint.name)
        && let Err(not_until) = limiter.check()
    {
        count(endpoint, "rate_limit");
        tracing::info!(endpoint = %endpoint.name, "rejected: rate limit");
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after_secs(wait))],
        )
            .into_response();
    }
    next.run(request).await
}

fn count(endpoint: &Endpoint, reason: &'static str) {
    metrics::counter!(
        m::LIMITED_TOTAL,
        "endpoint" => endpoint.name.clone(),
        "provider" => endpoint.provider.as_str(),
        "reason" => reason
    )
    .increment(1);
}

/// Whole seconds, rounded up and at least 1: a sender that waits that long gets a token.
fn retry_after_secs(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// `intake_receiver_in_flight{endpoint}` up while a request holds its place, down when it ends
/// (also when the client goes away and the request future is dropped).
struct InFlightGauge(metrics::Gauge);

impl InFlightGauge {
    fn enter(endpoint: &str) -> InFlightGauge {
        let gauge = metrics::gauge!(m::IN_FLIGHT, "endpoint" => endpoint.to_owned());
        gauge.increment(1.0);
        InFlightGauge(gauge)
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u32, secs: u64) -> Rate {
        Rate {
            requests: NonZeroU32::new(n).expect("n"),
            period: Duration::from_secs(secs),
        }
    }

    #[test]
    fn rates_parse_with_units_and_counts() {
        assert_eq!("100/s".parse(), Ok(rate(100, 1)));
        assert_eq!("600/m".parse(), Ok(rate(600, 60)));
        assert_eq!("50/10s".parse(), Ok(rate(50, 10)));
        assert_eq!(" 3 / 2h ".parse(), Ok(rate(3, 7200)));
        for bad in [
            "",
            "100",
            "0/s",
            "-1/s",
            "10/",
            "10/0s",
            "10/d",
            "10/1.5s",
            "x/s",
            "2000000/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn settings_accept_off() {
        assert_eq!(RateSetting::try_from("off".to_owned()), Ok(RateSetting::Off));
        assert_eq!(
            RateSetting::try_from("5/m".to_owned()),
            Ok(RateSetting::Limit(rate(5, 60)))
        );
        assert!(RateSetting::try_from("none".to_owned()).is_err());
    }

    #[test]
    fn a_rate_lets_its_burst_through_then_refuses() {
        let limiter = DefaultDirectRateLimiter::direct(rate(3, 60).quota());
        assert!((0..3).all(|_| limiter.check().is_ok()), "the whole burst passes");
        let refused = limiter.check().expect_err("the fourth is refused");
        let wait = refused.wait_time_from(DefaultClock::default().now());
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "one token every 20 s: {wait:?}"
        );
        assert_eq!(retry_after_secs(wait), HeaderValue::from(20u64));
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_a_second() {
        assert_eq!(retry_after_secs(Duration::ZERO), HeaderValue::from(1u64));
        assert_eq!(
            retry_after_secs(Duration::from_millis(1)),
            HeaderValue::from(1u64)
        );
        assert_eq!(
            retry_after_secs(Duration::from_millis(1001)),
            HeaderValue::from(2u64)
        );
    }
}
