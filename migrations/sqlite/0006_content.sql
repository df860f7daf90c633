-- Same change as Postgres migration 0008 (SPEC §8.1, §8.2).
-- What a row sends through Twilio's Content API instead of `Body`: an
-- interactive menu or a template, as JSON (`message::Content`); NULL for text.
ALTER TABLE outbox ADD COLUMN content TEXT;

-- The Content resources the engine created for interactive menus: one per bot
-- and menu shape, shared by every contact and every instance.
CREATE TABLE content_resources (
    bot TEXT NOT NULL,
    shape TEXT NOT NULL,
    sid TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (bot, shape)
);
