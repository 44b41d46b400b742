//! The one transaction that applies an event: inbox row (the exactly-once guard), entity lock,
//! ordering rule (park / apply / stale), effect, release of parked successors, outbox — commit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use intake_core::Envelope;
use intake_providers::{DecodedEvent, Ordering, RuleSpec};
use uuid::Uuid;

use crate::effects::{self, Mode};
use crate::error::UNIQUE_VIOLATION;
use crate::{Store, StoreError};

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its effect is committed.
    Applied,
    /// Seen before (same endpoint and dedupe key): nothing done.
    Duplicate,
    /// Waiting in `parked_events` for its prerequisite.
    Parked,
    /// Older than what the entity already holds: kept as history, state unchanged (or, for a
    /// fill-only event, only gaps filled).
    Stale,
}

impl Outcome {
    /// Lowercase name (inbox column, metric label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Parked => "parked",
            Outcome::Stale => "stale",
        }
    }
}

/// A parked event applied because this one was its prerequisite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Its event type.
    pub event_type: String,
    /// When its envelope was received (for end-to-end latency).
    pub received_at: DateTime<Utc>,
}

/// The result of [`Store::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// What happened to the event itself.
    pub outcome: Outcome,
    /// Parked events released (applied) in the same transaction, in order.
    pub released: Vec<Released>,
}

/// Options of [`Store::apply`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Replaces every rule's park limit when set (operations and tests).
    pub park_limit: Option<Duration>,
}

struct EntityState {
    applied_types: Vec<String>,
    version: Option<DateTime<Utc>>,
}

/// Whether applying `event_type` can release parked events of its provider.
fn is_prerequisite(provider: intake_core::Provider, event_type: &str) -> bool {
    intake_providers::spec(provider)
        .events
        .iter()
        .any(|e| matches!(e.rule, RuleSpec::ParkUntil { prerequisite, .. } if prerequisite == event_type))
}

impl Store {
    /// Applies one decoded event of `envelope` in one transaction. A duplicate is detected by the
    /// inbox's unique key (SQLSTATE 23505), rolled back, and counted on the inbox row.
    pub async fn apply(
        &self,
        envelope: &Envelope,
        event: &DecodedEvent,
        options: ApplyOptions,
    ) -> Result<ApplyReport, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO inbox (endpoint, dedupe_key, envelope_id, provider, event_type, entity_kind,
                                    entity_id, received_at, occurred_at, outcome, field_issues)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'applied', $10)",
            )
            .await?;
        // Pointers and expected types only (never a value): NULL when every field was readable.
        let field_issues = (!event.field_issues.is_empty())
            .then(|| serde_json::to_value(&event.field_issues))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let inserted = tx
            .execute(
                &insert,
                &[
                    &envelope.endpoint,
                    &event.dedupe_key,
                    &envelope.id,
                    &envelope.provider.as_str(),
                    &event.event_type,
                    &event.entity.kind.as_str(),
                    &event.entity.id,
                    &envelope.received_at,
                    &event.occurred_at,
                    &field_issues,
                ],
            )
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if e.code().map(|c| c.code()) == Some(UNIQUE_VIOLATION) => {
                // The inbox insert was the transaction's first statement: nothing else to undo.
                tx.rollback().await?;
                let count = client
                    .prepare_cached("UPDATE inbox SET duplicates = duplicates + 1 WHERE endpoint = $1 AND dedupe_key = $2")
                    .await?;
                client
                    .execute(&count, &[&envelope.endpoint, &event.dedupe_key])
                    .await?;
                return Ok(ApplyReport {
                    outcome: Outcome::Duplicate,
                    released: Vec::new(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        let raw = tx
            .prepare_cached(
                "INSERT INTO raw_events (envelope_id, endpoint, provider, received_at, headers, body)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (envelope_id) DO NOTHING",
            )
            .await?;
        let headers = serde_json::to_value(&envelope.headers).unwrap_or_default();
        tx.execute(
            &raw,
            &[
                &envelope.id,
                &envelope.endpoint,
                &envelope.provider.as_str(),
                &envelope.received_at,
                &headers,
                &envelope.body.as_ref(),
            ],
        )
        .await?;

        let mut state = lock_entity(&tx, event).await?;
        let mode = match &event.ordering {
            Ordering::Apply => Mode::Apply,
            Ordering::ParkUntil {
                prerequisite,
                limit_secs,
            } => {
                if !state.applied_types.contains(prerequisite) {
                    let limit = options.park_limit.unwrap_or(Duration::from_secs(*limit_secs));
                    park(&tx, envelope, event, prerequisite, limit).await?;
                    tx.commit().await?;
                    return Ok(ApplyReport {
                        outcome: Outcome::Parked,
                        released: Vec::new(),
                    });
                }
                Mode::Apply
            }
            Ordering::NewestWins => match state.version {
                Some(v) if event.occurred_at <= v => Mode::Stale,
                _ => Mode::Apply,
            },
            Ordering::FillOnlyAfter { superseded_by } => {
                if state.applied_types.contains(superseded_by) {
                    Mode::Stale
                } else {
                    Mode::Apply
                }
            }
        };
        let mut changed_contacts = effects::apply(&tx, event, envelope.id, mode).await?;
        let outcome = match mode {
            Mode::Apply => Outcome::Applied,
            Mode::Stale => Outcome::Stale,
        };
        if mode == Mode::Apply {
            record_applied(&mut state, event);
        }
        let mut released = Vec::new();
        if mode == Mode::Apply && is_prerequisite(envelope.provider, &event.event_type) {
            release(&tx, event, &mut state, &mut released, &mut changed_contacts).await?;
        }
        for contact in &changed_contacts {
            let outbox = tx
                .prepare_cached(
                    "INSERT INTO outbox (topic, contact_id, envelope_id) VALUES ('contacts.changed', $1, $2)",
                )
                .await?;
            tx.execute(&outbox, &[contact, &envelope.id]).await?;
        }
        let save = tx
            .prepare_cached("UPDATE entities SET applied_types = $3, version = $4, updated_at = now() WHERE kind = $1 AND id = $2")
            .await?;
        tx.execute(
            &save,
            &[
                &event.entity.kind.as_str(),
                &event.entity.id,
                &state.applied_types,
                &state.version,
            ],
        )
        .await?;
        if outcome != Outcome::Applied {
            set_outcome(&tx, &envelope.endpoint, &event.dedupe_key, outcome.as_str()).await?;
        }
        tx.commit().await?;
        Ok(ApplyReport { outcome, released })
    }
}

fn record_applied(state: &mut EntityState, event: &DecodedEvent) {
    if !state.applied_types.contains(&event.event_type) {
        state.applied_types.push(event.event_type.clone());
    }
    if matches!(event.ordering, Ordering::NewestWins) {
        state.version = Some(
            state
                .version
                .map_or(event.occurred_at, |v| v.max(event.occurred_at)),
        );
    }
}

/// Creates the entity's row if needed and locks it until the transaction ends: every event of
/// one entity is applied under this lock, whichever worker holds it.
async fn lock_entity(tx: &Transaction<'_>, event: &DecodedEvent) -> Result<EntityState, StoreError> {
    let lock = tx
        .prepare_cached(
            "INSERT INTO entities (kind, id) VALUES ($1, $2)
             ON CONFLICT (kind, id) DO UPDATE SET updated_at = now()
             RETURNING applied_types, version",
        )
        .await?;
    let row = tx
        .query_one(&lock, &[&event.entity.kind.as_str(), &event.entity.id])
        .await?;
    Ok(EntityState {
        applied_types: row.get(0),
        version: row.get(1),
    })
}

async fn set_outcome(
    tx: &Transaction<'_>,
    endpoint: &str,
    dedupe_key: &str,
    outcome: &str,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("UPDATE inbox SET outcome = $3 WHERE endpoint = $1 AND dedupe_key = $2")
        .await?;
    tx.execute(&stmt, &[&endpoint, &dedupe_key, &outcome]).await?;
    Ok(())
}

async fn park(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    event: &DecodedEvent,
    prerequisite: &str,
    limit: Duration,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO parked_events (entity_kind, entity_id, waits_for, endpoint, dedupe_key, envelope_id,
                                        provider, event_type, event, received_at, deadline)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11))",
        )
        .await?;
    let json = serde_json::to_value(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.execute(
        &stmt,
        &[
            &event.entity.kind.as_str(),
            &event.entity.id,
            &prerequisite,
            &envelope.endpoint,
            &event.dedupe_key,
            &envelope.id,
            &envelope.provider.as_str(),
            &event.event_type,
            &json,
            &envelope.received_at,
            &limit.as_secs_f64(),
        ],
    )
    .await?;
    set_outcome(
        tx,
        &envelope.endpoint,
        &event.dedupe_key,
        Outcome::Parked.as_str(),
    )
    .await
}

/// Applies, in arrival order, every parked event of the entity whose prerequisite is now met,
/// repeating while a released event unblocks more. A row the sweeper is dead-lettering right now
/// is locked by it: the DELETE waits, then finds it gone.
async fn release(
    tx: &Transaction<'_>,
    event: &DecodedEvent,
    state: &mut EntityState,
    released: &mut Vec<Released>,
    changed_contacts: &mut Vec<String>,
) -> Result<(), StoreError> {
    let claim = tx
        .prepare_cached(
            "DELETE FROM parked_events
             WHERE id IN (SELECT id FROM parked_events
                          WHERE entity_kind = $1 AND entity_id = $2 AND waits_for = ANY($3)
                          ORDER BY id FOR UPDATE)
             RETURNING id, endpoint, dedupe_key, envelope_id, event, received_at",
        )
        .await?;
    loop {
        let mut rows = tx
            .query(
                &claim,
                &[
                    &event.entity.kind.as_str(),
                    &event.entity.id,
                    &state.applied_types,
                ],
            )
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        rows.sort_by_key(|r| r.get::<_, i64>(0));
        for row in rows {
            let endpoint: String = row.get(1);
            let dedupe_key: String = row.get(2);
            let envelope_id: Uuid = row.get(3);
            let parked: DecodedEvent = serde_json::from_value(row.get(4))
                .map_err(|_| StoreError::Corrupt("parked event in an unknown format".into()))?;
            changed_contacts.extend(effects::apply(tx, &parked, envelope_id, Mode::Apply).await?);
            record_applied(state, &parked);
            set_outcome(tx, &endpoint, &dedupe_key, "released").await?;
            released.push(Released {
                event_type: parked.event_type,
                received_at: row.get(5),
            });
        }
    }
}
