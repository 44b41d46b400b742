//! The normalized event every decoder produces and the store applies. Serializable, because a
//! parked event waits in Postgres in this form until its prerequisite arrives.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{FieldIssue, healthsherpa, spark, spark360, sparkloop};

/// What kind of thing an event is about; with the id, the unit of locking and ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A Spark contact (`details.id`).
    Contact,
    /// A SparkLoop subscriber.
    Subscriber,
    /// A Spark360 lead.
    Lead,
    /// A Spark360 widget.
    Widget,
    /// A HealthSherpa application (keyed by application or external id), with its policies.
    Application,
    /// A Standard Webhooks message (keyed by its `webhook-id`).
    Message,
}

impl EntityKind {
    /// Lowercase name as stored in Postgres.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntityKind::Contact => "contact",
            EntityKind::Subscriber => "subscriber",
            EntityKind::Lead => "lead",
            EntityKind::Widget => "widget",
            EntityKind::Application => "application",
            EntityKind::Message => "message",
        }
    }
}

/// The entity an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntityRef {
    /// Kind of entity.
    pub kind: EntityKind,
    /// The provider's id for it.
    pub id: String,
}

/// How an event is ordered against the other events of its entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Ordering {
    /// Apply on arrival (the effect itself keeps one-way state from moving back).
    Apply,
    /// Park until an event of type `prerequisite` has been applied to the same entity;
    /// dead-letter as `ordering_timeout` after `limit_secs`.
    ParkUntil {
        /// Event type that must have been applied first.
        prerequisite: String,
        /// Longest wait in seconds.
        limit_secs: u64,
    },
    /// Apply only if `(occurred_at, envelope id)` is newer than every event seen for the entity
    /// so far; otherwise keep it as history only (`stale`). A raw body byte-equal to the one that
    /// set the entity's current state is a `duplicate`: no effect, but it still counts as the
    /// newest receipt.
    NewestWins,
    /// Once `superseded_by` has been applied the event may only fill gaps, never overwrite
    /// (outcome `stale`).
    FillOnlyAfter {
        /// Event type whose data wins over this one.
        superseded_by: String,
    },
}

/// One event, normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodedEvent {
    /// Unique per endpoint for one real-world event, however often it is delivered.
    pub dedupe_key: String,
    /// What it is about.
    pub entity: EntityRef,
    /// Low-cardinality type name from the provider's spec (a metric label).
    pub event_type: String,
    /// When it happened (the provider's timestamp, else when we received it).
    pub occurred_at: DateTime<Utc>,
    /// Its ordering rule.
    pub ordering: Ordering,
    /// What applying it changes.
    pub effect: Effect,
    /// Optional fields that held an unreadable value (read as absent). Defaults to none, so
    /// events parked before this field existed still read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_issues: Vec<FieldIssue>,
}

/// The typed data of an event, per provider. `Debug` names only the variant: the data holds
/// personal data and PHI.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// A full Spark contact snapshot.
    SparkContact(Box<spark::ContactSnapshot>),
    /// A SparkLoop referral or reward event.
    SparkLoop(Box<sparkloop::LoopEvent>),
    /// A Spark360 lead event.
    Lead(Box<spark360::LeadEvent>),
    /// A Spark360 widget status change.
    Widget(spark360::WidgetStatus),
    /// A HealthSherpa submission or policy status event.
    HealthSherpa(Box<healthsherpa::PolicyEvent>),
    /// Nothing beyond the raw event and the inbox.
    RecordOnly,
}

impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Effect::SparkContact(_) => "SparkContact",
            Effect::SparkLoop(_) => "SparkLoop",
            Effect::Lead(_) => "Lead",
            Effect::Widget(_) => "Widget",
            Effect::HealthSherpa(_) => "HealthSherpa",
            Effect::RecordOnly => "RecordOnly",
        };
        write!(f, "{name}(..)")
    }
}

/// `Debug` that prints the type name only, for structs holding personal data.
macro_rules! redacted_debug {
    ($($t:ty),+) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), " { <redacted> }"))
            }
        }
    )+};
}
pub(crate) use redacted_debug;
