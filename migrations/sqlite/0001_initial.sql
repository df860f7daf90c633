-- Switchboard's schema on SQLite. Kept column-for-column identical to
-- migrations/postgres so one set of runtime queries serves both backends.
-- Times are INTEGER milliseconds since the Unix epoch; JSON is stored as TEXT.

-- One row per (bot, contact): where the conversation stands between messages.
CREATE TABLE conversations (
    -- AUTOINCREMENT: ids are never reused, so an outbox row's conversation_id
    -- can never come to name another contact's conversation.
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    bot        TEXT    NOT NULL,
    contact    TEXT    NOT NULL,
    -- NULL when the conversation has ended (the next message starts over).
    node       TEXT,
    -- The script `ask` handler waiting for the next message, if any.
    handler    TEXT,
    vars       TEXT    NOT NULL DEFAULT '{}',
    -- Bumped by every write: a writer that read version N only commits if the
    -- row is still at N (optimistic concurrency between processes on one file).
    version    INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    -- A conversation is a bot plus a contact (SPEC §4); also the conflict target
    -- when two writers create the same conversation at once.
    UNIQUE (bot, contact)
);

-- Every inbound message, recorded in the same transaction as its effects.
CREATE TABLE inbound_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    bot         TEXT    NOT NULL,
    message_sid TEXT    NOT NULL,
    contact     TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    -- The dedupe key: Twilio redelivers a webhook with the same MessageSid, and
    -- the second delivery must produce nothing (SPEC §2). The index also serves
    -- per-bot counts (its leading column is bot).
    UNIQUE (bot, message_sid)
);

-- Pruning deletes by age.
CREATE INDEX inbound_messages_received_at ON inbound_messages (received_at);

-- One row per reply to send, drained by the sender task.
CREATE TABLE outbox (
    -- AUTOINCREMENT: ids only grow, even after pruning deleted the newest rows,
    -- because head-of-line order within a conversation is id order.
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Conversations are never deleted while they have outbox rows.
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    bot             TEXT    NOT NULL,
    contact         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    -- JSON array of media URLs.
    media           TEXT    NOT NULL DEFAULT '[]',
    -- Exactly the OutboxStatus strings; anything else is a bug caught at write.
    status          TEXT    NOT NULL CHECK (status IN
                        ('queued', 'sending', 'sent', 'delivered', 'read', 'undelivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    claim_token     INTEGER,
    twilio_sid      TEXT,
    error_code      INTEGER,
    error_message   TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    -- A row is claimed exactly when it is `sending`: a claim always carries a
    -- lease (so a dead sender's row is reclaimed) and a token (so the dead
    -- sender's late completion is rejected), and every other status has neither.
    CHECK ((status = 'sending') = (lease_until IS NOT NULL AND claim_token IS NOT NULL))
);

-- Claiming: queued rows by due time (partial, so the index holds only the
-- backlog, not months of sent rows).
CREATE INDEX outbox_queued_due ON outbox (next_attempt_at, id) WHERE status = 'queued';

-- Claiming: in-flight rows whose lease may have expired.
CREATE INDEX outbox_sending_lease ON outbox (lease_until) WHERE status = 'sending';

-- Head of line: "is there an earlier unfinished row in this conversation?" is
-- asked for every candidate of every claim; this index holds only unfinished rows,
-- so the answer does not get slower as a conversation's history grows.
CREATE INDEX outbox_unfinished ON outbox (conversation_id, id) WHERE status IN ('queued', 'sending');

-- A conversation's rows in order (history, admin) and the foreign key's lookups.
CREATE INDEX outbox_conversation ON outbox (conversation_id, id);

-- Status callbacks find their row by the SID Twilio gave it. Not UNIQUE: the
-- SID comes from outside (and from --dry-run), and a duplicate must not make a
-- completed send fail to record.
CREATE INDEX outbox_twilio_sid ON outbox (twilio_sid) WHERE twilio_sid IS NOT NULL;

-- Pruning (finished statuses by age) and the depth-by-status metric.
CREATE INDEX outbox_status_updated ON outbox (status, updated_at);
