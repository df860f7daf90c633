-- One message of a contact at a time, across instances (SPEC §2), without holding
-- a connection or a transaction while the conversation step runs (SPEC §7): an
-- instance takes the contact's turn with one statement, steps with no database
-- connection in hand, and gives the turn back in the statement that writes the
-- step's result. One row per contact that has written: the turn is held until
-- `until_ms` (the database's clock), so a turn held by an instance that died is taken
-- over after it; giving a turn back sets `until_ms` to 0. Rows are updated, never
-- deleted: the updates touch no indexed column, so Postgres makes them in place (HOT)
-- and prunes old versions as it goes, without waiting for a vacuum.
--
-- UNLOGGED: a turn is worth nothing after a crash (advisory locks vanished the same
-- way), and a transaction that writes only unlogged tables commits without waiting
-- for a WAL flush, so taking a turn costs no fsync.
CREATE UNLOGGED TABLE contact_turns (
    bot      TEXT   NOT NULL,
    contact  TEXT   NOT NULL,
    -- Drawn at random per message; only the holder's statements present it.
    token    BIGINT NOT NULL,
    until_ms BIGINT NOT NULL,
    -- Counts the turns taken, so a statement that took one can tell whether
    -- another came and went after its snapshot (then it reads the state again).
    turns    BIGINT NOT NULL,
    PRIMARY KEY (bot, contact)
);

-- Raised by the step's write statement when it recorded the message but could not
-- write the conversation (it changed after the statement's snapshot was taken):
-- the error aborts the whole statement, so nothing is half-written, and the
-- serialization-failure code tells the store to look again and step again.
CREATE FUNCTION switchboard_conversation_moved() RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the conversation changed while its message was being written'
        USING ERRCODE = '40001';
END
$$;
