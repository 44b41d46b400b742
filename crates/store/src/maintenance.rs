//! Dead letters (written, resolved by an operator, counted while open), the parked-event sweeper,
//! retention of every growing table in small batches, and the gauges' queries. Every job here is
//! safe with any number of workers running it at once.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use intake_core::{Envelope, Provider};
use uuid::Uuid;

use crate::{Store, StoreError};

/// Reason recorded for a parked event that waited past its limit.
pub const ORDERING_TIMEOUT: &str = "ordering_timeout";

/// One event given up on, as recorded in `dead_letters`.
pub struct DeadLetter<'a> {
    /// The envelope (its body is stored for inspection and replay).
    pub envelope: &'a Envelope,
    /// Event type, when decoding got that far.
    pub event_type: Option<&'a str>,
    /// Dedupe key, when decoding got that far.
    pub dedupe_key: Option<&'a str>,
    /// Short reason code, e.g. `unknown_event_type`, `retries_exhausted`.
    pub reason: &'a str,
    /// Processing attempts made.
    pub attempts: u32,
    /// The first error seen (from the retry headers), if known.
    pub first_error: Option<&'a str>,
    /// The error that ended it.
    pub last_error: &'a str,
}

impl std::fmt::Debug for DeadLetter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter")
            .field("envelope_id", &self.envelope.id)
            .field("reason", &self.reason)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A parked event past its limit, handed to the sweeper's publish step.
pub struct ExpiredParked {
    /// Its envelope, rebuilt from `raw_events` (empty body if retention already pruned it).
    pub envelope: Envelope,
    /// Event type.
    pub event_type: String,
    /// Dedupe key.
    pub dedupe_key: String,
    /// The event type it waited for.
    pub waited_for: String,
}

impl std::fmt::Debug for ExpiredParked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiredParked")
            .field("envelope_id", &self.envelope.id)
            .field("event_type", &self.event_type)
            .finish_non_exhaustive()
    }
}

/// Where swept events are published before they are recorded (the dead-letter queue).
pub trait DeadLetterSink: Send + Sync {
    /// Publishes one expired event; `false` stops the sweep (it is tried again next time).
    fn publish<'a>(&'a self, expired: &'a ExpiredParked) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// Parked events right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParkedStats {
    /// How many.
    pub count: i64,
    /// Age of the oldest (zero when none).
    pub oldest_age: Duration,
    /// How many are past their deadline (the sweeper will dead-letter them).
    pub overdue: i64,
}

/// A redelivery of a message already dead-lettered (its ack was lost) adds nothing; the same
/// event dead-lettered again after an operator resolved its row (a replay that failed the same
/// way) reopens that row, so it counts as needing an operator again.
const INSERT_DEAD_LETTER: &str = "
INSERT INTO dead_letters (envelope_id, endpoint, provider, event_type, dedupe_key, reason, attempts,
    first_error, last_error, received_at, headers, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (envelope_id, (COALESCE(dedupe_key, '')), reason, attempts) DO UPDATE
    SET resolved_at = NULL, resolution = NULL, last_error = EXCLUDED.last_error,
        dead_lettered_at = now()
    WHERE dead_letters.resolved_at IS NOT NULL";

/// What retention deletes once it is older than its age. Domain tables and the HealthSherpa
/// status history are kept: they are the data, not bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retained {
    /// `raw_events` by receipt time. Raw events of events still parked are kept.
    RawEvents,
    /// `inbox` rows by receipt time: past the dedupe window a re-delivery is no longer
    /// recognised. Rows of events still parked are kept.
    Inbox,
    /// `outbox` rows by publication time (unpublished rows are never deleted).
    PublishedOutbox,
    /// `dead_letters` rows by the time an operator resolved them (replayed or purged); open
    /// rows are never deleted.
    ResolvedDeadLetters,
}

impl Retained {
    /// Every kind, in the order the sweeper prunes them.
    pub const ALL: [Retained; 4] = [
        Retained::RawEvents,
        Retained::Inbox,
        Retained::PublishedOutbox,
        Retained::ResolvedDeadLetters,
    ];

    /// The table, for logs and metric labels.
    pub fn table(self) -> &'static str {
        match self {
            Retained::RawEvents => "raw_events",
            Retained::Inbox => "inbox",
            Retained::PublishedOutbox => "outbox",
            Retained::ResolvedDeadLetters => "dead_letters",
        }
    }

    /// One batch: the subselect picks at most `$2` rows older than `$1` seconds, oldest first
    /// (by an index), skipping rows another transaction holds, so a batch never waits and holds
    /// its row locks only for one short statement.
    fn delete_batch(self) -> &'static str {
        match self {
            Retained::RawEvents => {
                // A parked event past its limit is dead-lettered with its body read back from here.
                "DELETE FROM raw_events WHERE envelope_id IN (
                     SELECT envelope_id FROM raw_events r
                     WHERE received_at < now() - make_interval(secs => $1)
                       AND NOT EXISTS (SELECT 1 FROM parked_events p WHERE p.envelope_id = r.envelope_id)
                     ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            }
            Retained::Inbox => {
                // ctid: the inbox key is two text columns; the row's address is cheaper.
                "DELETE FROM inbox WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM inbox
                     WHERE received_at < now() - make_interval(secs => $1) AND outcome <> 'parked'
                     ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED))"
            }
            Retained::PublishedOutbox => {
                "DELETE FROM outbox WHERE id IN (
                     SELECT id FROM outbox
                     WHERE published_at < now() - make_interval(secs => $1)
                     ORDER BY published_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            }
            Retained::ResolvedDeadLetters => {
                "DELETE FROM dead_letters WHERE id IN (
                     SELECT id FROM dead_letters
                     WHERE resolved_at < now() - make_interval(secs => $1)
                     ORDER BY resolved_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            }
        }
    }
}

impl Store {
    /// Records a dead letter.
    pub async fn insert_dead_letter(&self, d: &DeadLetter<'_>) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(INSERT_DEAD_LETTER).await?;
        let headers = serde_json::to_value(&d.envelope.headers).unwrap_or_default();
        let attempts = i32::try_from(d.attempts).unwrap_or(i32::MAX);
        client
            .execute(
                &stmt,
                &[
                    &d.envelope.id,
                    &d.envelope.endpoint,
                    &d.envelope.provider.as_str(),
                    &d.event_type,
                    &d.dedupe_key,
                    &d.reason,
                    &attempts,
                    &d.first_error.unwrap_or(d.last_error),
                    &d.last_error,
                    &d.envelope.received_at,
                    &headers,
                    &d.envelope.body.as_ref(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Dead-letters up to `batch` parked events whose deadline passed. Each is first handed to
    /// `publish` (the dead-letter queue); only when that succeeds is it removed from
    /// `parked_events` and recorded in `dead_letters`, in one transaction. Rows another worker is
    /// sweeping, or an apply is releasing, are skipped (`SKIP LOCKED`). Returns what was swept.
    pub async fn sweep_expired_parked(
        &self,
        batch: i64,
        sink: &dyn DeadLetterSink,
    ) -> Result<Vec<(Provider, String)>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT p.id, p.endpoint, p.provider, p.envelope_id, p.received_at, p.event_type, p.dedupe_key,
                        p.waits_for, r.headers, r.body
                 FROM parked_events p LEFT JOIN raw_events r USING (envelope_id)
                 WHERE p.deadline < now()
                 ORDER BY p.deadline LIMIT $1
                 FOR UPDATE OF p SKIP LOCKED",
                &[&batch],
            )
            .await?;
        let mut swept = Vec::new();
        for row in rows {
            let id: i64 = row.get(0);
            let provider: Provider = row
                .get::<_, String>(2)
                .parse()
                .map_err(|_| StoreError::Corrupt("parked event with unknown provider".into()))?;
            let headers: Vec<(String, String)> = row
                .get::<_, Option<serde_json::Value>>(8)
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let expired = ExpiredParked {
                envelope: Envelope {
                    id: row.get::<_, Uuid>(3),
                    endpoint: row.get(1),
                    provider,
                    received_at: row.get::<_, DateTime<Utc>>(4),
                    headers,
                    body: Bytes::from(row.get::<_, Option<Vec<u8>>>(9).unwrap_or_default()),
                },
                event_type: row.get(5),
                dedupe_key: row.get(6),
                waited_for: row.get(7),
            };
            if !sink.publish(&expired).await {
                break;
            }
            tx.execute("DELETE FROM parked_events WHERE id = $1", &[&id])
                .await?;
            let reason = format!("{} was not applied within the park limit", expired.waited_for);
            let headers = serde_json::to_value(&expired.envelope.headers).unwrap_or_default();
            tx.execute(
                INSERT_DEAD_LETTER,
                &[
                    &expired.envelope.id,
                    &expired.envelope.endpoint,
                    &provider.as_str(),
                    &Some(&expired.event_type),
                    &Some(&expired.dedupe_key),
                    &ORDERING_TIMEOUT,
                    &1i32,
                    &reason,
                    &reason,
                    &expired.envelope.received_at,
                    &headers,
                    &expired.envelope.body.as_ref(),
                ],
            )
            .await?;
            tx.execute(
                "UPDATE inbox SET outcome = 'dead_lettered' WHERE endpoint = $1 AND dedupe_key = $2",
                &[&expired.envelope.endpoint, &expired.dedupe_key],
            )
            .await?;
            swept.push((provider, expired.event_type));
        }
        tx.commit().await?;
        Ok(swept)
    }

    /// Deletes up to `batch` rows of `what` older than `age` in one short statement; returns how
    /// many. Call again while it returns `batch`.
    pub async fn prune(&self, what: Retained, age: Duration, batch: i64) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(what.delete_batch()).await?;
        Ok(client.execute(&stmt, &[&age.as_secs_f64(), &batch]).await?)
    }

    /// Marks a dead letter replayed by an operator: it no longer needs one (until the replay
    /// fails the same way again). Returns whether the row exists.
    pub async fn mark_dead_letter_replayed(&self, id: i64) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE dead_letters SET replayed_at = now(), replay_count = replay_count + 1,
                     resolved_at = now(), resolution = 'replayed'
                 WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(n == 1)
    }

    /// Marks a dead letter purged by an operator: resolved, its row kept until the dead-letter
    /// retention age has passed. Returns whether the row exists.
    pub async fn mark_dead_letter_purged(&self, id: i64) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE dead_letters SET purged_at = now(), resolved_at = now(), resolution = 'purged'
                 WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(n == 1)
    }

    /// Count and oldest age of parked events.
    pub async fn parked_stats(&self) -> Result<ParkedStats, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(parked_at)), 0)::float8,
                        count(*) FILTER (WHERE deadline < now())
                 FROM parked_events",
                &[],
            )
            .await?;
        Ok(ParkedStats {
            count: row.get(0),
            oldest_age: Duration::from_secs_f64(row.get::<_, f64>(1).max(0.0)),
            overdue: row.get(2),
        })
    }

    /// Dead letters that still need an operator: neither replayed nor purged.
    pub async fn unresolved_dead_letters(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_one("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL", &[])
            .await?
            .get(0))
    }
}
