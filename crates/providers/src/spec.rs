//! The shape of a provider declaration ([`ProviderSpec`]) and the one generic decoder that reads
//! any payload by its provider's declaration. Provider modules hold only data and effect mapping.
//!
//! Field classes: what a spec names here (event type, event id, event time, dedupe source, entity
//! id, required keys) is *strict* — missing or invalid is a [`DecodeError`]; every other field the
//! provider reads is declared in [`ProviderSpec::fields`] and read *tolerantly* ([`crate::field`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use intake_core::{Envelope, Provider};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::body::JsonKind;
use crate::doc::{Doc, Issues};
use crate::field::FieldDecl;
use crate::{DecodeError, DecodedEvent, Effect, EntityKind, EntityRef, Ordering};

/// How long a parked event may wait for its prerequisite unless its rule says otherwise.
pub const DEFAULT_PARK_LIMIT: Duration = Duration::from_secs(3600);

/// Everything the pipeline needs to know about one provider's payloads, in one place.
#[derive(Debug)]
pub struct ProviderSpec {
    /// The provider.
    pub provider: Provider,
    /// The top-level JSON kind of every payload; any other is malformed (the receiver answers
    /// 400, see [`crate::body`]).
    pub body: JsonKind,
    /// Where the event type lives.
    pub event_type: TypeSource,
    /// Pointer of the provider's own event id, if it sends one.
    pub event_id: Option<&'static str>,
    /// Where the event time lives.
    pub occurred_at: TimeSource,
    /// How the dedupe key is made.
    pub dedupe: DedupeRecipe,
    /// Every accepted event type with its entity and ordering rule; any other type is refused.
    pub events: &'static [EventSpec],
    /// Every optional field the provider reads, with its type: read tolerantly.
    pub fields: &'static [FieldDecl],
}

/// Where an event type comes from.
#[derive(Debug, Clone, Copy)]
pub enum TypeSource {
    /// A string field.
    Field(&'static str),
    /// The provider sends one kind of payload only; this is its name.
    Fixed(&'static str),
}

/// Where an event's time comes from.
#[derive(Debug, Clone, Copy)]
pub enum TimeSource {
    /// The payload has none: the time the receiver accepted it.
    ReceivedAt,
    /// An RFC 3339 field; when `required` is false and it is absent, the receipt time.
    Field {
        /// JSON pointer.
        pointer: &'static str,
        /// Whether a missing value is a decode error.
        required: bool,
    },
}

/// Where an entity id comes from.
#[derive(Debug, Clone, Copy)]
pub enum IdSource {
    /// A JSON pointer into the body (string or integer).
    Field(&'static str),
    /// A kept request header.
    Header(&'static str),
}

/// How to build the dedupe key (ARCHITECTURE.md section 3).
#[derive(Debug, Clone, Copy)]
pub enum DedupeRecipe {
    /// `<entity id>:<envelope id>`: every delivered envelope is its own event (a broker redelivery
    /// is a duplicate); whether its content repeats the entity's current state is the ordering
    /// rule's call ([`RuleSpec::NewestWins`]), not the inbox key's.
    EntityIdAndEnvelopeId,
    /// SHA-256 over these fields (each the first present of its alternatives; absent or blank =
    /// empty).
    HashOf(&'static [&'static [&'static str]]),
    /// The event id if present, else SHA-256 of (event type, entity id, raw body).
    EventIdElseTypeEntityBodyHash,
    /// The value of one required field.
    Field(&'static str),
    /// The value of one required request header.
    Header(&'static str),
}

/// One accepted event type.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec {
    /// Type name as sent (also the metric label).
    pub event_type: &'static str,
    /// Candidates for the entity, first present wins; none present is a missing-field error.
    pub entity: &'static [(EntityKind, IdSource)],
    /// Its ordering rule.
    pub rule: RuleSpec,
    /// Keys its effect cannot do without beyond the entity (the rows it writes are keyed by
    /// them): each the first present of its alternatives, an id; none present is a missing field.
    pub requires: &'static [&'static [&'static str]],
}

/// A declared ordering rule (see [`Ordering`]).
#[derive(Debug, Clone, Copy)]
pub enum RuleSpec {
    /// Apply on arrival.
    Apply,
    /// Park until `prerequisite` was applied to the entity, at most `limit`.
    ParkUntil {
        /// Event type to wait for.
        prerequisite: &'static str,
        /// Longest wait.
        limit: Duration,
    },
    /// Only a newer `occurred_at` (ties: the higher envelope id) changes the entity; older ones
    /// are kept as history; a body equal to the one that set the current state is a duplicate.
    NewestWins,
    /// Only fills gaps once this event type has been applied.
    FillOnlyAfter(&'static str),
}

impl RuleSpec {
    fn ordering(self) -> Ordering {
        match self {
            RuleSpec::Apply => Ordering::Apply,
            RuleSpec::ParkUntil { prerequisite, limit } => Ordering::ParkUntil {
                prerequisite: prerequisite.to_owned(),
                limit_secs: limit.as_secs(),
            },
            RuleSpec::NewestWins => Ordering::NewestWins,
            RuleSpec::FillOnlyAfter(t) => Ordering::FillOnlyAfter {
                superseded_by: t.to_owned(),
            },
        }
    }
}

/// Builds a provider's typed effect from the parsed body once the spec has accepted the type.
pub(crate) type EffectFn = fn(&Doc<'_>, &EventSpec) -> Result<Effect, DecodeError>;

/// Lowercase hex SHA-256 over `parts`, separated by a unit separator so `("ab","c")` and
/// `("a","bc")` differ.
pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0x1f]);
        }
        hasher.update(part);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_body(body: &[u8], expected: JsonKind) -> Result<Value, DecodeError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError::InvalidJson {
        line: e.line(),
        column: e.column(),
    })?;
    match JsonKind::of(&value) {
        found if found == expected => Ok(value),
        found => Err(DecodeError::WrongKind { expected, found }),
    }
}

fn entity_of(doc: &Doc<'_>, envelope: &Envelope, event: &EventSpec) -> Result<EntityRef, DecodeError> {
    for (kind, source) in event.entity {
        let id = match source {
            IdSource::Field(ptr) => doc.key_id(ptr)?,
            IdSource::Header(name) => envelope.header(name).filter(|v| !v.is_empty()).map(str::to_owned),
        };
        if let Some(id) = id {
            return Ok(EntityRef { kind: *kind, id });
        }
    }
    let pointer = event
        .entity
        .iter()
        .map(|(_, s)| match s {
            IdSource::Field(p) => (*p).to_owned(),
            IdSource::Header(h) => format!("header {h}"),
        })
        .collect::<Vec<_>>()
        .join(" or ");
    Err(DecodeError::MissingField { pointer })
}

fn dedupe_key(
    spec: &ProviderSpec,
    doc: &Doc<'_>,
    envelope: &Envelope,
    event_type: &str,
    entity: &EntityRef,
) -> Result<String, DecodeError> {
    Ok(match spec.dedupe {
        DedupeRecipe::EntityIdAndEnvelopeId => format!("{}:{}", entity.id, envelope.id),
        DedupeRecipe::HashOf(fields) => {
            let mut values = Vec::with_capacity(fields.len());
            for alternatives in fields {
                let mut value = String::new();
                for ptr in *alternatives {
                    if let Some(v) = doc.key_id(ptr)? {
                        value = v;
                        break;
                    }
                }
                values.push(value);
            }
            let parts: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
            sha256_hex(&parts)
        }
        DedupeRecipe::EventIdElseTypeEntityBodyHash => {
            match spec.event_id.map(|p| doc.key_id(p)).transpose()? {
                Some(Some(id)) => id,
                _ => sha256_hex(&[event_type.as_bytes(), entity.id.as_bytes(), &envelope.body]),
            }
        }
        DedupeRecipe::Field(ptr) => doc.key(&[ptr])?,
        DedupeRecipe::Header(name) => envelope
            .header(name)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| DecodeError::MissingField {
                pointer: format!("header {name}"),
            })?,
    })
}

fn occurred_at(
    spec: &ProviderSpec,
    doc: &Doc<'_>,
    received_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, DecodeError> {
    match spec.occurred_at {
        TimeSource::ReceivedAt => Ok(received_at),
        TimeSource::Field { pointer, required } => match doc.key_time(pointer)? {
            Some(t) => Ok(t),
            None if !required => Ok(received_at),
            None => Err(DecodeError::MissingField {
                pointer: pointer.to_owned(),
            }),
        },
    }
}

/// Decodes `envelope` by `spec`, with `effect` building the typed data.
pub(crate) fn decode_with(
    spec: &ProviderSpec,
    envelope: &Envelope,
    effect: EffectFn,
) -> Result<Vec<DecodedEvent>, DecodeError> {
    let body = parse_body(&envelope.body, spec.body)?;
    let issues = Issues::default();
    let doc = Doc::root(&body, &issues);
    let sent_type = match spec.event_type {
        TypeSource::Fixed(t) => t.to_owned(),
        TypeSource::Field(ptr) => doc.key_text(ptr)?.ok_or_else(|| DecodeError::MissingField {
            pointer: ptr.to_owned(),
        })?,
    };
    let event = spec
        .events
        .iter()
        .find(|e| e.event_type == sent_type)
        .ok_or_else(|| DecodeError::unknown_type(spec.provider.as_str(), &sent_type))?;
    let entity = entity_of(&doc, envelope, event)?;
    let dedupe_key = dedupe_key(spec, &doc, envelope, event.event_type, &entity)?;
    let occurred_at = occurred_at(spec, &doc, envelope.received_at)?;
    for alternatives in event.requires {
        doc.key(alternatives)?;
    }
    let effect = effect(&doc, event)?;
    Ok(vec![DecodedEvent {
        dedupe_key,
        occurred_at,
        event_type: event.event_type.to_owned(),
        ordering: event.rule.ordering(),
        effect,
        entity,
        field_issues: issues.into_vec(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_separates_parts() {
        assert_ne!(sha256_hex(&[b"ab", b"c"]), sha256_hex(&[b"a", b"bc"]));
        assert_eq!(sha256_hex(&[b"abc"]).len(), 64);
    }
}
