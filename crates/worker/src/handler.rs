//! A batch of deliveries, start to finish: envelopes → provider events → one store transaction
//! for the batch (group commit, each event under its own savepoint). The handler only judges each
//! delivery — done, retry (transient store failure) or dead letter (a broken envelope, an
//! undecodable payload, a row Postgres refuses) — and the shared consumer runtime
//! (`intake_runtime`) acks, republishes to a delay tier or dead-letters accordingly.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use intake_broker::{Delivery, Topology, codec};
use intake_core::{Envelope, Provider};
use intake_providers::DecodedEvent;
use intake_runtime::{BatchHandler, Failure, RETRIES_EXHAUSTED, Settled, Verdict};
use intake_store::{ApplyOptions, ApplyReport, BatchDelivery, BatchStats, Store};

use crate::metrics as m;

/// Fault injection for tests: called once a batch's transaction committed, before its acks, with
/// the envelopes of the deliveries whose events all committed.
pub type AfterCommitHook = Arc<dyn Fn(&[&Envelope]) + Send + Sync>;

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

impl IngestHandler {
    /// Metrics of one committed event, and the test hook.
    fn committed(&self, envelope: &Envelope, event: &DecodedEvent, report: ApplyReport) {
        let provider = envelope.provider.as_str();
        m::outcome(provider, &event.event_type, report.outcome.as_str());
        if report.outcome != intake_store::Outcome::Duplicate {
            // Counted with the inbox row that notes them, so a retry or a redelivery does not
            // count them twice.
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
        // Parked events of this entity whose stored form this build cannot read: they are in
        // `dead_letters` (reason parked_format); this event applied regardless.
        for dead in report.parked_dead_letters {
            tracing::warn!(
                provider, envelope_id = %dead.envelope_id, event_type = %dead.event_type,
                reason = intake_store::PARKED_FORMAT, "parked event unreadable; dead-lettered"
            );
            m::outcome(provider, &dead.event_type, "dead_lettered");
        }
    }
}

/// A delivery decoded as far as it goes: its envelope and events, or its verdict already.
type Decoded = Result<(Envelope, Vec<DecodedEvent>), Verdict>;

fn decode(delivery: &Delivery) -> Decoded {
    let envelope = codec::decode_envelope(&delivery.properties, &delivery.body)
        .map_err(|e| Verdict::DeadLetter(Failure::new(MALFORMED_ENVELOPE, e.to_string())))?;
    let events = intake_providers::decode(&envelope)
        .map_err(|e| Verdict::DeadLetter(Failure::new(e.reason(), e.to_string())))?;
    Ok((envelope, events))
}

impl BatchHandler for IngestHandler {
    async fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Verdict> {
        let decoded: Vec<Decoded> = deliveries.iter().map(decode).collect();
        let batch: Vec<BatchDelivery<'_>> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .map(|(envelope, events)| BatchDelivery { envelope, events })
            .collect();
        let (mut results, stats) = if batch.is_empty() {
            (Vec::new(), BatchStats::default())
        } else {
            self.store
                .apply_batch(&batch, self.options, self.db_timeout)
                .await
        };
        if stats.splits > 0 {
            metrics::counter!(m::BATCH_SPLITS_TOTAL).increment(stats.splits as u64);
        }
        if stats.deferred > 0 {
            metrics::counter!(m::BATCH_DEFERRED_TOTAL).increment(stats.deferred as u64);
        }
        let mut results = results.drain(..);
        let mut committed: Vec<&Envelope> = Vec::with_capacity(decoded.len());
        let verdicts = decoded
            .iter()
            .map(|decoded| {
                let (envelope, events) = match decoded {
                    Ok(d) => d,
                    Err(verdict) => return verdict.clone(),
                };
                let Some(result) = results.next() else {
                    // apply_batch answers every delivery; should it not, retrying is safe.
                    return Verdict::Retry(Failure::new(RETRIES_EXHAUSTED, "no result for the delivery"));
                };
                for (event, report) in events.iter().zip(result.reports) {
                    self.committed(envelope, event, report);
                }
                match result.failed {
                    None => {
                        committed.push(envelope);
                        Verdict::Done
                    }
                    // Events before the failed one are committed; the retry finds them in the inbox.
                    Some((index, e)) => {
                        let event = &events[index.min(events.len().saturating_sub(1))];
                        let failure = |reason| {
                            Failure::new(reason, e.to_string()).event(&event.event_type, &event.dedupe_key)
                        };
                        if e.is_retryable() {
                            Verdict::Retry(failure(RETRIES_EXHAUSTED))
                        } else {
                            Verdict::DeadLetter(failure(STORE_REJECTED))
                        }
                    }
                }
            })
            .collect();
        if let Some(hook) = &self.after_commit {
            hook(&committed);
        }
        verdicts
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
