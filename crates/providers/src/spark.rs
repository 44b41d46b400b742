//! Spark contact sync: a full contact snapshot (with PHI) per delivery, no event type, no event id.
//! Newest received snapshot wins; one equal to the contact's current snapshot is a duplicate.

use chrono::NaiveDate;
use intake_core::Provider;
use serde::{Deserialize, Serialize};

use crate::doc::Doc;
use crate::event::redacted_debug;
use crate::spec::{DedupeRecipe, EventSpec, IdSource, ProviderSpec, RuleSpec, TimeSource, TypeSource};
use crate::{DecodeError, Effect, EntityKind, JsonKind};

/// The contact id: the entity, and the dedupe key's prefix.
const CONTACT_ID: &str = "/details/id";

/// The single event type of this provider (payloads carry none).
pub const CONTACT_SNAPSHOT: &str = "contact.snapshot";

/// Spark contact sync, declared.
pub static SPEC: ProviderSpec = ProviderSpec {
    provider: Provider::Spark,
    body: JsonKind::Object,
    event_type: TypeSource::Fixed(CONTACT_SNAPSHOT),
    event_id: None,
    // No time in the payload: "newest received" is the receiver's receipt time.
    occurred_at: TimeSource::ReceivedAt,
    // One inbox row per envelope: a snapshot equal to the contact's *current* one is a duplicate
    // (decided by NewestWins under the entity lock), an earlier one received again is applied.
    dedupe: DedupeRecipe::EntityIdAndEnvelopeId,
    events: &[EventSpec {
        event_type: CONTACT_SNAPSHOT,
        entity: &[(EntityKind::Contact, IdSource::Field(CONTACT_ID))],
        rule: RuleSpec::NewestWins,
        requires: &[],
    }],
    fields: fields::ALL,
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

/// Optional fields: read tolerantly ([`crate::field`]). The strict key is [`SPEC`]'s
/// `/details/id`.
mod fields {
    crate::field::optional_fields! {
        EXTERNAL_ID: Id = "/details/external_id";
        FIRST_NAME: Text = "/details/first_name";
        MIDDLE_NAME: Text = "/details/middle_name";
        LAST_NAME: Text = "/details/last_name";
        PREFERRED_NAME: Text = "/details/preferred_name";
        FULL_NAME: Text = "/details/full_name";
        FULL_PREFERRED_NAME: Text = "/details/full_preferred_name";
        HOME_PHONE: Text = "/details/home_phone";
        MOBILE_PHONE: Text = "/details/mobile_phone";
        EMAIL: Text = "/details/email";
        HOME_ADDRESS: Text = "/details/home_address";
        SHIPPING_ADDRESS: Text = "/details/shipping_address";
        SEX: Text = "/details/sex";
        GENDER: Text = "/details/gender";
        SOA_IS_SIGNED: Bool = "/details/soa_is_signed";
        SOA_SIGNED_AT: Text = "/details/soa_signed_at";
        VETERAN_STATUS: Text = "/details/veteran_status";
        PRIMARY_CONTACT: Text = "/details/primary_contact";
        PREFERRED_LANGUAGE: Text = "/details/preferred_language";
        NEEDS_ASSESSMENT_LINK: Text = "/details/needs_assessment_link";
        POINT_OF_CONTACT: Object = "/details/point_of_contact";
        POC_FULL_NAME: Text = "/details/point_of_contact/full_name";
        POC_RELATIONSHIP: Text = "/details/point_of_contact/relationship";
        POC_HOME_PHONE: Text = "/details/point_of_contact/home_phone";
        POC_MOBILE_PHONE: Text = "/details/point_of_contact/mobile_phone";
        POC_EMAIL: Text = "/details/point_of_contact/email";
        AGENT: Object = "/details/agent";
        AGENT_FIRST_NAME: Text = "/details/agent/first_name";
        AGENT_LAST_NAME: Text = "/details/agent/last_name";
        AGENT_FULL_NAME: Text = "/details/agent/full_name";
        AGENT_OFFICE_PHONE: Text = "/details/agent/office_phone";
        AGENT_EMAIL: Text = "/details/agent/email";
        PHI: Object = "/phi";
        DOB: Date = "/phi/dob";
        MBI: Text = "/phi/mbi";
        HAS_MEDICAID: Bool = "/phi/has_medicaid";
        HAS_LIS: Bool = "/phi/has_lis";
        LIS_CERTIFICATION_DATE: Date = "/phi/lis_certification_date";
        DRUG_SUBSIDY: Text = "/phi/drug_subsidy";
        HAS_SSI: Bool = "/phi/has_ssi";
        PART_A_ENROLLMENT_DATE: Date = "/phi/part_a_enrollment_date";
        PART_B_ENROLLMENT_DATE: Date = "/phi/part_b_enrollment_date";
        // Categories by name (`active`, `pending`, `plan_exits`), each a map of slots by name.
        POLICIES: Object = "/phi/policies";
        POLICY_SLOTS: Object = "/phi/policies/*";
        POLICY_NAME: Text = "/phi/policies/*/*/name";
        POLICY_BID_ID: Text = "/phi/policies/*/*/bid_id";
        POLICY_CARRIER: Text = "/phi/policies/*/*/carrier";
        POLICY_EFFECTIVE_DATE: Date = "/phi/policies/*/*/effective_date";
        POLICY_EXPIRATION_DATE: Date = "/phi/policies/*/*/expiration_date";
        POLICY_SUBMITTED_DATE: Date = "/phi/policies/*/*/submitted_date";
        POLICY_TYPE: Text = "/phi/policies/*/*/policy_type";
        POLICY_BEQ_STATUS: Text = "/phi/policies/*/*/beq_status";
    }
}

/// Policy categories: (JSON key under `phi.policies`, stored category).
const CATEGORIES: [(&str, &str); 3] = [
    ("active", "active"),
    ("pending", "pending"),
    ("plan_exits", "plan_exit"),
];

pub(crate) fn effect(doc: &Doc<'_>, _event: &EventSpec) -> Result<Effect, DecodeError> {
    use fields::*;
    let details = Details {
        external_id: doc.get(EXTERNAL_ID),
        first_name: doc.get(FIRST_NAME),
        middle_name: doc.get(MIDDLE_NAME),
        last_name: doc.get(LAST_NAME),
        preferred_name: doc.get(PREFERRED_NAME),
        full_name: doc.get(FULL_NAME),
        full_preferred_name: doc.get(FULL_PREFERRED_NAME),
        home_phone: doc.get(HOME_PHONE),
        mobile_phone: doc.get(MOBILE_PHONE),
        email: doc.get(EMAIL),
        home_address: doc.get(HOME_ADDRESS),
        shipping_address: doc.get(SHIPPING_ADDRESS),
        sex: doc.get(SEX),
        gender: doc.get(GENDER),
        soa_is_signed: doc.get(SOA_IS_SIGNED),
        soa_signed_at: doc.get(SOA_SIGNED_AT),
        veteran_status: doc.get(VETERAN_STATUS),
        primary_contact: doc.get(PRIMARY_CONTACT),
        preferred_language: doc.get(PREFERRED_LANGUAGE),
        needs_assessment_link: doc.get(NEEDS_ASSESSMENT_LINK),
    };
    let point_of_contact = doc.block(POINT_OF_CONTACT).map(|p| PointOfContact {
        full_name: p.get(POC_FULL_NAME),
        relationship: p.get(POC_RELATIONSHIP),
        home_phone: p.get(POC_HOME_PHONE),
        mobile_phone: p.get(POC_MOBILE_PHONE),
        email: p.get(POC_EMAIL),
    });
    let agent = doc.block(AGENT).map(|a| Agent {
        first_name: a.get(AGENT_FIRST_NAME),
        last_name: a.get(AGENT_LAST_NAME),
        full_name: a.get(AGENT_FULL_NAME),
        office_phone: a.get(AGENT_OFFICE_PHONE),
        email: a.get(AGENT_EMAIL),
    });
    let phi_doc = doc.block(PHI);
    let phi = phi_doc.as_ref().map(|p| Phi {
        dob: p.get(DOB),
        mbi: p.get(MBI),
        has_medicaid: p.get(HAS_MEDICAID),
        has_lis: p.get(HAS_LIS),
        lis_certification_date: p.get(LIS_CERTIFICATION_DATE),
        drug_subsidy: p.get(DRUG_SUBSIDY),
        has_ssi: p.get(HAS_SSI),
        part_a_enrollment_date: p.get(PART_A_ENROLLMENT_DATE),
        part_b_enrollment_date: p.get(PART_B_ENROLLMENT_DATE),
    });
    let categories = phi_doc.map(|p| p.entries(POLICIES)).unwrap_or_default();
    let mut policies = Vec::new();
    for (key, category) in CATEGORIES {
        let Some((_, slots)) = categories.iter().find(|(name, _)| *name == key) else {
            continue;
        };
        for (slot, p) in slots.entries(POLICY_SLOTS) {
            policies.push(ContactPolicy {
                category: category.to_owned(),
                slot: slot.to_owned(),
                name: p.get(POLICY_NAME),
                bid_id: p.get(POLICY_BID_ID),
                carrier: p.get(POLICY_CARRIER),
                effective_date: p.get(POLICY_EFFECTIVE_DATE),
                expiration_date: p.get(POLICY_EXPIRATION_DATE),
                submitted_date: p.get(POLICY_SUBMITTED_DATE),
                policy_type: p.get(POLICY_TYPE),
                beq_status: p.get(POLICY_BEQ_STATUS),
            });
        }
    }
    Ok(Effect::SparkContact(Box::new(ContactSnapshot {
        spark_id: doc.key(&[CONTACT_ID])?,
        details,
        point_of_contact,
        agent,
        phi,
        policies,
    })))
}
