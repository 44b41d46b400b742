//! The outbox relay: claims unpublished contact-change rows (`FOR UPDATE SKIP LOCKED`, so any
//! number of relays share the work), publishes each with confirm to the ingress exchange under
//! `contacts.changed`, and marks them published in the same transaction. A crash in between
//! publishes a row again; the sync worker skips it by its `seq`.

use std::time::Duration;

use intake_broker::topology::CONTACTS_CHANGED_KEY;
use intake_broker::{Publisher, Topology};
use intake_store::Store;
use intake_store::sync::{CONTACTS_CHANGED_TOPIC, OutboxMessage};
use tokio_util::sync::CancellationToken;

use crate::message::SyncMessage;
use crate::metrics as m;

/// The relay's settings and handles.
#[derive(Debug, Clone)]
pub struct Relay {
    /// Where the outbox lives.
    pub store: Store,
    /// Confirmed publisher.
    pub publisher: Publisher,
    /// Exchange names.
    pub topology: Topology,
    /// Pause between polls when the outbox was drained.
    pub interval: Duration,
    /// Rows claimed per transaction.
    pub batch: i64,
}

impl Relay {
    /// Relays until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let drained = match self.relay_once().await {
                Ok(n) => (n as i64) < self.batch,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay failed; trying again");
                    true
                }
            };
            if drained {
                if let Ok(backlog) = self.store.outbox_backlog(CONTACTS_CHANGED_TOPIC).await {
                    metrics::gauge!(m::OUTBOX_BACKLOG).set(backlog as f64);
                }
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(self.interval) => {}
                }
            }
        }
    }

    /// One claim-publish-mark round; returns how many rows were published.
    pub async fn relay_once(&self) -> Result<usize, intake_store::StoreError> {
        let exchange = self.topology.ingress_exchange();
        let published = self
            .store
            .relay_outbox(CONTACTS_CHANGED_TOPIC, self.batch, |row: OutboxMessage| {
                let message = SyncMessage::ContactChangedV1 {
                    contact_id: row.contact_id,
                    seq: row.id,
                    envelope_id: row.envelope_id,
                };
                let exchange = exchange.clone();
                async move {
                    let (body, properties) = message.to_amqp();
                    match self.publisher.publish(&exchange, CONTACTS_CHANGED_KEY, &body, properties).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(seq = message.seq(), error = %e, "outbox publish failed; will retry");
                            false
                        }
                    }
                }
            })
            .await?;
        metrics::counter!(m::OUTBOX_PUBLISHED_TOTAL).increment(published as u64);
        Ok(published)
    }
}
