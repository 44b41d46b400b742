//! How long to wait before retrying a failed HealthSherpa call: a pure function of the attempt,
//! the error (its `Retry-After`) and a jitter sample, so it is tested without I/O or clocks. The
//! sync worker turns the delay into a broker delay tier.

use std::time::Duration;

use crate::HealthSherpaError;

/// Bounds of the backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry (attempt 0) without `Retry-After`; doubles per attempt.
    pub base: Duration,
    /// No delay is longer, whatever the attempt or `Retry-After`.
    pub max: Duration,
    /// Fraction of the delay randomised: exponential delays shrink by up to this much, a
    /// `Retry-After` grows by up to this much (never retrying before HealthSherpa allows).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 5 s doubling to at most 6 h, ±20 %: the broker's default tiers span the same range.
    fn default() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(5),
            max: Duration::from_secs(6 * 3600),
            jitter: 0.2,
        }
    }
}

/// The delay before retry number `attempt + 1` (`attempt` = failures before this one) after
/// `error`. `jitter` is a uniform sample from [0, 1) (clamped), passed in to keep this pure.
pub fn retry_delay(policy: &RetryPolicy, attempt: u32, error: &HealthSherpaError, jitter: f64) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0) * policy.jitter.clamp(0.0, 1.0);
    let delay = match error.retry_after() {
        // Honour the server: wait at least what it asked, spread a little later so clients
        // throttled together do not all come back at the same instant.
        Some(asked) => asked.mul_f64(1.0 + jitter),
        None => {
            let factor = 2u32.saturating_pow(attempt.min(31));
            policy
                .base
                .saturating_mul(factor)
                .min(policy.max)
                .mul_f64(1.0 - jitter)
        }
    };
    delay.min(policy.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base: Duration::from_secs(5),
        max: Duration::from_secs(3600),
        jitter: 0.2,
    };

    #[test]
    fn backoff_doubles_and_is_clamped() {
        let e = HealthSherpaError::Transient("HTTP 500".into());
        assert_eq!(retry_delay(&POLICY, 0, &e, 0.0), Duration::from_secs(5));
        assert_eq!(retry_delay(&POLICY, 1, &e, 0.0), Duration::from_secs(10));
        assert_eq!(retry_delay(&POLICY, 3, &e, 0.0), Duration::from_secs(40));
        assert_eq!(retry_delay(&POLICY, 20, &e, 0.0), Duration::from_secs(3600));
        assert_eq!(retry_delay(&POLICY, u32::MAX, &e, 0.0), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_only_shortens_backoff_within_its_fraction() {
        let e = HealthSherpaError::Transient("timeout".into());
        for j in [0.0, 0.3, 0.99, 1.0, 5.0, -1.0] {
            let d = retry_delay(&POLICY, 2, &e, j);
            assert!(
                d <= Duration::from_secs(20) && d >= Duration::from_secs(16),
                "{d:?}"
            );
        }
        assert_eq!(retry_delay(&POLICY, 2, &e, 0.5), Duration::from_secs(18));
    }

    #[test]
    fn retry_after_is_a_floor_clamped_to_the_max() {
        let limited = |s| HealthSherpaError::RateLimited {
            retry_after: Some(Duration::from_secs(s)),
        };
        for j in [0.0, 0.5, 1.0] {
            let d = retry_delay(&POLICY, 4, &limited(30), j);
            assert!(
                d >= Duration::from_secs(30) && d <= Duration::from_secs(36),
                "{d:?}"
            );
        }
        assert_eq!(
            retry_delay(&POLICY, 0, &limited(86_400), 0.0),
            Duration::from_secs(3600)
        );
        // A 429 without Retry-After backs off like any transient failure.
        let bare = HealthSherpaError::RateLimited { retry_after: None };
        assert_eq!(retry_delay(&POLICY, 1, &bare, 0.0), Duration::from_secs(10));
    }
}
