//! One sync message, start to finish: take the contact's sync lock, skip it if a newer state was
//! already sent or a newer change is committed (coalescing: the newest message sends), else send
//! the contact's current state — update when we hold its HealthSherpa id; otherwise search first
//! when an earlier attempt may have created it, then create — and store the id and quote URL. Transient failures go to the broker's delay tiers
//! (`Retry-After` honoured), permanent ones to the dead-letter queue; then the delivery is acked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use intake_broker::consumer::{Delivery, Disposition};
use intake_broker::retry::{self, NextStep};
use intake_broker::{Publisher, Topology, codec};
use intake_healthsherpa::{HealthSherpaClient, HealthSherpaError, RetryPolicy, retry_delay};
use intake_store::sync::ContactSync;
use intake_store::{Store, StoreError};

use crate::message::SyncMessage;
use crate::{mapping, metrics as m};

/// Test hook: called with the contact id right after HealthSherpa answered a create, before the
/// id is stored; the handler awaits the returned future, so a future that never completes
/// freezes the instance at the worst moment (a test then drops the whole instance: a crash).
pub type AfterCreateHook = Arc<dyn Fn(&str) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Test hook: called with the contact id and the outcome label (`created`, `updated`,
/// `coalesced`, …) once a message was handled successfully, before its ack — per instance, so
/// a test can tell which of several in-process instances handled a message.
pub type AfterMessageHook = Arc<dyn Fn(&str, &'static str) + Send + Sync>;

/// What every handler shares.
pub(crate) struct Context {
    pub store: Store,
    pub publisher: Publisher,
    pub topology: Topology,
    pub client: HealthSherpaClient,
    pub after_create: Option<AfterCreateHook>,
    pub after_message: Option<AfterMessageHook>,
}

/// How a message ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synced {
    Created,
    Updated,
    Coalesced,
    Superseded,
    NoContact,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Api(#[from] HealthSherpaError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("malformed sync message")]
    Malformed,
}

impl Failure {
    fn is_retryable(&self) -> bool {
        match self {
            Failure::Api(e) => e.is_retryable(),
            Failure::Store(e) => e.is_retryable(),
            Failure::Malformed => false,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Failure::Api(e) => e.kind(),
            Failure::Store(_) => "store_rejected",
            Failure::Malformed => "malformed_message",
        }
    }
}

pub(crate) async fn handle(ctx: &Context, delivery: Delivery) -> Disposition {
    let started = Instant::now();
    let previous = codec::attempt(&delivery.properties);
    let message = serde_json::from_slice::<SyncMessage>(&delivery.body);
    let result = match &message {
        Ok(message) => sync(ctx, message, previous > 0 || delivery.redelivered).await,
        Err(_) => Err(Failure::Malformed),
    };
    let disposition = match result {
        Ok(outcome) => {
            let outcome = match outcome {
                Synced::Created => "created",
                Synced::Updated => "updated",
                Synced::Coalesced => "coalesced",
                Synced::Superseded => "superseded",
                Synced::NoContact => "no_contact",
            };
            metrics::counter!(m::MESSAGES_TOTAL, "outcome" => outcome).increment(1);
            if let (Some(hook), Ok(message)) = (&ctx.after_message, &message) {
                hook(message.contact_id(), outcome);
            }
            Disposition::Ack
        }
        Err(failure) if failure.is_retryable() => retry_or_give_up(ctx, &delivery, &failure, previous).await,
        Err(failure) => {
            dead_letter(
                ctx,
                &delivery,
                failure.reason(),
                &failure.to_string(),
                previous + 1,
            )
            .await
        }
    };
    metrics::histogram!(m::PROCESSING_SECONDS).record(started.elapsed().as_secs_f64());
    disposition
}

/// Syncs under the contact's lock; `retried`: an earlier attempt of this message ran (so it
/// may have created the contact).
async fn sync(ctx: &Context, message: &SyncMessage, retried: bool) -> Result<Synced, Failure> {
    let lock = ctx.store.lock_contact_sync(message.contact_id()).await?;
    let result = sync_locked(ctx, &lock, message, retried).await;
    if let Err(e) = lock.release().await {
        tracing::warn!(error = %e, "releasing the contact sync lock failed (connection closed instead)");
    }
    result
}

async fn sync_locked(
    ctx: &Context,
    lock: &ContactSync,
    message: &SyncMessage,
    retried: bool,
) -> Result<Synced, Failure> {
    let state = lock.state().await?;
    if state.synced_seq >= message.seq() {
        return Ok(Synced::Coalesced);
    }
    let Some(contact) = lock.contact().await? else {
        return Ok(Synced::NoContact);
    };
    // A newer change is committed, so its message is queued or on its way from the relay (or is
    // waiting for this lock): that one sends the state, and a burst of changes costs one call.
    // The newer message covers this state and everything before it (had it already been sent,
    // `synced_seq` would have covered this one above). Only a first attempt is skipped: a retry
    // sends, so a change is never left waiting on a message that may itself have been given up.
    if !retried && contact.seq > message.seq() {
        return Ok(Synced::Superseded);
    }
    let wanted = mapping::to_sync(&contact);
    // Refuse an incomplete contact before any request, the search included.
    wanted.to_body()?;
    let known = match state.healthsherpa_id {
        Some(id) => Some(id),
        None if state.create_started || retried => {
            let external_id = wanted.external_id()?;
            ctx.client
                .search(&external_id, wanted.agent_email.as_deref())
                .await?
                .map(|hit| hit.id)
        }
        None => None,
    };
    if let Some(id) = known {
        let synced = ctx.client.update(&id, &wanted).await?;
        lock.record_synced(&synced.id, Some(&synced.redirect_url), contact.seq)
            .await?;
        return Ok(Synced::Updated);
    }
    // Durable before the request: if we die after HealthSherpa created it, the next attempt
    // searches instead of creating a second contact.
    lock.mark_create_started().await?;
    let synced = ctx.client.create(&wanted).await?;
    if let Some(hook) = &ctx.after_create {
        hook(message.contact_id()).await;
    }
    lock.record_synced(&synced.id, Some(&synced.redirect_url), contact.seq)
        .await?;
    Ok(Synced::Created)
}

/// The delay tier and per-message expiration for a retry wanted after `delay`: the shortest
/// tier that is long enough (else the longest), waiting exactly `delay` within it.
pub(crate) fn tier_for(tiers: &[Duration], delay: Duration) -> Option<(Duration, Duration)> {
    let tier = tiers
        .iter()
        .copied()
        .find(|t| *t >= delay)
        .or_else(|| tiers.last().copied())?;
    Some((tier, delay.min(tier).max(Duration::from_millis(1))))
}

async fn retry_or_give_up(
    ctx: &Context,
    delivery: &Delivery,
    failure: &Failure,
    previous: u32,
) -> Disposition {
    let tiers = ctx.topology.retry_tiers();
    let jitter = rand::random::<f64>();
    let NextStep::Retry {
        tier,
        expiration,
        attempt,
    } = retry::next_step(tiers, previous, jitter)
    else {
        return dead_letter(
            ctx,
            delivery,
            "retries_exhausted",
            &failure.to_string(),
            previous + 1,
        )
        .await;
    };
    // HealthSherpa's Retry-After overrides the tier schedule (never retrying earlier than asked).
    let (tier, expiration) = match failure {
        Failure::Api(e) if e.retry_after().is_some() => {
            let policy = RetryPolicy {
                max: tiers.last().copied().unwrap_or(tier),
                ..RetryPolicy::default()
            };
            tier_for(tiers, retry_delay(&policy, previous, e, jitter)).unwrap_or((tier, expiration))
        }
        _ => (tier, expiration),
    };
    let error = failure.to_string();
    let properties = retry::retry_properties(&delivery.properties, tier, expiration, attempt, &error);
    let exchange = ctx.topology.retry_exchange();
    match ctx
        .publisher
        .publish(&exchange, &delivery.queue, &delivery.body, properties)
        .await
    {
        Ok(()) => {
            tracing::warn!(attempt, retry_in_ms = expiration.as_millis() as u64, kind = failure.reason(), error = %error, "sync failed; retrying later");
            metrics::counter!(m::MESSAGES_TOTAL, "outcome" => "retried").increment(1);
            Disposition::Ack
        }
        Err(e) => {
            tracing::warn!(error = %e, "retry publish failed; handing back to the broker");
            metrics::counter!(m::MESSAGES_TOTAL, "outcome" => "requeued").increment(1);
            Disposition::Requeue
        }
    }
}

async fn dead_letter(
    ctx: &Context,
    delivery: &Delivery,
    reason: &'static str,
    error: &str,
    attempts: u32,
) -> Disposition {
    let properties = retry::dead_letter_properties(&delivery.properties, reason, attempts, error);
    let exchange = ctx.topology.dead_letter_exchange();
    if let Err(e) = ctx
        .publisher
        .publish(&exchange, &delivery.queue, &delivery.body, properties)
        .await
    {
        tracing::warn!(error = %e, "dead-letter publish failed; handing back to the broker");
        metrics::counter!(m::MESSAGES_TOTAL, "outcome" => "requeued").increment(1);
        return Disposition::Requeue;
    }
    // `error` never holds PHI: HealthSherpa messages are scrubbed of what we sent.
    tracing::warn!(reason, attempts, error, "sync dead-lettered");
    metrics::counter!(m::MESSAGES_TOTAL, "outcome" => "dead_lettered").increment(1);
    metrics::counter!(m::DEAD_LETTERS_TOTAL, "reason" => reason).increment(1);
    Disposition::Ack
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_picks_the_shortest_long_enough_tier() {
        let tiers = [
            Duration::from_secs(5),
            Duration::from_secs(30),
            Duration::from_secs(120),
        ];
        let s = Duration::from_secs;
        assert_eq!(tier_for(&tiers, s(7)), Some((s(30), s(7))));
        assert_eq!(tier_for(&tiers, s(5)), Some((s(5), s(5))));
        assert_eq!(tier_for(&tiers, s(600)), Some((s(120), s(120))));
        assert_eq!(
            tier_for(&tiers, Duration::ZERO),
            Some((s(5), Duration::from_millis(1)))
        );
        assert_eq!(tier_for(&[], s(1)), None);
    }
}
