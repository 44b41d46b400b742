//! Spark contact sync: a full contact snapshot (with PHI) per delivery, no event type, no event id.
//! Newest received snapshot wins; one equal to the contact's current snapshot is a duplicate.

use chrono::NaiveDate;
use intake_core::Provider;
use serde::{Deserialize, Serialize};

use crate::doc::Doc;
use crate::event::redacted_debug;
use crate::spec::{DedupeRecipe, EventSpec, IdSource, ProviderSpec, RuleSpec, TimeSource, TypeSource};
use crate::{DecodeError, Effect, EntityKind};

/// The single event type of this provider (payloads carry none).
pub const CONTACT_SNAPSHOT: &str = "contact.snapshot";

/// Spark contact sync, declared.
pub static SPEC: ProviderSpec = ProviderSpec {
    provider: Provider::Spark,
    event_type: TypeSource::Fixed(CONTACT_SNAPSHOT),
    event_id: None,
    // No time in the payload: "newest received" is the receiver's receipt time.
    occurred_at: TimeSource::ReceivedAt,
    // One inbox row per envelope: a snapshot equal to the contact's *current* one is a duplicate
    // (decided by NewestWins under the entity lock), an earlier one received again is applied.
    dedupe: DedupeRecipe::EntityIdAndEnvelopeId,
    events: &[EventSpec {
        event_type: CONTACT_SNAPSHOT,
        entity: &[(EntityKind::Contact, IdSource::Field("/details/id"))],
        rule: RuleSpec::NewestWins,
    }],
};

/// A contact snapshot.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactSnapshot {
    /// `details.id`.
    pub spark_id: String,
    /// Name, phone, email, address and preference fields of `details`, by their JSON names.
    pub details: Details,
    /// `details.point_of_contact`.
    pub point_of_contact: Option<PointOfContact>,
    /// `details.agent`.
    pub agent: Option<Agent>,
    /// `phi` without its policies.
    pub phi: Option<Phi>,
    /// Every policy under `phi.policies.{active,pending,plan_exits}`.
    pub policies: Vec<ContactPolicy>,
}

/// Plain fields of `details`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Details {
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub preferred_name: Option<String>,
    pub full_name: Option<String>,
    pub full_preferred_name: Option<String>,
    pub home_phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub email: Option<String>,
    pub home_address: Option<String>,
    pub shipping_address: Option<String>,
    pub sex: Option<String>,
    pub gender: Option<String>,
    pub soa_is_signed: Option<bool>,
    pub soa_signed_at: Option<String>,
    pub veteran_status: Option<String>,
    pub primary_contact: Option<String>,
    pub preferred_language: Option<String>,
    pub needs_assessment_link: Option<String>,
}

/// `details.point_of_contact`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct PointOfContact {
    pub full_name: Option<String>,
    pub relationship: Option<String>,
    pub home_phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub email: Option<String>,
}

/// `details.agent`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Agent {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub full_name: Option<String>,
    pub office_phone: Option<String>,
    pub email: Option<String>,
}

/// The PHI block (never logged).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Phi {
    pub dob: Option<NaiveDate>,
    pub mbi: Option<String>,
    pub has_medicaid: Option<bool>,
    pub has_lis: Option<bool>,
    pub lis_certification_date: Option<NaiveDate>,
    pub drug_subsidy: Option<String>,
    pub has_ssi: Option<bool>,
    pub part_a_enrollment_date: Option<NaiveDate>,
    pub part_b_enrollment_date: Option<NaiveDate>,
}

/// One policy slot of a category.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ContactPolicy {
    /// `active`, `pending` or `plan_exit`.
    pub category: String,
    /// Slot name as sent, e.g. `policy_1`.
    pub slot: String,
    pub name: Option<String>,
    pub bid_id: Option<String>,
    pub carrier: Option<String>,
    pub effective_date: Option<NaiveDate>,
    pub expiration_date: Option<NaiveDate>,
    pub submitted_date: Option<NaiveDate>,
    pub policy_type: Option<String>,
    pub beq_status: Option<String>,
}

redacted_debug!(
    ContactSnapshot,
    Details,
    PointOfContact,
    Agent,
    Phi,
    ContactPolicy
);

/// Policy categories: (JSON key under `phi.policies`, stored category).
const CATEGORIES: [(&str, &str); 3] = [
    ("active", "active"),
    ("pending", "pending"),
    ("plan_exits", "plan_exit"),
];

pub(crate) fn effect(doc: &Doc<'_>, _event: &EventSpec) -> Result<Effect, DecodeError> {
    let t = |f: &str| doc.text(&format!("/details/{f}"));
    let details = Details {
        external_id: doc.id("/details/external_id")?,
        first_name: t("first_name")?,
        middle_name: t("middle_name")?,
        last_name: t("last_name")?,
        preferred_name: t("preferred_name")?,
        full_name: t("full_name")?,
        full_preferred_name: t("full_preferred_name")?,
        home_phone: t("home_phone")?,
        mobile_phone: t("mobile_phone")?,
        email: t("email")?,
        home_address: t("home_address")?,
        shipping_address: t("shipping_address")?,
        sex: t("sex")?,
        gender: t("gender")?,
        soa_is_signed: doc.bool("/details/soa_is_signed")?,
        soa_signed_at: t("soa_signed_at")?,
        veteran_status: t("veteran_status")?,
        primary_contact: t("primary_contact")?,
        preferred_language: t("preferred_language")?,
        needs_assessment_link: t("needs_assessment_link")?,
    };
    let point_of_contact = match doc.object("/details/point_of_contact")? {
        None => None,
        Some(_) => {
            let p = |f: &str| doc.text(&format!("/details/point_of_contact/{f}"));
            Some(PointOfContact {
                full_name: p("full_name")?,
                relationship: p("relationship")?,
                home_phone: p("home_phone")?,
                mobile_phone: p("mobile_phone")?,
                email: p("email")?,
            })
        }
    };
    let agent = match doc.object("/details/agent")? {
        None => None,
        Some(_) => {
            let a = |f: &str| doc.text(&format!("/details/agent/{f}"));
            Some(Agent {
                first_name: a("first_name")?,
                last_name: a("last_name")?,
                full_name: a("full_name")?,
                office_phone: a("office_phone")?,
                email: a("email")?,
            })
        }
    };
    let phi = match doc.object("/phi")? {
        None => None,
        Some(_) => Some(Phi {
            dob: doc.date("/phi/dob")?,
            mbi: doc.text("/phi/mbi")?,
            has_medicaid: doc.bool("/phi/has_medicaid")?,
            has_lis: doc.bool("/phi/has_lis")?,
            lis_certification_date: doc.date("/phi/lis_certification_date")?,
            drug_subsidy: doc.text("/phi/drug_subsidy")?,
            has_ssi: doc.bool("/phi/has_ssi")?,
            part_a_enrollment_date: doc.date("/phi/part_a_enrollment_date")?,
            part_b_enrollment_date: doc.date("/phi/part_b_enrollment_date")?,
        }),
    };
    let mut policies = Vec::new();
    for (key, category) in CATEGORIES {
        let Some(slots) = doc.object(&format!("/phi/policies/{key}"))? else {
            continue;
        };
        let mut names: Vec<&String> = slots.as_object().map(|m| m.keys().collect()).unwrap_or_default();
        names.sort();
        for slot in names {
            let base = format!("/phi/policies/{key}/{slot}");
            if doc.object(&base)?.is_none() {
                continue;
            }
            let f = |name: &str| format!("{base}/{name}");
            policies.push(ContactPolicy {
                category: category.to_owned(),
                slot: slot.clone(),
                name: doc.text(&f("name"))?,
                bid_id: doc.text(&f("bid_id"))?,
                carrier: doc.text(&f("carrier"))?,
                effective_date: doc.date(&f("effective_date"))?,
                expiration_date: doc.date(&f("expiration_date"))?,
                submitted_date: doc.date(&f("submitted_date"))?,
                policy_type: doc.text(&f("policy_type"))?,
                beq_status: doc.text(&f("beq_status"))?,
            });
        }
    }
    Ok(Effect::SparkContact(Box::new(ContactSnapshot {
        spark_id: doc.req_id("/details/id")?,
        details,
        point_of_contact,
        agent,
        phi,
        policies,
    })))
}
