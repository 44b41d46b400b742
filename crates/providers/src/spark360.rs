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
use crate::{DecodeError, Effect, EntityKind};

/// Lead id path (not shown in the provider document).
pub const LEAD_ID: &str = "/lead/id";
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
        },
        EventSpec {
            event_type: ENRICHED,
            entity: LEAD,
            rule: RuleSpec::Apply,
        },
        EventSpec {
            event_type: RENTAL_ALERT,
            entity: LEAD,
            rule: AFTER_ENRICHED,
        },
        EventSpec {
            event_type: CONTACT_REQUESTED,
            entity: LEAD,
            rule: AFTER_ENRICHED,
        },
        EventSpec {
            event_type: WIDGET_STATUS_CHANGED,
            entity: &[(EntityKind::Widget, IdSource::Field("/widget/id"))],
            rule: RuleSpec::Apply,
        },
    ],
};

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
    if event.event_type == WIDGET_STATUS_CHANGED {
        return Ok(Effect::Widget(WidgetStatus {
            widget_id: doc.req_id("/widget/id")?,
            name: doc.text("/widget/name")?,
            status: doc.text("/widget/status")?,
        }));
    }
    let source_tracking = match doc.object("/source_tracking")? {
        None => None,
        Some(_) => {
            let s = |f: &str| doc.id(&format!("/source_tracking/{f}"));
            Some(SourceTracking {
                widget_version: s("widget_version")?,
                widget_name: s("widget_name")?,
                source_code: s("source_code")?,
                source_label: s("source_label")?,
            })
        }
    };
    Ok(Effect::Lead(Box::new(LeadEvent {
        lead_id: doc.req_id(LEAD_ID)?,
        address: doc.object("/lead/address")?,
        owner_occupied: doc.bool("/lead/owner_occupied")?,
        lead: doc.object("/lead")?.unwrap_or(Value::Null),
        source_tracking,
    })))
}
