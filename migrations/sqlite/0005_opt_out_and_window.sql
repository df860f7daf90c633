-- Same change as Postgres migration 0007: what the sender must know about a
-- contact (SPEC §8.2 the 24-hour window, §8.3 opt-out), on the conversation row.
-- When the contact opted out of this bot; NULL while they may be sent to.
ALTER TABLE conversations ADD COLUMN opted_out_at INTEGER;
-- When the contact last wrote: the start of their 24-hour WhatsApp window.
ALTER TABLE conversations ADD COLUMN last_inbound_at INTEGER;
-- When Twilio reported the window closed (63016); cleared by their next message.
ALTER TABLE conversations ADD COLUMN window_closed_at INTEGER;

-- Until now only inbound messages wrote conversations: updated_at is when each
-- contact last wrote.
UPDATE conversations SET last_inbound_at = updated_at;

-- Which rules the sender applies to a row (`ReplyKind::as_str`).
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'free_form'
    CHECK (kind IN ('free_form', 'template', 'opt_out_reply'));
