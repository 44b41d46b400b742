//! Provider payloads → normalized events. Pure: no I/O, no clock.
//!
//! Each provider is declared once, as data, in its own module ([`spark`], [`sparkloop`],
//! [`spark360`], [`healthsherpa`], [`standard`]): a [`ProviderSpec`] saying where the event type,
//! event id, entity id and event time live (JSON pointers), how the dedupe key is made, and which
//! event types exist with their ordering rule and park limit — the *strict* keys — and every
//! optional field it reads with its type, read *tolerantly* ([`field`]). One generic decoder reads
//! any payload by that declaration; the provider module only maps fields to its typed effect.
//!
//! [`decode`] turns an [`Envelope`] into [`DecodedEvent`]s or a permanent [`DecodeError`] whose
//! message names a path or a type, never a value from the body.
#![forbid(unsafe_code)]

pub mod body;
mod doc;
mod error;
mod event;
pub mod field;
pub mod fixtures;
pub mod healthsherpa;
pub mod spark;
pub mod spark360;
pub mod sparkloop;
mod spec;
pub mod standard;

pub use body::JsonKind;
pub use error::DecodeError;
pub use event::{DecodedEvent, Effect, EntityKind, EntityRef, Ordering};
pub use field::{Expected, FieldDecl, FieldIssue};
pub use spec::{
    DEFAULT_PARK_LIMIT, DedupeRecipe, EventSpec, IdSource, ProviderSpec, RuleSpec, TimeSource, TypeSource,
};

use intake_core::{Envelope, Provider};

/// The declaration of `provider`.
pub fn spec(provider: Provider) -> &'static ProviderSpec {
    match provider {
        Provider::Spark => &spark::SPEC,
        Provider::SparkLoop => &sparkloop::SPEC,
        Provider::Spark360 => &spark360::SPEC,
        Provider::HealthSherpa => &healthsherpa::SPEC,
        Provider::Standard => &standard::SPEC,
    }
}

/// Whether `body` is JSON the decoder of `provider` can parse, of the top-level kind it declares
/// (the receiver's check before it answers 200; see [`body`]).
pub fn check_body(provider: Provider, body: &[u8]) -> Result<(), DecodeError> {
    body::check(body, spec(provider).body)
}

/// Decodes one accepted webhook into the events it carries.
pub fn decode(envelope: &Envelope) -> Result<Vec<DecodedEvent>, DecodeError> {
    let effect: spec::EffectFn = match envelope.provider {
        Provider::Spark => spark::effect,
        Provider::SparkLoop => sparkloop::effect,
        Provider::Spark360 => spark360::effect,
        Provider::HealthSherpa => healthsherpa::effect,
        Provider::Standard => standard::effect,
    };
    spec::decode_with(spec(envelope.provider), envelope, effect)
}

#[cfg(test)]
mod field_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
