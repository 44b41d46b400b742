-- One dead-letter store for every consumer: ingest events, sync messages, and messages the broker
-- dead-lettered by its delivery limit. A row holds what is needed to republish the message as it
-- first was (queue, properties, body) and what an operator did about it.
ALTER TABLE dead_letters ALTER COLUMN endpoint DROP NOT NULL;
ALTER TABLE dead_letters ALTER COLUMN provider DROP NOT NULL;
-- 'ingest' (a provider queue) or 'sync' (the HealthSherpa sync queue).
ALTER TABLE dead_letters ADD COLUMN source text NOT NULL DEFAULT 'ingest';
-- The work queue it came from; a replay publishes it back there. NULL: the provider's queue.
ALTER TABLE dead_letters ADD COLUMN queue text;
-- The AMQP properties to republish with (type, message id, headers without failure headers).
ALTER TABLE dead_letters ADD COLUMN properties jsonb;
-- (What an operator did about it — replayed, purged — is V5's `resolved_at`/`resolution`.)
CREATE INDEX dead_letters_envelope ON dead_letters (envelope_id);
-- When an event's outcome last changed after it was first processed (a parked event released):
-- `intake trace` shows it.
ALTER TABLE inbox ADD COLUMN settled_at timestamptz;
