-- Switchboard's schema on Postgres. Kept column-for-column identical to
-- migrations/sqlite so one set of runtime queries serves both backends: portable
-- types only (BIGINT milliseconds since the Unix epoch, JSON stored as TEXT).

-- One row per (bot, contact): where the conversation stands between messages.
CREATE TABLE conversations (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bot        TEXT   NOT NULL,
    contact    TEXT   NOT NULL,
    -- NULL when the conversation has ended (the next message starts over).
    node       TEXT,
    -- The script `ask` handler waiting for the next message, if any.
    handler    TEXT,
    vars       TEXT   NOT NULL DEFAULT '{}',
    -- Bumped by every write. Writers already hold the contact's advisory lock;
    -- the version check is the same backstop the SQLite store relies on.
    version    BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    -- A conversation is a bot plus a contact (SPEC §4); also the conflict target
    -- when a conversation is created.
    CONSTRAINT conversations_bot_contact UNIQUE (bot, contact)
);

-- Every inbound message, recorded in the same transaction as its effects.
CREATE TABLE inbound_messages (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bot         TEXT   NOT NULL,
    message_sid TEXT   NOT NULL,
    contact     TEXT   NOT NULL,
    body        TEXT   NOT NULL,
    payload     TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    -- The dedupe key: Twilio redelivers a webhook with the same MessageSid, and
    -- the second delivery must produce nothing (SPEC §2), even when two instances
    -- receive it at once. The index also serves per-bot counts.
    CONSTRAINT inbound_messages_bot_sid UNIQUE (bot, message_sid)
);

-- Pruning deletes by age.
CREATE INDEX inbound_messages_received_at ON inbound_messages (received_at);

-- One row per reply to send, drained by the sender tasks of every instance.
CREATE TABLE outbox (
    -- Identity values only grow: head-of-line order within a conversation is id
    -- order, and a conversation's replies are inserted under its lock.
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Conversations are never deleted while they have outbox rows.
    conversation_id BIGINT  NOT NULL REFERENCES conversations (id),
    bot             TEXT    NOT NULL,
    contact         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    -- JSON array of media URLs.
    media           TEXT    NOT NULL DEFAULT '[]',
    -- Exactly the OutboxStatus strings; anything else is a bug caught at write.
    status          TEXT    NOT NULL CONSTRAINT outbox_status_known CHECK (status IN
                        ('queued', 'sending', 'sent', 'delivered', 'read', 'undelivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0 CONSTRAINT outbox_attempts_nonnegative CHECK (attempts >= 0),
    next_attempt_at BIGINT  NOT NULL,
    lease_until     BIGINT,
    claim_token     BIGINT,
    twilio_sid      TEXT,
    error_code      BIGINT,
    error_message   TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    -- A row is claimed exactly when it is `sending`: a claim always carries a
    -- lease (so a dead sender's row is reclaimed) and a token (so the dead
    -- sender's late completion is rejected), and every other status has neither.
    CONSTRAINT outbox_claim_iff_sending
        CHECK ((status = 'sending') = (lease_until IS NOT NULL AND claim_token IS NOT NULL))
);

-- Claiming: queued rows by due time. Partial, so the index holds only the
-- backlog, not months of sent rows; the claim query names the status as a
-- literal so the planner can use it.
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
