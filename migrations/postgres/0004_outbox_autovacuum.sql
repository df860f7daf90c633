-- The outbox is a queue: every reply is inserted, updated twice (claimed, then
-- finished) and deleted by pruning, so it makes dead row versions at three times
-- the message rate. With the default thresholds (vacuum once 20% of the table is
-- dead, throttled) vacuum fell behind at 1,600 messages/s and the table grew
-- without bound although its live rows stayed level (10-minute soak). Vacuum it
-- as soon as 1,000 + 1% of its rows are dead, unthrottled. The inbound log is
-- only inserted and pruned, but is vacuumed on the same terms so pruned space is
-- reused promptly.
ALTER TABLE outbox SET (
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE inbound_messages SET (
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0
);
