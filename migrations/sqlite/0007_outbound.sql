-- Same change as Postgres migration 0009: conversations the business starts
-- (SPEC §9.1) and waiting with a time limit (SPEC §9.2).

-- One row per broadcast (SPEC §9.3); its contacts are rows of `starts`.
CREATE TABLE broadcasts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    bot        TEXT    NOT NULL,
    node       TEXT    NOT NULL,
    if_active  TEXT    NOT NULL CHECK (if_active IN ('interrupt', 'skip')),
    run_at     INTEGER NOT NULL,
    total      INTEGER NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('running', 'cancelled')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- One row per start asked for through the API, now or at `run_at`.
CREATE TABLE starts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The broadcast this start is one contact of, if any.
    broadcast_id    INTEGER REFERENCES broadcasts (id),
    bot             TEXT    NOT NULL,
    contact         TEXT    NOT NULL,
    node            TEXT    NOT NULL,
    -- JSON object merged into the conversation's vars.
    vars            TEXT    NOT NULL DEFAULT '{}',
    if_active       TEXT    NOT NULL CHECK (if_active IN ('interrupt', 'skip')),
    run_at          INTEGER NOT NULL,
    -- scheduled: waiting for run_at; running: claimed (lease_until, claim_token);
    -- the rest are final.
    status          TEXT    NOT NULL CHECK (status IN
                        ('scheduled', 'running', 'started', 'skipped', 'cancelled')),
    reason          TEXT,
    -- What the API answered ('started', 'scheduled', 'skipped'); NULL while the
    -- first request is still running it. A retry with the same key gets this.
    answer          TEXT,
    lease_until     INTEGER,
    claim_token     INTEGER,
    -- Cleared after 24 hours (SPEC §9.1: keys are kept 24 h).
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CHECK ((status = 'running') = (lease_until IS NOT NULL AND claim_token IS NOT NULL))
);

-- A retried request finds the first one by its key.
CREATE UNIQUE INDEX starts_idempotency ON starts (bot, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The scheduler: pending starts by due time, and claims whose lease may lapse.
CREATE INDEX starts_due ON starts (run_at) WHERE status = 'scheduled';
CREATE INDEX starts_running ON starts (lease_until) WHERE status = 'running';
-- A broadcast's progress and cancelling what of it has not started.
CREATE INDEX starts_broadcast ON starts (broadcast_id, status) WHERE broadcast_id IS NOT NULL;
-- Pruning finished rows and expiring keys, by age.
CREATE INDEX starts_created ON starts (created_at);

-- A waiting node's time limit (SPEC §9.2): when it runs out and the node it then
-- enters (NULL: the conversation ends quietly). NULL when nothing waits with a limit.
ALTER TABLE conversations ADD COLUMN timeout_at INTEGER;
ALTER TABLE conversations ADD COLUMN on_timeout TEXT;
CREATE INDEX conversations_timeout ON conversations (timeout_at) WHERE timeout_at IS NOT NULL;
