//! The only crate that talks to Postgres (tokio-postgres + deadpool-postgres). It owns:
//!
//! - [`pool`]: the pool and the embedded migrations, run at start under an advisory lock;
//! - [`apply`]: the one transaction per event — inbox row (a unique-key conflict, SQLSTATE 23505,
//!   means duplicate), entity lock, ordering rule (park / apply / stale), effect, release of
//!   parked successors, outbox rows for changed contacts;
//! - `effects`: what each provider's events change in the domain tables;
//! - [`dead_letters`]: the one dead-letter store (record, list, replay bookkeeping, purge);
//! - [`trace`]: one webhook's life read back for `intake trace`, and parked events for operators;
//! - [`maintenance`]: dead letters, the parked-event sweeper (`FOR UPDATE SKIP LOCKED`), raw-event
//!   retention and the numbers behind the gauges.
//!
//! Errors are a [`StoreError`] whose [`StoreError::is_retryable`] decides retry versus dead letter.
#![forbid(unsafe_code)]

pub mod apply;
pub mod dead_letters;
mod effects;
mod error;
pub mod maintenance;
pub mod pool;
pub mod sync;
pub mod trace;

pub use apply::{ApplyOptions, ApplyReport, Outcome, Released};
pub use dead_letters::{DeadLetterFilter, DeadLetterRow, NewDeadLetter};
pub use error::StoreError;
pub use maintenance::{DeadLetter, DeadLetterSink, ExpiredParked, ORDERING_TIMEOUT, ParkedStats};
pub use pool::{Store, StoreConfig};
pub use trace::{ParkedRow, TraceStep};
