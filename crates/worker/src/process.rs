//! One delivery, start to finish: envelope → provider events → one store transaction per event →
//! ack. A transient failure is republished to the next delay tier (confirmed) and then acked; a
//! permanent one, or the last attempt, is dead-lettered (queue and table) and then acked. Only
//! when nothing durable could be done is the delivery handed back to the broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use intake_broker::consumer::{Delivery, Disposition};
use intake_broker::retry::{self, NextStep};
use intake_broker::{Publisher, Topology, codec};
use intake_core::{Envelope, Provider};
use intake_providers::DecodedEvent;
use intake_store::{ApplyOptions, DeadLetter, Store, StoreError};

use crate::metrics as m;

/// Fault injection for tests: called after an event's transaction committed, before the ack.
pub type AfterCommitHook = Arc<dyn Fn(&Envelope) + Send + Sync>;

/// What every delivery handler shares.
pub(crate) struct Context {
    pub store: Store,
    pub publisher: Publisher,
    pub topology: Topology,
    pub options: ApplyOptions,
    pub db_timeout: Duration,
    pub after_commit: Option<AfterCommitHook>,
}

/// Pause before handing a delivery back to the broker, so a broker-side problem (publisher
/// reconnecting) does not turn into a hot redelivery loop.
const REQUEUE_PAUSE: Duration = Duration::from_millis(500);

async fn hand_back() -> Disposition {
    tokio::time::sleep(REQUEUE_PAUSE).await;
    Disposition::Requeue
}

/// Reason codes of dead letters decided here (decode errors bring their own).
const RETRIES_EXHAUSTED: &str = "retries_exhausted";
const MALFORMED_ENVELOPE: &str = "malformed_envelope";
const STORE_REJECTED: &str = "store_rejected";

/// The provider whose queue a delivery came from (for a message too broken to say itself).
fn provider_of_queue(topology: &Topology, queue: &str) -> Provider {
    Provider::ALL
        .into_iter()
        .find(|p| topology.provider_queue(*p) == queue)
        .unwrap_or(Provider::Standard)
}

pub(crate) async fn handle(ctx: &Context, delivery: Delivery) -> Disposition {
    let started = Instant::now();
    metrics::gauge!(m::IN_FLIGHT).increment(1.0);
    let disposition = process(ctx, &delivery).await;
    metrics::gauge!(m::IN_FLIGHT).decrement(1.0);
    let provider = provider_of_queue(&ctx.topology, &delivery.queue).as_str();
    metrics::histogram!(m::PROCESSING_SECONDS, "provider" => provider)
        .record(started.elapsed().as_secs_f64());
    disposition
}

async fn process(ctx: &Context, delivery: &Delivery) -> Disposition {
    let previous = codec::attempt(&delivery.properties);
    let envelope = match codec::decode_envelope(&delivery.properties, &delivery.body) {
        Ok(e) => e,
        Err(e) => {
            // Not an envelope at all: keep what there is under a placeholder identity.
            let placeholder = Envelope::new(
                "<unknown>",
                provider_of_queue(&ctx.topology, &delivery.queue),
                Vec::new(),
                bytes::Bytes::copy_from_slice(&delivery.body),
            );
            let failure = Failure {
                event: None,
                reason: MALFORMED_ENVELOPE,
                error: e.to_string(),
            };
            return dead_letter(ctx, delivery, &placeholder, failure, previous + 1).await;
        }
    };
    let events = match intake_providers::decode(&envelope) {
        Ok(events) => events,
        Err(e) => {
            let failure = Failure {
                event: None,
                reason: e.reason(),
                error: e.to_string(),
            };
            return dead_letter(ctx, delivery, &envelope, failure, previous + 1).await;
        }
    };
    let provider = envelope.provider.as_str();
    for event in &events {
        let applied = tokio::time::timeout(ctx.db_timeout, ctx.store.apply(&envelope, event, ctx.options))
            .await
            .unwrap_or(Err(StoreError::Timeout));
        match applied {
            Ok(report) => {
                m::outcome(provider, &event.event_type, report.outcome.as_str());
                if report.outcome != intake_store::Outcome::Duplicate {
                    // Counted with the inbox row that notes them, so a retry or a
                    // redelivery does not count them twice.
                    m::field_issues(provider, event);
                }
                let now = Utc::now();
                if report.outcome == intake_store::Outcome::Applied {
                    let e2e = (now - envelope.received_at).to_std().unwrap_or_default();
                    metrics::histogram!(m::END_TO_END_SECONDS, "provider" => provider, "event_type" => event.event_type.clone())
                        .record(e2e.as_secs_f64());
                }
                for released in report.released {
                    m::outcome(provider, &released.event_type, "released");
                    let e2e = (now - released.received_at).to_std().unwrap_or_default();
                    metrics::histogram!(m::END_TO_END_SECONDS, "provider" => provider, "event_type" => released.event_type)
                        .record(e2e.as_secs_f64());
                }
                // Parked events of this entity whose stored form this build cannot read: they
                // are in `dead_letters` (reason parked_format); this event was applied regardless.
                for dead in report.parked_dead_letters {
                    tracing::warn!(
                        provider, envelope_id = %dead.envelope_id, event_type = %dead.event_type,
                        reason = intake_store::PARKED_FORMAT, "parked event unreadable; dead-lettered"
                    );
                    m::outcome(provider, &dead.event_type, "dead_lettered");
                }
                if let Some(hook) = &ctx.after_commit {
                    hook(&envelope);
                }
            }
            Err(e) if e.is_retryable() => {
                let failure = Failure {
                    event: Some(event),
                    reason: RETRIES_EXHAUSTED,
                    error: e.to_string(),
                };
                return retry_or_give_up(ctx, delivery, &envelope, failure, previous).await;
            }
            Err(e) => {
                let failure = Failure {
                    event: Some(event),
                    reason: STORE_REJECTED,
                    error: e.to_string(),
                };
                return dead_letter(ctx, delivery, &envelope, failure, previous + 1).await;
            }
        }
    }
    Disposition::Ack
}

/// Why processing stopped. `error` is one of our own messages: no body content, no PHI.
struct Failure<'a> {
    event: Option<&'a DecodedEvent>,
    reason: &'static str,
    error: String,
}

impl Failure<'_> {
    fn event_type(&self) -> &str {
        self.event.map_or("unknown", |e| e.event_type.as_str())
    }
}

/// Republishes to the delay tier of the next attempt, or dead-letters after the last.
async fn retry_or_give_up(
    ctx: &Context,
    delivery: &Delivery,
    envelope: &Envelope,
    failure: Failure<'_>,
    previous: u32,
) -> Disposition {
    match retry::next_step(ctx.topology.retry_tiers(), previous, rand::random::<f64>()) {
        NextStep::Retry {
            tier,
            expiration,
            attempt,
        } => republish(ctx, delivery, envelope, &failure, tier, expiration, attempt).await,
        NextStep::GiveUp { attempts } => dead_letter(ctx, delivery, envelope, failure, attempts).await,
    }
}

/// Publishes the message to a delay tier (confirmed), then acks the original.
async fn republish(
    ctx: &Context,
    delivery: &Delivery,
    envelope: &Envelope,
    failure: &Failure<'_>,
    tier: Duration,
    expiration: Duration,
    attempt: u32,
) -> Disposition {
    let properties = retry::retry_properties(&delivery.properties, tier, expiration, attempt, &failure.error);
    let provider = envelope.provider.as_str();
    // Routing key = the work queue: when the wait is over the message comes back to it.
    match ctx
        .publisher
        .publish(
            &ctx.topology.retry_exchange(),
            &delivery.queue,
            &delivery.body,
            properties,
        )
        .await
    {
        Ok(()) => {
            tracing::warn!(
                provider, envelope_id = %envelope.id, event_type = failure.event_type(), attempt,
                retry_in_ms = expiration.as_millis() as u64, error = %failure.error, "transient failure; retrying later"
            );
            m::outcome(provider, failure.event_type(), "retried");
            Disposition::Ack
        }
        Err(e) => {
            tracing::warn!(provider, envelope_id = %envelope.id, error = %e, "retry publish failed; handing back to the broker");
            hand_back().await
        }
    }
}

/// Records the dead letter in Postgres, then publishes it to the dead-letter exchange. If the
/// database is unreachable the event goes the retry way instead, so the row is written later.
async fn dead_letter(
    ctx: &Context,
    delivery: &Delivery,
    envelope: &Envelope,
    failure: Failure<'_>,
    attempts: u32,
) -> Disposition {
    let first_error = retry::first_error(&delivery.properties);
    let row = DeadLetter {
        envelope,
        event_type: failure.event.map(|e| e.event_type.as_str()),
        dedupe_key: failure.event.map(|e| e.dedupe_key.as_str()),
        reason: failure.reason,
        attempts,
        first_error: first_error.as_deref(),
        last_error: &failure.error,
    };
    let provider = envelope.provider.as_str();
    let inserted = tokio::time::timeout(ctx.db_timeout, ctx.store.insert_dead_letter(&row))
        .await
        .unwrap_or(Err(StoreError::Timeout));
    if let Err(e) = inserted {
        tracing::warn!(provider, envelope_id = %envelope.id, error = %e, "could not record dead letter");
        if e.is_retryable() {
            // The database is away: wait in the next tier (or again in the last one, once all
            // are used) and try again, so the row gets written — or the event applied — later.
            let tiers = ctx.topology.retry_tiers();
            let Some(&last) = tiers.last() else {
                return hand_back().await;
            };
            let tier = tiers.get(attempts as usize - 1).copied().unwrap_or(last);
            let expiration = match retry::next_step(&[tier], 0, rand::random::<f64>()) {
                NextStep::Retry { expiration, .. } => expiration,
                NextStep::GiveUp { .. } => tier,
            };
            let failure = Failure {
                error: e.to_string(),
                ..failure
            };
            return republish(ctx, delivery, envelope, &failure, tier, expiration, attempts).await;
        }
        // A row Postgres refuses for good: the queue copy below is all there will be.
    }
    let properties =
        retry::dead_letter_properties(&delivery.properties, failure.reason, attempts, &failure.error);
    let published = ctx
        .publisher
        .publish(
            &ctx.topology.dead_letter_exchange(),
            &delivery.queue,
            &delivery.body,
            properties,
        )
        .await;
    if let Err(e) = published {
        tracing::warn!(provider, envelope_id = %envelope.id, error = %e, "dead-letter publish failed; handing back to the broker");
        return hand_back().await;
    }
    tracing::warn!(
        provider, envelope_id = %envelope.id, event_type = failure.event_type(), reason = failure.reason,
        attempts, error = %failure.error, "dead-lettered"
    );
    m::outcome(provider, failure.event_type(), "dead_lettered");
    Disposition::Ack
}
