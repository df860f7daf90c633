-- The console's conversation list walks the messages by time instead
-- (store/console.rs, LIST_CONVERSATIONS). Indexing a conversation's
-- updated_at, which every step changes, cost each step's conversation update
-- its in-place (HOT) path: a new entry in this index and in the (bot, contact)
-- key, about 255 bytes of WAL per webhook (docs/performance.md, session 7).
-- Same change as SQLite migration 0012.
DROP INDEX conversations_bot_updated;
