//! HealthSherpa events → `healthsherpa_applications`, `_members`, `_policies`,
//! `_policy_members` and `_status_history`. Every event lands in the history. Ordering is per
//! row: the application, each member, each policy and each policy member moves only to a newer
//! event, compared as `(event_timestamp, transaction_id)` so that two events of the same instant
//! end the same whatever their arrival order. One event may list several policies, so no single
//! entity-wide version could order them (a policy first listed in an older event must still be
//! stored). Concurrent events of one application are serialised by its entity lock.

use deadpool_postgres::Transaction;
use intake_providers::DecodedEvent;
use intake_providers::healthsherpa::PolicyEvent;

use super::Mode;
use crate::StoreError;
use crate::crypto::{Keyring, Place};
use crate::sealed::seal;

const UPSERT_APPLICATION: &str = "
INSERT INTO healthsherpa_applications (application_key, application_id, external_id, last_event_type,
    policy_status, status_event_at, policy_aor_npn, submitter_npn, npn_used_at_submission,
    status_transaction_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (application_key) DO UPDATE SET
    application_id = COALESCE(EXCLUDED.application_id, healthsherpa_applications.application_id),
    external_id = COALESCE(EXCLUDED.external_id, healthsherpa_applications.external_id),
    last_event_type = EXCLUDED.last_event_type, policy_status = EXCLUDED.policy_status,
    status_event_at = EXCLUDED.status_event_at,
    status_transaction_id = EXCLUDED.status_transaction_id,
    policy_aor_npn = COALESCE(EXCLUDED.policy_aor_npn, healthsherpa_applications.policy_aor_npn),
    submitter_npn = COALESCE(EXCLUDED.submitter_npn, healthsherpa_applications.submitter_npn),
    npn_used_at_submission = COALESCE(EXCLUDED.npn_used_at_submission,
                                      healthsherpa_applications.npn_used_at_submission),
    updated_at = now()
WHERE (healthsherpa_applications.status_event_at, healthsherpa_applications.status_transaction_id)
    < (EXCLUDED.status_event_at, EXCLUDED.status_transaction_id)";

const UPSERT_MEMBER: &str = "
INSERT INTO healthsherpa_members (application_key, member_id, first_name, middle_name, last_name, date_of_birth,
    event_at, event_transaction_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (application_key, member_id) DO UPDATE SET
    first_name = EXCLUDED.first_name, middle_name = EXCLUDED.middle_name,
    last_name = EXCLUDED.last_name, date_of_birth = EXCLUDED.date_of_birth,
    event_at = EXCLUDED.event_at, event_transaction_id = EXCLUDED.event_transaction_id
WHERE (healthsherpa_members.event_at, healthsherpa_members.event_transaction_id)
    < (EXCLUDED.event_at, EXCLUDED.event_transaction_id)";

const UPSERT_POLICY: &str = "
INSERT INTO healthsherpa_policies (policy_id, application_key, effective_date, expiration_date, status,
    status_event_at, plan_hios_id, gross_premium, agent_npn, agent_first_name, agent_last_name,
    agent_state_license_number, agent_email, status_transaction_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (policy_id) DO UPDATE SET
    application_key = EXCLUDED.application_key, effective_date = EXCLUDED.effective_date,
    expiration_date = EXCLUDED.expiration_date, status = EXCLUDED.status,
    status_event_at = EXCLUDED.status_event_at, plan_hios_id = EXCLUDED.plan_hios_id,
    gross_premium = EXCLUDED.gross_premium, agent_npn = EXCLUDED.agent_npn,
    agent_first_name = EXCLUDED.agent_first_name, agent_last_name = EXCLUDED.agent_last_name,
    agent_state_license_number = EXCLUDED.agent_state_license_number, agent_email = EXCLUDED.agent_email,
    status_transaction_id = EXCLUDED.status_transaction_id,
    updated_at = now()
WHERE (healthsherpa_policies.status_event_at, healthsherpa_policies.status_transaction_id)
    < (EXCLUDED.status_event_at, EXCLUDED.status_transaction_id)";

const UPSERT_POLICY_MEMBER: &str = "
INSERT INTO healthsherpa_policy_members (policy_id, member_id, effective_date, removed_date, event_at,
    event_transaction_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (policy_id, member_id) DO UPDATE SET
    effective_date = EXCLUDED.effective_date, removed_date = EXCLUDED.removed_date,
    event_at = EXCLUDED.event_at, event_transaction_id = EXCLUDED.event_transaction_id
WHERE (healthsherpa_policy_members.event_at, healthsherpa_policy_members.event_transaction_id)
    < (EXCLUDED.event_at, EXCLUDED.event_transaction_id)";

const INSERT_HISTORY: &str = "
INSERT INTO healthsherpa_status_history (transaction_id, application_key, policy_id, event_type, status,
    event_timestamp, applied)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Applies the event row by row; returns whether any row moved to it (else it is stale history).
pub(super) async fn apply(
    tx: &Transaction<'_>,
    keys: &Keyring,
    h: &PolicyEvent,
    event: &DecodedEvent,
    mode: Mode,
) -> Result<bool, StoreError> {
    let (at, txn) = (&h.event_timestamp, &h.transaction_id);
    // Whether the application row / each policy row moved (the history's `applied`), and whether
    // any row at all did (else the event is stale).
    let mut application_changed = false;
    let mut policy_changed = vec![false; h.policies.len()];
    let mut any_changed = false;
    if mode == Mode::Apply {
        let stmt = tx.prepare_cached(UPSERT_APPLICATION).await?;
        application_changed = tx
            .execute(
                &stmt,
                &[
                    &h.application_key,
                    &h.application_id,
                    &h.external_id,
                    &event.event_type,
                    &h.policy_status,
                    at,
                    &h.policy_aor_npn,
                    &h.submitter_npn,
                    &h.npn_used_at_submission,
                    txn,
                ],
            )
            .await?
            > 0;
        // Rows in id order: a fixed lock order whatever order the event lists them in.
        let mut members: Vec<_> = h.members.iter().collect();
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        let stmt = tx.prepare_cached(UPSERT_MEMBER).await?;
        let mut members_changed = false;
        for m in members {
            // Names and date of birth sealed, bound to (application_key, member_id).
            let row = [h.application_key.as_str(), m.member_id.as_str()];
            let place = |column| Place::new(column, &row);
            members_changed |= tx
                .execute(
                    &stmt,
                    &[
                        &h.application_key,
                        &m.member_id,
                        &seal(
                            keys,
                            m.first_name.as_ref(),
                            &place("healthsherpa_members.first_name"),
                        ),
                        &seal(
                            keys,
                            m.middle_name.as_ref(),
                            &place("healthsherpa_members.middle_name"),
                        ),
                        &seal(
                            keys,
                            m.last_name.as_ref(),
                            &place("healthsherpa_members.last_name"),
                        ),
                        &seal(
                            keys,
                            m.date_of_birth.as_ref(),
                            &place("healthsherpa_members.date_of_birth"),
                        ),
                        at,
                        txn,
                    ],
                )
                .await?
                > 0;
        }
        any_changed |= application_changed || members_changed;
        let policy = tx.prepare_cached(UPSERT_POLICY).await?;
        let member = tx.prepare_cached(UPSERT_POLICY_MEMBER).await?;
        let mut order: Vec<usize> = (0..h.policies.len()).collect();
        order.sort_by(|&a, &b| h.policies[a].policy_id.cmp(&h.policies[b].policy_id));
        for i in order {
            let p = &h.policies[i];
            let status = p.status.as_ref().or(h.policy_status.as_ref());
            policy_changed[i] = tx
                .execute(
                    &policy,
                    &[
                        &p.policy_id,
                        &h.application_key,
                        &p.effective_date,
                        &p.expiration_date,
                        &status,
                        at,
                        &p.plan_hios_id,
                        &p.gross_premium,
                        &p.agent_npn,
                        &p.agent_first_name,
                        &p.agent_last_name,
                        &p.agent_state_license_number,
                        &p.agent_email,
                        txn,
                    ],
                )
                .await?
                > 0;
            let mut members: Vec<_> = p.members.iter().collect();
            members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
            any_changed |= policy_changed[i];
            for m in members {
                any_changed |= tx
                    .execute(
                        &member,
                        &[
                            &p.policy_id,
                            &m.member_id,
                            &m.effective_date,
                            &m.removed_date,
                            at,
                            txn,
                        ],
                    )
                    .await?
                    > 0;
            }
        }
    }

    // The history keeps every event, with whether it moved the row it is about.
    let history = tx.prepare_cached(INSERT_HISTORY).await?;
    if h.policies.is_empty() {
        tx.execute(
            &history,
            &[
                txn,
                &h.application_key,
                &None::<String>,
                &event.event_type,
                &h.policy_status,
                at,
                &application_changed,
            ],
        )
        .await?;
    }
    for (p, changed) in h.policies.iter().zip(&policy_changed) {
        let status = p.status.as_ref().or(h.policy_status.as_ref());
        tx.execute(
            &history,
            &[
                txn,
                &h.application_key,
                &Some(&p.policy_id),
                &event.event_type,
                &status,
                at,
                changed,
            ],
        )
        .await?;
    }
    Ok(any_changed)
}
