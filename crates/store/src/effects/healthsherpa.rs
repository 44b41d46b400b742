//! HealthSherpa events → `healthsherpa_applications`, `_members`, `_policies`,
//! `_policy_members` and `_status_history`. Every event lands in the history; current state
//! (status included) changes only for an event newer than what each row holds.

use deadpool_postgres::Transaction;
use intake_providers::DecodedEvent;
use intake_providers::healthsherpa::PolicyEvent;

use super::Mode;
use crate::StoreError;

const UPSERT_APPLICATION: &str = "
INSERT INTO healthsherpa_applications (application_key, application_id, external_id, last_event_type,
    policy_status, status_event_at, policy_aor_npn, submitter_npn, npn_used_at_submission)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (application_key) DO UPDATE SET
    application_id = COALESCE(EXCLUDED.application_id, healthsherpa_applications.application_id),
    external_id = COALESCE(EXCLUDED.external_id, healthsherpa_applications.external_id),
    last_event_type = EXCLUDED.last_event_type, policy_status = EXCLUDED.policy_status,
    status_event_at = EXCLUDED.status_event_at,
    policy_aor_npn = COALESCE(EXCLUDED.policy_aor_npn, healthsherpa_applications.policy_aor_npn),
    submitter_npn = COALESCE(EXCLUDED.submitter_npn, healthsherpa_applications.submitter_npn),
    npn_used_at_submission = COALESCE(EXCLUDED.npn_used_at_submission,
                                      healthsherpa_applications.npn_used_at_submission),
    updated_at = now()
WHERE healthsherpa_applications.status_event_at < EXCLUDED.status_event_at";

const UPSERT_MEMBER: &str = "
INSERT INTO healthsherpa_members (application_key, member_id, first_name, middle_name, last_name, date_of_birth)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (application_key, member_id) DO UPDATE SET
    first_name = EXCLUDED.first_name, middle_name = EXCLUDED.middle_name,
    last_name = EXCLUDED.last_name, date_of_birth = EXCLUDED.date_of_birth";

const UPSERT_POLICY: &str = "
INSERT INTO healthsherpa_policies (policy_id, application_key, effective_date, expiration_date, status,
    status_event_at, plan_hios_id, gross_premium, agent_npn, agent_first_name, agent_last_name,
    agent_state_license_number, agent_email)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (policy_id) DO UPDATE SET
    application_key = EXCLUDED.application_key, effective_date = EXCLUDED.effective_date,
    expiration_date = EXCLUDED.expiration_date, status = EXCLUDED.status,
    status_event_at = EXCLUDED.status_event_at, plan_hios_id = EXCLUDED.plan_hios_id,
    gross_premium = EXCLUDED.gross_premium, agent_npn = EXCLUDED.agent_npn,
    agent_first_name = EXCLUDED.agent_first_name, agent_last_name = EXCLUDED.agent_last_name,
    agent_state_license_number = EXCLUDED.agent_state_license_number, agent_email = EXCLUDED.agent_email,
    updated_at = now()
WHERE healthsherpa_policies.status_event_at < EXCLUDED.status_event_at";

const UPSERT_POLICY_MEMBER: &str = "
INSERT INTO healthsherpa_policy_members (policy_id, member_id, effective_date, removed_date)
VALUES ($1, $2, $3, $4)
ON CONFLICT (policy_id, member_id) DO UPDATE SET
    effective_date = EXCLUDED.effective_date, removed_date = EXCLUDED.removed_date";

const INSERT_HISTORY: &str = "
INSERT INTO healthsherpa_status_history (transaction_id, application_key, policy_id, event_type, status,
    event_timestamp, applied)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub(super) async fn apply(
    tx: &Transaction<'_>,
    h: &PolicyEvent,
    event: &DecodedEvent,
    mode: Mode,
) -> Result<(), StoreError> {
    let applied = mode == Mode::Apply;
    let history = tx.prepare_cached(INSERT_HISTORY).await?;
    if h.policies.is_empty() {
        tx.execute(
            &history,
            &[
                &h.transaction_id,
                &h.application_key,
                &None::<String>,
                &event.event_type,
                &h.policy_status,
                &h.event_timestamp,
                &applied,
            ],
        )
        .await?;
    }
    for p in &h.policies {
        let status = p.status.as_ref().or(h.policy_status.as_ref());
        tx.execute(
            &history,
            &[
                &h.transaction_id,
                &h.application_key,
                &Some(&p.policy_id),
                &event.event_type,
                &status,
                &h.event_timestamp,
                &applied,
            ],
        )
        .await?;
    }
    if !applied {
        return Ok(());
    }

    let stmt = tx.prepare_cached(UPSERT_APPLICATION).await?;
    tx.execute(
        &stmt,
        &[
            &h.application_key,
            &h.application_id,
            &h.external_id,
            &event.event_type,
            &h.policy_status,
            &h.event_timestamp,
            &h.policy_aor_npn,
            &h.submitter_npn,
            &h.npn_used_at_submission,
        ],
    )
    .await?;
    let stmt = tx.prepare_cached(UPSERT_MEMBER).await?;
    for m in &h.members {
        tx.execute(
            &stmt,
            &[
                &h.application_key,
                &m.member_id,
                &m.first_name,
                &m.middle_name,
                &m.last_name,
                &m.date_of_birth,
            ],
        )
        .await?;
    }
    let policy = tx.prepare_cached(UPSERT_POLICY).await?;
    let member = tx.prepare_cached(UPSERT_POLICY_MEMBER).await?;
    for p in &h.policies {
        let status = p.status.as_ref().or(h.policy_status.as_ref());
        let changed = tx
            .execute(
                &policy,
                &[
                    &p.policy_id,
                    &h.application_key,
                    &p.effective_date,
                    &p.expiration_date,
                    &status,
                    &h.event_timestamp,
                    &p.plan_hios_id,
                    &p.gross_premium,
                    &p.agent_npn,
                    &p.agent_first_name,
                    &p.agent_last_name,
                    &p.agent_state_license_number,
                    &p.agent_email,
                ],
            )
            .await?;
        if changed == 0 {
            continue;
        }
        for m in &p.members {
            tx.execute(
                &member,
                &[&p.policy_id, &m.member_id, &m.effective_date, &m.removed_date],
            )
            .await?;
        }
    }
    Ok(())
}
