-- Kept identical to migrations/postgres/0002. SQLite is one process, whose sender
-- limits its rate in memory, so nothing writes here; the table exists so both
-- schemas stay the same.
CREATE TABLE send_slots (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    bot     TEXT    NOT NULL,
    sent_at BIGINT  NOT NULL
);

CREATE INDEX send_slots_bot_sent_at ON send_slots (bot, sent_at);
