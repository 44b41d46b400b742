//! The one dead-letter store: every message given up on — by the ingest worker, the sync worker,
//! the parked-event sweeper or the broker's delivery limit — is one row here, with what is needed
//! to replay it (queue, properties, body) and what an operator did about it (replayed, purged).

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::{Store, StoreError};

/// A dead letter to record (written by the dead-letter queue's recorder).
pub struct NewDeadLetter<'a> {
    /// `ingest` or `sync`.
    pub source: &'a str,
    /// The work queue it came from (where a replay sends it), if known.
    pub queue: Option<&'a str>,
    /// The message's id (the envelope id for ingest messages).
    pub message_id: Uuid,
    /// Endpoint, for ingest messages.
    pub endpoint: Option<&'a str>,
    /// Provider, for ingest messages.
    pub provider: Option<&'a str>,
    /// Event type, when decoding got that far.
    pub event_type: Option<&'a str>,
    /// Dedupe key, when decoding got that far.
    pub dedupe_key: Option<&'a str>,
    /// Reason code.
    pub reason: &'a str,
    /// Attempts made.
    pub attempts: u32,
    /// First error seen.
    pub first_error: Option<&'a str>,
    /// The error that ended it.
    pub last_error: Option<&'a str>,
    /// When the message was first received.
    pub received_at: DateTime<Utc>,
    /// Request headers kept with the envelope (JSON array of pairs), if any.
    pub headers: serde_json::Value,
    /// Properties to republish with.
    pub properties: serde_json::Value,
    /// The body, byte for byte (may hold PHI).
    pub body: &'a [u8],
}

impl std::fmt::Debug for NewDeadLetter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewDeadLetter")
            .field("source", &self.source)
            .field("message_id", &self.message_id)
            .field("reason", &self.reason)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Which dead letters an operation applies to. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Only this provider.
    pub provider: Option<String>,
    /// Only this endpoint.
    pub endpoint: Option<String>,
    /// Only this reason.
    pub reason: Option<String>,
    /// Only this source (`ingest`, `sync`).
    pub source: Option<String>,
    /// Dead-lettered at or after.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    pub until: Option<DateTime<Utc>>,
    /// Include rows already replayed or purged.
    pub include_resolved: bool,
    /// At most this many (newest first for listing, oldest first for replay).
    pub limit: i64,
}

/// A stored dead letter.
#[derive(Clone, serde::Serialize)]
pub struct DeadLetterRow {
    /// Row id (what `intake dead-letters show|replay ID` take).
    pub id: i64,
    /// `ingest` or `sync`.
    pub source: String,
    /// Envelope / message id.
    pub message_id: Uuid,
    /// Endpoint (ingest).
    pub endpoint: Option<String>,
    /// Provider (ingest).
    pub provider: Option<String>,
    /// Event type, if known.
    pub event_type: Option<String>,
    /// Dedupe key, if known.
    pub dedupe_key: Option<String>,
    /// Reason code.
    pub reason: String,
    /// Attempts made.
    pub attempts: i32,
    /// First error.
    pub first_error: Option<String>,
    /// Last error.
    pub last_error: Option<String>,
    /// When first received.
    pub received_at: DateTime<Utc>,
    /// When dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
    /// The work queue a replay goes to (`None`: the provider's queue).
    pub queue: Option<String>,
    /// Times replayed.
    pub replay_count: i32,
    /// Last replay.
    pub replayed_at: Option<DateTime<Utc>>,
    /// When it stopped needing an operator.
    pub resolved_at: Option<DateTime<Utc>>,
    /// `replayed` or `purged`.
    pub resolution: Option<String>,
    /// Request headers (ingest).
    #[serde(skip)]
    pub headers: serde_json::Value,
    /// Properties to republish with.
    #[serde(skip)]
    pub properties: Option<serde_json::Value>,
    /// Body, loaded only when asked for (may hold PHI).
    #[serde(skip)]
    pub body: Option<Vec<u8>>,
}

impl std::fmt::Debug for DeadLetterRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterRow")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("message_id", &self.message_id)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

const INSERT: &str = "
INSERT INTO dead_letters (source, queue, envelope_id, endpoint, provider, event_type, dedupe_key, reason,
    attempts, first_error, last_error, received_at, headers, properties, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (envelope_id, (COALESCE(dedupe_key, '')), reason, attempts) DO UPDATE
    SET resolved_at = NULL, resolution = NULL, last_error = EXCLUDED.last_error, dead_lettered_at = now()
    WHERE dead_letters.resolved_at IS NOT NULL";

const COLUMNS: &str = "id, source, envelope_id, endpoint, provider, event_type, dedupe_key, reason, attempts,
    first_error, last_error, received_at, dead_lettered_at, queue, replay_count, replayed_at, resolved_at,
    resolution, headers, properties";

fn row_of(row: &tokio_postgres::Row, with_body: bool) -> DeadLetterRow {
    DeadLetterRow {
        id: row.get(0),
        source: row.get(1),
        message_id: row.get(2),
        endpoint: row.get(3),
        provider: row.get(4),
        event_type: row.get(5),
        dedupe_key: row.get(6),
        reason: row.get(7),
        attempts: row.get(8),
        first_error: row.get(9),
        last_error: row.get(10),
        received_at: row.get(11),
        dead_lettered_at: row.get(12),
        queue: row.get(13),
        replay_count: row.get(14),
        replayed_at: row.get(15),
        resolved_at: row.get(16),
        resolution: row.get(17),
        headers: row.get(18),
        properties: row.get(19),
        body: if with_body { row.get(20) } else { None },
    }
}

/// The WHERE clause and parameters of a filter.
fn where_of(filter: &DeadLetterFilter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut clauses = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut add = |clause: &str, value: Box<dyn ToSql + Sync + Send>| {
        params.push(value);
        clauses.push(clause.replace('?', &format!("${}", params.len())));
    };
    if let Some(v) = &filter.provider {
        add("provider = ?", Box::new(v.clone()));
    }
    if let Some(v) = &filter.endpoint {
        add("endpoint = ?", Box::new(v.clone()));
    }
    if let Some(v) = &filter.reason {
        add("reason = ?", Box::new(v.clone()));
    }
    if let Some(v) = &filter.source {
        add("source = ?", Box::new(v.clone()));
    }
    if let Some(v) = filter.since {
        add("dead_lettered_at >= ?", Box::new(v));
    }
    if let Some(v) = filter.until {
        add("dead_lettered_at < ?", Box::new(v));
    }
    if !filter.include_resolved {
        clauses.push("resolved_at IS NULL".to_owned());
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, params)
}

impl Store {
    /// Records a dead letter; `false` when the same one (message, dedupe key, reason, attempts)
    /// is already recorded and open (a redelivered dead letter). The same one dead-lettered again
    /// after an operator resolved it (a replay that failed the same way) reopens its row.
    pub async fn record_dead_letter(&self, d: &NewDeadLetter<'_>) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(INSERT).await?;
        let attempts = i32::try_from(d.attempts).unwrap_or(i32::MAX);
        let n = client
            .execute(
                &stmt,
                &[
                    &d.source,
                    &d.queue,
                    &d.message_id,
                    &d.endpoint,
                    &d.provider,
                    &d.event_type,
                    &d.dedupe_key,
                    &d.reason,
                    &attempts,
                    &d.first_error.or(d.last_error),
                    &d.last_error,
                    &d.received_at,
                    &d.headers,
                    &d.properties,
                    &d.body,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Dead letters matching `filter`, newest first, without bodies.
    pub async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.select_dead_letters(filter, "ORDER BY id DESC").await
    }

    /// Dead letters matching `filter`, oldest first (the order a replay republishes them in).
    pub async fn dead_letters_to_replay(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.select_dead_letters(filter, "ORDER BY id").await
    }

    async fn select_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        order: &str,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        let client = self.pool.get().await?;
        let (clause, mut params) = where_of(filter);
        params.push(Box::new(filter.limit.max(0)));
        let sql = format!(
            "SELECT {COLUMNS} FROM dead_letters {clause} {order} LIMIT ${}",
            params.len()
        );
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&sql, &refs).await?;
        Ok(rows.iter().map(|r| row_of(r, false)).collect())
    }

    /// One dead letter, its body included.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetterRow>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS}, body FROM dead_letters WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.map(|r| row_of(&r, true)))
    }

    /// Marks every dead letter matching `filter` purged (kept for audit until retention deletes
    /// it, but no longer needing an operator); returns how many.
    pub async fn purge_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let (clause, mut params) = where_of(filter);
        params.push(Box::new(filter.limit.max(0)));
        let sql = format!(
            "UPDATE dead_letters SET purged_at = now(), resolved_at = now(), resolution = 'purged'
             WHERE id IN (SELECT id FROM dead_letters {clause} ORDER BY id LIMIT ${})",
            params.len()
        );
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        Ok(client.execute(&sql, &refs).await?)
    }

    /// What the inbox says of an event (`applied`, `parked`, `stale`, `released`, …), if anything:
    /// a replay of an event that took effect is a duplicate unless forced.
    pub async fn inbox_outcome(
        &self,
        endpoint: &str,
        dedupe_key: &str,
    ) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT outcome FROM inbox WHERE endpoint = $1 AND dedupe_key = $2",
                &[&endpoint, &dedupe_key],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Forgets an event's inbox row so that its next delivery is applied again (a forced replay).
    pub async fn forget_inbox(&self, endpoint: &str, dedupe_key: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "DELETE FROM inbox WHERE endpoint = $1 AND dedupe_key = $2",
                &[&endpoint, &dedupe_key],
            )
            .await?;
        Ok(n == 1)
    }

    /// Dead letters that still need an operator, by reason.
    pub async fn unresolved_dead_letters_by_reason(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT reason, count(*) FROM dead_letters WHERE resolved_at IS NULL GROUP BY reason ORDER BY reason",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
