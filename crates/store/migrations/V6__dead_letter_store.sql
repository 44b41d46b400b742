-- One dead-letter store for every consumer: ingest events, sync messages, and messages the broker
-- dead-lettered by its delivery limit. A row holds what is needed to republish the message as it
-- first was (queue, properties, body) and what an operator did about it.
ALTER TABLE dead_letters ALTER COLUMN endpoint DROP NOT NULL;
ALTER TABLE dead_letters ALTER COLUMN provider DROP NOT NULL;
-- 'ingest' (a provider queue) or 'sync' (the HealthSherpa sync queue).
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'ingest';
-- The work queue it came from; a replay publishes it back there. NULL: the provider's queue.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS queue text;
-- The AMQP properties to republish with (type, message id, headers without failure headers).
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS properties jsonb;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS replay_count integer NOT NULL DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS replayed_at timestamptz;
-- Set when an operator replayed or purged it: it no longer needs anyone.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS resolved_at timestamptz;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS resolution text;
CREATE INDEX IF NOT EXISTS dead_letters_unresolved ON dead_letters (dead_lettered_at) WHERE resolved_at IS NULL;
CREATE INDEX IF NOT EXISTS dead_letters_envelope ON dead_letters (envelope_id);
-- When an event's outcome last changed after it was first processed (a parked event released):
-- `intake trace` shows it.
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS settled_at timestamptz;
