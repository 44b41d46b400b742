//! Spark contact snapshots → `contacts`, `contact_phi`, `contact_policies`. A snapshot replaces
//! the contact's state whole (policies included); a stale one changes nothing. Every column of
//! `contact_phi` and the descriptive columns of `contact_policies` (the provider sends both as
//! PHI) are sealed, bound to their row.

use deadpool_postgres::Transaction;
use futures_util::future::join4;
use intake_providers::DecodedEvent;
use intake_providers::spark::ContactSnapshot;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::Mode;
use crate::StoreError;
use crate::crypto::{Keyring, Place};
use crate::sealed::{Plain, seal};

/// One column of every policy of the snapshot, each value sealed for its own row
/// (spark_id, category, slot).
fn seal_each<T: Plain>(
    keys: &Keyring,
    c: &ContactSnapshot,
    label: &str,
    value: impl Fn(&intake_providers::spark::ContactPolicy) -> Option<&T>,
) -> Vec<Option<Vec<u8>>> {
    c.policies
        .iter()
        .map(|p| {
            seal(
                keys,
                value(p),
                &Place::new(label, &[&c.spark_id, &p.category, &p.slot]),
            )
        })
        .collect()
}

const UPSERT_CONTACT: &str = "
INSERT INTO contacts (spark_id, external_id, first_name, middle_name, last_name, preferred_name, full_name,
    full_preferred_name, home_phone, mobile_phone, email, home_address, shipping_address, sex, gender,
    soa_is_signed, soa_signed_at, veteran_status, primary_contact, preferred_language, needs_assessment_link,
    poc_full_name, poc_relationship, poc_home_phone, poc_mobile_phone, poc_email,
    agent_first_name, agent_last_name, agent_full_name, agent_office_phone, agent_email,
    snapshot_received_at, snapshot_envelope_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
    $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33)
ON CONFLICT (spark_id) DO UPDATE SET
    external_id = EXCLUDED.external_id, first_name = EXCLUDED.first_name,
    middle_name = EXCLUDED.middle_name, last_name = EXCLUDED.last_name,
    preferred_name = EXCLUDED.preferred_name, full_name = EXCLUDED.full_name,
    full_preferred_name = EXCLUDED.full_preferred_name, home_phone = EXCLUDED.home_phone,
    mobile_phone = EXCLUDED.mobile_phone, email = EXCLUDED.email, home_address = EXCLUDED.home_address,
    shipping_address = EXCLUDED.shipping_address, sex = EXCLUDED.sex, gender = EXCLUDED.gender,
    soa_is_signed = EXCLUDED.soa_is_signed, soa_signed_at = EXCLUDED.soa_signed_at,
    veteran_status = EXCLUDED.veteran_status, primary_contact = EXCLUDED.primary_contact,
    preferred_language = EXCLUDED.preferred_language, needs_assessment_link = EXCLUDED.needs_assessment_link,
    poc_full_name = EXCLUDED.poc_full_name, poc_relationship = EXCLUDED.poc_relationship,
    poc_home_phone = EXCLUDED.poc_home_phone, poc_mobile_phone = EXCLUDED.poc_mobile_phone,
    poc_email = EXCLUDED.poc_email, agent_first_name = EXCLUDED.agent_first_name,
    agent_last_name = EXCLUDED.agent_last_name, agent_full_name = EXCLUDED.agent_full_name,
    agent_office_phone = EXCLUDED.agent_office_phone, agent_email = EXCLUDED.agent_email,
    snapshot_received_at = EXCLUDED.snapshot_received_at, snapshot_envelope_id = EXCLUDED.snapshot_envelope_id,
    updated_at = now()";

const UPSERT_PHI: &str = "
INSERT INTO contact_phi (spark_id, dob, mbi, has_medicaid, has_lis, lis_certification_date, drug_subsidy,
    has_ssi, part_a_enrollment_date, part_b_enrollment_date)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (spark_id) DO UPDATE SET
    dob = EXCLUDED.dob, mbi = EXCLUDED.mbi, has_medicaid = EXCLUDED.has_medicaid, has_lis = EXCLUDED.has_lis,
    lis_certification_date = EXCLUDED.lis_certification_date, drug_subsidy = EXCLUDED.drug_subsidy,
    has_ssi = EXCLUDED.has_ssi, part_a_enrollment_date = EXCLUDED.part_a_enrollment_date,
    part_b_enrollment_date = EXCLUDED.part_b_enrollment_date";

/// All policies of the snapshot in one statement, as parallel arrays.
const INSERT_POLICIES: &str = "
INSERT INTO contact_policies (spark_id, category, slot, name, bid_id, carrier, effective_date,
    expiration_date, submitted_date, policy_type, beq_status)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::bytea[], $7::bytea[],
    $8::bytea[], $9::bytea[], $10::bytea[], $11::bytea[])";

pub(super) async fn apply(
    tx: &Transaction<'_>,
    keys: &Keyring,
    c: &ContactSnapshot,
    event: &DecodedEvent,
    envelope_id: Uuid,
    mode: Mode,
) -> Result<Vec<String>, StoreError> {
    if mode == Mode::Stale {
        return Ok(Vec::new());
    }
    let d = &c.details;
    let poc = c.point_of_contact.as_ref();
    let agent = c.agent.as_ref();
    let poc_f =
        |f: fn(&intake_providers::spark::PointOfContact) -> &Option<String>| poc.and_then(|p| f(p).clone());
    let agent_f =
        |f: fn(&intake_providers::spark::Agent) -> &Option<String>| agent.and_then(|a| f(a).clone());
    let poc_values = [
        poc_f(|p| &p.full_name),
        poc_f(|p| &p.relationship),
        poc_f(|p| &p.home_phone),
        poc_f(|p| &p.mobile_phone),
        poc_f(|p| &p.email),
    ];
    let agent_values = [
        agent_f(|a| &a.first_name),
        agent_f(|a| &a.last_name),
        agent_f(|a| &a.full_name),
        agent_f(|a| &a.office_phone),
        agent_f(|a| &a.email),
    ];
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &c.spark_id,
        &d.external_id,
        &d.first_name,
        &d.middle_name,
        &d.last_name,
        &d.preferred_name,
        &d.full_name,
        &d.full_preferred_name,
        &d.home_phone,
        &d.mobile_phone,
        &d.email,
        &d.home_address,
        &d.shipping_address,
        &d.sex,
        &d.gender,
        &d.soa_is_signed,
        &d.soa_signed_at,
        &d.veteran_status,
        &d.primary_contact,
        &d.preferred_language,
        &d.needs_assessment_link,
    ];
    params.extend(poc_values.iter().map(|v| v as &(dyn ToSql + Sync)));
    params.extend(agent_values.iter().map(|v| v as &(dyn ToSql + Sync)));
    params.push(&event.occurred_at);
    params.push(&envelope_id);
    // Statements first (cached per connection), values sealed next, then the four writes leave
    // in one write and run in order: contact, PHI, old policies out, new policies in.
    let upsert = tx.prepare_cached(UPSERT_CONTACT).await?;
    let phi_statement = tx
        .prepare_cached(match c.phi {
            Some(_) => UPSERT_PHI,
            None => "DELETE FROM contact_phi WHERE spark_id = $1",
        })
        .await?;
    // The snapshot lists every current policy: replace the set.
    let delete_policies = tx
        .prepare_cached("DELETE FROM contact_policies WHERE spark_id = $1")
        .await?;
    let insert_policies = tx.prepare_cached(INSERT_POLICIES).await?;

    let phi_values: Option<[Option<Vec<u8>>; 9]> = c.phi.as_ref().map(|p| {
        let row = [c.spark_id.as_str()];
        let at = |column| Place::new(column, &row);
        [
            seal(keys, p.dob.as_ref(), &at("contact_phi.dob")),
            seal(keys, p.mbi.as_ref(), &at("contact_phi.mbi")),
            seal(keys, p.has_medicaid.as_ref(), &at("contact_phi.has_medicaid")),
            seal(keys, p.has_lis.as_ref(), &at("contact_phi.has_lis")),
            seal(
                keys,
                p.lis_certification_date.as_ref(),
                &at("contact_phi.lis_certification_date"),
            ),
            seal(keys, p.drug_subsidy.as_ref(), &at("contact_phi.drug_subsidy")),
            seal(keys, p.has_ssi.as_ref(), &at("contact_phi.has_ssi")),
            seal(
                keys,
                p.part_a_enrollment_date.as_ref(),
                &at("contact_phi.part_a_enrollment_date"),
            ),
            seal(
                keys,
                p.part_b_enrollment_date.as_ref(),
                &at("contact_phi.part_b_enrollment_date"),
            ),
        ]
    });
    let mut phi_params: Vec<&(dyn ToSql + Sync)> = vec![&c.spark_id];
    if let Some(values) = &phi_values {
        phi_params.extend(values.iter().map(|v| v as &(dyn ToSql + Sync)));
    }

    let p = &c.policies;
    let category: Vec<&str> = p.iter().map(|x| x.category.as_str()).collect();
    let slot: Vec<&str> = p.iter().map(|x| x.slot.as_str()).collect();
    let policy_columns = [
        seal_each(keys, c, "contact_policies.name", |x| x.name.as_ref()),
        seal_each(keys, c, "contact_policies.bid_id", |x| x.bid_id.as_ref()),
        seal_each(keys, c, "contact_policies.carrier", |x| x.carrier.as_ref()),
        seal_each(keys, c, "contact_policies.effective_date", |x| {
            x.effective_date.as_ref()
        }),
        seal_each(keys, c, "contact_policies.expiration_date", |x| {
            x.expiration_date.as_ref()
        }),
        seal_each(keys, c, "contact_policies.submitted_date", |x| {
            x.submitted_date.as_ref()
        }),
        seal_each(keys, c, "contact_policies.policy_type", |x| {
            x.policy_type.as_ref()
        }),
        seal_each(keys, c, "contact_policies.beq_status", |x| x.beq_status.as_ref()),
    ];
    let mut policy_params: Vec<&(dyn ToSql + Sync)> = vec![&c.spark_id, &category, &slot];
    policy_params.extend(policy_columns.iter().map(|v| v as &(dyn ToSql + Sync)));

    let (contact, phi, deleted, inserted) = join4(
        tx.execute(&upsert, &params),
        tx.execute(&phi_statement, &phi_params),
        tx.execute(&delete_policies, &[&c.spark_id]),
        async {
            if p.is_empty() {
                Ok(0)
            } else {
                tx.execute(&insert_policies, &policy_params).await
            }
        },
    )
    .await;
    contact?;
    phi?;
    deleted?;
    inserted?;
    Ok(vec![c.spark_id.clone()])
}
