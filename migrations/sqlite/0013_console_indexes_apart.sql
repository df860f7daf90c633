-- The console's indexes, out of the message path's way. Same change as
-- Postgres migration 0015 (SQLite plans differently, but the schemas stay alike).
--
-- On a new database Postgres caches a generic plan for each statement after
-- its first five runs, made with no statistics; for a lookup by (bot, contact)
-- such a plan could take conversations_bot_updated (its first column matches)
-- and filter on contact: every message then read all of its bot's
-- conversations, until the first auto-analyze made the plans again (about a
-- minute). With 10,000 new contacts that was 515 webhooks/s instead of 1,000
-- (docs/performance.md, session 9). Each console index is now partial on a
-- condition every row meets but only the console's queries state, so the
-- planner can take it for them and never for the message path, whatever the
-- statistics say.
DROP INDEX conversations_bot_updated;
CREATE INDEX conversations_bot_updated ON conversations (bot, updated_at, id)
    WHERE updated_at >= 0;
DROP INDEX inbound_messages_contact;
CREATE INDEX inbound_messages_contact ON inbound_messages (bot, contact, received_at)
    WHERE received_at >= 0;
DROP INDEX outbox_conversation_created;
CREATE INDEX outbox_conversation_created ON outbox (conversation_id, created_at)
    WHERE created_at >= 0;
