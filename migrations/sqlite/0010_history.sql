-- Same change as Postgres migration 0012: conversation history (SPEC §10.1)
-- and the console's broadcasts and scheduled starts pages (SPEC §10.3).

-- A reply's status history after `queued` (which is `created_at`): one JSON
-- object per line, appended by the statement that already changes the row
-- (a send's outcome, a status callback, a retry or cancel from the console),
-- so it costs the send path no statement and no index. Pruned with its row.
ALTER TABLE outbox ADD COLUMN history TEXT NOT NULL DEFAULT '';

-- The node a message led to: where the conversation stood after its step
-- (NULL: the step ended the conversation). Written by the insert that
-- already records the message.
ALTER TABLE inbound_messages ADD COLUMN node TEXT;

-- A bot's broadcasts, newest first (the console's broadcasts page).
CREATE INDEX broadcasts_bot_created ON broadcasts (bot, created_at, id);

-- A bot's pending starts of its own (not a broadcast's contacts), due first
-- (the console's scheduled starts page). Partial: only what waits is in it.
CREATE INDEX starts_scheduled_bot ON starts (bot, run_at, id)
    WHERE status = 'scheduled' AND broadcast_id IS NULL;
