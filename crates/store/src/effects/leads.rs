//! Spark360 events → `leads` and `widgets`. Each lead column is written by one event type, so
//! the final state does not depend on arrival order: the address and source tracking of an
//! `address_preview` that arrives after `enriched` only fill gaps, and the status only moves up.

use deadpool_postgres::Transaction;
use intake_providers::DecodedEvent;
use intake_providers::spark360::{self, LeadEvent, WidgetStatus};

use super::Mode;
use crate::StoreError;

const UPSERT_LEAD: &str = "
INSERT INTO leads (id, status, address, owner_occupied, enrichment, rental_alert, contact_request,
    source_tracking, enriched_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO UPDATE SET
    status = CASE WHEN lead_status_rank(EXCLUDED.status) > lead_status_rank(leads.status)
                  THEN EXCLUDED.status ELSE leads.status END,
    address = CASE WHEN $10 THEN COALESCE(leads.address, EXCLUDED.address)
                   ELSE COALESCE(EXCLUDED.address, leads.address) END,
    owner_occupied = CASE WHEN $10 THEN COALESCE(leads.owner_occupied, EXCLUDED.owner_occupied)
                          ELSE COALESCE(EXCLUDED.owner_occupied, leads.owner_occupied) END,
    source_tracking = CASE WHEN $10 THEN COALESCE(leads.source_tracking, EXCLUDED.source_tracking)
                           ELSE COALESCE(EXCLUDED.source_tracking, leads.source_tracking) END,
    enrichment = COALESCE(EXCLUDED.enrichment, leads.enrichment),
    rental_alert = COALESCE(EXCLUDED.rental_alert, leads.rental_alert),
    contact_request = COALESCE(EXCLUDED.contact_request, leads.contact_request),
    enriched_at = COALESCE(EXCLUDED.enriched_at, leads.enriched_at),
    updated_at = now()";

pub(super) async fn apply(
    tx: &Transaction<'_>,
    l: &LeadEvent,
    event: &DecodedEvent,
    mode: Mode,
) -> Result<(), StoreError> {
    let t = event.event_type.as_str();
    let status = match t {
        spark360::ADDRESS_PREVIEW => "address_info_provided",
        spark360::CONTACT_REQUESTED => "contact_info_provided",
        _ => "personal_info_and_estimate_provided",
    };
    let only = |wanted: &str| (t == wanted).then(|| l.lead.clone());
    let owner_occupied = if t == spark360::RENTAL_ALERT {
        Some(l.owner_occupied.unwrap_or(false))
    } else {
        l.owner_occupied
    };
    let source_tracking = l
        .source_tracking
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or_default());
    let enriched_at = (t == spark360::ENRICHED).then_some(event.occurred_at);
    let fill_only = mode == Mode::Stale;
    let stmt = tx.prepare_cached(UPSERT_LEAD).await?;
    tx.execute(
        &stmt,
        &[
            &l.lead_id,
            &status,
            &l.address,
            &owner_occupied,
            &only(spark360::ENRICHED),
            &only(spark360::RENTAL_ALERT),
            &only(spark360::CONTACT_REQUESTED),
            &source_tracking,
            &enriched_at,
            &fill_only,
        ],
    )
    .await?;
    Ok(())
}

/// A widget's status; a late change (older time) does not overwrite a newer one.
pub(super) async fn widget(
    tx: &Transaction<'_>,
    w: &WidgetStatus,
    event: &DecodedEvent,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO widgets (id, name, status, status_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET name = COALESCE(EXCLUDED.name, widgets.name),
                 status = EXCLUDED.status, status_at = EXCLUDED.status_at, updated_at = now()
             WHERE widgets.status_at <= EXCLUDED.status_at",
        )
        .await?;
    tx.execute(&stmt, &[&w.widget_id, &w.name, &w.status, &event.occurred_at])
        .await?;
    Ok(())
}
