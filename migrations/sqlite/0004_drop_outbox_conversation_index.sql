-- outbox_conversation (conversation_id, id) served only a conversation's history
-- (`Store::outbox_for`, a diagnostic used by tests) and the foreign key's lookups
-- from this side, which never happen: conversations are never deleted. Every
-- reply paid for an entry in it. Head-of-line checks use outbox_unfinished.
-- Same change as Postgres migration 0005.
DROP INDEX outbox_conversation;
