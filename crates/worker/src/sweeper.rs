//! Periodic maintenance every worker runs (all of it safe when several run it at once):
//! dead-letter parked events past their limit, prune raw events past retention, refresh the
//! parked and dead-letter gauges.

use std::time::Duration;

use intake_broker::{Publisher, Topology, codec, dead, retry};
use std::future::Future;
use std::pin::Pin;

use intake_store::{DeadLetterSink, ExpiredParked, ORDERING_TIMEOUT, Store};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;

/// What the loop needs.
pub(crate) struct Sweeper {
    pub store: Store,
    pub publisher: Publisher,
    pub topology: Topology,
    pub interval: Duration,
    pub retention: Duration,
}

/// Parked events dead-lettered per transaction.
const SWEEP_BATCH: i64 = 100;
/// Raw events deleted per statement.
const PRUNE_BATCH: i64 = 10_000;

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
        match self.store.prune_raw_events(self.retention, PRUNE_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "raw events past retention pruned"),
            Err(e) => tracing::warn!(error = %e, "raw-event pruning failed"),
        }
        if let Ok(stats) = self.store.parked_stats().await {
            metrics::gauge!(m::PARKED).set(stats.count as f64);
            metrics::gauge!(m::OLDEST_PARKED_SECONDS).set(stats.oldest_age.as_secs_f64());
        }
        if let Ok(n) = self.store.dead_letter_count().await {
            metrics::gauge!(m::DEAD_LETTERS).set(n as f64);
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
