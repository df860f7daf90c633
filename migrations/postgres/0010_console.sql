-- The console's reads (SPEC §10.3), each an ordered walk of an index that
-- stops after a page, never a scan of a table. Same indexes as SQLite
-- migration 0008.
--
-- What they cost the webhook's path: an inbound row pays one more index entry;
-- a conversation's update is no longer HOT (updated_at is now indexed), so it
-- pays an entry in conversations_bot_updated and in the (bot, contact) key; an
-- outbox row version pays one entry in outbox_conversation_created (the index
-- migration 0005 dropped cost the same: docs/performance.md). The reads'
-- figures and plans are in docs/console.md.

-- Conversations of a bot, newest activity first, paged by (updated_at, id).
CREATE INDEX conversations_bot_updated ON conversations (bot, updated_at, id);

-- A contact's messages for their timeline, by time.
CREATE INDEX inbound_messages_contact ON inbound_messages (bot, contact, received_at);

-- A conversation's replies for its timeline, by time.
CREATE INDEX outbox_conversation_created ON outbox (conversation_id, created_at);

-- Failed replies of a bot, newest first (the outbox page). Partial: only the
-- failures are in it; the query names the same statuses as literals so the
-- planner can use it.
CREATE INDEX outbox_failed ON outbox (bot, updated_at, id)
    WHERE status IN ('failed', 'undelivered');
