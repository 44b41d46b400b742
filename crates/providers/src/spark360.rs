//! Spark360 lead and widget events. The document shows the event names and the
//! `source_tracking` block but no payload; the paths below are our reading of it (also in
//! README.md): type at `/event`, id at `/event_id`, time at `/occurred_at`, the lead object at
//! `/lead` with its id at `/lead/id`, the widget at `/widget` with its id at `/widget/id`.
//!
//! Ordering: `lead.rental_alert` and `lead.contact_requested` park until `lead.enriched` of the
//! same lead is applied; a `lead.address_preview` after `lead.enriched` only fills gaps.

use intake_core::Provider;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::doc::Doc;
use crate::event::redacted_debug;
use crate::spec::{
    DEFAULT_PARK_LIMIT, DedupeRecipe, EventSpec, IdSource, ProviderSpec, RuleSpec, TimeSource, TypeSource,
};
use crate::{DecodeError, Effect, EntityKind, JsonKind};

/// Lead id path (not shown in the provider document).
pub const LEAD_ID: &str = "/lead/id";
/// Widget id path.
const WIDGET_ID: &str = "/widget/id";
/// `lead.address_preview`.
pub const ADDRESS_PREVIEW: &str = "lead.address_preview";
/// `lead.enriched`.
pub const ENRICHED: &str = "lead.enriched";
/// `lead.rental_alert`.
pub const RENTAL_ALERT: &str = "lead.rental_alert";
/// `lead.contact_requested`.
pub const CONTACT_REQUESTED: &str = "lead.contact_requested";
/// `widget.status_changed`.
pub const WIDGET_STATUS_CHANGED: &str = "widget.status_changed";

const LEAD: &[(EntityKind, IdSource)] = &[(EntityKind::Lead, IdSource::Field(LEAD_ID))];
const AFTER_ENRICHED: RuleSpec = RuleSpec::ParkUntil {
    prerequisite: ENRICHED,
    limit: DEFAULT_PARK_LIMIT,
};

/// Spark360, declared.
pub static SPEC: ProviderSpec = ProviderSpec {
    provider: Provider::Spark360,
    body: JsonKind::Object,
    event_type: TypeSource::Field("/event"),
    event_id: Some("/event_id"),
    occurred_at: TimeSource::Field {
        pointer: "/occurred_at",
        required: false,
    },
    dedupe: DedupeRecipe::EventIdElseTypeEntityBodyHash,
    events: &[
        EventSpec {
            event_type: ADDRESS_PREVIEW,
            entity: LEAD,
            rule: RuleSpec::FillOnlyAfter(ENRICHED),
            requires: &[],
        },
        EventSpec {
            event_type: ENRICHED,
            entity: LEAD,
            rule: RuleSpec::Apply,
            requires: &[],
        },
        EventSpec {
            event_type: RENTAL_ALERT,
            entity: LEAD,
            rule: AFTER_ENRICHED,
            requires: &[],
        },
        EventSpec {
            event_type: CONTACT_REQUESTED,
            entity: LEAD,
            rule: AFTER_ENRICHED,
            requires: &[],
        },
        EventSpec {
            event_type: WIDGET_STATUS_CHANGED,
            entity: &[(EntityKind::Widget, IdSource::Field(WIDGET_ID))],
            rule: RuleSpec::Apply,
            requires: &[],
        },
    ],
    fields: fields::ALL,
};

/// Optional fields: read tolerantly ([`crate::field`]). Strict keys are in [`SPEC`]: `/event`,
/// `/event_id` (absent: the dedupe key is a hash), `/occurred_at` (absent: receipt time), and the
/// lead or widget id. The lead object (`/lead`) is kept as sent.
mod fields {
    crate::field::optional_fields! {
        ADDRESS: Object = "/lead/address";
        OWNER_OCCUPIED: Bool = "/lead/owner_occupied";
        SOURCE_TRACKING: Object = "/source_tracking";
        WIDGET_VERSION: Text = "/source_tracking/widget_version";
        WIDGET_NAME: Text = "/source_tracking/widget_name";
        SOURCE_CODE: Text = "/source_tracking/source_code";
        SOURCE_LABEL: Text = "/source_tracking/source_label";
        NAME: Text = "/widget/name";
        STATUS: Text = "/widget/status";
    }
}

/// The `source_tracking` block.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SourceTracking {
    pub widget_version: Option<String>,
    pub widget_name: Option<String>,
    pub source_code: Option<String>,
    pub source_label: Option<String>,
}

/// A lead event: the lead object as sent plus the fields the store reads from it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadEvent {
    /// `/lead/id`.
    pub lead_id: String,
    /// `/lead/address`, kept as sent.
    pub address: Option<Value>,
    /// `/lead/owner_occupied`.
    pub owner_occupied: Option<bool>,
    /// `/lead` as sent (enrichment write-back, alert or contact request data).
    pub lead: Value,
    /// `/source_tracking`.
    pub source_tracking: Option<SourceTracking>,
}

/// A widget's status change.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct WidgetStatus {
    /// `/widget/id`.
    pub widget_id: String,
    /// `/widget/name`.
    pub name: Option<String>,
    /// `/widget/status`.
    pub status: Option<String>,
}

redacted_debug!(SourceTracking, LeadEvent, WidgetStatus);

pub(crate) fn effect(doc: &Doc<'_>, event: &EventSpec) -> Result<Effect, DecodeError> {
    use fields::*;
    if event.event_type == WIDGET_STATUS_CHANGED {
        return Ok(Effect::Widget(WidgetStatus {
            widget_id: doc.key(&[WIDGET_ID])?,
            name: doc.get(NAME),
            status: doc.get(STATUS),
        }));
    }
    let source_tracking = doc.block(SOURCE_TRACKING).map(|s| SourceTracking {
        widget_version: s.get(WIDGET_VERSION),
        widget_name: s.get(WIDGET_NAME),
        source_code: s.get(SOURCE_CODE),
        source_label: s.get(SOURCE_LABEL),
    });
    Ok(Effect::Lead(Box::new(LeadEvent {
        lead_id: doc.key(&[LEAD_ID])?,
        address: doc.get(ADDRESS),
        owner_occupied: doc.get(OWNER_OCCUPIED),
        // The lead id is strict, so `/lead` is an object.
        lead: doc.raw("/lead").cloned().unwrap_or(Value::Null),
        source_tracking,
    })))
}
