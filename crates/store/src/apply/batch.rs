//! Group commit: the deliveries a worker took together, applied in one transaction — every
//! entity locked up front in one fixed order, each event under its own savepoint, one commit.
//!
//! The promises of [`Store::apply`] hold event by event: the inbox row is the exactly-once guard,
//! the ordering rule sees the entity's state as the events before it in the batch left it, and
//! an event that fails rolls back to its savepoint alone. Locking every entity of the batch first,
//! sorted, means two batches never wait on each other in a cycle: an event's inbox key belongs to
//! one entity, so a batch that holds an entity's lock is the only one that can insert its keys.
//! A conflict anyway (deadlock, serialization failure, lock wait over `lock_timeout`) rolls the
//! batch back and applies it again in halves, down to single deliveries, which then go to retry.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Duration;

use deadpool_postgres::Transaction;
use futures_util::future::join;
use intake_core::Envelope;
use intake_providers::{DecodedEvent, EntityRef};

use super::{
    ApplyOptions, ApplyReport, COUNT_DUPLICATE, EntityState, Outcome, apply_locked, insert_inbox, save_entity,
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
    /// Transactions committed (1 when nothing conflicted).
    pub commits: usize,
    /// Times a transaction conflicted and was split in halves.
    pub splits: usize,
}

/// The savepoint every event of a batch runs under (one at a time, so one name).
const SAVEPOINT: &str = "SAVEPOINT event";
/// Ends the previous event's savepoint and opens the next one, in one round trip.
const NEXT_SAVEPOINT: &str = "RELEASE SAVEPOINT event; SAVEPOINT event";
const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT event";

/// Locks every entity of the batch in one statement, in (kind, id) order — the same order in every
/// worker — creating the rows that do not exist yet.
const LOCK_ENTITIES: &str = "
INSERT INTO entities (kind, id)
SELECT kind, id FROM unnest($1::text[], $2::text[]) AS e(kind, id) ORDER BY kind, id
ON CONFLICT (kind, id) DO UPDATE SET updated_at = now()
RETURNING kind, id, applied_types, version, version_envelope_id, content_hmac";

type EntityKey = (&'static str, String);

fn key_of(entity: &EntityRef) -> EntityKey {
    (entity.kind.as_str(), entity.id.clone())
}

impl Store {
    /// Applies `deliveries` in one transaction, in order, each event under its own savepoint
    /// (see the module). Returns one result per delivery, in order. `attempt_timeout` bounds each
    /// transaction; one that runs over fails every delivery in it with [`StoreError::Timeout`].
    pub async fn apply_batch(
        &self,
        deliveries: &[BatchDelivery<'_>],
        options: ApplyOptions,
        attempt_timeout: Duration,
    ) -> (Vec<DeliveryResult>, BatchStats) {
        let mut results: Vec<Option<DeliveryResult>> = vec![None; deliveries.len()];
        let mut stats = BatchStats::default();
        // Ranges still to apply; the left half is popped first, so arrival order is kept.
        let mut pending: Vec<Range<usize>> = Vec::new();
        pending.push(0..deliveries.len());
        while let Some(range) = pending.pop() {
            let attempt = tokio::time::timeout(
                attempt_timeout,
                self.apply_in_one_transaction(&deliveries[range.clone()], options),
            )
            .await
            .unwrap_or(Err(StoreError::Timeout));
            match attempt {
                Ok(done) => {
                    stats.commits += 1;
                    for (slot, result) in results[range].iter_mut().zip(done) {
                        *slot = Some(result);
                    }
                }
                Err(e) if e.is_conflict() && range.len() > 1 => {
                    stats.splits += 1;
                    tracing::debug!(error = %e, deliveries = range.len(), "batch conflicted; applying it in halves");
                    let middle = range.start + range.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
                Err(e) => {
                    for slot in &mut results[range] {
                        *slot = Some(DeliveryResult::failed(e.clone()));
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

    /// One attempt: the whole slice in one transaction, or an error for all of it (nothing
    /// committed). An event's conflict fails the whole attempt so that the caller splits it.
    async fn apply_in_one_transaction(
        &self,
        deliveries: &[BatchDelivery<'_>],
        options: ApplyOptions,
    ) -> Result<Vec<DeliveryResult>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut entities = lock_entities(&tx, deliveries).await?;
        let mut results = Vec::with_capacity(deliveries.len());
        let mut first = true;
        for delivery in deliveries {
            let mut result = DeliveryResult {
                reports: Vec::with_capacity(delivery.events.len()),
                failed: None,
            };
            for (index, event) in delivery.events.iter().enumerate() {
                let savepoint = if first { SAVEPOINT } else { NEXT_SAVEPOINT };
                first = false;
                let applied =
                    apply_in_savepoint(&tx, self, savepoint, delivery.envelope, event, options, &mut entities)
                        .await?;
                match applied {
                    Ok(report) => result.reports.push(report),
                    Err(e) if e.is_conflict() => return Err(e),
                    Err(e) => {
                        result.failed = Some((index, e));
                        break;
                    }
                }
            }
            results.push(result);
        }
        for locked in entities.values().filter(|l| l.changed) {
            save_entity(&tx, &locked.entity, &locked.state).await?;
        }
        tx.commit().await?;
        Ok(results)
    }
}

/// An entity's state while its batch runs, and whether a committed savepoint changed it.
struct Locked {
    entity: EntityRef,
    state: EntityState,
    changed: bool,
}

async fn lock_entities(
    tx: &Transaction<'_>,
    deliveries: &[BatchDelivery<'_>],
) -> Result<HashMap<EntityKey, Locked>, StoreError> {
    let distinct: BTreeMap<EntityKey, &EntityRef> = deliveries
        .iter()
        .flat_map(|d| d.events.iter().map(|e| (key_of(&e.entity), &e.entity)))
        .collect();
    let (kinds, ids): (Vec<&str>, Vec<&str>) = distinct.keys().map(|(k, i)| (*k, i.as_str())).unzip();
    let lock = tx.prepare_cached(LOCK_ENTITIES).await?;
    let rows = tx.query(&lock, &[&kinds, &ids]).await?;
    let mut locked = HashMap::with_capacity(rows.len());
    for row in rows {
        let kind: &str = row.get(0);
        let id: &str = row.get(1);
        // Back to the event's own reference; a row we did not ask for cannot come back.
        let Some((key, entity)) = distinct.iter().find(|((k, i), _)| *k == kind && i == id) else {
            return Err(StoreError::Corrupt("entity lock returned an entity not asked for".into()));
        };
        locked.insert(
            key.clone(),
            Locked {
                entity: (*entity).clone(),
                state: EntityState::from_row(&row, 2),
                changed: false,
            },
        );
    }
    Ok(locked)
}

/// One event under its savepoint. The outer `Result` is the transaction's (a savepoint statement
/// failed: the whole attempt is lost); the inner one is the event's (rolled back to its savepoint,
/// the transaction goes on).
async fn apply_in_savepoint(
    tx: &Transaction<'_>,
    store: &Store,
    savepoint: &str,
    envelope: &Envelope,
    event: &DecodedEvent,
    options: ApplyOptions,
    entities: &mut HashMap<EntityKey, Locked>,
) -> Result<Result<ApplyReport, StoreError>, StoreError> {
    // Pipelined: the savepoint statement and the inbox insert leave in one write; Postgres runs
    // them in order. A failed savepoint statement aborts the transaction and is returned first.
    let (opened, inserted) = join(tx.batch_execute(savepoint), insert_inbox(tx, envelope, event)).await;
    opened?;
    let key = key_of(&event.entity);
    let applied = match inserted {
        Ok(true) => {
            let Some(entity) = entities.get(&key) else {
                return Err(StoreError::Corrupt("event of an entity the batch did not lock".into()));
            };
            // Applied to a copy: if the savepoint rolls back, the state stays as it was.
            let mut state = entity.state.clone();
            apply_locked(tx, &store.keys, envelope, event, options, &mut state)
                .await
                .map(|report| (report, state))
        }
        Ok(false) => {
            // Seen before: undo the failed insert, count the re-delivery on the row that has it.
            tx.batch_execute(ROLLBACK_TO_SAVEPOINT).await?;
            let count = tx.prepare_cached(COUNT_DUPLICATE).await?;
            tx.execute(&count, &[&envelope.endpoint, &event.dedupe_key]).await?;
            return Ok(Ok(ApplyReport::only(Outcome::Duplicate)));
        }
        Err(e) => Err(e),
    };
    match applied {
        Ok((report, state)) => {
            if let Some(entity) = entities.get_mut(&key) {
                entity.state = state;
                entity.changed = true;
            }
            Ok(Ok(report))
        }
        Err(e) => {
            tx.batch_execute(ROLLBACK_TO_SAVEPOINT).await?;
            Ok(Err(e))
        }
    }
}
