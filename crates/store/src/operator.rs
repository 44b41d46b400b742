//! What an operator may do to a parked event (`intake parked release|drop`): apply it now without
//! its prerequisite — in one transaction under the entity's lock, exactly as a release by its
//! prerequisite would — or move it to the dead letters (`dropped_by_operator`), from where it can
//! be replayed later.

use chrono::{DateTime, Utc};
use intake_providers::DecodedEvent;
use uuid::Uuid;

use crate::apply::{self, INSERT_PARKED_DEAD_LETTER, ParkedDeadLetter, ReleaseOut, Released};
use crate::effects::{self, Mode};
use crate::{Store, StoreError};

/// Reason of a parked event an operator moved to the dead letters.
pub const DROPPED_BY_OPERATOR: &str = "dropped_by_operator";

/// What releasing a parked event by hand did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualRelease {
    /// The envelope that carried it.
    pub envelope_id: Uuid,
    /// Its event type.
    pub event_type: String,
    /// Other parked events its application released in turn (it may be their prerequisite).
    pub also_released: Vec<Released>,
    /// Contacts whose change was queued for the sync.
    pub changed_contacts: usize,
}

/// What dropping a parked event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The envelope that carried it.
    pub envelope_id: Uuid,
    /// Its event type.
    pub event_type: String,
}

impl Store {
    /// Applies parked event `id` now, without its prerequisite. `None` if no such parked event
    /// (already released, dropped or swept). A parked event this build cannot read is refused.
    pub async fn release_parked(&self, id: i64) -> Result<Option<ManualRelease>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "DELETE FROM parked_events WHERE id = $1
                 RETURNING endpoint, dedupe_key, envelope_id, event, format",
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let endpoint: String = row.get(0);
        let dedupe_key: String = row.get(1);
        let envelope_id: Uuid = row.get(2);
        let format: i32 = row.get(4);
        let event: DecodedEvent = apply::open_parked(&self.keys, &endpoint, &dedupe_key, format, row.get(3))?;
        let mut state = apply::lock_entity(&tx, &event.entity).await?;
        let effected = effects::apply(&tx, &self.keys, &event, envelope_id, Mode::Apply).await?;
        let mut changed_contacts = effected.contacts;
        apply::record_applied(&mut state, &event);
        apply::mark_released(&tx, &endpoint, &dedupe_key).await?;
        let mut also_released = Vec::new();
        let mut dead_letters: Vec<ParkedDeadLetter> = Vec::new();
        let provider: intake_core::Provider = tx
            .query_one(
                "SELECT provider FROM inbox WHERE endpoint = $1 AND dedupe_key = $2",
                &[&endpoint, &dedupe_key],
            )
            .await?
            .get::<_, String>(0)
            .parse()
            .map_err(|_| StoreError::Corrupt("inbox row with unknown provider".into()))?;
        if apply::is_prerequisite(provider, &event.event_type) {
            let mut out = ReleaseOut {
                released: &mut also_released,
                dead_letters: &mut dead_letters,
                changed_contacts: &mut changed_contacts,
            };
            apply::release(&tx, &self.keys, &event, &mut state, &mut out).await?;
        }
        for contact in &changed_contacts {
            tx.execute(
                "INSERT INTO outbox (topic, contact_id, envelope_id) VALUES ('contacts.changed', $1, $2)",
                &[contact, &envelope_id],
            )
            .await?;
        }
        apply::save_entity(&tx, &event.entity, &state).await?;
        tx.commit().await?;
        tracing::warn!(%envelope_id, event_type = %event.event_type, "parked event released by an operator without its prerequisite");
        Ok(Some(ManualRelease {
            envelope_id,
            event_type: event.event_type,
            also_released,
            changed_contacts: changed_contacts.len(),
        }))
    }

    /// Moves parked event `id` to the dead letters (reason `dropped_by_operator`, body from the
    /// raw events); its inbox outcome becomes `dead_lettered`, so a replay applies it. `None` if
    /// no such parked event.
    pub async fn drop_parked(&self, id: i64) -> Result<Option<Dropped>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "DELETE FROM parked_events WHERE id = $1
                 RETURNING envelope_id, endpoint, provider, event_type, dedupe_key, received_at",
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let envelope_id: Uuid = row.get(0);
        let endpoint: String = row.get(1);
        let provider: String = row.get(2);
        let event_type: String = row.get(3);
        let dedupe_key: String = row.get(4);
        let received_at: DateTime<Utc> = row.get(5);
        let error = "dropped by an operator while parked";
        tx.execute(
            INSERT_PARKED_DEAD_LETTER,
            &[
                &envelope_id,
                &endpoint,
                &provider,
                &event_type,
                &dedupe_key,
                &DROPPED_BY_OPERATOR,
                &error,
                &received_at,
            ],
        )
        .await?;
        apply::set_outcome(&tx, &endpoint, &dedupe_key, "dead_lettered").await?;
        tx.commit().await?;
        tracing::warn!(%envelope_id, %event_type, "parked event dropped by an operator");
        Ok(Some(Dropped {
            envelope_id,
            event_type,
        }))
    }
}
