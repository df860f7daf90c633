-- What a row sends through Twilio's Content API instead of `Body` (SPEC §8.1,
-- §8.2): an interactive menu (buttons or a list, whose `body` is then the
-- numbered-text fallback) or an approved template, as JSON (`message::Content`).
-- NULL for a plain text message, which is almost every row.
ALTER TABLE outbox ADD COLUMN content TEXT;

-- The Content resources the engine created for interactive menus: one per bot
-- and menu shape (a hash of what every contact's copy has in common: the
-- type, labels, ids, descriptions, list button, the account and the API base),
-- so one resource serves every contact. The primary key makes two instances
-- that created one for the same shape at once agree on the first SID stored.
CREATE TABLE content_resources (
    bot TEXT NOT NULL,
    shape TEXT NOT NULL,
    sid TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (bot, shape)
);
