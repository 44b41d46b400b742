//! One webhook's life, read back from the tables it passed through (`intake trace`): received
//! (raw events), each event's outcome (inbox), parked and released, dead-lettered and replayed,
//! the contact change it caused (outbox), relayed, and synced to HealthSherpa. Nothing here
//! returns a body or a PHI field.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Store, StoreError};

/// One step of a webhook's life.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TraceStep {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened: `received`, `applied`, `duplicate`, `stale`, `parked`, `released`,
    /// `dead_lettered`, `replayed`, `outbox`, `relayed`, `synced`, `sync_dead_lettered`.
    pub step: String,
    /// Details without values: event type, dedupe key, reason, attempts, counts.
    pub detail: String,
}

/// A parked event as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParkedRow {
    /// Row id (what `intake parked release|drop ID` take).
    pub id: i64,
    /// Envelope id.
    pub envelope_id: Uuid,
    /// Endpoint.
    pub endpoint: String,
    /// Provider.
    pub provider: String,
    /// Event type.
    pub event_type: String,
    /// Entity kind and id.
    pub entity: String,
    /// The event type it waits for.
    pub waits_for: String,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
    /// When it will be dead-lettered `ordering_timeout`.
    pub deadline: DateTime<Utc>,
}

impl Store {
    /// The envelope that carried the event `dedupe_key` of `endpoint`, as the inbox or the dead
    /// letters know it.
    pub async fn envelope_of(&self, endpoint: &str, dedupe_key: &str) -> Result<Option<Uuid>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT envelope_id FROM inbox WHERE endpoint = $1 AND dedupe_key = $2
                 UNION ALL
                 SELECT envelope_id FROM dead_letters WHERE endpoint = $1 AND dedupe_key = $2
                 LIMIT 1",
                &[&endpoint, &dedupe_key],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every step of envelope `id`, in time order (steps of one instant in causal order).
    pub async fn trace(&self, id: Uuid) -> Result<Vec<TraceStep>, StoreError> {
        let client = self.pool.get().await?;
        // Each branch yields (at, order within an instant, step, detail).
        let rows = client
            .query(
                "SELECT received_at, 0, 'received', endpoint || ' (' || provider || ')'
                   FROM raw_events WHERE envelope_id = $1
                 UNION ALL
                 SELECT processed_at, 1,
                        CASE WHEN outcome = 'released' THEN 'parked' ELSE outcome END,
                        event_type || ' ' || entity_kind || ' ' || entity_id || ', dedupe key ' || dedupe_key
                          || CASE WHEN duplicates > 0 THEN ', ' || duplicates || ' duplicate deliveries' ELSE '' END
                   FROM inbox WHERE envelope_id = $1
                 UNION ALL
                 SELECT settled_at, 2, 'released', event_type || ' ' || entity_kind || ' ' || entity_id
                   FROM inbox WHERE envelope_id = $1 AND outcome = 'released' AND settled_at IS NOT NULL
                 UNION ALL
                 SELECT parked_at, 1, 'parked', event_type || ' waits for ' || waits_for || ' until ' || deadline
                   FROM parked_events WHERE envelope_id = $1
                 UNION ALL
                 SELECT dead_lettered_at, 3, CASE WHEN source = 'sync' THEN 'sync_dead_lettered' ELSE 'dead_lettered' END,
                        'dead letter ' || id || ': ' || reason || ' after ' || attempts || ' attempt(s)'
                          || COALESCE(', ' || event_type, '') || COALESCE(': ' || last_error, '')
                   FROM dead_letters WHERE envelope_id = $1
                      OR (source = 'sync' AND convert_from(body, 'UTF8')::jsonb ->> 'envelope_id' = $1::text)
                 UNION ALL
                 SELECT replayed_at, 4, 'replayed', 'dead letter ' || id || ' replayed (' || replay_count || ' time(s))'
                   FROM dead_letters WHERE envelope_id = $1 AND replayed_at IS NOT NULL
                 UNION ALL
                 SELECT created_at, 5, 'outbox', 'contact ' || contact_id || ' changed (seq ' || id || ')'
                   FROM outbox WHERE envelope_id = $1
                 UNION ALL
                 SELECT published_at, 6, 'relayed', 'contact ' || contact_id || ' change published (seq ' || id || ')'
                   FROM outbox WHERE envelope_id = $1 AND published_at IS NOT NULL
                 UNION ALL
                 SELECT s.synced_at, 7, 'synced',
                        'contact ' || o.contact_id || ' sent to HealthSherpa (state up to seq ' || s.synced_seq || ')'
                   FROM outbox o JOIN healthsherpa_sync s ON s.spark_id = o.contact_id
                  WHERE o.envelope_id = $1 AND s.synced_seq >= o.id AND s.synced_at IS NOT NULL
                 ORDER BY 1, 2",
                &[&id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| TraceStep {
                at: r.get(0),
                step: r.get(2),
                detail: r.get(3),
            })
            .collect())
    }

    /// Parked events parked longer ago than `older_than_secs` (all when 0), oldest first.
    pub async fn list_parked(&self, older_than_secs: f64, limit: i64) -> Result<Vec<ParkedRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, envelope_id, endpoint, provider, event_type, entity_kind || ' ' || entity_id,
                        waits_for, parked_at, deadline
                 FROM parked_events WHERE parked_at <= now() - make_interval(secs => $1)
                 ORDER BY id LIMIT $2",
                &[&older_than_secs, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ParkedRow {
                id: r.get(0),
                envelope_id: r.get(1),
                endpoint: r.get(2),
                provider: r.get(3),
                event_type: r.get(4),
                entity: r.get(5),
                waits_for: r.get(6),
                parked_at: r.get(7),
                deadline: r.get(8),
            })
            .collect())
    }
}
