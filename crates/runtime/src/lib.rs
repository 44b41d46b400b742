//! What the ingest worker and the sync worker share, so there is one of each mechanism:
//!
//! - [`Handler`] and [`Verdict`]: a consumer's logic says *done*, *retry* (optionally not before
//!   some time), *dead letter* (reason, error) or *hand back after a pause* — nothing more;
//! - [`BatchHandler`] and [`Batching`]: the same verdicts for the deliveries a consumer took
//!   together (group commit: one transaction for a batch), each settled on its own;
//! - [`ConsumerRuntime`]: prefetch, bounded concurrency and batched acks (through the broker
//!   crate's consumer), delay tiers with jitter, confirmed dead-lettering, pausing while a publish
//!   keeps failing, graceful stop, and the `intake_consumer_*` metrics of all of it;
//! - [`DeadLetterRecorder`]: the dead-letter queue's consumer, which makes every dead letter —
//!   ours or the broker's delivery-limit ones — one Postgres row;
//! - [`process`]: the wiring every consuming role shares (store and migrations when reachable,
//!   publisher, ops server and readiness, the grace period).
#![forbid(unsafe_code)]

pub mod metrics;
pub mod process;
mod recorder;
mod runtime;
mod verdict;

pub use recorder::DeadLetterRecorder;
pub use runtime::{BatchHandler, Batching, ConsumerRuntime, RETRIES_EXHAUSTED};
pub use verdict::{Failure, Handler, Settled, Verdict};
