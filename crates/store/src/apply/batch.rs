//! Group commit: the deliveries a worker took together, applied in one transaction — the entities
//! locked up front in one fixed order, each event under its own savepoint, one commit.
//!
//! The promises of [`Store::apply`] hold event by event: the inbox row is the exactly-once guard,
//! the ordering rule sees the entity's state as the events before it in the batch left it, and
//! an event that fails rolls back to its savepoint alone. The lock phase creates the missing
//! entities, then takes only those no other transaction holds (`SKIP LOCKED`); deliveries that
//! need a busy one (and any later delivery of the same entity) go to a following transaction,
//! which waits for the holders only if nothing at all was free — so batches do not queue behind
//! each other in convoys. Every wait for an entity happens in one statement that takes them in
//! (kind, id) order, before the transaction holds any other, and an event's inbox key belongs to
//! one entity, so a batch holding an entity's lock is the only one that can insert its keys: no
//! cycle of waits. A conflict anyway (deadlock, serialization failure, a lock wait over its bound)
//! rolls the transaction back and applies it again in halves, down to single deliveries, which
//! then retry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures_util::future::{join, join_all};
use intake_core::Envelope;
use intake_providers::{DecodedEvent, EntityRef};

use super::{
    ApplyOptions, ApplyReport, Bookkeeping, COUNT_DUPLICATE, EntityState, LaterWrites, Outcome, apply_locked,
    field_issues_json, insert_inbox, save_entity,
};
use crate::{Store, StoreError};

/// One delivery of a batch: its envelope and the events decoded from it, applied in order.
#[derive(Debug, Clone, Copy)]
pub struct BatchDelivery<'a> {
    /// The envelope as received.
    pub envelope: &'a Envelope,
    /// Its decoded events.
    pub events: &'a [DecodedEvent],
}

/// What became of one delivery of a batch.
#[derive(Debug, Clone)]
pub struct DeliveryResult {
    /// Reports of its committed events, in order: all of them when `failed` is `None`.
    pub reports: Vec<ApplyReport>,
    /// The event (index into its `events`) that failed, and why. The events before it are
    /// committed and those after it were not tried — as when events are applied one by one, so
    /// the delivery's retry finds the first ones in the inbox and goes on from the failed one.
    pub failed: Option<(usize, StoreError)>,
}

impl DeliveryResult {
    fn failed(error: StoreError) -> DeliveryResult {
        DeliveryResult {
            reports: Vec::new(),
            failed: Some((0, error)),
        }
    }
}

/// How [`Store::apply_batch`] went, for the caller's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Transactions committed (1 when nothing was busy or conflicted).
    pub commits: usize,
    /// Deliveries put off to a following transaction because another one held their entity.
    pub deferred: usize,
    /// Times a transaction conflicted and was split in halves.
    pub splits: usize,
}

/// The savepoint every event of a batch runs under (one at a time, so one name).
const SAVEPOINT: &str = "SAVEPOINT event";
/// Ends the previous event's savepoint and opens the next one, in one round trip.
const NEXT_SAVEPOINT: &str = "RELEASE SAVEPOINT event; SAVEPOINT event";
const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT event";

/// Locks the entities no other transaction holds, in the order given, and reads their state;
/// busy ones — and ones that do not exist yet — are not returned. One primary-key lookup per
/// entity, on purpose: the join form (`WHERE (kind, id) IN (SELECT … unnest …)`) gets a cached
/// generic plan while the table is still small — a hash join over a sequential scan of
/// `entities` — and kept it for the connection's life, scanning the whole table in every batch.
/// A locking subquery is never flattened into a join, so this plan stays an index lookup.
const LOCK_FREE_ENTITIES: &str = "
SELECT e.* FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(kind, id, position)
CROSS JOIN LATERAL (
    SELECT kind, id, applied_types, version, version_envelope_id, content_hmac FROM entities
    WHERE entities.kind = k.kind AND entities.id = k.id
    FOR UPDATE SKIP LOCKED) AS e
ORDER BY k.position";

/// Creates the entities that do not exist, in (kind, id) order. An existing row, locked or not,
/// is left alone without waiting; only another transaction's uncommitted insert of the same entity
/// is waited for — which is why it runs first, while the transaction holds nothing: run after
/// `LOCK_FREE_ENTITIES`, it waited holding entities that the inserter, locking its own in order,
/// could be waiting for (a deadlock the two-worker test met).
const CREATE_MISSING_ENTITIES: &str = "
INSERT INTO entities (kind, id)
SELECT kind, id FROM unnest($1::text[], $2::text[]) AS e(kind, id) ORDER BY kind, id
ON CONFLICT (kind, id) DO NOTHING";

/// Locks every entity, creating the missing ones, waiting for their holders, in (kind, id) order
/// — the same order in every worker, so two waiting batches never wait on each other in a cycle.
const LOCK_ENTITIES: &str = "
INSERT INTO entities (kind, id)
SELECT kind, id FROM unnest($1::text[], $2::text[]) AS e(kind, id) ORDER BY kind, id
ON CONFLICT (kind, id) DO UPDATE SET updated_at = now()
RETURNING kind, id, applied_types, version, version_envelope_id, content_hmac";

/// How a transaction of the batch takes its entity locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Locking {
    /// Take the free ones; deliveries needing a busy one go to the next transaction.
    SkipBusy,
    /// Wait for every one (after a transaction in which nothing was free).
    Wait,
}

type EntityKey = (&'static str, String);

fn key_of(entity: &EntityRef) -> EntityKey {
    (entity.kind.as_str(), entity.id.clone())
}

/// What one transaction did: results of the deliveries it applied, and the deliveries it put
/// off because another transaction held one of their entities.
struct Attempt {
    applied: Vec<(usize, DeliveryResult)>,
    deferred: Vec<usize>,
}

impl Store {
    /// Applies `deliveries` in as few transactions as possible, each event under its own
    /// savepoint (see the module), and in order for each entity. Returns one result per delivery,
    /// in order. `step_timeout` bounds each step of a transaction — taking a connection and
    /// locking, each event, saving and committing — so a stalled database is noticed within it
    /// while a big batch that keeps making progress is not cut off; a step that runs over fails
    /// every delivery of its transaction with [`StoreError::Timeout`].
    pub async fn apply_batch(
        &self,
        deliveries: &[BatchDelivery<'_>],
        options: ApplyOptions,
        step_timeout: Duration,
    ) -> (Vec<DeliveryResult>, BatchStats) {
        if let [alone] = deliveries {
            // One delivery (a quiet queue, or INTAKE_BATCH_SIZE=1): the one-event transaction,
            // which needs no savepoint and locks its entity by waiting.
            let result = self.apply_alone(alone, options, step_timeout).await;
            let stats = BatchStats {
                commits: result.reports.len(),
                ..BatchStats::default()
            };
            return (vec![result], stats);
        }
        let mut results: Vec<Option<DeliveryResult>> = vec![None; deliveries.len()];
        let mut stats = BatchStats::default();
        // Delivery lists still to apply, last one first; each list is in arrival order.
        let mut pending: Vec<(Vec<usize>, Locking)> = Vec::new();
        pending.push(((0..deliveries.len()).collect(), Locking::SkipBusy));
        while let Some((items, locking)) = pending.pop() {
            // Boxed: one transaction's state machine is large (16 KiB) to keep inside the caller's.
            let attempt =
                Box::pin(self.apply_in_one_transaction(deliveries, &items, options, locking, step_timeout))
                    .await;
            match attempt {
                Ok(Attempt { applied, deferred }) => {
                    stats.commits += 1;
                    let progressed = !applied.is_empty();
                    for (index, result) in applied {
                        results[index] = Some(result);
                    }
                    if !deferred.is_empty() {
                        stats.deferred += deferred.len();
                        // Nothing was free: wait for the holders this time, so the batch moves on.
                        let next = if progressed {
                            Locking::SkipBusy
                        } else {
                            Locking::Wait
                        };
                        pending.push((deferred, next));
                    }
                }
                // A lock wait over the statement's bound is a conflict too, here. A permanent
                // error of the whole transaction (a kept row or an entity save refused) is one
                // delivery's: halves find it without failing the others.
                Err(e) if splits_apart(&e) && items.len() > 1 => {
                    stats.splits += 1;
                    tracing::debug!(error = %e, deliveries = items.len(), "batch conflicted; applying it in halves");
                    let right = items[items.len() / 2..].to_vec();
                    let left = items[..items.len() / 2].to_vec();
                    pending.push((right, locking));
                    pending.push((left, locking));
                }
                Err(e) if !e.is_retryable() && items.len() == 1 => {
                    // Alone and still refused: event by event, each statement written at once,
                    // so the failure lands on the event that caused it.
                    let index = items[0];
                    let alone = self.apply_alone(&deliveries[index], options, step_timeout).await;
                    results[index] = Some(alone);
                }
                Err(e) => {
                    for index in items {
                        results[index] = Some(DeliveryResult::failed(e.clone()));
                    }
                }
            }
        }
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| DeliveryResult::failed(StoreError::Timeout)))
            .collect();
        (results, stats)
    }

    /// Each event of one delivery in its own [`Store::apply`] transaction, stopping at the first
    /// failure.
    async fn apply_alone(
        &self,
        delivery: &BatchDelivery<'_>,
        options: ApplyOptions,
        step_timeout: Duration,
    ) -> DeliveryResult {
        let mut result = DeliveryResult {
            reports: Vec::with_capacity(delivery.events.len()),
            failed: None,
        };
        for (index, event) in delivery.events.iter().enumerate() {
            let applied = within(step_timeout, self.apply(delivery.envelope, event, options)).await;
            match applied {
                Ok(report) => result.reports.push(report),
                Err(e) => {
                    result.failed = Some((index, e));
                    break;
                }
            }
        }
        result
    }

    /// One transaction over the deliveries `items` (indexes into `deliveries`, in order), or an
    /// error for all of them (nothing committed). An event's conflict fails the whole attempt so
    /// that the caller splits it.
    async fn apply_in_one_transaction(
        &self,
        deliveries: &[BatchDelivery<'_>],
        items: &[usize],
        options: ApplyOptions,
        locking: Locking,
        step: Duration,
    ) -> Result<Attempt, StoreError> {
        let distinct: BTreeMap<EntityKey, &EntityRef> = items
            .iter()
            .flat_map(|i| {
                deliveries[*i]
                    .events
                    .iter()
                    .map(|e| (key_of(&e.entity), &e.entity))
            })
            .collect();
        let (kinds, ids): (Vec<&str>, Vec<&str>) = distinct.keys().map(|(k, i)| (*k, i.as_str())).unzip();
        let mut client = within(step, self.pool.get()).await?;
        let tx = within(step, client.transaction()).await?;
        let lock_phase = async {
            Ok::<_, StoreError>(match locking {
                Locking::SkipBusy => {
                    // Pipelined, in this order: the missing ones created (ours, so locked), then
                    // every free one locked and read — the new ones included, the busy ones not.
                    let create = tx.prepare_cached(CREATE_MISSING_ENTITIES).await?;
                    let lock = tx.prepare_cached(LOCK_FREE_ENTITIES).await?;
                    let (created, locked) = join(
                        tx.execute(&create, &[&kinds, &ids]),
                        tx.query(&lock, &[&kinds, &ids]),
                    )
                    .await;
                    created?;
                    locked?
                }
                Locking::Wait => {
                    let lock = tx.prepare_cached(LOCK_ENTITIES).await?;
                    tx.query(&lock, &[&kinds, &ids]).await?
                }
            })
        };
        let mut rows = within(step, lock_phase).await?;
        // Rows name their entity by text; back to the events' own keys and references.
        let by_name: HashMap<(&str, &str), (&EntityKey, &&EntityRef)> = distinct
            .iter()
            .map(|(key, entity)| ((key.0, key.1.as_str()), (key, entity)))
            .collect();
        let mut entities: HashMap<EntityKey, Locked> = HashMap::with_capacity(rows.len());
        for row in rows.drain(..) {
            let kind: &str = row.get(0);
            let id: &str = row.get(1);
            // A row we did not ask for cannot come back.
            let Some(&(key, entity)) = by_name.get(&(kind, id)) else {
                return Err(StoreError::Corrupt(
                    "entity lock returned an entity not asked for".into(),
                ));
            };
            entities.insert(
                key.clone(),
                Locked {
                    entity: (*entity).clone(),
                    state: EntityState::from_row(&row, 2),
                    changed: false,
                },
            );
        }
        // A delivery goes now if all its entities are locked and none was left to an earlier
        // delivery put off: per entity, arrival order holds across the transactions.
        let mut put_off: HashSet<EntityKey> = HashSet::new();
        let mut ready = Vec::with_capacity(items.len());
        let mut deferred = Vec::new();
        for &index in items {
            let keys: Vec<EntityKey> = deliveries[index]
                .events
                .iter()
                .map(|e| key_of(&e.entity))
                .collect();
            if keys
                .iter()
                .all(|k| entities.contains_key(k) && !put_off.contains(k))
            {
                ready.push(index);
            } else {
                put_off.extend(keys);
                deferred.push(index);
            }
        }
        // Every inbox row of the batch in one statement: the keys it takes are the events to
        // apply; the others were seen before.
        let mut inbox = within(step, BatchInbox::insert(&tx, deliveries, &ready)).await?;
        let mut applied = Vec::with_capacity(ready.len());
        // Raw rows and outbox rows of the events whose savepoints held, inserted before commit.
        let mut later = LaterWrites::default();
        let mut first = true;
        for index in ready {
            let delivery = &deliveries[index];
            let mut result = DeliveryResult {
                reports: Vec::with_capacity(delivery.events.len()),
                failed: None,
            };
            for (event_index, event) in delivery.events.iter().enumerate() {
                let row = inbox.row_of(delivery.envelope, event);
                if row == InboxRow::Seen {
                    // A re-delivery: counted on the row that has it, nothing to undo.
                    let report = within(step, count_redelivery(&tx, delivery.envelope, event)).await?;
                    result.reports.push(report);
                    continue;
                }
                let savepoint = if first { SAVEPOINT } else { NEXT_SAVEPOINT };
                first = false;
                let outcome = within(
                    step,
                    apply_in_savepoint(
                        &tx,
                        self,
                        savepoint,
                        delivery.envelope,
                        event,
                        options,
                        &mut entities,
                        row,
                    ),
                )
                .await?;
                match outcome {
                    Ok((report, writes)) => {
                        if row == InboxRow::InsertNow {
                            inbox.taken_again(delivery.envelope, event);
                        }
                        later.append(writes);
                        result.reports.push(report);
                    }
                    Err(e) if e.is_conflict() => return Err(e),
                    Err(e) => {
                        // As if the delivery's transaction had rolled back here: no inbox row
                        // for this event nor for the ones after it, which are not tried.
                        let untried = &delivery.events[event_index..];
                        within(step, inbox.give_back(&tx, delivery.envelope, untried)).await?;
                        result.failed = Some((event_index, e));
                        break;
                    }
                }
            }
            applied.push((index, result));
        }
        // The kept rows, then every changed entity saved, pipelined (a few at a time, so the
        // writes stay in order).
        let changed: Vec<&Locked> = entities.values().filter(|l| l.changed).collect();
        let save = async {
            later.write(&tx).await?;
            for chunk in changed.chunks(16) {
                for saved in join_all(chunk.iter().map(|l| save_entity(&tx, &l.entity, &l.state))).await {
                    saved?;
                }
            }
            Ok::<_, StoreError>(())
        };
        within(step, save).await?;
        within(step, tx.commit()).await?;
        Ok(Attempt { applied, deferred })
    }
}

/// Whether a failed batch transaction is applied again in halves: a conflict with another
/// transaction, a lock wait over its bound (57014), or a permanent refusal; not a broken
/// connection or a timeout, which halves would only meet again.
fn splits_apart(error: &StoreError) -> bool {
    error.is_conflict() || error.code() == Some("57014") || !error.is_retryable()
}

/// `work` within `limit`, or [`StoreError::Timeout`].
async fn within<T, E: Into<StoreError>>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(StoreError::Timeout),
    }
}

/// An entity's state while its batch runs, and whether a committed savepoint changed it.
struct Locked {
    entity: EntityRef,
    state: EntityState,
    changed: bool,
}

/// How an event's inbox row stands when its turn in the batch comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InboxRow {
    /// The batch's inbox insert took the key for this event.
    Taken,
    /// The key was there before this event: a re-delivery.
    Seen,
    /// The batch took the key for an earlier event that failed and gave it back: this one
    /// inserts it itself, under its savepoint, as it would have one event at a time.
    InsertNow,
}

/// Inserts every inbox row of a batch transaction at once; a key already there — or twice in the
/// batch — is left alone (`ON CONFLICT DO NOTHING`), and `RETURNING` tells which event took
/// which key.
const INSERT_INBOX_ROWS: &str = "
INSERT INTO inbox (endpoint, dedupe_key, envelope_id, provider, event_type, entity_kind, entity_id,
                   received_at, occurred_at, outcome, field_issues)
SELECT endpoint, dedupe_key, envelope_id, provider, event_type, entity_kind, entity_id, received_at,
       occurred_at, 'applied', field_issues
FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::timestamptz[], $10::jsonb[])
     WITH ORDINALITY AS e(endpoint, dedupe_key, envelope_id, provider, event_type, entity_kind,
                          entity_id, received_at, occurred_at, field_issues, position)
ORDER BY position
ON CONFLICT (endpoint, dedupe_key) DO NOTHING
RETURNING endpoint, dedupe_key, envelope_id";

const DELETE_INBOX_ROW: &str = "DELETE FROM inbox WHERE endpoint = $1 AND dedupe_key = $2";

/// The inbox keys a batch transaction took, and the ones it gave back.
struct BatchInbox {
    /// Key → envelope whose event took it and has not had its turn yet.
    taken: HashMap<(String, String), uuid::Uuid>,
    /// Keys the batch took and gave back (their event failed).
    given_back: HashSet<(String, String)>,
}

impl BatchInbox {
    /// Inserts the inbox rows of the events of `ready` (indexes into `deliveries`), in order.
    async fn insert(
        tx: &Transaction<'_>,
        deliveries: &[BatchDelivery<'_>],
        ready: &[usize],
    ) -> Result<BatchInbox, StoreError> {
        let events: Vec<(&Envelope, &DecodedEvent)> = ready
            .iter()
            .flat_map(|i| {
                let delivery = &deliveries[*i];
                delivery.events.iter().map(move |e| (delivery.envelope, e))
            })
            .collect();
        let mut field_issues = Vec::with_capacity(events.len());
        for (_, event) in &events {
            field_issues.push(field_issues_json(event)?);
        }
        let endpoints = text_column(&events, |envelope, _| &envelope.endpoint);
        let keys = text_column(&events, |_, event| &event.dedupe_key);
        let providers = text_column(&events, |envelope, _| envelope.provider.as_str());
        let types = text_column(&events, |_, event| &event.event_type);
        let kinds = text_column(&events, |_, event| event.entity.kind.as_str());
        let ids = text_column(&events, |_, event| &event.entity.id);
        let envelope_ids: Vec<uuid::Uuid> = events.iter().map(|(envelope, _)| envelope.id).collect();
        let received: Vec<DateTime<Utc>> = events.iter().map(|(envelope, _)| envelope.received_at).collect();
        let occurred: Vec<DateTime<Utc>> = events.iter().map(|(_, event)| event.occurred_at).collect();
        let insert = tx.prepare_cached(INSERT_INBOX_ROWS).await?;
        let rows = tx
            .query(
                &insert,
                &[
                    &endpoints,
                    &keys,
                    &envelope_ids,
                    &providers,
                    &types,
                    &kinds,
                    &ids,
                    &received,
                    &occurred,
                    &field_issues,
                ],
            )
            .await?;
        let taken = rows
            .iter()
            .map(|row| ((row.get(0), row.get(1)), row.get(2)))
            .collect();
        Ok(BatchInbox {
            taken,
            given_back: HashSet::new(),
        })
    }

    /// Where `event`'s inbox row stands, now that its turn has come (each event asks once).
    fn row_of(&mut self, envelope: &Envelope, event: &DecodedEvent) -> InboxRow {
        let key = (envelope.endpoint.clone(), event.dedupe_key.clone());
        if self.taken.get(&key) == Some(&envelope.id) {
            // Ours; a second copy of the same envelope later in the batch is a re-delivery.
            self.taken.remove(&key);
            InboxRow::Taken
        } else if self.given_back.contains(&key) {
            InboxRow::InsertNow
        } else {
            InboxRow::Seen
        }
    }

    /// `event` inserted a given-back key itself and held: the key is taken again.
    fn taken_again(&mut self, envelope: &Envelope, event: &DecodedEvent) {
        self.given_back
            .remove(&(envelope.endpoint.clone(), event.dedupe_key.clone()));
    }

    /// Deletes the rows the batch took for `events` (a delivery's failed event and the ones
    /// after it): the event whose turn it was has rolled back to its savepoint, which the batch's
    /// insert preceded. A later event with one of these keys then inserts it itself.
    async fn give_back(
        &mut self,
        tx: &Transaction<'_>,
        envelope: &Envelope,
        events: &[DecodedEvent],
    ) -> Result<(), StoreError> {
        let delete = tx.prepare_cached(DELETE_INBOX_ROW).await?;
        for (n, event) in events.iter().enumerate() {
            let key = (envelope.endpoint.clone(), event.dedupe_key.clone());
            // The failed event's row is the batch's unless it inserted the key itself (and its
            // rollback removed it); the untried ones' rows are the batch's if it took them.
            let ours = if n == 0 {
                !self.given_back.contains(&key)
            } else {
                self.taken.get(&key) == Some(&envelope.id)
            };
            if ours {
                self.taken.remove(&key);
                tx.execute(&delete, &[&key.0, &key.1]).await?;
                self.given_back.insert(key);
            }
        }
        Ok(())
    }
}

/// A re-delivery of an event whose inbox row exists: counted on that row, nothing applied.
async fn count_redelivery(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    event: &DecodedEvent,
) -> Result<ApplyReport, StoreError> {
    let count = tx.prepare_cached(COUNT_DUPLICATE).await?;
    tx.execute(&count, &[&envelope.endpoint, &event.dedupe_key])
        .await?;
    Ok(ApplyReport::only(Outcome::Duplicate))
}

/// One text column of a batch's events, for a multi-row statement.
fn text_column<'a>(
    events: &[(&'a Envelope, &'a DecodedEvent)],
    value: impl Fn(&'a Envelope, &'a DecodedEvent) -> &'a str,
) -> Vec<&'a str> {
    events
        .iter()
        .map(|(envelope, event)| value(envelope, event))
        .collect()
}

/// One event under its savepoint. The outer `Result` is the transaction's (a savepoint statement
/// failed: the whole attempt is lost); the inner one is the event's (rolled back to its savepoint,
/// the transaction goes on) and, when it held, the raw and outbox rows it leaves to the caller.
#[allow(clippy::too_many_arguments)]
async fn apply_in_savepoint(
    tx: &Transaction<'_>,
    store: &Store,
    savepoint: &str,
    envelope: &Envelope,
    event: &DecodedEvent,
    options: ApplyOptions,
    entities: &mut HashMap<EntityKey, Locked>,
    row: InboxRow,
) -> Result<Result<(ApplyReport, LaterWrites), StoreError>, StoreError> {
    let key = key_of(&event.entity);
    let Some(entity) = entities.get(&key) else {
        return Err(StoreError::Corrupt(
            "event of an entity the batch did not lock".into(),
        ));
    };
    // Applied to a copy: if the savepoint rolls back, the state stays as it was, and so do the
    // rows kept for later.
    let mut state = entity.state.clone();
    let mut writes = LaterWrites::default();
    let apply = async {
        if row == InboxRow::InsertNow && !insert_inbox(tx, envelope, event).await? {
            return Ok(None);
        }
        let bookkeeping = Bookkeeping::Later(&mut writes);
        apply_locked(tx, &store.keys, envelope, event, options, &mut state, bookkeeping)
            .await
            .map(Some)
    };
    // Pipelined: the savepoint statement and the event's first statement leave in one write;
    // Postgres runs them in order. A failed savepoint statement aborts the transaction and is
    // returned first.
    let (opened, applied) = join(tx.batch_execute(savepoint), apply).await;
    opened?;
    match applied {
        Ok(Some(report)) => {
            if let Some(entity) = entities.get_mut(&key) {
                entity.state = state;
                entity.changed = true;
            }
            Ok(Ok((report, writes)))
        }
        Ok(None) => {
            // Inserted meanwhile by another transaction (not possible while we hold the entity,
            // but the inbox decides): undo the failed insert, count the re-delivery.
            tx.batch_execute(ROLLBACK_TO_SAVEPOINT).await?;
            let report = count_redelivery(tx, envelope, event).await?;
            Ok(Ok((report, LaterWrites::default())))
        }
        Err(e) => {
            tx.batch_execute(ROLLBACK_TO_SAVEPOINT).await?;
            Ok(Err(e))
        }
    }
}
