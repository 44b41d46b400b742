//! What a handler says about one delivery ([`Verdict`]) and the trait every consumer's handler
//! implements ([`Handler`]). The runtime turns verdicts into acks, retries and dead letters.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use intake_broker::Delivery;

/// Why a delivery failed. `error` is one of our own messages: never a body value or PHI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Reason code for a dead letter (e.g. `unknown_event_type`); for a retry, what the dead
    /// letter will say should the retries run out is always `retries_exhausted`.
    pub reason: Cow<'static, str>,
    /// What went wrong.
    pub error: String,
    /// The event type, when decoding got that far (a metric label and a dead-letter column).
    pub event_type: Option<String>,
    /// The dedupe key, when decoding got that far.
    pub dedupe_key: Option<String>,
    /// Retry no earlier than this (e.g. a downstream `Retry-After`).
    pub not_before: Option<Duration>,
}

impl Failure {
    /// A failure with a reason code and an error message.
    pub fn new(reason: impl Into<Cow<'static, str>>, error: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            error: error.into(),
            event_type: None,
            dedupe_key: None,
            not_before: None,
        }
    }

    /// The event it happened to.
    pub fn event(mut self, event_type: &str, dedupe_key: &str) -> Failure {
        self.event_type = Some(event_type.to_owned());
        self.dedupe_key = Some(dedupe_key.to_owned());
        self
    }

    /// Not to be retried before `delay`.
    pub fn not_before(mut self, delay: Option<Duration>) -> Failure {
        self.not_before = delay;
        self
    }
}

/// A handler's decision about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its outcome is durable (committed, duplicate, skipped): ack.
    Done,
    /// A transient failure: wait in the next delay tier (no earlier than `not_before`), then
    /// come back; after the last tier, dead letter `retries_exhausted`.
    Retry(Failure),
    /// A permanent failure: dead letter with its reason now.
    DeadLetter(Failure),
    /// Nothing durable could be done and no retry should be spent (e.g. the database is away
    /// while recording a dead letter): give it back to the broker after `pause`.
    HandBack {
        /// Wait this long first, so a persistent problem is not a hot redelivery loop.
        pause: Duration,
    },
}

/// How the runtime settled a failed delivery, told back to the handler for its own metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled<'a> {
    /// Published to a delay tier (confirmed) as attempt `attempt`.
    Retried {
        /// The failure.
        failure: &'a Failure,
        /// Failures so far, this one included.
        attempt: u32,
    },
    /// Published to the dead-letter exchange (confirmed).
    DeadLettered {
        /// The failure.
        failure: &'a Failure,
        /// The reason recorded (`retries_exhausted` once the tiers ran out).
        reason: &'a str,
        /// Attempts made.
        attempts: u32,
    },
}

/// One consumer's logic. The runtime owns everything around it: prefetch, concurrency, acks,
/// retries, dead letters, pausing, shutdown and metrics.
pub trait Handler: Send + Sync + 'static {
    /// Decides what happens to one delivery. Must be idempotent: a delivery may come again.
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Verdict> + Send;

    /// Called once a failed delivery is durably retried or dead-lettered.
    fn settled(&self, _delivery: &Delivery, _settled: Settled<'_>) {}
}
