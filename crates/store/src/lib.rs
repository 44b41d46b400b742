//! The only crate that talks to Postgres (tokio-postgres + deadpool-postgres). It owns:
//!
//! - [`pool`]: the pool (every session bounded by `statement_timeout` and `lock_timeout`) and
//!   the embedded migrations, run by refinery at start under an advisory lock;
//! - [`settings`]: `INTAKE_DATABASE_URL`, a secret read from the environment only;
//! - [`apply`]: the one transaction per event — inbox row (a unique-key conflict, SQLSTATE 23505,
//!   means duplicate), entity lock, ordering rule (park / apply / stale / duplicate of the current
//!   state), effect, release of parked successors (an unreadable one is dead-lettered alone),
//!   outbox rows for changed contacts;
//! - `effects`: what each provider's events change in the domain tables;
//! - [`dead_letters`]: the one dead-letter store (record, list, replay bookkeeping, purge);
//! - [`operator`]: an operator's release or drop of a parked event;
//! - [`trace`]: one webhook's life read back for `intake trace`, and parked events for operators;
//! - [`crypto`], [`sealed`], [`keys`]: PHI at rest — the keys, the sealed columns, rotation;
//! - [`maintenance`]: dead letters, the parked-event sweeper (`FOR UPDATE SKIP LOCKED`),
//!   retention of every growing table in batches, and the numbers behind the gauges.
//!
//! Errors are a [`StoreError`] whose [`StoreError::is_retryable`] decides retry versus dead letter.
#![forbid(unsafe_code)]

pub mod apply;
pub mod crypto;
pub mod dead_letters;
mod effects;
mod error;
pub mod keys;
pub mod maintenance;
pub mod operator;
pub mod pool;
pub mod sealed;
pub mod settings;
pub mod sync;
mod tls;
pub mod trace;

pub use apply::{
    ApplyOptions, ApplyReport, BatchDelivery, BatchStats, DeliveryResult, Outcome, PARKED_EVENT_FORMAT,
    PARKED_FORMAT, ParkedDeadLetter, Released,
};
pub use crypto::{CryptoError, KeyError, KeySettings, Keyring};
pub use dead_letters::{DeadLetterFilter, DeadLetterRow, NewDeadLetter};
pub use error::StoreError;
pub use keys::{KeyUsage, Resealed};
pub use maintenance::{DeadLetter, DeadLetterSink, ExpiredParked, ORDERING_TIMEOUT, ParkedStats, Retained};
pub use operator::{DROPPED_BY_OPERATOR, Dropped, ManualRelease};
pub use pool::{SessionBounds, Store, StoreConfig};
pub use settings::{DEFAULT_DATABASE_URL, DatabaseVariables, database_url_from_env};
pub use trace::{ParkedRow, TraceStep};
