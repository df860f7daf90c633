-- Same change as Postgres migration 0011: human handoff (SPEC §10.2).

-- A handed-off conversation: the queue a person answers it from, when it was
-- handed off, and when a person last answered (NULL: nobody yet). All NULL
-- while the bot answers. The handoff_timeout clock runs from the later of the
-- two times, and is the row's timeout_at (SPEC §9.2's timer, on_timeout NULL:
-- the conversation returns to the bot and ends quietly).
ALTER TABLE conversations ADD COLUMN handoff_queue TEXT;
ALTER TABLE conversations ADD COLUMN handoff_at INTEGER;
ALTER TABLE conversations ADD COLUMN handoff_answered_at INTEGER;
-- The console's inbox: handed-off conversations, newest first. Partial: only
-- the handed-off conversations, which are few, are in it.
CREATE INDEX conversations_handoff ON conversations (handoff_at, id)
    WHERE handoff_queue IS NOT NULL;

-- Notifications to a bot's `handoff_notify` URL, written in the transaction of
-- the step that causes them and delivered by a task that retries them with
-- backoff, claimed with a lease like outbox rows so one instance sends each.
CREATE TABLE handoff_notices (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    bot             TEXT    NOT NULL,
    contact         TEXT    NOT NULL,
    -- 'handoff': the conversation was handed off; 'message': the contact wrote
    -- while it waits for a person.
    event           TEXT    NOT NULL CHECK (event IN ('handoff', 'message')),
    queue           TEXT    NOT NULL,
    -- The contact's message (empty for a handoff no message caused).
    text            TEXT    NOT NULL,
    -- The inbound message that caused it, if one did: a message's write may be
    -- tried again, and this keeps it to one notice.
    message_sid     TEXT,
    -- pending: waiting for next_attempt_at; sending: claimed (lease_until,
    -- claim_token); delivered and failed are final.
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    claim_token     INTEGER,
    -- The last failure, for the log and the console.
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CHECK ((status = 'sending') = (lease_until IS NOT NULL AND claim_token IS NOT NULL))
);
CREATE UNIQUE INDEX handoff_notices_message ON handoff_notices (bot, message_sid)
    WHERE message_sid IS NOT NULL;
-- The delivery task: due notices, and claims whose lease may lapse.
CREATE INDEX handoff_notices_due ON handoff_notices (next_attempt_at) WHERE status = 'pending';
CREATE INDEX handoff_notices_sending ON handoff_notices (lease_until) WHERE status = 'sending';
-- Pruning finished notices by age.
CREATE INDEX handoff_notices_updated ON handoff_notices (updated_at)
    WHERE status IN ('delivered', 'failed');
