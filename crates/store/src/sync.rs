//! The HealthSherpa CRM sync's SQL: the outbox relay's claim-publish-mark, and per-contact sync
//! state (HealthSherpa id, quote URL, how far changes were sent, create-in-flight marker) behind a
//! per-contact lock, so any number of sync workers serialise on one contact and nothing else.

use std::future::Future;

use chrono::NaiveDate;
use deadpool_postgres::Object;
use uuid::Uuid;

use crate::crypto::{Keyring, Place};
use crate::sealed::open;
use crate::{Store, StoreError};

/// Outbox topic of contact changes (also the routing key it is published under).
pub const CONTACTS_CHANGED_TOPIC: &str = "contacts.changed";

/// One claimed outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Outbox id: increases with every change, so it orders a contact's changes.
    pub id: i64,
    /// The changed contact (`contacts.spark_id`).
    pub contact_id: String,
    /// The envelope whose processing changed it.
    pub envelope_id: Uuid,
}

/// A contact's fields the sync sends, as stored. Holds PHI: `Debug` shows none of it.
#[derive(Clone, Default, PartialEq)]
pub struct SyncContact {
    /// `contacts.spark_id`, our stable id (sent as HealthSherpa's `external_id`).
    pub spark_id: String,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Mobile phone, else home phone.
    pub phone: Option<String>,
    /// Home address, one line as received (e.g. `14 Aspen Drive, North Caldwell, NJ 07006`).
    pub home_address: Option<String>,
    /// The agent's email.
    pub agent_email: Option<String>,
    /// Medicare Beneficiary Identifier.
    pub mbi: Option<String>,
    /// Part A enrollment date.
    pub part_a_date: Option<NaiveDate>,
    /// Part B enrollment date.
    pub part_b_date: Option<NaiveDate>,
    /// Highest outbox id of this contact when this state was read: sending this state covers
    /// every change up to it.
    pub seq: i64,
}

impl std::fmt::Debug for SyncContact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncContact")
            .field("spark_id", &self.spark_id)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// What we know of a contact's HealthSherpa side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    /// HealthSherpa's id, once created (or found).
    pub healthsherpa_id: Option<String>,
    /// Quote redirect URL from the last create or update.
    pub redirect_url: Option<String>,
    /// Changes up to this outbox id have been sent.
    pub synced_seq: i64,
    /// A create was started and its id not stored: HealthSherpa may hold the contact already.
    pub create_started: bool,
}

const CLAIM: &str = "SELECT id, contact_id, envelope_id FROM outbox
    WHERE published_at IS NULL AND topic = $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED";
const LOCK: &str = "SELECT pg_advisory_lock(hashtextextended('healthsherpa_sync:' || $1::text, 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('healthsherpa_sync:' || $1::text, 0))";
const STATE: &str = "SELECT healthsherpa_id, redirect_url, synced_seq, create_started_at IS NOT NULL
    FROM healthsherpa_sync WHERE spark_id = $1";
// One statement, one snapshot: the state and the outbox id it covers are read together.
const CONTACT: &str = "SELECT c.first_name, c.last_name, c.email, COALESCE(c.mobile_phone, c.home_phone),
        c.home_address, c.agent_email, p.mbi, p.part_a_enrollment_date, p.part_b_enrollment_date,
        (SELECT COALESCE(max(o.id), 0) FROM outbox o WHERE o.contact_id = c.spark_id AND o.topic = $2)
    FROM contacts c LEFT JOIN contact_phi p ON p.spark_id = c.spark_id WHERE c.spark_id = $1";
const CREATE_STARTED: &str = "INSERT INTO healthsherpa_sync (spark_id, create_started_at) VALUES ($1, now())
    ON CONFLICT (spark_id) DO UPDATE SET create_started_at = now(), updated_at = now()";
const SYNCED: &str =
    "INSERT INTO healthsherpa_sync (spark_id, healthsherpa_id, redirect_url, synced_seq, synced_at)
    VALUES ($1, $2, $3, $4, now())
    ON CONFLICT (spark_id) DO UPDATE SET healthsherpa_id = EXCLUDED.healthsherpa_id,
        redirect_url = COALESCE(EXCLUDED.redirect_url, healthsherpa_sync.redirect_url),
        synced_seq = GREATEST(healthsherpa_sync.synced_seq, EXCLUDED.synced_seq),
        create_started_at = NULL, synced_at = now(), updated_at = now()";

impl Store {
    /// Claims up to `limit` unpublished rows of `topic` (skipping rows another relay holds),
    /// calls `publish` for each in id order until one fails, marks the published ones, commits.
    /// Returns how many were published. A crash between a publish and the commit publishes that
    /// row again later: consumers must tolerate duplicates (the sync worker does, by `seq`).
    pub async fn relay_outbox<F, Fut>(
        &self,
        topic: &str,
        limit: i64,
        mut publish: F,
    ) -> Result<usize, StoreError>
    where
        F: FnMut(OutboxMessage) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx.query(CLAIM, &[&topic, &limit]).await?;
        let mut published = Vec::with_capacity(rows.len());
        for row in rows {
            let message = OutboxMessage {
                id: row.get(0),
                contact_id: row.get(1),
                envelope_id: row.get(2),
            };
            let id = message.id;
            if !publish(message).await {
                break;
            }
            published.push(id);
        }
        if !published.is_empty() {
            tx.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1)",
                &[&published],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(published.len())
    }

    /// Unpublished outbox rows of `topic` (the relay's backlog).
    pub async fn outbox_backlog(&self, topic: &str) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL AND topic = $1",
                &[&topic],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Waits for the sync lock of `contact_id` (a session advisory lock on a connection of its
    /// own). Every statement under it commits at once, so the create marker is durable before
    /// the request it guards. The lock ends with [`ContactSync::release`], or with the
    /// connection if the guard is dropped (or the process dies).
    pub async fn lock_contact_sync(&self, contact_id: &str) -> Result<ContactSync, StoreError> {
        let client = self.pool.get().await?;
        client.execute(LOCK, &[&contact_id]).await?;
        Ok(ContactSync {
            client: Some(client),
            contact_id: contact_id.to_owned(),
            keys: self.keys.clone(),
        })
    }
}

/// The sync lock of one contact and the statements made under it.
pub struct ContactSync {
    client: Option<Object>,
    contact_id: String,
    /// Opens the contact's sealed PHI.
    keys: Keyring,
}

impl std::fmt::Debug for ContactSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactSync")
            .field("contact_id", &self.contact_id)
            .finish()
    }
}

impl ContactSync {
    fn client(&self) -> Result<&Object, StoreError> {
        self.client
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("contact sync lock released".into()))
    }

    /// The contact's HealthSherpa side (default when never synced).
    pub async fn state(&self) -> Result<SyncState, StoreError> {
        let row = self.client()?.query_opt(STATE, &[&self.contact_id]).await?;
        Ok(row.map_or_else(SyncState::default, |r| SyncState {
            healthsherpa_id: r.get(0),
            redirect_url: r.get(1),
            synced_seq: r.get(2),
            create_started: r.get(3),
        }))
    }

    /// The contact's current state, or `None` if we do not hold it. Its PHI (MBI, Part A/B dates)
    /// is opened here: a value that does not open fails the read (never sent half-known).
    pub async fn contact(&self) -> Result<Option<SyncContact>, StoreError> {
        let row = self
            .client()?
            .query_opt(CONTACT, &[&self.contact_id, &CONTACTS_CHANGED_TOPIC])
            .await?;
        let Some(r) = row else { return Ok(None) };
        let key = [self.contact_id.as_str()];
        let at = |column| Place::new(column, &key);
        Ok(Some(SyncContact {
            spark_id: self.contact_id.clone(),
            first_name: r.get(0),
            last_name: r.get(1),
            email: r.get(2),
            phone: r.get(3),
            home_address: r.get(4),
            agent_email: r.get(5),
            mbi: open(&self.keys, r.get(6), &at("contact_phi.mbi"))?,
            part_a_date: open(&self.keys, r.get(7), &at("contact_phi.part_a_enrollment_date"))?,
            part_b_date: open(&self.keys, r.get(8), &at("contact_phi.part_b_enrollment_date"))?,
            seq: r.get(9),
        }))
    }

    /// Records, durably, that a create request is about to be sent.
    pub async fn mark_create_started(&self) -> Result<(), StoreError> {
        self.client()?
            .execute(CREATE_STARTED, &[&self.contact_id])
            .await?;
        Ok(())
    }

    /// Records a successful create, update or search: HealthSherpa's id, its quote URL (kept
    /// when `None`) and the outbox id the sent state covered; clears the create marker.
    pub async fn record_synced(
        &self,
        healthsherpa_id: &str,
        redirect_url: Option<&str>,
        seq: i64,
    ) -> Result<(), StoreError> {
        self.client()?
            .execute(SYNCED, &[&self.contact_id, &healthsherpa_id, &redirect_url, &seq])
            .await?;
        Ok(())
    }

    /// Releases the lock and returns the connection to the pool.
    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(client) = self.client.take()
            && let Err(e) = client.execute(UNLOCK, &[&self.contact_id]).await
        {
            // Detached and dropped: closing the connection ends the session and its lock.
            drop(Object::take(client));
            return Err(e.into());
        }
        Ok(())
    }
}

impl Drop for ContactSync {
    fn drop(&mut self) {
        // Not released (an error path or a cancelled task): never hand a connection that still
        // holds the lock back to the pool; closing it releases the lock server-side.
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}
