-- Retention -------------------------------------------------------------------------------------
-- The sweeper deletes, in small batches, what is past its age: inbox rows older than the dedupe
-- window, published outbox rows, and dead letters an operator has dealt with. These indexes let
-- each batch find its oldest rows without scanning the table.

CREATE INDEX inbox_received_at ON inbox (received_at);
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Dead letters an operator dealt with. A row is *open* (needs an operator; counted by the
-- `intake_worker_dead_letters` gauge) until it is resolved by a replay or a purge; resolved rows
-- are kept for the dead-letter retention age after their last resolution, then deleted. Written by
-- the operator commands:
--   replay: replayed_at = now(), replay_count + 1, resolved_at = now(), resolution = 'replayed';
--   purge:  purged_at = now(), resolved_at = now(), resolution = 'purged'.
-- A replayed event dead-lettered again with the same reason and attempts reopens its row
-- (resolved_at and resolution back to NULL); otherwise it adds a row of its own.
ALTER TABLE dead_letters
    ADD COLUMN replayed_at  timestamptz,
    ADD COLUMN replay_count integer     NOT NULL DEFAULT 0,
    ADD COLUMN purged_at    timestamptz,
    ADD COLUMN resolved_at  timestamptz,
    ADD COLUMN resolution   text,
    ADD CONSTRAINT dead_letters_resolution
        CHECK (resolution IN ('replayed', 'purged') AND resolved_at IS NOT NULL
               OR resolution IS NULL AND resolved_at IS NULL);

CREATE INDEX dead_letters_open ON dead_letters (reason, dead_lettered_at) WHERE resolved_at IS NULL;
CREATE INDEX dead_letters_resolved_at ON dead_letters (resolved_at) WHERE resolved_at IS NOT NULL;
