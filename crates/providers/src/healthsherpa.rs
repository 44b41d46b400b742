//! HealthSherpa submission confirmation and policy status webhooks (one schema, on- and
//! off-exchange). Dedupe by `transaction_id`; entity (the lock that serialises concurrent events):
//! the application (`application_id`, else `external_id`), since one event may list several
//! policies. Ordering is per row, in the store's effect: each policy, member and the application
//! moves only to a newer `event_timestamp`; every event is kept in the status history.

use chrono::{DateTime, NaiveDate, Utc};
use intake_core::Provider;
use serde::{Deserialize, Serialize};

use crate::doc::Doc;
use crate::event::redacted_debug;
use crate::spec::{DedupeRecipe, EventSpec, IdSource, ProviderSpec, RuleSpec, TimeSource, TypeSource};
use crate::{DecodeError, Effect, EntityKind, JsonKind};

const TRANSACTION_ID: &str = "/transaction_id";
const EVENT_TIMESTAMP: &str = "/event_timestamp";
const APPLICATION_ID: &str = "/application_id";
const EXTERNAL_ID: &str = "/external_id";
/// The application an event belongs to: its id, else the external id.
const APPLICATION_KEY: &[&str] = &[APPLICATION_ID, EXTERNAL_ID];

const ENTITY: &[(EntityKind, IdSource)] = &[
    (EntityKind::Application, IdSource::Field(APPLICATION_ID)),
    (EntityKind::Application, IdSource::Field(EXTERNAL_ID)),
];

/// HealthSherpa, declared.
pub static SPEC: ProviderSpec = ProviderSpec {
    provider: Provider::HealthSherpa,
    body: JsonKind::Object,
    event_type: TypeSource::Field("/event_type"),
    event_id: Some(TRANSACTION_ID),
    occurred_at: TimeSource::Field {
        pointer: EVENT_TIMESTAMP,
        required: true,
    },
    dedupe: DedupeRecipe::Field(TRANSACTION_ID),
    events: &[
        EventSpec {
            event_type: "submission",
            entity: ENTITY,
            // Not NewestWins: one entity-wide version would skip a policy first listed in an
            // older event. The store's per-row guards order each policy, member and application.
            rule: RuleSpec::Apply,
            requires: &[APPLICATION_KEY],
        },
        EventSpec {
            event_type: "sync",
            entity: ENTITY,
            rule: RuleSpec::Apply,
            requires: &[APPLICATION_KEY],
        },
    ],
    fields: fields::ALL,
};

/// Optional fields: read tolerantly ([`crate::field`]). Strict keys are in [`SPEC`]:
/// `/event_type`, `/transaction_id`, `/event_timestamp`, `/policies/0/policy_id` (the entity when
/// present) and `/application_id` or `/external_id`. A member or policy without its id is left
/// out (and noted): its rows are keyed by it.
mod fields {
    crate::field::optional_fields! {
        EVENT_POLICY_STATUS: Text = "/policy_status";
        POLICY_AOR_NPN: Id = "/policy_aor_npn";
        SUBMITTER_NPN: Id = "/submitter_npn";
        NPN_USED_AT_SUBMISSION: Id = "/npn_used_at_submission";
        MEMBERS: Array = "/members";
        MEMBER_ID: Id = "/members/*/member_id";
        MEMBER_FIRST_NAME: Text = "/members/*/first_name";
        MEMBER_MIDDLE_NAME: Text = "/members/*/middle_name";
        MEMBER_LAST_NAME: Text = "/members/*/last_name";
        MEMBER_DATE_OF_BIRTH: Date = "/members/*/date_of_birth";
        POLICIES: Array = "/policies";
        POLICY_ID: Id = "/policies/*/policy_id";
        POLICY_EFFECTIVE_DATE: Date = "/policies/*/effective_date";
        POLICY_EXPIRATION_DATE: Date = "/policies/*/expiration_date";
        POLICY_STATUS: Text = "/policies/*/status";
        POLICY_PLAN_HIOS_ID: Text = "/policies/*/plan_hios_id";
        POLICY_GROSS_PREMIUM: Number = "/policies/*/gross_premium";
        POLICY_MEMBERS: Array = "/policies/*/members";
        POLICY_MEMBER_ID: Id = "/policies/*/members/*/member_id";
        POLICY_MEMBER_EFFECTIVE_DATE: Date = "/policies/*/members/*/effective_date";
        POLICY_MEMBER_REMOVED_DATE: Date = "/policies/*/members/*/removed_date";
        AGENT_OF_RECORD: Object = "/policies/*/agent_of_record";
        AGENT_NPN: Id = "/policies/*/agent_of_record/npn";
        AGENT_FIRST_NAME: Text = "/policies/*/agent_of_record/first_name";
        AGENT_LAST_NAME: Text = "/policies/*/agent_of_record/last_name";
        AGENT_STATE_LICENSE_NUMBER: Text = "/policies/*/agent_of_record/state_license_number";
        AGENT_EMAIL: Text = "/policies/*/agent_of_record/email";
    }
}

/// One event.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct PolicyEvent {
    pub transaction_id: String,
    /// The application this event belongs to: `application_id`, else `external_id`.
    pub application_key: String,
    pub application_id: Option<String>,
    pub external_id: Option<String>,
    pub policy_status: Option<String>,
    pub event_timestamp: DateTime<Utc>,
    pub policy_aor_npn: Option<String>,
    pub submitter_npn: Option<String>,
    pub npn_used_at_submission: Option<String>,
    pub members: Vec<Member>,
    pub policies: Vec<Policy>,
}

/// An applicant (PHI: date of birth).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Member {
    pub member_id: String,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
}

/// A policy of the application.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Policy {
    pub policy_id: String,
    pub effective_date: Option<NaiveDate>,
    pub expiration_date: Option<NaiveDate>,
    pub status: Option<String>,
    pub plan_hios_id: Option<String>,
    pub gross_premium: Option<f64>,
    pub members: Vec<PolicyMember>,
    pub agent_npn: Option<String>,
    pub agent_first_name: Option<String>,
    pub agent_last_name: Option<String>,
    pub agent_state_license_number: Option<String>,
    pub agent_email: Option<String>,
}

/// A member's coverage on a policy.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct PolicyMember {
    pub member_id: String,
    pub effective_date: Option<NaiveDate>,
    pub removed_date: Option<NaiveDate>,
}

redacted_debug!(PolicyEvent, Member, Policy, PolicyMember);

fn policy(p: &Doc<'_>) -> Option<Policy> {
    use fields::*;
    let members = p
        .items(POLICY_MEMBERS)
        .iter()
        .filter_map(|m| {
            Some(PolicyMember {
                member_id: m.block_key(POLICY_MEMBER_ID)?,
                effective_date: m.get(POLICY_MEMBER_EFFECTIVE_DATE),
                removed_date: m.get(POLICY_MEMBER_REMOVED_DATE),
            })
        })
        .collect();
    let agent = p.block(AGENT_OF_RECORD);
    let agent_field = |f| agent.as_ref().and_then(|a| a.get(f));
    Some(Policy {
        policy_id: p.block_key(POLICY_ID)?,
        effective_date: p.get(POLICY_EFFECTIVE_DATE),
        expiration_date: p.get(POLICY_EXPIRATION_DATE),
        status: p.get(POLICY_STATUS),
        plan_hios_id: p.get(POLICY_PLAN_HIOS_ID),
        gross_premium: p.get(POLICY_GROSS_PREMIUM),
        members,
        agent_npn: agent.as_ref().and_then(|a| a.get(AGENT_NPN)),
        agent_first_name: agent_field(AGENT_FIRST_NAME),
        agent_last_name: agent_field(AGENT_LAST_NAME),
        agent_state_license_number: agent_field(AGENT_STATE_LICENSE_NUMBER),
        agent_email: agent_field(AGENT_EMAIL),
    })
}

pub(crate) fn effect(doc: &Doc<'_>, _event: &EventSpec) -> Result<Effect, DecodeError> {
    use fields::*;
    let members = doc
        .items(MEMBERS)
        .iter()
        .filter_map(|m| {
            Some(Member {
                member_id: m.block_key(MEMBER_ID)?,
                first_name: m.get(MEMBER_FIRST_NAME),
                middle_name: m.get(MEMBER_MIDDLE_NAME),
                last_name: m.get(MEMBER_LAST_NAME),
                date_of_birth: m.get(MEMBER_DATE_OF_BIRTH),
            })
        })
        .collect();
    let policies = doc.items(POLICIES).iter().filter_map(policy).collect();
    Ok(Effect::HealthSherpa(Box::new(PolicyEvent {
        transaction_id: doc.key(&[TRANSACTION_ID])?,
        application_key: doc.key(APPLICATION_KEY)?,
        application_id: doc.key_id(APPLICATION_ID)?,
        external_id: doc.key_id(EXTERNAL_ID)?,
        policy_status: doc.get(EVENT_POLICY_STATUS),
        event_timestamp: doc
            .key_time(EVENT_TIMESTAMP)?
            .ok_or_else(|| DecodeError::MissingField {
                pointer: EVENT_TIMESTAMP.to_owned(),
            })?,
        policy_aor_npn: doc.get(POLICY_AOR_NPN),
        submitter_npn: doc.get(SUBMITTER_NPN),
        npn_used_at_submission: doc.get(NPN_USED_AT_SUBMISSION),
        members,
        policies,
    })))
}
