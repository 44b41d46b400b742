-- Ordering semantics (issue 7, points 2-4) ---------------------------------------------------------

-- Newest-wins entities are ordered by (version, version_envelope_id): two events of the same
-- instant are ordered by their envelope's UUIDv7. content_sha256 is the SHA-256 (lowercase hex)
-- of the raw body that set the current state: a delivery with the same body is a duplicate.
ALTER TABLE entities
    ADD COLUMN version_envelope_id uuid,
    ADD COLUMN content_sha256      text;

-- Contacts already held: their current snapshot's envelope and, while its raw event is kept,
-- the digest of its body, so a provider retry of the current snapshot is recognised at once.
UPDATE entities e
SET version_envelope_id = c.snapshot_envelope_id,
    content_sha256 = (SELECT encode(sha256(r.body), 'hex') FROM raw_events r
                      WHERE r.envelope_id = c.snapshot_envelope_id)
FROM contacts c
WHERE e.kind = 'contact' AND e.id = c.spark_id;

-- HealthSherpa: every row moves only to a newer event, compared per row as
-- (event time, transaction id) so events of the same instant end the same whatever their order.
ALTER TABLE healthsherpa_applications
    ADD COLUMN status_transaction_id text NOT NULL DEFAULT '';
ALTER TABLE healthsherpa_policies
    ADD COLUMN status_transaction_id text NOT NULL DEFAULT '';
ALTER TABLE healthsherpa_members
    ADD COLUMN event_at             timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN event_transaction_id text        NOT NULL DEFAULT '';
ALTER TABLE healthsherpa_policy_members
    ADD COLUMN event_at             timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN event_transaction_id text        NOT NULL DEFAULT '';

-- Rows written before: they came from the event their application or policy holds.
UPDATE healthsherpa_members m SET event_at = a.status_event_at
FROM healthsherpa_applications a WHERE a.application_key = m.application_key;
UPDATE healthsherpa_policy_members m SET event_at = p.status_event_at
FROM healthsherpa_policies p WHERE p.policy_id = m.policy_id;

-- Parked events carry the version of their stored form (`event`); one this build cannot read is
-- dead-lettered alone (reason parked_format) instead of failing its prerequisite's transaction.
ALTER TABLE parked_events
    ADD COLUMN format integer NOT NULL DEFAULT 1;
