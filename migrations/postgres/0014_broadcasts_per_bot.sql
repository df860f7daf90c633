-- Broadcasts per bot (SPEC §9.3). Same change as SQLite migration 0012.

-- Each bot's broadcast goes at its own pace (SPEC §9.3): a bot whose
-- `max_per_second` is low must hold back no other bot's broadcast, neither
-- its start (the scheduler counts one bot's waiting broadcast messages up to
-- the high-water mark) nor its sending (the sender claims broadcast messages
-- bot by bot, each bot's due first). So the waiting broadcast messages are
-- indexed by bot, then due time, and each bot's pending broadcast contacts
-- too. Neither index holds a reply: the webhook path writes no more entries.
DROP INDEX outbox_bulk_due;
CREATE INDEX outbox_bulk_due ON outbox (bot, next_attempt_at, id)
    WHERE status = 'queued' AND bulk = 1;
DROP INDEX starts_broadcast_due;
CREATE INDEX starts_broadcast_due ON starts (bot, run_at)
    WHERE status = 'scheduled' AND broadcast_id IS NOT NULL;

-- Which broadcast queued a message, so its progress counts its own messages
-- (an index walk) instead of joining every contact's conversation. NULL for
-- everything else; kept when the contact writes and the message becomes a
-- reply (`bulk` 0), so it still counts for its broadcast.
ALTER TABLE outbox ADD COLUMN broadcast_id BIGINT;
-- The messages of broadcasts already started: found the way progress found
-- them before, through the contact's conversation and the start's write time.
UPDATE outbox AS o SET broadcast_id = s.broadcast_id
    FROM starts AS s JOIN conversations AS c ON c.bot = s.bot AND c.contact = s.contact
    WHERE o.conversation_id = c.id AND o.created_at = s.updated_at
        AND s.broadcast_id IS NOT NULL AND s.status = 'started';
CREATE INDEX outbox_broadcast ON outbox (broadcast_id) WHERE broadcast_id IS NOT NULL;
