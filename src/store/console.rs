//! What the web console reads (SPEC §10.3), and its two outbox actions: retry
//! a failed reply, cancel a queued one. Every read is an ordered walk of an
//! index that stops after a page (migrations: SQLite 0008, Postgres 0010),
//! and runs on SQLite's read connections, so browsing never queues a webhook's
//! write behind it.

use serde_json::{Map, Value};

use super::history::{StatusEvent, BY_CONSOLE};
use super::record::{self, OutboxRecord};
use super::{Inner, OutboxRow, Store, StoreError};
use crate::domain::OutboxStatus;

/// The columns of a [`ConversationSummary`], for `conversations` aliased `c`.
macro_rules! summary_columns {
    () => {
        "c.id, c.bot, c.contact, c.node, c.updated_at, c.last_inbound_at, c.opted_out_at"
    };
}

/// A bot's conversations, newest activity first, from the cursor `($2, $3)`
/// (exclusive) on: a walk of `conversations_bot_updated`. (Walking the
/// messages by time instead, to spare every conversation write that index,
/// was tried in session 7: Postgres planned it as a join of all the bot's
/// rows and a sort, 105 ms at 100,000 conversations; docs/performance.md.)
///
/// The console's three indexes are partial on a time `>= 0`, which every row
/// meets and only the console's queries state, so the message path's lookups
/// never take them (Postgres migration 0015); each query here states it.
const LIST_CONVERSATIONS: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM conversations c \
     WHERE c.bot = $1 AND (c.updated_at, c.id) < ($2, $3) AND c.updated_at >= 0 \
     ORDER BY c.updated_at DESC, c.id DESC LIMIT $4"
);

/// `bot`'s conversation with the contact `$param`: a lookup of the
/// `(bot, contact)` key.
macro_rules! with_contact {
    ($param:literal) => {
        concat!(
            "SELECT ",
            summary_columns!(),
            " FROM conversations c WHERE c.bot = $1 AND c.contact = ",
            $param,
            " UNION "
        )
    };
}

/// The conversations of bot `$1` whose contact is one of `$2`..`$5`, who sent
/// the message `$6`, or were sent it: six lookups by key, each on an index
/// (one `IN` over the contacts made SQLite walk all of the bot's conversations).
const SEARCH_CONVERSATIONS: &str = concat!(
    with_contact!("$2"),
    with_contact!("$3"),
    with_contact!("$4"),
    with_contact!("$5"),
    "SELECT ",
    summary_columns!(),
    " FROM inbound_messages i JOIN conversations c ON c.bot = i.bot AND c.contact = i.contact \
       WHERE i.bot = $1 AND i.message_sid = $6 \
     UNION \
     SELECT ",
    summary_columns!(),
    " FROM outbox o JOIN conversations c ON c.id = o.conversation_id \
       WHERE o.twilio_sid = $6 AND o.bot = $1 \
     ORDER BY 5 DESC, 1 DESC LIMIT 50"
);

/// The columns of a [`ConversationDetail`].
macro_rules! detail_columns {
    () => {
        concat!(
            summary_columns!(),
            ", c.vars, c.timeout_at, c.on_timeout, c.window_closed_at"
        )
    };
}

const CONVERSATION: &str = concat!(
    "SELECT ",
    detail_columns!(),
    " FROM conversations c WHERE c.id = $1"
);

/// Bot `$1`'s conversation with contact `$2`: a lookup of the `(bot, contact)` key.
const CONVERSATION_WITH: &str = concat!(
    "SELECT ",
    detail_columns!(),
    " FROM conversations c WHERE c.bot = $1 AND c.contact = $2"
);

/// A contact's messages received before `$3`, newest first.
const TIMELINE_INBOUND: &str = "SELECT id, message_sid, body, payload, received_at, node \
     FROM inbound_messages WHERE bot = $1 AND contact = $2 AND received_at < $3 \
       AND received_at >= 0 \
     ORDER BY received_at DESC LIMIT $4";

/// A conversation's replies queued before `$2`, newest first.
const TIMELINE_OUTBOX: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    ", history FROM outbox WHERE conversation_id = $1 AND created_at < $2 \
       AND created_at >= 0 \
     ORDER BY created_at DESC LIMIT $3"
);

/// A bot's queued messages, due first, after the cursor `($2, $3)`: the
/// replies' and the broadcast messages' walks of their own indexes
/// (`outbox_reply_due`, `outbox_bulk_due`), merged.
const QUEUED: &str = concat!(
    "SELECT * FROM (SELECT ",
    outbox_columns!(),
    " FROM outbox WHERE status = 'queued' AND bulk = 0 AND bot = $1 \
       AND (next_attempt_at, id) > ($2, $3) \
     ORDER BY next_attempt_at, id LIMIT $4) AS replies \
     UNION ALL SELECT * FROM (SELECT ",
    outbox_columns!(),
    " FROM outbox WHERE status = 'queued' AND bulk = 1 AND bot = $1 \
       AND (next_attempt_at, id) > ($2, $3) \
     ORDER BY next_attempt_at, id LIMIT $4) AS broadcast \
     ORDER BY next_attempt_at, id LIMIT $4"
);

/// A bot's failed replies, last failed first, before the cursor `($2, $3)`: a
/// walk of `outbox_failed`.
const FAILED: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    " FROM outbox WHERE status IN ('failed', 'undelivered') AND bot = $1 \
       AND (updated_at, id) < ($2, $3) \
     ORDER BY updated_at DESC, id DESC LIMIT $4"
);

/// Queues failed row `$1` again, due at `$2`, as a new reply: no attempts, no
/// error, and no SID (a late status callback for the old send must not move the
/// new one); its history keeps the old attempts and gains `$3`. Answers the
/// row's bot.
const RETRY: &str = "UPDATE outbox SET status = 'queued', attempts = 0, next_attempt_at = $2, \
         twilio_sid = NULL, error_code = NULL, error_message = NULL, updated_at = $2, \
         history = history || $3 \
     WHERE id = $1 AND status IN ('failed', 'undelivered') RETURNING bot";

/// Fails queued row `$1` at `$2` with the message `$3`, if no sender has
/// claimed it yet, with `$4` in its history. Answers the row's bot.
const CANCEL: &str = "UPDATE outbox SET status = 'failed', error_code = NULL, \
         error_message = $3, updated_at = $2, history = history || $4 \
     WHERE id = $1 AND status = 'queued' RETURNING bot";

/// The message of a reply cancelled from the console; like `opted_out:`, a
/// prefix says why a row failed without an error code.
pub const CANCELLED_MESSAGE: &str = "cancelled: from the console, before it was sent";

/// One conversation in a list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConversationSummary {
    pub id: i64,
    pub bot: String,
    pub contact: String,
    /// Where the conversation stands; `None` when it ended.
    pub node: Option<String>,
    #[sqlx(rename = "updated_at")]
    pub updated_at_ms: i64,
    #[sqlx(rename = "last_inbound_at")]
    pub last_inbound_at_ms: Option<i64>,
    #[sqlx(rename = "opted_out_at")]
    pub opted_out_at_ms: Option<i64>,
}

/// A conversation with its vars and pending timer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationDetail {
    pub summary: ConversationSummary,
    pub vars: Map<String, Value>,
    /// When the node it waits at runs out of time (SPEC §9.2), if it does.
    pub timeout_at_ms: Option<i64>,
    /// The node entered then; `None`: the conversation ends quietly.
    pub on_timeout: Option<String>,
    /// When Twilio reported the contact's WhatsApp window closed (63016),
    /// unless they wrote since.
    pub window_closed_at_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct DetailRecord {
    #[sqlx(flatten)]
    summary: ConversationSummary,
    vars: String,
    timeout_at: Option<i64>,
    on_timeout: Option<String>,
    window_closed_at: Option<i64>,
}

impl DetailRecord {
    fn detail(self) -> Result<ConversationDetail, StoreError> {
        let vars = serde_json::from_str(&self.vars).map_err(|e| {
            StoreError::Corrupt(format!(
                "conversation {}: vars are not a JSON object: {e}",
                self.summary.id
            ))
        })?;
        Ok(ConversationDetail {
            summary: self.summary,
            vars,
            timeout_at_ms: self.timeout_at,
            on_timeout: self.on_timeout,
            window_closed_at_ms: self.window_closed_at,
        })
    }
}

/// Where a page of a list starts: the sort key of the last row of the page
/// before (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The time column the list is sorted by, in ms.
    pub at_ms: i64,
    pub id: i64,
}

impl Cursor {
    /// A cursor as written by its `Display` (`ms.id`); `None` for anything else.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (at_ms, id) = text.split_once('.')?;
        Some(Cursor {
            at_ms: at_ms.parse().ok()?,
            id: id.parse().ok()?,
        })
    }

    /// Before every row of a newest-first list.
    pub const NEWEST: Cursor = Cursor {
        at_ms: i64::MAX,
        id: i64::MAX,
    };
    /// Before every row of an oldest-first list.
    pub const OLDEST: Cursor = Cursor {
        at_ms: i64::MIN,
        id: i64::MIN,
    };
}

/// A cursor as it goes in a URL: `ms.id`.
impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.at_ms, self.id)
    }
}

/// A page of rows and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub next: Option<Cursor>,
}

impl<T> Default for Page<T> {
    fn default() -> Page<T> {
        Page {
            rows: Vec::new(),
            next: None,
        }
    }
}

/// An inbound message as recorded.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct InboundRow {
    pub id: i64,
    pub message_sid: String,
    pub body: String,
    /// The whole message as JSON (media, button, location...).
    pub payload: String,
    #[sqlx(rename = "received_at")]
    pub received_at_ms: i64,
    /// The node the message led to: where the conversation stood after it;
    /// `None` when it ended the conversation (or was recorded before 0010/0012).
    pub node: Option<String>,
}

/// One entry of a timeline: a message in, or a reply out.
#[derive(Debug, Clone, PartialEq)]
pub enum TimelineEntry {
    Inbound(InboundRow),
    // Boxed: a reply row is four times the size of a message row.
    Reply(Box<OutboxRow>),
}

impl TimelineEntry {
    /// When it happened: received, or queued.
    pub fn at_ms(&self) -> i64 {
        match self {
            TimelineEntry::Inbound(row) => row.received_at_ms,
            TimelineEntry::Reply(row) => row.created_at_ms,
        }
    }

    /// Order within one millisecond: the message, then the replies it caused.
    fn order(&self) -> (i64, u8, i64) {
        match self {
            TimelineEntry::Inbound(row) => (row.received_at_ms, 0, row.id),
            TimelineEntry::Reply(row) => (row.created_at_ms, 1, row.id),
        }
    }
}

/// A page of a timeline, oldest first, and the time to pass as `before` for
/// the page of older entries (`None`: this page reaches the start).
#[derive(Debug, Clone, PartialEq)]
pub struct TimelinePage {
    pub entries: Vec<TimelineEntry>,
    pub older_before_ms: Option<i64>,
}

/// The contacts `q` may mean: as written, with or without `whatsapp:`, and for
/// a number typed without its `+`, with it.
fn contact_variants(q: &str) -> [String; 4] {
    let bare = q.strip_prefix("whatsapp:").unwrap_or(q);
    let plus = if bare.starts_with(|c: char| c.is_ascii_digit()) {
        format!("+{bare}")
    } else {
        bare.to_owned()
    };
    [
        bare.to_owned(),
        format!("whatsapp:{bare}"),
        plus.clone(),
        format!("whatsapp:{plus}"),
    ]
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A sample parameter for [`Store::console_plans`].
enum Sample<'a> {
    Text(&'a str),
    Int(i64),
}

/// `sql` with every sample bound, on whichever backend runs it.
macro_rules! bind_samples {
    ($sql:expr, $samples:expr) => {{
        let mut query = sqlx::query($sql);
        for sample in $samples.iter() {
            query = match sample {
                Sample::Text(text) => query.bind(*text),
                Sample::Int(n) => query.bind(*n),
            };
        }
        query
    }};
}
impl Store {
    /// A page of `bot`'s conversations, newest activity first, after `from`.
    pub async fn conversations(
        &self,
        bot: &str,
        from: Cursor,
        page: usize,
    ) -> Result<Page<ConversationSummary>, StoreError> {
        let mut rows: Vec<ConversationSummary> = on_read_pool!(self, |pool| {
            sqlx::query_as(LIST_CONVERSATIONS)
                .bind(bot)
                .bind(from.at_ms)
                .bind(from.id)
                .bind(limit(page + 1))
                .fetch_all(pool)
                .await
        })?;
        let next = page_end(&mut rows, page, |r| Cursor {
            at_ms: r.updated_at_ms,
            id: r.id,
        });
        Ok(Page { rows, next })
    }

    /// `bot`'s conversations with the contact `q` (with or without `whatsapp:`
    /// and a leading `+`), or with the message whose SID is `q`, inbound or
    /// sent; newest activity first, at most 50.
    pub async fn search_conversations(
        &self,
        bot: &str,
        q: &str,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let q = q.trim();
        let [a, b, c, d] = contact_variants(q);
        let rows: Vec<ConversationSummary> = on_read_pool!(self, |pool| {
            sqlx::query_as(SEARCH_CONVERSATIONS)
                .bind(bot)
                .bind(&a)
                .bind(&b)
                .bind(&c)
                .bind(&d)
                .bind(q)
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }

    /// One conversation, with its vars.
    pub async fn conversation_by_id(
        &self,
        id: i64,
    ) -> Result<Option<ConversationDetail>, StoreError> {
        let found: Option<DetailRecord> = on_read_pool!(self, |pool| {
            sqlx::query_as(CONVERSATION)
                .bind(id)
                .fetch_optional(pool)
                .await
        })?;
        found.map(DetailRecord::detail).transpose()
    }

    /// `bot`'s conversation with `contact` (the address exactly), with its vars.
    pub async fn conversation_with(
        &self,
        bot: &str,
        contact: &str,
    ) -> Result<Option<ConversationDetail>, StoreError> {
        let found: Option<DetailRecord> = on_read_pool!(self, |pool| {
            sqlx::query_as(CONVERSATION_WITH)
                .bind(bot)
                .bind(contact)
                .fetch_optional(pool)
                .await
        })?;
        found.map(DetailRecord::detail).transpose()
    }

    /// Up to about `page` entries of a conversation's timeline (its contact's
    /// messages and its replies) from before `before_ms`, oldest first. A page
    /// ends between two milliseconds, never inside one, so the next page (from
    /// [`TimelinePage::older_before_ms`]) neither repeats nor skips an entry; a
    /// millisecond holding more than `page` entries is shown whole.
    pub async fn timeline(
        &self,
        conversation: &ConversationSummary,
        before_ms: i64,
        page: usize,
    ) -> Result<TimelinePage, StoreError> {
        let fetch = limit(page + 1);
        let inbound: Vec<InboundRow> = on_read_pool!(self, |pool| {
            sqlx::query_as(TIMELINE_INBOUND)
                .bind(&conversation.bot)
                .bind(&conversation.contact)
                .bind(before_ms)
                .bind(fetch)
                .fetch_all(pool)
                .await
        })?;
        let replies: Vec<OutboxRecord> = on_read_pool!(self, |pool| {
            sqlx::query_as(TIMELINE_OUTBOX)
                .bind(conversation.id)
                .bind(before_ms)
                .bind(fetch)
                .fetch_all(pool)
                .await
        })?;
        let mut entries: Vec<TimelineEntry> = inbound
            .into_iter()
            .map(TimelineEntry::Inbound)
            .chain(
                record::outbox_rows(replies)?
                    .into_iter()
                    .map(|row| TimelineEntry::Reply(Box::new(row))),
            )
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.order()));
        let mut older_before_ms = None;
        if entries.len() > page {
            // Every entry not fetched is no newer than the first one cut, so
            // cutting at a millisecond boundary loses nothing.
            let cut = entries[page].at_ms();
            let kept = entries.iter().take_while(|e| e.at_ms() > cut).count();
            if kept > 0 {
                entries.truncate(kept);
                older_before_ms = Some(cut + 1);
            } else {
                entries.retain(|e| e.at_ms() == cut);
                older_before_ms = Some(cut);
            }
        }
        entries.reverse();
        Ok(TimelinePage {
            entries,
            older_before_ms,
        })
    }

    /// A page of `bot`'s queued replies, due first, after `from`.
    pub async fn queued_replies(
        &self,
        bot: &str,
        from: Cursor,
        page: usize,
    ) -> Result<Page<OutboxRow>, StoreError> {
        self.outbox_page(QUEUED, bot, from, page, |r| Cursor {
            at_ms: r.next_attempt_at_ms,
            id: r.id,
        })
        .await
    }

    /// A page of `bot`'s failed (and undelivered) replies, last failed first,
    /// after `from`.
    pub async fn failed_replies(
        &self,
        bot: &str,
        from: Cursor,
        page: usize,
    ) -> Result<Page<OutboxRow>, StoreError> {
        self.outbox_page(FAILED, bot, from, page, |r| Cursor {
            at_ms: r.updated_at_ms,
            id: r.id,
        })
        .await
    }

    /// A page of the outbox list `sql` (binding bot, cursor, limit), whose
    /// rows sort by `key`.
    async fn outbox_page(
        &self,
        sql: &str,
        bot: &str,
        from: Cursor,
        page: usize,
        key: fn(&OutboxRow) -> Cursor,
    ) -> Result<Page<OutboxRow>, StoreError> {
        let records: Vec<OutboxRecord> = on_read_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(bot)
                .bind(from.at_ms)
                .bind(from.id)
                .bind(limit(page + 1))
                .fetch_all(pool)
                .await
        })?;
        let mut rows = record::outbox_rows(records)?;
        let next = page_end(&mut rows, page, key);
        Ok(Page { rows, next })
    }

    /// Queues failed (or undelivered) reply `id` again, due at `now_ms`, with
    /// its attempts, error and SID cleared; the sender sends it like a new
    /// reply (opt-out and the 24-hour window are checked again). `None` when
    /// there is no such failed reply (retried already, or never failed);
    /// otherwise its bot.
    pub async fn retry_reply(&self, id: i64, now_ms: i64) -> Result<Option<String>, StoreError> {
        let event = StatusEvent {
            at_ms: now_ms,
            status: OutboxStatus::Queued.as_str().to_owned(),
            by: Some(BY_CONSOLE.to_owned()),
            ..StatusEvent::default()
        }
        .line();
        let bot: Option<String> = on_pool!(self, |pool| {
            sqlx::query_scalar(RETRY)
                .bind(id)
                .bind(now_ms)
                .bind(&event)
                .fetch_optional(pool)
                .await
        })?;
        Ok(bot)
    }

    /// Fails queued reply `id` at `now_ms` with [`CANCELLED_MESSAGE`], so it is
    /// never sent; the replies after it in its conversation go on. `None` when
    /// it is not queued (a sender has it, or it is finished); otherwise its bot.
    pub async fn cancel_reply(&self, id: i64, now_ms: i64) -> Result<Option<String>, StoreError> {
        let event = StatusEvent {
            at_ms: now_ms,
            status: OutboxStatus::Failed.as_str().to_owned(),
            error: Some(CANCELLED_MESSAGE.to_owned()),
            by: Some(BY_CONSOLE.to_owned()),
            ..StatusEvent::default()
        }
        .line();
        let bot: Option<String> = on_pool!(self, |pool| {
            sqlx::query_scalar(CANCEL)
                .bind(id)
                .bind(now_ms)
                .bind(CANCELLED_MESSAGE)
                .bind(&event)
                .fetch_optional(pool)
                .await
        })?;
        Ok(bot)
    }

    /// The query plans of the console's reads, `(name, plan)` per query, for
    /// docs/console.md: `EXPLAIN` on Postgres, `EXPLAIN QUERY PLAN` on SQLite,
    /// with sample parameters for `bot`.
    #[doc(hidden)]
    pub async fn console_plans(&self, bot: &str) -> Result<Vec<(String, String)>, StoreError> {
        use sqlx::Row;
        use Sample::{Int, Text};
        let contact = "whatsapp:+15550000000";
        let sid = "SM00000000000000000000000000000000";
        let (now, first) = (i64::MAX, i64::MAX);
        let queries: [(&str, &str, Vec<Sample<'_>>); 6] = [
            (
                "conversations page",
                LIST_CONVERSATIONS,
                vec![Text(bot), Int(now), Int(first), Int(51)],
            ),
            (
                "search",
                SEARCH_CONVERSATIONS,
                vec![
                    Text(bot),
                    Text(contact),
                    Text(contact),
                    Text(contact),
                    Text(contact),
                    Text(sid),
                ],
            ),
            (
                "timeline: messages",
                TIMELINE_INBOUND,
                vec![Text(bot), Text(contact), Int(now), Int(101)],
            ),
            (
                "timeline: replies",
                TIMELINE_OUTBOX,
                vec![Int(1), Int(now), Int(101)],
            ),
            (
                "outbox: queued",
                QUEUED,
                vec![Text(bot), Int(i64::MIN), Int(i64::MIN), Int(51)],
            ),
            (
                "outbox: failed",
                FAILED,
                vec![Text(bot), Int(now), Int(first), Int(51)],
            ),
        ];
        let mut plans = Vec::new();
        for (name, sql, samples) in &queries {
            let lines: Vec<String> = match &self.inner {
                Inner::Postgres(p) => {
                    let explain = format!("EXPLAIN {sql}");
                    let rows = bind_samples!(&explain, samples).fetch_all(&p.pool).await?;
                    rows.iter()
                        .map(|r| r.try_get::<String, _>(0))
                        .collect::<Result<_, _>>()?
                }
                Inner::Sqlite(s) => {
                    let explain = format!("EXPLAIN QUERY PLAN {sql}");
                    let rows = match s.readers() {
                        Some(pool) => bind_samples!(&explain, samples).fetch_all(pool).await?,
                        None => {
                            let mut writer = s.writer().await?;
                            bind_samples!(&explain, samples)
                                .fetch_all(&mut *writer)
                                .await?
                        }
                    };
                    rows.iter()
                        .map(|r| r.try_get::<String, _>(3))
                        .collect::<Result<_, _>>()?
                }
            };
            plans.push(((*name).to_owned(), lines.join("\n")));
        }
        Ok(plans)
    }
}

/// Cuts `rows` (fetched one over `page`) to a page; the cursor of its last row
/// when there is more.
pub(super) fn page_end<T>(
    rows: &mut Vec<T>,
    page: usize,
    cursor: impl Fn(&T) -> Cursor,
) -> Option<Cursor> {
    if rows.len() > page {
        rows.truncate(page);
        rows.last().map(cursor)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_variants_cover_prefix_and_plus() {
        assert_eq!(
            contact_variants("14155550100"),
            [
                "14155550100",
                "whatsapp:14155550100",
                "+14155550100",
                "whatsapp:+14155550100"
            ]
        );
        assert_eq!(
            contact_variants("whatsapp:+1415"),
            ["+1415", "whatsapp:+1415", "+1415", "whatsapp:+1415"]
        );
    }
}
