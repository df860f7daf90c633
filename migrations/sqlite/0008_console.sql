-- Same indexes as Postgres migration 0010: the console's reads (SPEC §10.3),
-- each an ordered walk of an index that stops after a page, never a scan.

-- Conversations of a bot, newest activity first, paged by (updated_at, id).
CREATE INDEX conversations_bot_updated ON conversations (bot, updated_at, id);

-- A contact's messages for their timeline, by time.
CREATE INDEX inbound_messages_contact ON inbound_messages (bot, contact, received_at);

-- A conversation's replies for its timeline, by time. created_at never changes,
-- so on SQLite a row gets one entry however often its status moves.
CREATE INDEX outbox_conversation_created ON outbox (conversation_id, created_at);

-- Failed replies of a bot, newest first (the outbox page). Partial: only the
-- failures, which are few, are in it.
CREATE INDEX outbox_failed ON outbox (bot, updated_at, id)
    WHERE status IN ('failed', 'undelivered');
