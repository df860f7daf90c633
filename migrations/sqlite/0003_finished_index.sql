-- Pruning finds finished rows by age. The index used to cover every row
-- (status, updated_at), so each reply paid for three entries in it (queued,
-- sending, finished); keeping only finished rows makes it one, and the prune
-- query names the same statuses so the planner can use it.
DROP INDEX outbox_status_updated;
CREATE INDEX outbox_finished_updated ON outbox (updated_at)
    WHERE status IN ('sent', 'delivered', 'read', 'undelivered', 'failed');
