//! Types every intake process shares, with no I/O.
//!
//! - [`Provider`]: the closed set of webhook senders we understand; its name is the routing key
//!   of the provider's queue.
//! - [`Envelope`]: one accepted webhook exactly as received (raw body byte for byte) plus what the
//!   receiver knew about it. It is what travels through RabbitMQ from the receiver to the workers.
#![forbid(unsafe_code)]

mod envelope;
mod provider;

pub use envelope::{ENVELOPE_TYPE_V1, Envelope, KEPT_HEADERS};
pub use provider::{Provider, UnknownProvider};
