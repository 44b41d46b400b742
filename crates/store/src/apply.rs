//! The one transaction that applies an event: inbox row (the exactly-once guard), entity lock,
//! ordering rule (park / apply / stale / duplicate of the current state), effect, release of
//! parked successors (dead-lettering any this build cannot read), outbox — commit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures_util::future::{join, join_all};
use intake_core::Envelope;
use intake_providers::{DecodedEvent, EntityRef, Ordering, RuleSpec};
use uuid::Uuid;

use crate::crypto::{Keyring, Place};
use crate::effects::{self, Mode};
use crate::error::UNIQUE_VIOLATION;
use crate::sealed::{self, BODY};
use crate::{Store, StoreError};

mod batch;

pub use batch::{BatchDelivery, BatchStats, DeliveryResult};

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its effect is committed.
    Applied,
    /// Seen before (same endpoint and dedupe key), or under NewestWins a body equal to the one
    /// that set the entity's current state: nothing done, nothing notified.
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

/// A parked event dead-lettered while its entity's parked events were released, because its
/// stored form could not be read (reason [`PARKED_FORMAT`]); the event that released the others
/// is still applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedDeadLetter {
    /// Its envelope.
    pub envelope_id: Uuid,
    /// Its event type (the parked row's column, readable whatever the format).
    pub event_type: String,
}

/// The result of [`Store::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// What happened to the event itself.
    pub outcome: Outcome,
    /// Parked events released (applied) in the same transaction, in order.
    pub released: Vec<Released>,
    /// Parked events of the entity that could not be read and were dead-lettered instead.
    pub parked_dead_letters: Vec<ParkedDeadLetter>,
}

impl ApplyReport {
    fn only(outcome: Outcome) -> ApplyReport {
        ApplyReport {
            outcome,
            released: Vec::new(),
            parked_dead_letters: Vec::new(),
        }
    }
}

/// Options of [`Store::apply`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Replaces every rule's park limit when set (operations and tests).
    pub park_limit: Option<Duration>,
}

/// Version of the stored form of a parked event (`parked_events.event`, a serialized
/// [`DecodedEvent`], sealed). Bump it when that form changes so that a row written by another build is
/// recognised instead of misread; a row of another version is dead-lettered as [`PARKED_FORMAT`].
pub const PARKED_EVENT_FORMAT: i32 = 1;

/// Dead-letter reason of a parked event whose stored form this build cannot read.
pub const PARKED_FORMAT: &str = "parked_format";

#[derive(Debug, Clone)]
pub(crate) struct EntityState {
    applied_types: Vec<String>,
    /// The newest `(occurred_at, envelope id)` seen for a NewestWins entity.
    version: Option<DateTime<Utc>>,
    version_envelope_id: Option<Uuid>,
    /// Keyed hash (HMAC-SHA256, hex) of the raw body that set the current state (NewestWins).
    content_hmac: Option<String>,
}

impl EntityState {
    /// Reads the state from `applied_types, version, version_envelope_id, content_hmac` starting
    /// at column `first`.
    pub(crate) fn from_row(row: &tokio_postgres::Row, first: usize) -> EntityState {
        EntityState {
            applied_types: row.get(first),
            version: row.get(first + 1),
            version_envelope_id: row.get(first + 2),
            content_hmac: row.get(first + 3),
        }
    }

    /// Whether an event at `(at, id)` is newer than every one seen. Within one instant the
    /// higher UUIDv7 wins; a version without an envelope id (written before it was kept) is
    /// older than any event of the same instant.
    fn is_older_than(&self, at: DateTime<Utc>, id: Uuid) -> bool {
        match self.version {
            None => true,
            Some(v) => (v, self.version_envelope_id) < (at, Some(id)),
        }
    }

    fn advance(&mut self, at: DateTime<Utc>, id: Uuid) {
        if self.is_older_than(at, id) {
            self.version = Some(at);
            self.version_envelope_id = Some(id);
        }
    }
}

/// Keyed hash (lowercase hex HMAC-SHA256 under `INTAKE_HMAC_KEY`) of a raw body: compared, never
/// read back, and useless to anyone guessing bodies without the key.
fn body_hmac(keys: &Keyring, body: &[u8]) -> String {
    keys.keyed_hash_hex(BODY, body)
}

/// Whether applying `event_type` can release parked events of its provider.
pub(crate) fn is_prerequisite(provider: intake_core::Provider, event_type: &str) -> bool {
    intake_providers::spec(provider)
        .events
        .iter()
        .any(|e| matches!(e.rule, RuleSpec::ParkUntil { prerequisite, .. } if prerequisite == event_type))
}

impl Store {
    /// Applies one decoded event of `envelope` in one transaction. A duplicate is detected by the
    /// inbox's unique key (SQLSTATE 23505), rolled back, and counted on the inbox row; under the
    /// NewestWins rule a body equal to the entity's current one is a duplicate too (kept as its
    /// own inbox row with outcome `duplicate`, so its redelivery is caught by the key).
    pub async fn apply(
        &self,
        envelope: &Envelope,
        event: &DecodedEvent,
        options: ApplyOptions,
    ) -> Result<ApplyReport, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The entity first, then the inbox key — the order of a batch too (see `batch`): a
        // transaction holding an inbox key never waits for an entity another one holds while
        // that one waits for the key. Pipelined: the insert runs once the lock is granted. Both
        // statements are prepared first, so that both futures send on their first poll, in order.
        tx.prepare_cached(LOCK_ENTITY).await?;
        tx.prepare_cached(INSERT_INBOX).await?;
        let (locked, inserted) = join(
            lock_entity(&tx, &event.entity),
            insert_inbox(&tx, envelope, event),
        )
        .await;
        let mut state = locked?;
        if !inserted? {
            // Nothing but the entity lock to undo.
            tx.rollback().await?;
            let count = client.prepare_cached(COUNT_DUPLICATE).await?;
            client
                .execute(&count, &[&envelope.endpoint, &event.dedupe_key])
                .await?;
            return Ok(ApplyReport::only(Outcome::Duplicate));
        }
        let report = apply_locked(
            &tx,
            &self.keys,
            envelope,
            event,
            options,
            &mut state,
            Bookkeeping::Now,
        )
        .await?;
        save_entity(&tx, &event.entity, &state).await?;
        tx.commit().await?;
        Ok(report)
    }
}

/// Counts a re-delivery on the inbox row that recognised it.
pub(crate) const COUNT_DUPLICATE: &str =
    "UPDATE inbox SET duplicates = duplicates + 1 WHERE endpoint = $1 AND dedupe_key = $2";

const INSERT_INBOX: &str = "
INSERT INTO inbox (endpoint, dedupe_key, envelope_id, provider, event_type, entity_kind, entity_id,
                   received_at, occurred_at, outcome, field_issues)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'applied', $10)";

/// The inbox's `field_issues` of an event: pointers and expected types only (never a value), NULL
/// when every field was readable.
pub(crate) fn field_issues_json(event: &DecodedEvent) -> Result<Option<serde_json::Value>, StoreError> {
    (!event.field_issues.is_empty())
        .then(|| serde_json::to_value(&event.field_issues))
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Inserts the event's inbox row (outcome `applied` until said otherwise): `false` when its key
/// is already there (SQLSTATE 23505), which aborts the (sub)transaction — the caller rolls back.
pub(crate) async fn insert_inbox(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    event: &DecodedEvent,
) -> Result<bool, StoreError> {
    let insert = tx.prepare_cached(INSERT_INBOX).await?;
    let field_issues = field_issues_json(event)?;
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
        Ok(_) => Ok(true),
        Err(e) if e.code().map(|c| c.code()) == Some(UNIQUE_VIOLATION) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Where [`apply_locked`] writes an applied or stale event's raw row and its outbox rows: at once
/// (one event per transaction), or later, all of a batch transaction's in one multi-row insert
/// each (group commit: two statements per batch instead of one or more per event).
pub(crate) enum Bookkeeping<'a> {
    /// Written by the event's own statements.
    Now,
    /// Kept here; the caller inserts them before it commits, and drops them if the event's
    /// savepoint rolls back.
    Later(&'a mut LaterWrites),
}

/// The bookkeeping rows of a batch transaction's events, in event order.
#[derive(Default)]
pub(crate) struct LaterWrites {
    raw: Vec<RawRow>,
    /// `(contact_id, envelope_id)`: one `contacts.changed` outbox row each, in this order.
    outbox: Vec<(String, Uuid)>,
}

const INSERT_RAW_ROWS: &str = "
INSERT INTO raw_events (envelope_id, endpoint, provider, received_at, headers, body)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::bytea[])
ON CONFLICT (envelope_id) DO NOTHING";

const INSERT_OUTBOX_ROWS: &str = "
INSERT INTO outbox (topic, contact_id, envelope_id)
SELECT 'contacts.changed', contact_id, envelope_id
FROM unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS o(contact_id, envelope_id, position)
ORDER BY position";

impl LaterWrites {
    /// Adds `other`'s rows after these.
    pub(crate) fn append(&mut self, mut other: LaterWrites) {
        self.raw.append(&mut other.raw);
        self.outbox.append(&mut other.outbox);
    }

    /// Inserts every row kept, one statement per table, both pipelined.
    pub(crate) async fn write(self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let raw_rows = tx.prepare_cached(INSERT_RAW_ROWS).await?;
        let outbox_rows = tx.prepare_cached(INSERT_OUTBOX_ROWS).await?;
        let raw = &self.raw;
        let ids: Vec<Uuid> = raw.iter().map(|r| r.envelope_id).collect();
        let endpoints: Vec<&str> = raw.iter().map(|r| r.endpoint.as_str()).collect();
        let providers: Vec<&str> = raw.iter().map(|r| r.provider).collect();
        let received: Vec<DateTime<Utc>> = raw.iter().map(|r| r.received_at).collect();
        let headers: Vec<&serde_json::Value> = raw.iter().map(|r| &r.headers).collect();
        let bodies: Vec<&[u8]> = raw.iter().map(|r| r.body.as_slice()).collect();
        let (contacts, envelopes): (Vec<&str>, Vec<Uuid>) =
            self.outbox.iter().map(|(c, e)| (c.as_str(), *e)).unzip();
        let (raw_written, outbox_written) = join(
            async {
                if raw.is_empty() {
                    return Ok(0);
                }
                tx.execute(
                    &raw_rows,
                    &[&ids, &endpoints, &providers, &received, &headers, &bodies],
                )
                .await
            },
            async {
                if contacts.is_empty() {
                    return Ok(0);
                }
                tx.execute(&outbox_rows, &[&contacts, &envelopes]).await
            },
        )
        .await;
        both(
            raw_written.map_err(StoreError::from),
            outbox_written.map_err(StoreError::from),
        )?;
        Ok(())
    }
}

/// Everything after the inbox row and the entity lock: the ordering rule (park / apply / stale /
/// duplicate of the current state), the effect, the release of parked successors, the outbox.
/// Updates `state` in memory; the caller saves it (once per entity and transaction). A parked
/// event's raw row is written at once whatever `bookkeeping` says, so that a parked event
/// always finds its body in `raw_events` (a dead letter made from it copies it from there).
pub(crate) async fn apply_locked(
    tx: &Transaction<'_>,
    keys: &Keyring,
    envelope: &Envelope,
    event: &DecodedEvent,
    options: ApplyOptions,
    state: &mut EntityState,
    mut bookkeeping: Bookkeeping<'_>,
) -> Result<ApplyReport, StoreError> {
    let mode = match &event.ordering {
        Ordering::Apply => Mode::Apply,
        Ordering::ParkUntil {
            prerequisite,
            limit_secs,
        } => {
            if !state.applied_types.contains(prerequisite) {
                let limit = options.park_limit.unwrap_or(Duration::from_secs(*limit_secs));
                // Pipelined (one write, statements run in order); see `both` for the error.
                let (raw, parked) = join(
                    insert_raw(tx, keys, envelope),
                    park(tx, keys, envelope, event, prerequisite, limit),
                )
                .await;
                both(raw, parked)?;
                return Ok(ApplyReport::only(Outcome::Parked));
            }
            Mode::Apply
        }
        Ordering::NewestWins => {
            let digest = body_hmac(keys, &envelope.body);
            if state.content_hmac.as_deref() == Some(digest.as_str()) {
                // The current state again (a provider's retry): nothing to apply, no
                // notification, but it is the newest receipt so far if it is newer, so an
                // older different body still arriving late stays stale.
                state.advance(event.occurred_at, envelope.id);
                set_outcome(tx, &envelope.endpoint, &event.dedupe_key, "duplicate").await?;
                return Ok(ApplyReport::only(Outcome::Duplicate));
            }
            if state.is_older_than(event.occurred_at, envelope.id) {
                state.advance(event.occurred_at, envelope.id);
                state.content_hmac = Some(digest);
                Mode::Apply
            } else {
                Mode::Stale
            }
        }
        Ordering::FillOnlyAfter { superseded_by } => {
            if state.applied_types.contains(superseded_by) {
                Mode::Stale
            } else {
                Mode::Apply
            }
        }
    };
    let effected = match &mut bookkeeping {
        // The raw event and the effect's first statements leave in one write (Postgres runs
        // them in order); see `both` for the error reported.
        Bookkeeping::Now => {
            let (raw, effected) = join(
                insert_raw(tx, keys, envelope),
                effects::apply(tx, keys, event, envelope.id, mode),
            )
            .await;
            both(raw, effected)?.1
        }
        Bookkeeping::Later(later) => {
            later.raw.push(RawRow::sealed(keys, envelope));
            effects::apply(tx, keys, event, envelope.id, mode).await?
        }
    };
    let mut changed_contacts = effected.contacts;
    let outcome = if effected.changed {
        Outcome::Applied
    } else {
        Outcome::Stale
    };
    if outcome == Outcome::Applied {
        record_applied(state, event);
    }
    let mut released = Vec::new();
    let mut parked_dead_letters = Vec::new();
    if outcome == Outcome::Applied && is_prerequisite(envelope.provider, &event.event_type) {
        let mut out = ReleaseOut {
            released: &mut released,
            dead_letters: &mut parked_dead_letters,
            changed_contacts: &mut changed_contacts,
        };
        release(tx, keys, event, state, &mut out).await?;
    }
    if let Bookkeeping::Later(later) = bookkeeping {
        // Kept for the batch's one outbox insert; none left to write here.
        later
            .outbox
            .extend(changed_contacts.drain(..).map(|contact| (contact, envelope.id)));
    }
    // Outbox rows and the outcome: independent writes, pipelined.
    let outbox = tx
        .prepare_cached(
            "INSERT INTO outbox (topic, contact_id, envelope_id) VALUES ('contacts.changed', $1, $2)",
        )
        .await?;
    let (written, outcome_set) = join(
        join_all(
            changed_contacts
                .iter()
                .map(|contact| async { tx.execute(&outbox, &[contact, &envelope.id]).await }),
        ),
        async {
            if outcome != Outcome::Applied {
                set_outcome(tx, &envelope.endpoint, &event.dedupe_key, outcome.as_str()).await
            } else {
                Ok(())
            }
        },
    )
    .await;
    for row in written {
        row?;
    }
    outcome_set?;
    Ok(ApplyReport {
        outcome,
        released,
        parked_dead_letters,
    })
}

/// Two pipelined statements' results, or the error that caused the failure: a statement Postgres
/// runs after a failed one fails too, with 25P02 (transaction aborted), and a statement prepared
/// on the way (first use on a connection) can leave after one awaited later — so the order of
/// the futures does not tell which failed first.
fn both<A, B>(a: Result<A, StoreError>, b: Result<B, StoreError>) -> Result<(A, B), StoreError> {
    const ABORTED: Option<&str> = Some("25P02");
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Err(f)) if e.code() == ABORTED => Err(f),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// An envelope as received, its body sealed: a `raw_events` row.
struct RawRow {
    envelope_id: Uuid,
    endpoint: String,
    provider: &'static str,
    received_at: DateTime<Utc>,
    headers: serde_json::Value,
    body: Vec<u8>,
}

impl RawRow {
    fn sealed(keys: &Keyring, envelope: &Envelope) -> RawRow {
        let id = envelope.id.to_string();
        RawRow {
            envelope_id: envelope.id,
            endpoint: envelope.endpoint.clone(),
            provider: envelope.provider.as_str(),
            received_at: envelope.received_at,
            headers: serde_json::to_value(&envelope.headers).unwrap_or_default(),
            body: keys.seal(&envelope.body, &Place::new(BODY, &[&id])),
        }
    }
}

/// Keeps the envelope as received (audit and replay), its body sealed. Not for a duplicate: its
/// body is already kept under the envelope that set the current state.
async fn insert_raw(tx: &Transaction<'_>, keys: &Keyring, envelope: &Envelope) -> Result<(), StoreError> {
    let raw = tx
        .prepare_cached(
            "INSERT INTO raw_events (envelope_id, endpoint, provider, received_at, headers, body)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (envelope_id) DO NOTHING",
        )
        .await?;
    let row = RawRow::sealed(keys, envelope);
    tx.execute(
        &raw,
        &[
            &row.envelope_id,
            &row.endpoint,
            &row.provider,
            &row.received_at,
            &row.headers,
            &row.body,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn save_entity(
    tx: &Transaction<'_>,
    entity: &EntityRef,
    state: &EntityState,
) -> Result<(), StoreError> {
    let save = tx
        .prepare_cached(
            "UPDATE entities SET applied_types = $3, version = $4, version_envelope_id = $5,
                                 content_hmac = $6, updated_at = now()
             WHERE kind = $1 AND id = $2",
        )
        .await?;
    tx.execute(
        &save,
        &[
            &entity.kind.as_str(),
            &entity.id,
            &state.applied_types,
            &state.version,
            &state.version_envelope_id,
            &state.content_hmac,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) fn record_applied(state: &mut EntityState, event: &DecodedEvent) {
    if !state.applied_types.contains(&event.event_type) {
        state.applied_types.push(event.event_type.clone());
    }
}

const LOCK_ENTITY: &str = "
INSERT INTO entities (kind, id) VALUES ($1, $2)
ON CONFLICT (kind, id) DO UPDATE SET updated_at = now()
RETURNING applied_types, version, version_envelope_id, content_hmac";

/// Creates the entity's row if needed and locks it until the transaction ends: every event of
/// one entity is applied under this lock, whichever worker holds it.
pub(crate) async fn lock_entity(tx: &Transaction<'_>, entity: &EntityRef) -> Result<EntityState, StoreError> {
    let lock = tx.prepare_cached(LOCK_ENTITY).await?;
    let row = tx.query_one(&lock, &[&entity.kind.as_str(), &entity.id]).await?;
    Ok(EntityState::from_row(&row, 0))
}

pub(crate) async fn set_outcome(
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

/// A parked event was applied: outcome `released`, and when (`intake trace` shows it).
pub(crate) async fn mark_released(
    tx: &Transaction<'_>,
    endpoint: &str,
    dedupe_key: &str,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("UPDATE inbox SET outcome = 'released', settled_at = now() WHERE endpoint = $1 AND dedupe_key = $2")
        .await?;
    tx.execute(&stmt, &[&endpoint, &dedupe_key]).await?;
    Ok(())
}

async fn park(
    tx: &Transaction<'_>,
    keys: &Keyring,
    envelope: &Envelope,
    event: &DecodedEvent,
    prerequisite: &str,
    limit: Duration,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO parked_events (entity_kind, entity_id, waits_for, endpoint, dedupe_key, envelope_id,
                                        provider, event_type, event, received_at, deadline, format)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11), $12)",
        )
        .await?;
    let json = serde_json::to_vec(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let row = parked_place(&envelope.endpoint, &event.dedupe_key);
    let sealed_event = keys.seal(&json, &Place::new(PARKED_EVENT_LABEL, &row));
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
            &sealed_event,
            &envelope.received_at,
            &limit.as_secs_f64(),
            &PARKED_EVENT_FORMAT,
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

/// Where [`release`] reports what it did.
pub(crate) struct ReleaseOut<'a> {
    pub(crate) released: &'a mut Vec<Released>,
    pub(crate) dead_letters: &'a mut Vec<ParkedDeadLetter>,
    pub(crate) changed_contacts: &'a mut Vec<String>,
}

/// A dead-letter row for a parked event this build cannot read, with the body kept in
/// `raw_events` (absent once retention pruned it).
pub(crate) const INSERT_PARKED_DEAD_LETTER: &str = "
INSERT INTO dead_letters (envelope_id, endpoint, provider, event_type, dedupe_key, reason, attempts,
    first_error, last_error, received_at, headers, body)
SELECT $1, $2, $3, $4, $5, $6, 1, $7, $7, $8, COALESCE(r.headers, '[]'::jsonb), r.body
FROM (SELECT 1) AS one LEFT JOIN raw_events r ON r.envelope_id = $1
ON CONFLICT DO NOTHING";

/// Applies, in arrival order, every parked event of the entity whose prerequisite is now met,
/// repeating while a released event unblocks more. A row the sweeper is dead-lettering right now
/// is locked by it: the DELETE waits, then finds it gone. A row whose stored form this build
/// cannot read (another format version, or undecodable) is dead-lettered alone, reason
/// [`PARKED_FORMAT`]; the others are still applied.
pub(crate) async fn release(
    tx: &Transaction<'_>,
    keys: &Keyring,
    event: &DecodedEvent,
    state: &mut EntityState,
    out: &mut ReleaseOut<'_>,
) -> Result<(), StoreError> {
    let claim = tx
        .prepare_cached(
            "DELETE FROM parked_events
             WHERE id IN (SELECT id FROM parked_events
                          WHERE entity_kind = $1 AND entity_id = $2 AND waits_for = ANY($3)
                          ORDER BY id FOR UPDATE)
             RETURNING id, endpoint, dedupe_key, envelope_id, event, received_at, format, provider,
                       event_type",
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
            let received_at: DateTime<Utc> = row.get(5);
            let format: i32 = row.get(6);
            let readable = open_parked(keys, &endpoint, &dedupe_key, format, row.get(4));
            let Ok(parked) = readable else {
                let error = readable.err().map(|e| e.to_string()).unwrap_or_default();
                let provider: String = row.get(7);
                let event_type: String = row.get(8);
                let stmt = tx.prepare_cached(INSERT_PARKED_DEAD_LETTER).await?;
                tx.execute(
                    &stmt,
                    &[
                        &envelope_id,
                        &endpoint,
                        &provider,
                        &event_type,
                        &dedupe_key,
                        &PARKED_FORMAT,
                        &error,
                        &received_at,
                    ],
                )
                .await?;
                set_outcome(tx, &endpoint, &dedupe_key, "dead_lettered").await?;
                out.dead_letters.push(ParkedDeadLetter {
                    envelope_id,
                    event_type,
                });
                continue;
            };
            let effected = effects::apply(tx, keys, &parked, envelope_id, Mode::Apply).await?;
            out.changed_contacts.extend(effected.contacts);
            record_applied(state, &parked);
            mark_released(tx, &endpoint, &dedupe_key).await?;
            out.released.push(Released {
                event_type: parked.event_type,
                received_at,
            });
        }
    }
}

/// Label of a parked event's sealed form.
const PARKED_EVENT_LABEL: &str = "parked_events.event";

/// Where a parked event's sealed form belongs: its event's inbox key.
fn parked_place<'a>(endpoint: &'a str, dedupe_key: &'a str) -> [&'a str; 2] {
    [endpoint, dedupe_key]
}

/// Reads a parked event back: opens its sealed form and decodes it. The error never quotes the
/// event (no serde message: it can quote values).
pub(crate) fn open_parked(
    keys: &Keyring,
    endpoint: &str,
    dedupe_key: &str,
    format: i32,
    sealed_event: Vec<u8>,
) -> Result<DecodedEvent, StoreError> {
    if format != PARKED_EVENT_FORMAT {
        return Err(StoreError::Corrupt(format!(
            "parked event of format {format}; this build reads format {PARKED_EVENT_FORMAT}"
        )));
    }
    let row = parked_place(endpoint, dedupe_key);
    let place = Place::new(PARKED_EVENT_LABEL, &row);
    let json = sealed::open_bytes(keys, Some(sealed_event), &place)?.unwrap_or_default();
    serde_json::from_slice(&json)
        .map_err(|_| StoreError::Corrupt(format!("parked event of format {format} does not decode")))
}
