-- Replies first (SPEC §9.3). Same change as Postgres migration 0013.

-- A broadcast's messages are `bulk` (1); everything else (replies, a single
-- start, a timeout's node, a person's answer) is not (0). The sender claims
-- due replies before due bulk rows, and a contact who writes has their waiting
-- bulk rows made replies (they are in a conversation now, and their reply
-- must not wait behind the broadcast's queue). A constant default: adding the
-- column rewrites nothing.
ALTER TABLE outbox ADD COLUMN bulk INTEGER NOT NULL DEFAULT 0
    CONSTRAINT outbox_bulk_known CHECK (bulk IN (0, 1));

-- The claim walks each kind's own index in due order and stops after the
-- heads it needs, so 100,000 waiting broadcast messages cost a reply's claim
-- nothing. Each queued row version is in exactly one of the two (as it was in
-- the index they replace), so the webhook path writes no more index entries.
DROP INDEX outbox_queued_due;
CREATE INDEX outbox_reply_due ON outbox (next_attempt_at, id) WHERE status = 'queued' AND bulk = 0;
CREATE INDEX outbox_bulk_due ON outbox (next_attempt_at, id) WHERE status = 'queued' AND bulk = 1;

-- The scheduler holds a broadcast's starts back while many bulk messages wait
-- (a broadcast goes out at the pace it is sent, and its conversations are
-- entered close to when their message leaves), but never a single start: each
-- kind has its own index of pending starts by due time.
DROP INDEX starts_due;
CREATE INDEX starts_due ON starts (run_at) WHERE status = 'scheduled' AND broadcast_id IS NULL;
CREATE INDEX starts_broadcast_due ON starts (run_at)
    WHERE status = 'scheduled' AND broadcast_id IS NOT NULL;
