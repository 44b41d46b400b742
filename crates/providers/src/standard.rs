//! Standard Webhooks senders: no known schema, so an event is recorded (raw event and inbox) but
//! changes no domain table. Deduplicated by the `webhook-id` header the scheme requires.

use intake_core::Provider;

use crate::doc::Doc;
use crate::spec::{DedupeRecipe, EventSpec, IdSource, ProviderSpec, RuleSpec, TimeSource, TypeSource};
use crate::{DecodeError, Effect, EntityKind, JsonKind};

/// Standard Webhooks, declared. The event type label is fixed: the sender's own `type` is
/// unbounded and must not become a metric label.
pub static SPEC: ProviderSpec = ProviderSpec {
    provider: Provider::Standard,
    body: JsonKind::Object,
    event_type: TypeSource::Fixed("message"),
    event_id: None,
    occurred_at: TimeSource::Field {
        pointer: "/timestamp",
        required: false,
    },
    dedupe: DedupeRecipe::Header("webhook-id"),
    events: &[EventSpec {
        event_type: "message",
        entity: &[(EntityKind::Message, IdSource::Header("webhook-id"))],
        rule: RuleSpec::Apply,
        requires: &[],
    }],
    // No known schema: nothing beyond the keys is read.
    fields: &[],
};

pub(crate) fn effect(_doc: &Doc<'_>, _event: &EventSpec) -> Result<Effect, DecodeError> {
    Ok(Effect::RecordOnly)
}
