//! Client for the HealthSherpa partner API, as used by the CRM sync: find a contact by our
//! `external_id`, create it, update it. Knows nothing about queues or Postgres; the sync worker
//! fills a [`ContactForSync`] from the store and decides what to do with a [`HealthSherpaError`].
//!
//! - [`config`]: base URL, auth mode (v1 API key with agent email, or v2 OAuth client
//!   credentials), timeouts; secrets hidden from `Debug`;
//! - [`api`]: every request and response shape we *assumed* (the provider's document names none),
//!   in one place;
//! - [`mapping`]: our contact → HealthSherpa fields, refusing a contact without the required
//!   fields before any request is made;
//! - [`auth`]: the v2 bearer token cache (refreshed shortly before expiry, or once after a 401);
//! - [`client`]: the operations, with metrics and error classification;
//! - [`error`]: [`HealthSherpaError`] and its classification (rate limited, transient, rejected,
//!   unauthorized), plus `Retry-After` parsing;
//! - [`metrics`]: metric names.
//!
//! Nothing here logs or returns a request body, a PHI field or a credential: error messages from
//! HealthSherpa are scrubbed of every value we sent before they are kept.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod mapping;
pub mod metrics;

pub use client::{HealthSherpaClient, SyncedContact};
pub use config::{Auth, HealthSherpaConfig};
pub use error::HealthSherpaError;
pub use mapping::{Address, ContactForSync, Medicare};
