//! Batched acknowledgements for one consumer channel. Acking every delivery on its own costs the
//! broker a quorum-queue command and us a frame per message; instead, finished deliveries are
//! acked together (`multiple`) up to the first one still being processed — so an ack never
//! covers a delivery whose effect is not yet durable — every [`FLUSH_EVERY`] or every
//! [`BATCH`] deliveries, whichever comes first.
//!
//! Only one task sends acks per channel (the flusher, then the final flush after it stopped),
//! so `multiple` acks go out in increasing order.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Channel;
use lapin::options::BasicAckOptions;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Longest a finished delivery waits for its ack.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Finished deliveries that trigger a flush at once.
const BATCH: usize = 64;

#[derive(Default)]
struct State {
    /// Pulled from the stream, not finished (includes ones being nacked).
    pending: BTreeSet<u64>,
    /// Finished with an ack due, not yet acked.
    done: BTreeSet<u64>,
}

/// The highest finished delivery that precedes every unfinished one: acking it with `multiple`
/// covers only deliveries whose outcome is durable, and it is itself a delivery still owed an ack.
fn ack_upto(state: &State) -> Option<u64> {
    let limit = state.pending.first().copied().unwrap_or(u64::MAX);
    state.done.range(..limit).next_back().copied()
}

/// The ack bookkeeping of one channel.
pub(crate) struct AckBatch {
    channel: Channel,
    state: Mutex<State>,
    wake: Notify,
}

impl AckBatch {
    pub(crate) fn new(channel: Channel) -> Arc<AckBatch> {
        Arc::new(AckBatch {
            channel,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A delivery was taken for processing (call in delivery order).
    pub(crate) fn started(&self, tag: u64) {
        self.state().pending.insert(tag);
    }

    /// A delivery's outcome is durable: it may be acked.
    pub(crate) fn done(&self, tag: u64) {
        let mut state = self.state();
        state.pending.remove(&tag);
        state.done.insert(tag);
        if state.done.len() >= BATCH {
            self.wake.notify_one();
        }
    }

    /// A delivery was nacked (its nack already sent): nothing to ack for it.
    pub(crate) fn abandoned(&self, tag: u64) {
        self.state().pending.remove(&tag);
    }

    /// Acks every finished delivery below the first unfinished one, in one frame.
    pub(crate) async fn flush(&self) -> Result<(), lapin::Error> {
        let upto = {
            let mut state = self.state();
            let upto = ack_upto(&state);
            if let Some(upto) = upto {
                state.done = state.done.split_off(&(upto + 1));
            }
            upto
        };
        match upto {
            Some(tag) => {
                self.channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
            }
            None => Ok(()),
        }
    }

    /// Flushes periodically until `stop`; a failed ack ends it (the channel is gone and the
    /// broker will redeliver what was not acked).
    pub(crate) async fn run_flusher(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
            }
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "ack failed; unacked messages will be redelivered");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pending: &[u64], done: &[u64]) -> State {
        State {
            pending: pending.iter().copied().collect(),
            done: done.iter().copied().collect(),
        }
    }

    #[test]
    fn acks_stop_below_the_first_unfinished_delivery() {
        assert_eq!(ack_upto(&state(&[], &[])), None);
        assert_eq!(ack_upto(&state(&[], &[1, 2, 3])), Some(3));
        assert_eq!(ack_upto(&state(&[1], &[2, 3])), None);
        assert_eq!(ack_upto(&state(&[4], &[1, 2, 5, 6])), Some(2));
        // 3 was nacked: neither pending nor done; the ack stops at a delivery still owed one.
        assert_eq!(ack_upto(&state(&[], &[1, 2, 4])), Some(4));
        assert_eq!(ack_upto(&state(&[5], &[1, 2, 4])), Some(4));
    }
}
