//! One delivery, start to finish: envelope → provider events → one store transaction per event.
//! The handler only judges — done, retry (transient store failure) or dead letter (a broken
//! envelope, an undecodable payload, a row Postgres refuses) — and the shared consumer runtime
//! (`intake_runtime`) acks, republishes to a delay tier or dead-letters accordingly.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use intake_broker::{Delivery, Topology, codec};
use intake_core::{Envelope, Provider};
use intake_runtime::{Failure, Handler, RETRIES_EXHAUSTED, Settled, Verdict};
use intake_store::{ApplyOptions, Store, StoreError};

use crate::metrics as m;

/// Fault injection for tests: called after an event's transaction committed, before the ack.
pub type AfterCommitHook = Arc<dyn Fn(&Envelope) + Send + Sync>;

/// Reason codes of dead letters decided here (decode errors bring their own).
const MALFORMED_ENVELOPE: &str = "malformed_envelope";
const STORE_REJECTED: &str = "store_rejected";

/// The ingest worker's handler.
pub(crate) struct IngestHandler {
    pub store: Store,
    pub topology: Topology,
    pub options: ApplyOptions,
    pub db_timeout: Duration,
    pub after_commit: Option<AfterCommitHook>,
}

/// The provider whose queue a delivery came from (for a message too broken to say itself).
fn provider_of_queue(topology: &Topology, queue: &str) -> Provider {
    Provider::ALL
        .into_iter()
        .find(|p| topology.provider_queue(*p) == queue)
        .unwrap_or(Provider::Standard)
}

impl Handler for IngestHandler {
    async fn handle(&self, delivery: &Delivery) -> Verdict {
        let envelope = match codec::decode_envelope(&delivery.properties, &delivery.body) {
            Ok(e) => e,
            Err(e) => return Verdict::DeadLetter(Failure::new(MALFORMED_ENVELOPE, e.to_string())),
        };
        let events = match intake_providers::decode(&envelope) {
            Ok(events) => events,
            Err(e) => return Verdict::DeadLetter(Failure::new(e.reason(), e.to_string())),
        };
        let provider = envelope.provider.as_str();
        for event in &events {
            let applied =
                tokio::time::timeout(self.db_timeout, self.store.apply(&envelope, event, self.options))
                    .await
                    .unwrap_or(Err(StoreError::Timeout));
            match applied {
                Ok(report) => {
                    m::outcome(provider, &event.event_type, report.outcome.as_str());
                    if report.outcome != intake_store::Outcome::Duplicate {
                        // Counted with the inbox row that notes them, so a retry or a redelivery
                        // does not count them twice.
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
                    // are in `dead_letters` (reason parked_format); this event applied regardless.
                    for dead in report.parked_dead_letters {
                        tracing::warn!(
                            provider, envelope_id = %dead.envelope_id, event_type = %dead.event_type,
                            reason = intake_store::PARKED_FORMAT, "parked event unreadable; dead-lettered"
                        );
                        m::outcome(provider, &dead.event_type, "dead_lettered");
                    }
                    if let Some(hook) = &self.after_commit {
                        hook(&envelope);
                    }
                }
                // Events before this one are committed; the retry finds them in the inbox.
                Err(e) if e.is_retryable() => {
                    return Verdict::Retry(
                        Failure::new(RETRIES_EXHAUSTED, e.to_string())
                            .event(&event.event_type, &event.dedupe_key),
                    );
                }
                Err(e) => {
                    return Verdict::DeadLetter(
                        Failure::new(STORE_REJECTED, e.to_string())
                            .event(&event.event_type, &event.dedupe_key),
                    );
                }
            }
        }
        Verdict::Done
    }

    fn settled(&self, delivery: &Delivery, settled: Settled<'_>) {
        let provider = provider_of_queue(&self.topology, &delivery.queue).as_str();
        let (failure, outcome) = match settled {
            Settled::Retried { failure, .. } => (failure, "retried"),
            Settled::DeadLettered { failure, .. } => (failure, "dead_lettered"),
        };
        m::outcome(
            provider,
            failure.event_type.as_deref().unwrap_or("unknown"),
            outcome,
        );
    }
}
