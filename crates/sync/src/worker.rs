//! One sync message, start to finish: take the contact's sync lock, skip it if a newer state was
//! already sent or a newer change is committed (coalescing: the newest message sends), else send
//! the contact's current state — update when we hold its HealthSherpa id; otherwise search first
//! when an earlier attempt may have created it, then create — and store the id and quote URL. The
//! handler only judges: transient failures are a retry (no earlier than HealthSherpa's
//! `Retry-After`), permanent ones a dead letter; the shared consumer runtime settles them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use intake_broker::{Delivery, codec};
use intake_healthsherpa::{HealthSherpaClient, HealthSherpaError};
use intake_runtime::{Handler, Settled, Verdict};
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

/// The sync worker's handler.
pub(crate) struct SyncHandler {
    pub store: Store,
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

impl Handler for SyncHandler {
    async fn handle(&self, delivery: &Delivery) -> Verdict {
        let started = Instant::now();
        let previous = codec::attempt(&delivery.properties);
        let message = serde_json::from_slice::<SyncMessage>(&delivery.body);
        let result = match &message {
            Ok(message) => sync(self, message, previous > 0 || delivery.redelivered).await,
            Err(_) => Err(Failure::Malformed),
        };
        metrics::histogram!(m::PROCESSING_SECONDS).record(started.elapsed().as_secs_f64());
        match result {
            Ok(outcome) => {
                let outcome = match outcome {
                    Synced::Created => "created",
                    Synced::Updated => "updated",
                    Synced::Coalesced => "coalesced",
                    Synced::Superseded => "superseded",
                    Synced::NoContact => "no_contact",
                };
                metrics::counter!(m::MESSAGES_TOTAL, "outcome" => outcome).increment(1);
                if let (Some(hook), Ok(message)) = (&self.after_message, &message) {
                    hook(message.contact_id(), outcome);
                }
                Verdict::Done
            }
            // HealthSherpa's Retry-After overrides the tier schedule (never retrying earlier).
            Err(failure) if failure.is_retryable() => {
                let not_before = match &failure {
                    Failure::Api(e) => e.retry_after(),
                    _ => None,
                };
                Verdict::Retry(
                    intake_runtime::Failure::new(failure.reason(), failure.to_string())
                        .not_before(not_before),
                )
            }
            // The error never holds PHI: HealthSherpa messages are scrubbed of what we sent.
            Err(failure) => Verdict::DeadLetter(intake_runtime::Failure::new(
                failure.reason(),
                failure.to_string(),
            )),
        }
    }

    fn settled(&self, _delivery: &Delivery, settled: Settled<'_>) {
        match settled {
            Settled::Retried { .. } => {
                metrics::counter!(m::MESSAGES_TOTAL, "outcome" => "retried").increment(1);
            }
            Settled::DeadLettered { reason, .. } => {
                metrics::counter!(m::MESSAGES_TOTAL, "outcome" => "dead_lettered").increment(1);
                metrics::counter!(m::DEAD_LETTERS_TOTAL, "reason" => reason.to_owned()).increment(1);
            }
        }
    }
}

/// Syncs under the contact's lock; `retried`: an earlier attempt of this message ran (so it
/// may have created the contact).
async fn sync(ctx: &SyncHandler, message: &SyncMessage, retried: bool) -> Result<Synced, Failure> {
    let lock = ctx.store.lock_contact_sync(message.contact_id()).await?;
    let result = sync_locked(ctx, &lock, message, retried).await;
    if let Err(e) = lock.release().await {
        tracing::warn!(error = %e, "releasing the contact sync lock failed (connection closed instead)");
    }
    result
}

async fn sync_locked(
    ctx: &SyncHandler,
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
