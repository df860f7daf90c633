-- Every outbox row version (queued, sending, finished: three per reply) added an
-- entry to outbox_conversation (conversation_id, id), which served only a
-- conversation's history (`Store::outbox_for`, a diagnostic used by tests) and
-- the foreign key's lookups from this side, which never happen: conversations
-- are never deleted. Head-of-line checks use outbox_unfinished, which holds
-- only unfinished rows. Without it a completion batch costs Postgres 61 instead
-- of 71 µs per row and a claim 20 instead of 26 (pg_stat_statements, loadgen
-- at full rate); the history query scans the outbox.
DROP INDEX outbox_conversation;
