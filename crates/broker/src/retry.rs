//! Retries and dead letters on the broker side: which delay tier a failed message waits in (a
//! pure function of the attempt, with jitter) and the headers a retried or given-up envelope
//! carries. Publishing itself goes through the confirmed [`crate::Publisher`].

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::Topology;
use crate::codec::H_ATTEMPT;
use crate::topology::DELAY_TIER_HEADER;

/// Header holding the first error a message met (kept across retries).
pub const H_FIRST_ERROR: &str = "x-intake-first-error";
/// Header holding the latest error a message met.
pub const H_LAST_ERROR: &str = "x-intake-last-error";
/// Header naming why a message was dead-lettered (e.g. `unknown_event_type`).
pub const H_DEAD_REASON: &str = "x-intake-dead-reason";

/// A retried message waits between `1 - JITTER` and 1 times its tier's delay, so retries of
/// messages that failed together spread out. Never more than the tier: the tier's queue TTL is
/// the upper bound anyway.
const JITTER: f64 = 0.2;
/// Errors are cut to this many bytes in headers.
const MAX_ERROR_LEN: usize = 500;

/// What to do with a message whose processing just failed transiently.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NextStep {
    /// Publish to the retry exchange for this tier, with this per-message expiration.
    Retry {
        /// The tier (selects the delay queue).
        tier: Duration,
        /// Per-message expiration (jittered, ≤ tier).
        expiration: Duration,
        /// The attempt count to record (failures so far, this one included).
        attempt: u32,
    },
    /// Every tier used: dead-letter it.
    GiveUp {
        /// Attempts made.
        attempts: u32,
    },
}

/// The step after a transient failure of a message that had failed `previous` times before.
/// `jitter` is a uniform sample from [0, 1): a parameter, so this stays pure and testable.
pub fn next_step(tiers: &[Duration], previous: u32, jitter: f64) -> NextStep {
    let attempt = previous.saturating_add(1);
    match tiers.get(previous as usize) {
        None => NextStep::GiveUp { attempts: attempt },
        Some(&tier) => {
            // The tier less a cut of at most 20 %: subtracting (rather than scaling the tier by
            // a factor near 1) keeps float rounding from going above the tier.
            let cut = tier.mul_f64(JITTER * sample(jitter)).min(tier);
            let expiration = tier.saturating_sub(cut).max(Duration::from_millis(1));
            NextStep::Retry {
                tier,
                expiration,
                attempt,
            }
        }
    }
}

/// The step after a transient failure when the failure asked not to be retried before
/// `not_before` (e.g. an HTTP `Retry-After`): the shortest tier at least that long (else the
/// longest), waiting the asked delay plus up to `JITTER` of it, never past the tier. Without a
/// wish it is [`next_step`]. The one retry-delay function of every consumer.
pub fn next_step_not_before(
    tiers: &[Duration],
    previous: u32,
    not_before: Option<Duration>,
    jitter: f64,
) -> NextStep {
    let step = next_step(tiers, previous, jitter);
    let (NextStep::Retry { attempt, .. }, Some(wish)) = (step, not_before) else {
        return step;
    };
    let Some(tier) = tiers
        .iter()
        .copied()
        .find(|t| *t >= wish)
        .or_else(|| tiers.last().copied())
    else {
        return step;
    };
    // The wish comes from outside (a provider's `Retry-After`, up to u64::MAX seconds): capped
    // at the tier before any float arithmetic, and the jitter added saturating, so no wish can
    // overflow `mul_f64`.
    let wish = wish.min(tier);
    let wait = wish.saturating_add(wish.mul_f64(JITTER * sample(jitter)));
    NextStep::Retry {
        tier,
        expiration: wait.min(tier).max(Duration::from_millis(1)),
        attempt,
    }
}

/// A jitter sample in [0, 1]: clamped, and NaN (which `mul_f64` would panic on) taken as 0.
fn sample(jitter: f64) -> f64 {
    if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    }
}

fn text(s: &str) -> AMQPValue {
    let cut = if s.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        &s[..end]
    } else {
        s
    };
    AMQPValue::LongString(LongString::from(cut))
}

fn headers_of(properties: &BasicProperties) -> FieldTable {
    properties.headers().clone().unwrap_or_default()
}

/// The first error recorded on a message, if it was retried before.
pub fn first_error(properties: &BasicProperties) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(H_FIRST_ERROR)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// Properties for republishing a failed message to the retry exchange: the original ones plus
/// attempt count, tier, errors and a per-message expiration.
pub fn retry_properties(
    original: &BasicProperties,
    step_tier: Duration,
    expiration: Duration,
    attempt: u32,
    error: &str,
) -> BasicProperties {
    let mut headers = headers_of(original);
    if !headers.inner().contains_key(H_FIRST_ERROR) {
        headers.insert(ShortString::from(H_FIRST_ERROR), text(error));
    }
    headers.insert(ShortString::from(H_LAST_ERROR), text(error));
    headers.insert(
        ShortString::from(H_ATTEMPT),
        AMQPValue::LongLongInt(i64::from(attempt)),
    );
    headers.insert(
        ShortString::from(DELAY_TIER_HEADER),
        AMQPValue::LongString(LongString::from(Topology::tier_name(step_tier))),
    );
    original
        .clone()
        .with_headers(headers)
        .with_expiration(ShortString::from(expiration.as_millis().max(1).to_string()))
}

/// Properties for publishing a given-up message to the dead-letter exchange.
pub fn dead_letter_properties(
    original: &BasicProperties,
    reason: &str,
    attempts: u32,
    error: &str,
) -> BasicProperties {
    let mut headers = headers_of(original);
    if !headers.inner().contains_key(H_FIRST_ERROR) {
        headers.insert(ShortString::from(H_FIRST_ERROR), text(error));
    }
    headers.insert(ShortString::from(H_LAST_ERROR), text(error));
    headers.insert(ShortString::from(H_DEAD_REASON), text(reason));
    headers.insert(
        ShortString::from(H_ATTEMPT),
        AMQPValue::LongLongInt(i64::from(attempts)),
    );
    original.clone().with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::topology::DEFAULT_RETRY_TIERS;

    #[test]
    fn each_attempt_waits_in_the_next_tier_then_gives_up() {
        let tiers = DEFAULT_RETRY_TIERS;
        for (previous, tier) in tiers.iter().enumerate() {
            let step = next_step(&tiers, previous as u32, 0.0);
            assert_eq!(
                step,
                NextStep::Retry {
                    tier: *tier,
                    expiration: *tier,
                    attempt: previous as u32 + 1
                }
            );
        }
        assert_eq!(next_step(&tiers, 6, 0.5), NextStep::GiveUp { attempts: 7 });
        assert_eq!(next_step(&[], 0, 0.5), NextStep::GiveUp { attempts: 1 });
    }

    #[test]
    fn jitter_stays_within_the_tier() {
        let tiers = [Duration::from_secs(30)];
        for jitter in [0.0, 0.25, 0.5, 0.999, 1.0, 7.0, -1.0] {
            let NextStep::Retry { expiration, .. } = next_step(&tiers, 0, jitter) else {
                panic!()
            };
            assert!(
                expiration <= Duration::from_secs(30) && expiration >= Duration::from_secs(24),
                "{expiration:?}"
            );
        }
        let NextStep::Retry { expiration, .. } = next_step(&tiers, 0, 0.5) else {
            panic!()
        };
        assert_eq!(expiration, Duration::from_secs(27));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn tiers() -> impl Strategy<Value = Vec<Duration>> {
            let tier = prop_oneof![
                (1u64..=10_000).prop_map(Duration::from_millis),
                (1u64..=7 * 24 * 3600).prop_map(Duration::from_secs),
                // What `parse_retry_tiers` lets through, up to the largest Duration.
                (1u64..=u64::MAX).prop_map(Duration::from_secs),
                Just(Duration::MAX),
            ];
            proptest::collection::vec(tier, 0..8)
        }

        fn previous() -> impl Strategy<Value = u32> {
            prop_oneof![0u32..10, any::<u32>()]
        }

        proptest! {
            /// Attempt n (counting from 1) waits in tier n, between 80 % and all of it (at
            /// least 1 ms), whatever the jitter sample — NaN and infinities included; past the
            /// last tier it gives up, counting the attempt without overflowing.
            #[test]
            fn next_step_stays_within_its_tier(tiers in tiers(), previous in previous(), jitter in any::<f64>()) {
                match next_step(&tiers, previous, jitter) {
                    NextStep::Retry { tier, expiration, attempt } => {
                        prop_assert!((previous as usize) < tiers.len());
                        prop_assert_eq!(tier, tiers[previous as usize]);
                        prop_assert_eq!(attempt, previous + 1);
                        prop_assert!(expiration <= tier.max(Duration::from_millis(1)));
                        prop_assert!(expiration >= Duration::from_millis(1));
                        // 80 % of the tier, less a nanosecond of float rounding per second.
                        let floor = tier.mul_f64(0.8).saturating_sub(Duration::from_nanos(tier.as_secs().saturating_add(1)));
                        prop_assert!(expiration >= floor, "{:?} < {:?}", expiration, floor);
                    }
                    NextStep::GiveUp { attempts } => {
                        prop_assert!((previous as usize) >= tiers.len());
                        prop_assert_eq!(attempts, previous.saturating_add(1));
                    }
                }
            }

            /// With a wish (a `Retry-After`, any length up to u64::MAX seconds): the shortest
            /// tier at least that long (else the longest), waiting at least the wish (up to the
            /// tier) and never past the tier; without one, `next_step`.
            #[test]
            fn a_wish_waits_at_least_its_length_and_never_past_the_tier(
                tiers in tiers(),
                previous in previous(),
                wish in prop::option::of(prop_oneof![
                    (0u64..100_000).prop_map(Duration::from_millis),
                    any::<u64>().prop_map(Duration::from_secs),
                    Just(Duration::MAX),
                ]),
                jitter in any::<f64>(),
            ) {
                let step = next_step_not_before(&tiers, previous, wish, jitter);
                let plain = next_step(&tiers, previous, jitter);
                match (step, wish) {
                    (NextStep::Retry { tier, expiration, attempt }, Some(wish)) => {
                        let NextStep::Retry { attempt: plain_attempt, .. } = plain else {
                            return Err(TestCaseError::fail("retried where next_step gives up"));
                        };
                        prop_assert_eq!(attempt, plain_attempt);
                        let expected = tiers.iter().copied().find(|t| *t >= wish).or(tiers.last().copied());
                        prop_assert_eq!(Some(tier), expected);
                        prop_assert!(expiration <= tier.max(Duration::from_millis(1)));
                        prop_assert!(expiration >= wish.min(tier).max(Duration::from_millis(1)));
                    }
                    _ => prop_assert_eq!(step, plain),
                }
            }
        }
    }

    #[test]
    fn a_wish_picks_the_shortest_long_enough_tier() {
        let s = Duration::from_secs;
        let tiers = [s(5), s(30), s(120)];
        let at = |wish: Duration, jitter: f64| match next_step_not_before(&tiers, 0, Some(wish), jitter) {
            NextStep::Retry {
                tier,
                expiration,
                attempt,
            } => (tier, expiration, attempt),
            NextStep::GiveUp { .. } => panic!("gave up"),
        };
        assert_eq!(at(s(7), 0.0), (s(30), s(7), 1));
        assert_eq!(at(s(5), 0.0), (s(5), s(5), 1));
        assert_eq!(at(s(10), 1.0), (s(30), s(12), 1));
        assert_eq!(at(s(600), 0.5), (s(120), s(120), 1));
        assert_eq!(
            next_step_not_before(&tiers, 3, Some(s(1)), 0.0),
            NextStep::GiveUp { attempts: 4 }
        );
        assert_eq!(
            next_step_not_before(&tiers, 0, None, 0.0),
            next_step(&tiers, 0, 0.0)
        );
    }

    #[test]
    fn retry_headers_count_attempts_and_keep_the_first_error() {
        let original = BasicProperties::default();
        let once = retry_properties(
            &original,
            Duration::from_secs(5),
            Duration::from_millis(4500),
            1,
            "db down",
        );
        assert_eq!(codec::attempt(&once), 1);
        assert_eq!(once.expiration().as_ref().map(|e| e.as_str()), Some("4500"));
        let twice = retry_properties(
            &once,
            Duration::from_secs(30),
            Duration::from_secs(29),
            2,
            "timeout",
        );
        assert_eq!(codec::attempt(&twice), 2);
        assert_eq!(first_error(&twice).as_deref(), Some("db down"));
        let dead = dead_letter_properties(&twice, "retries_exhausted", 7, "timeout");
        assert_eq!(codec::attempt(&dead), 7);
        assert_eq!(first_error(&dead).as_deref(), Some("db down"));
    }
}
