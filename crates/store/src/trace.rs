//! One webhook's life, read back from the tables it passed through (`intake trace`): received
//! (raw events), each event's outcome (inbox), parked and released, dead-lettered and replayed,
//! the contact change it caused (outbox), relayed, and synced to HealthSherpa. Nothing here
//! returns a body or a PHI field.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::crypto::Place;
use crate::sealed::BODY;
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
        let mut steps: Vec<(DateTime<Utc>, i32, TraceStep)> = rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    TraceStep {
                        at: r.get(0),
                        step: r.get(2),
                        detail: r.get(3),
                    },
                )
            })
            .collect();
        steps.extend(self.sync_dead_letters_of(&client, id).await?);
        steps.sort_by_key(|(at, order, _)| (*at, *order));
        Ok(steps.into_iter().map(|(_, _, step)| step).collect())
    }

    /// Sync dead letters of the contact changes `id` caused. Their rows carry the sync message's
    /// id; the envelope is named inside the (sealed) body, so the bodies are opened here — sync
    /// messages hold ids only, and open dead letters are few.
    async fn sync_dead_letters_of(
        &self,
        client: &deadpool_postgres::Object,
        id: Uuid,
    ) -> Result<Vec<(DateTime<Utc>, i32, TraceStep)>, StoreError> {
        let rows = client
            .query(
                "SELECT dead_lettered_at, 'dead letter ' || id || ': ' || reason || ' after ' || attempts || ' attempt(s)'
                          || COALESCE(', ' || event_type, '') || COALESCE(': ' || last_error, ''),
                        envelope_id, body
                 FROM dead_letters WHERE source = 'sync' AND envelope_id <> $1 AND body IS NOT NULL",
                &[&id],
            )
            .await?;
        let wanted = id.to_string();
        let mut out = Vec::new();
        for r in rows {
            let message_id: Uuid = r.get(2);
            let message_id = message_id.to_string();
            let body: Vec<u8> = r.get(3);
            let Ok(plain) = self.keys.open(&body, &Place::new(BODY, &[&message_id])) else {
                continue;
            };
            let names_it = serde_json::from_slice::<serde_json::Value>(&plain)
                .ok()
                .and_then(|v| v.get("envelope_id").and_then(|e| e.as_str()).map(|e| e == wanted))
                .unwrap_or(false);
            if names_it {
                out.push((
                    r.get(0),
                    3,
                    TraceStep {
                        at: r.get(0),
                        step: "sync_dead_lettered".to_owned(),
                        detail: r.get(1),
                    },
                ));
            }
        }
        Ok(out)
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
