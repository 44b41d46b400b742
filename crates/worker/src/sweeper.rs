//! Periodic maintenance every worker runs (all of it safe when several run it at once):
//! dead-letter parked events past their limit, delete what is past its retention (raw events,
//! inbox rows past the dedupe window, published outbox rows, resolved dead letters) in small
//! batches, refresh the parked and dead-letter gauges.

use std::time::{Duration, Instant};

use intake_broker::{Publisher, Topology, codec, dead, retry};
use std::future::Future;
use std::pin::Pin;

use intake_store::{DeadLetterSink, ExpiredParked, ORDERING_TIMEOUT, Retained, Store};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;

/// What the loop needs.
pub(crate) struct Sweeper {
    pub store: Store,
    pub publisher: Publisher,
    pub topology: Topology,
    pub interval: Duration,
    pub retention: Retention,
}

/// How long each retained table keeps its rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    pub raw_events: Duration,
    /// The dedupe window.
    pub inbox: Duration,
    pub published_outbox: Duration,
    pub resolved_dead_letters: Duration,
}

impl Retention {
    fn age(&self, what: Retained) -> Duration {
        match what {
            Retained::RawEvents => self.raw_events,
            Retained::Inbox => self.inbox,
            Retained::PublishedOutbox => self.published_outbox,
            Retained::ResolvedDeadLetters => self.resolved_dead_letters,
        }
    }
}

/// Parked events dead-lettered per transaction.
const SWEEP_BATCH: i64 = 100;
/// Rows deleted per statement: small enough that each statement holds its row locks briefly.
const PRUNE_BATCH: i64 = 1000;

impl Sweeper {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        loop {
            // Jitter so that workers started together do not sweep in lockstep.
            let wait = self.interval.mul_f64(0.75 + rand::random::<f64>() * 0.5);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            self.once().await;
        }
    }

    pub(crate) async fn once(&self) {
        loop {
            match self.store.sweep_expired_parked(SWEEP_BATCH, self).await {
                Ok(swept) => {
                    for (provider, event_type) in &swept {
                        tracing::warn!(
                            provider = provider.as_str(),
                            event_type,
                            "parked event timed out; dead-lettered"
                        );
                        m::outcome(provider.as_str(), event_type, "dead_lettered");
                    }
                    if (swept.len() as i64) < SWEEP_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "parked-event sweep failed");
                    break;
                }
            }
        }
        self.prune().await;
        // The gauges; the timestamp moves only when all of them were read, so a sweep that keeps
        // failing shows as a stale timestamp instead of gauges frozen at their last value.
        let parked = self.store.parked_stats().await;
        let open = self.store.unresolved_dead_letters().await;
        let backlog = self
            .store
            .outbox_backlog(intake_broker::topology::CONTACTS_CHANGED_KEY)
            .await;
        if let (Ok(stats), Ok(open), Ok(backlog)) = (parked, open, backlog) {
            metrics::gauge!(m::PARKED).set(stats.count as f64);
            metrics::gauge!(m::OLDEST_PARKED_SECONDS).set(stats.oldest_age.as_secs_f64());
            metrics::gauge!(m::PARKED_OVERDUE).set(stats.overdue as f64);
            metrics::gauge!(m::DEAD_LETTERS).set(open as f64);
            // Also reported here, not only by the relay: with no sync running, the backlog grows
            // and someone must see it.
            metrics::gauge!(m::OUTBOX_BACKLOG).set(backlog as f64);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            metrics::gauge!(m::SWEEP_LAST_SUCCESS).set(now.as_secs_f64());
        } else {
            tracing::warn!("reading the worker gauges failed; they keep their last values");
        }
    }

    /// Deletes what is past its retention, batch after batch, until a batch comes back short
    /// or half the sweep interval is used (the rest waits for the next sweep).
    async fn prune(&self) {
        let budget = Instant::now() + self.interval / 2;
        for what in Retained::ALL {
            let mut deleted = 0;
            loop {
                match self
                    .store
                    .prune(what, self.retention.age(what), PRUNE_BATCH)
                    .await
                {
                    Ok(n) => {
                        deleted += n;
                        if (n as i64) < PRUNE_BATCH || Instant::now() >= budget {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(table = what.table(), error = %e, "retention pruning failed");
                        break;
                    }
                }
            }
            if deleted > 0 {
                metrics::counter!(m::RETENTION_DELETED_TOTAL, "table" => what.table()).increment(deleted);
                tracing::info!(table = what.table(), deleted, "rows past retention deleted");
            }
        }
    }
}

impl DeadLetterSink for Sweeper {
    fn publish<'a>(&'a self, expired: &'a ExpiredParked) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let reason = format!("{} was not applied within the park limit", expired.waited_for);
            let properties = retry::dead_letter_properties(
                &codec::envelope_properties(&expired.envelope),
                ORDERING_TIMEOUT,
                1,
                &reason,
            );
            let queue = self.topology.provider_queue(expired.envelope.provider);
            // The sweep writes the row in its own transaction: the recorder need not.
            let properties = dead::with_context(
                properties,
                &queue,
                Some(&expired.event_type),
                Some(&expired.dedupe_key),
                true,
            );
            let exchange = self.topology.dead_letter_exchange();
            self.publisher
                .publish(&exchange, &queue, &expired.envelope.body, properties)
                .await
                .is_ok()
        })
    }
}
