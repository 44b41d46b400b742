//! The only crate that speaks AMQP (lapin). It owns:
//!
//! - [`topology`]: every exchange and queue name under one prefix, declared idempotently by
//!   [`topology::declare`];
//! - [`codec`]: how an [`intake_core::Envelope`] maps to an AMQP message and back (raw body as
//!   the message body, everything else as properties);
//! - [`publisher`]: one long-lived connection with confirm-mode channels, reconnecting with
//!   backoff, that answers a publish only once the broker confirmed it (or says why not);
//! - [`consumer`]: consuming work queues with bounded prefetch and concurrency, batched acks;
//! - [`retry`] and [`dead`]: the headers of retried and dead-lettered messages;
//! - [`admin`]: topology removal and queue statistics (passive declare).
#![forbid(unsafe_code)]

mod acks;
pub mod admin;
pub mod codec;
pub mod consumer;
pub mod dead;
mod error;
pub mod metrics;
pub mod publisher;
pub mod retry;
pub mod settings;
pub mod topology;

pub use consumer::{Consumer, ConsumerConfig, Delivery, Disposition};
pub use error::BrokerError;
pub use publisher::{Publisher, PublisherConfig};
pub use settings::BrokerSettings;
pub use topology::Topology;

/// Re-exported so callers can name lapin types without depending on lapin themselves.
pub use lapin;
