//! The only crate that talks to Postgres (tokio-postgres + deadpool-postgres). It owns:
//!
//! - [`pool`]: the pool and the embedded migrations, run at start under an advisory lock;
//! - [`apply`]: the one transaction per event — inbox row (a unique-key conflict, SQLSTATE 23505,
//!   means duplicate), entity lock, ordering rule (park / apply / stale / duplicate of the current
//!   state), effect, release of parked successors (an unreadable one is dead-lettered alone),
//!   outbox rows for changed contacts;
//! - `effects`: what each provider's events change in the domain tables;
//! - [`maintenance`]: dead letters, the parked-event sweeper (`FOR UPDATE SKIP LOCKED`), raw-event
//!   retention and the numbers behind the gauges.
//!
//! Errors are a [`StoreError`] whose [`StoreError::is_retryable`] decides retry versus dead letter.
#![forbid(unsafe_code)]

pub mod apply;
mod effects;
mod error;
pub mod maintenance;
pub mod pool;
pub mod sync;

pub use apply::{
    ApplyOptions, ApplyReport, Outcome, PARKED_EVENT_FORMAT, PARKED_FORMAT, ParkedDeadLetter, Released,
};
pub use error::StoreError;
pub use maintenance::{DeadLetter, DeadLetterSink, ExpiredParked, ORDERING_TIMEOUT, ParkedStats};
pub use pool::{Store, StoreConfig};
