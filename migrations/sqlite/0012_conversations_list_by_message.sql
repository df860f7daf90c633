-- Same change as Postgres migration 0014. The console's conversation list
-- walks the messages by time instead (store/console.rs, LIST_CONVERSATIONS):
-- an index on a conversation's updated_at made every conversation write pay
-- one more index entry (docs/performance.md, session 7).
DROP INDEX conversations_bot_updated;
