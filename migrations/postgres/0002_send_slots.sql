-- Sends per bot in the last rate window, shared by every instance, so a bot's
-- `twilio.max_per_second` holds however many senders run. A sender inserts a row
-- when it may send, under the bot's advisory lock, after counting the rows still
-- inside the window; rows older than the window are deleted as it goes.
CREATE TABLE send_slots (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bot     TEXT   NOT NULL,
    -- The database server's clock, in ms: one clock for every instance.
    sent_at BIGINT NOT NULL
);

-- Counting a bot's window and trimming it are range scans on this.
CREATE INDEX send_slots_bot_sent_at ON send_slots (bot, sent_at);
