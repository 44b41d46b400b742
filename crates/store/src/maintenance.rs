//! Dead letters, the parked-event sweeper, raw-event retention and the gauges' queries. Every
//! job here is safe with any number of workers running it at once.

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
}

const INSERT_DEAD_LETTER: &str = "
INSERT INTO dead_letters (envelope_id, endpoint, provider, event_type, dedupe_key, reason, attempts,
    first_error, last_error, received_at, headers, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT DO NOTHING";

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

    /// Deletes up to `batch` raw events received longer than `retention` ago; returns how many.
    pub async fn prune_raw_events(&self, retention: Duration, batch: i64) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "DELETE FROM raw_events WHERE envelope_id IN (
                     SELECT envelope_id FROM raw_events
                     WHERE received_at < now() - make_interval(secs => $1)
                     ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&retention.as_secs_f64(), &batch],
            )
            .await?;
        Ok(n)
    }

    /// Count and oldest age of parked events.
    pub async fn parked_stats(&self) -> Result<ParkedStats, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(parked_at)), 0)::float8
                 FROM parked_events",
                &[],
            )
            .await?;
        Ok(ParkedStats {
            count: row.get(0),
            oldest_age: Duration::from_secs_f64(row.get::<_, f64>(1).max(0.0)),
        })
    }

    /// Rows in `dead_letters`.
    pub async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_one("SELECT count(*) FROM dead_letters", &[])
            .await?
            .get(0))
    }
}
