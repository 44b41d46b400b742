-- HealthSherpa CRM sync ---------------------------------------------------------------------------

-- What HealthSherpa holds of each contact we sync: its id and quote URL, how far our changes have
-- been sent (coalescing), and whether a create may be in flight (no-duplicate create).
CREATE TABLE healthsherpa_sync (
    spark_id           text        PRIMARY KEY REFERENCES contacts ON DELETE CASCADE,
    healthsherpa_id    text,
    redirect_url       text,
    -- Highest outbox id whose contact state has been sent: a change message with a lower or equal
    -- id is already covered and skipped.
    synced_seq         bigint      NOT NULL DEFAULT 0,
    -- Set (and committed) before a create request, cleared once its id is stored: while it is set
    -- without an id, HealthSherpa may hold the contact already, so the next attempt searches first.
    create_started_at  timestamptz,
    synced_at          timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX outbox_contact ON outbox (contact_id, id);
