-- What the sender must know about a contact before sending to them (SPEC §8.2 the
-- 24-hour window, §8.3 opt-out). Kept on the conversation row, one per bot and
-- contact and never pruned, which every inbound message reads and writes anyway:
-- the webhook's path gains no statement, and a claim reads them by primary key.
ALTER TABLE conversations
    -- When the contact opted out of this bot (a `stop` word, or Twilio refusing
    -- a send with 21610); NULL while they may be sent to. Outlives the
    -- conversation's node and vars: only a `start` word clears it.
    ADD COLUMN opted_out_at BIGINT,
    -- When the contact last wrote: their WhatsApp window is open for 24 hours
    -- from here. NULL for a contact who never wrote.
    ADD COLUMN last_inbound_at BIGINT,
    -- When Twilio reported the window closed (63016) for a message sent after the
    -- contact last wrote; cleared by their next message.
    ADD COLUMN window_closed_at BIGINT;

-- Until now only inbound messages wrote conversations, so each one's updated_at
-- is when its contact last wrote; without this every queued WhatsApp reply of an
-- upgraded database would count as outside the window.
UPDATE conversations SET last_inbound_at = updated_at;

-- Which rules the sender applies to a row (`ReplyKind::as_str`): a free-form
-- message needs the window on WhatsApp, a template does not, and the answer to
-- STOP/START/HELP is the only thing sent to a contact who opted out.
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'free_form'
    CONSTRAINT outbox_kind_known CHECK (kind IN ('free_form', 'template', 'opt_out_reply'));
