//! HealthSherpa submission confirmation and policy status webhooks (one schema, on- and
//! off-exchange). Dedupe by `transaction_id`; entity (the lock that serialises concurrent events):
//! the application (`application_id`, else `external_id`), since one event may list several
//! policies. Ordering is per row, in the store's effect: each policy, member and the application
//! moves only to a newer `event_timestamp`; every event is kept in the status history.

use chrono::{DateTime, NaiveDate, Utc};
use intake_core::Provider;
use serde::{Deserialize, Serialize};

use crate::doc::{Doc, join};
use crate::event::redacted_debug;
use crate::spec::{DedupeRecipe, EventSpec, IdSource, ProviderSpec, RuleSpec, TimeSource, TypeSource};
use crate::{DecodeError, Effect, EntityKind};

const ENTITY: &[(EntityKind, IdSource)] = &[
    (EntityKind::Application, IdSource::Field("/application_id")),
    (EntityKind::Application, IdSource::Field("/external_id")),
];

/// HealthSherpa, declared.
pub static SPEC: ProviderSpec = ProviderSpec {
    provider: Provider::HealthSherpa,
    event_type: TypeSource::Field("/event_type"),
    event_id: Some("/transaction_id"),
    occurred_at: TimeSource::Field {
        pointer: "/event_timestamp",
        required: true,
    },
    dedupe: DedupeRecipe::Field("/transaction_id"),
    events: &[
        EventSpec {
            event_type: "submission",
            entity: ENTITY,
            // Not NewestWins: one entity-wide version would skip a policy first listed in an
            // older event. The store's per-row guards order each policy, member and application.
            rule: RuleSpec::Apply,
        },
        EventSpec {
            event_type: "sync",
            entity: ENTITY,
            rule: RuleSpec::Apply,
        },
    ],
};

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

fn policy(item: &Doc<'_>) -> Result<Policy, DecodeError> {
    let mut members = Vec::new();
    for (i, m) in item.array("/members")?.iter().enumerate() {
        let base = join(&item.base_path(), &format!("/members/{i}"));
        let m = Doc::new(m, &base);
        members.push(PolicyMember {
            member_id: m.req_id("/member_id")?,
            effective_date: m.date("/effective_date")?,
            removed_date: m.date("/removed_date")?,
        });
    }
    Ok(Policy {
        policy_id: item.req_id("/policy_id")?,
        effective_date: item.date("/effective_date")?,
        expiration_date: item.date("/expiration_date")?,
        status: item.text("/status")?,
        plan_hios_id: item.text("/plan_hios_id")?,
        gross_premium: item.number("/gross_premium")?,
        members,
        agent_npn: item.id("/agent_of_record/npn")?,
        agent_first_name: item.text("/agent_of_record/first_name")?,
        agent_last_name: item.text("/agent_of_record/last_name")?,
        agent_state_license_number: item.text("/agent_of_record/state_license_number")?,
        agent_email: item.text("/agent_of_record/email")?,
    })
}

pub(crate) fn effect(doc: &Doc<'_>, _event: &EventSpec) -> Result<Effect, DecodeError> {
    let application_id = doc.id("/application_id")?;
    let external_id = doc.id("/external_id")?;
    let application_key = application_id
        .clone()
        .or_else(|| external_id.clone())
        .ok_or_else(|| DecodeError::MissingField {
            pointer: "/application_id or /external_id".to_owned(),
        })?;
    let mut members = Vec::new();
    for (i, m) in doc.array("/members")?.iter().enumerate() {
        let base = format!("/members/{i}");
        let m = Doc::new(m, &base);
        members.push(Member {
            member_id: m.req_id("/member_id")?,
            first_name: m.text("/first_name")?,
            middle_name: m.text("/middle_name")?,
            last_name: m.text("/last_name")?,
            date_of_birth: m.date("/date_of_birth")?,
        });
    }
    let mut policies = Vec::new();
    for (i, p) in doc.array("/policies")?.iter().enumerate() {
        let base = format!("/policies/{i}");
        policies.push(policy(&Doc::new(p, &base))?);
    }
    Ok(Effect::HealthSherpa(Box::new(PolicyEvent {
        transaction_id: doc.req_id("/transaction_id")?,
        application_key,
        application_id,
        external_id,
        policy_status: doc.text("/policy_status")?,
        event_timestamp: doc
            .timestamp("/event_timestamp")?
            .ok_or_else(|| DecodeError::MissingField {
                pointer: "/event_timestamp".to_owned(),
            })?,
        policy_aor_npn: doc.id("/policy_aor_npn")?,
        submitter_npn: doc.id("/submitter_npn")?,
        npn_used_at_submission: doc.id("/npn_used_at_submission")?,
        members,
        policies,
    })))
}
