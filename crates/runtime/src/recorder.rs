//! The dead-letter recorder: consumes the dead-letter queue and writes one Postgres row per
//! message — whoever dead-lettered it. Our consumers' dead letters carry their reason and context
//! in headers; a message the broker dead-lettered (its delivery limit reached, e.g. a handler that
//! crashes every time) carries only `x-death`, and is recorded with the broker's reason
//! (`delivery_limit`). The queue copy is acked only once its row is committed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use intake_broker::{Delivery, Topology, codec, dead};
use intake_store::{NewDeadLetter, Store};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::metrics as m;
use crate::{Handler, Verdict};

/// Pause before a dead letter whose row could not be written is delivered again.
const RECORD_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Writes the rows of the dead-letter queue's messages.
#[derive(Debug, Clone)]
pub struct DeadLetterRecorder {
    store: Store,
    topology: Topology,
}

impl DeadLetterRecorder {
    /// A recorder writing to `store`, reading queue names of `topology`.
    pub fn new(store: Store, topology: Topology) -> DeadLetterRecorder {
        DeadLetterRecorder { store, topology }
    }
}

/// A stable id for a message that carries none we can read (so a redelivered one is recorded
/// once): the first 16 bytes of SHA-256 over its queue and body.
fn derived_id(queue: &str, body: &[u8]) -> Uuid {
    let digest = Sha256::new()
        .chain_update(queue.as_bytes())
        .chain_update([0x1f])
        .chain_update(body)
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

impl Handler for DeadLetterRecorder {
    async fn handle(&self, delivery: &Delivery) -> Verdict {
        let info = dead::dead_letter_info(&delivery.properties);
        if info.recorded {
            // Its producer (the parked-event sweeper) wrote the row in its own transaction.
            return Verdict::Done;
        }
        let queue = info.queue.clone().unwrap_or_else(|| delivery.queue.clone());
        let source = if queue == self.topology.sync_queue() {
            "sync"
        } else {
            "ingest"
        };
        let envelope = codec::decode_envelope(&delivery.properties, &delivery.body).ok();
        let message_id = envelope.as_ref().map(|e| e.id).unwrap_or_else(|| {
            delivery
                .properties
                .message_id()
                .as_ref()
                .and_then(|id| Uuid::parse_str(id.as_str()).ok())
                .unwrap_or_else(|| derived_id(&queue, &delivery.body))
        });
        let received_at = envelope.as_ref().map(|e| e.received_at).unwrap_or_else(|| {
            delivery
                .properties
                .timestamp()
                .and_then(|t| i64::try_from(t).ok())
                .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
                .unwrap_or_else(Utc::now)
        });
        let broker_error = if info.reason == "delivery_limit" {
            format!(
                "dead-lettered by the broker: delivered {} times without being settled (the handler crashed or handed it back each time)",
                info.attempts
            )
        } else {
            format!("dead-lettered by the broker: {}", info.reason)
        };
        let headers = envelope
            .as_ref()
            .map(|e| serde_json::to_value(&e.headers).unwrap_or_default())
            .unwrap_or_else(|| serde_json::json!([]));
        let row = NewDeadLetter {
            source,
            queue: Some(&queue),
            message_id,
            endpoint: envelope.as_ref().map(|e| e.endpoint.as_str()),
            provider: envelope.as_ref().map(|e| e.provider.as_str()),
            event_type: info.event_type.as_deref(),
            dedupe_key: info.dedupe_key.as_deref(),
            reason: &info.reason,
            attempts: info.attempts.max(1),
            first_error: info.first_error.as_deref(),
            last_error: Some(info.last_error.as_deref().unwrap_or(&broker_error)),
            received_at,
            headers,
            properties: dead::stored_properties(&delivery.properties),
            body: &delivery.body,
        };
        match self.store.record_dead_letter(&row).await {
            Ok(inserted) => {
                if inserted {
                    metrics::counter!(m::DEAD_LETTERS_RECORDED_TOTAL, "source" => source, "reason" => info.reason.clone())
                        .increment(1);
                    tracing::info!(source, %message_id, reason = %info.reason, attempts = info.attempts, "dead letter recorded");
                }
                Verdict::Done
            }
            Err(e) => {
                // The queue copy stays until its row is written: nothing given up on is lost.
                tracing::warn!(error = %e, %message_id, "could not record a dead letter; it stays queued");
                Verdict::HandBack {
                    pause: RECORD_RETRY_PAUSE,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_id("q", b"a"), derived_id("q", b"a"));
        assert_ne!(derived_id("q", b"a"), derived_id("q", b"b"));
        assert_ne!(derived_id("q1", b"a"), derived_id("q", b"1a"));
    }
}
