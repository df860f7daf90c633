//! SQL text and query code shared by both backends. The two schemas are kept
//! column-for-column identical and sqlx binds `$N` placeholders on SQLite too, so
//! a query written here runs unchanged on either; `sqlite.rs` and `postgres.rs`
//! hold only what really differs (locking, claiming, connecting).
//!
//! Status names appear as SQL literals (not bound parameters) where an index is
//! partial on them: Postgres only uses a partial index when the plan can prove
//! the predicate, which a parameter never does. They must match
//! [`OutboxStatus::as_str`](crate::domain::OutboxStatus::as_str); the integration suite
//! drives rows through every status on both backends.

use std::sync::LazyLock;

use crate::domain::{ConversationState, OutboxStatus};

/// The opening of a send attempt's history line, `{"attempt":N,`, made from
/// the row's `$attempts` column (text on both backends: the literal is cast so
/// Postgres does not take it for an array).
macro_rules! attempt_number {
    ($attempts:literal) => {
        concat!("CAST('{\"attempt\":' AS TEXT) || ", $attempts, " || ','")
    };
}

/// A claim statement (`$1` now, `$2` lease end, `$3` claim token, `$4` how
/// many) with its parameters bound, the same on both backends; each runs it on
/// its own connection and maps the rows with `record::outbox_rows`. A claim of
/// one bot's broadcast messages binds the bot as `$5`.
macro_rules! claim_query {
    ($sql:expr, $req:expr, $token:expr) => {
        sqlx::query_as::<_, $crate::store::record::OutboxRecord>($sql)
            .bind($req.now_ms)
            .bind($crate::store::lease_until(&$req))
            .bind($token)
            .bind($crate::store::limit(&$req))
    };
    ($sql:expr, $req:expr, $token:expr, $bot:expr) => {
        claim_query!($sql, $req, $token).bind($bot)
    };
}

/// The columns [`OutboxRecord`](super::record::OutboxRecord) reads, as a literal
/// so it can be spliced into queries with `concat!`: the row's own, then what the
/// sender must know of its contact when it claims the row (SPEC §8.2, §8.3),
/// read from the conversation by primary key: whether they opted out, and when
/// their window opened (their last message; `NULL` once Twilio reported it
/// closed). Only for statements on `outbox` unaliased.
macro_rules! outbox_columns {
    () => {
        "id, conversation_id, bot, contact, body, media, status, attempts, \
         next_attempt_at, claim_token, twilio_sid, error_code, error_message, \
         created_at, updated_at, kind, content, bulk, \
         (SELECT c.opted_out_at FROM conversations c \
          WHERE c.id = outbox.conversation_id) AS contact_opted_out_at, \
         (SELECT CASE WHEN c.window_closed_at IS NULL THEN c.last_inbound_at END \
          FROM conversations c WHERE c.id = outbox.conversation_id) AS window_opened_at"
    };
}

/// A row of `outbox o` is the head of its conversation's line: no earlier row of
/// the same conversation is still queued or sending (SPEC §4: reply N+1 never
/// goes before N is sent or failed for good).
///
/// Rows only ever leave `queued`/`sending` for a final status, never come back,
/// so an earlier row seen unfinished by any snapshot blocks correctly, and one
/// seen finished really is.
macro_rules! head_of_line {
    () => {
        "NOT EXISTS ( \
             SELECT 1 FROM outbox e \
             WHERE e.conversation_id = o.conversation_id AND e.id < o.id \
               AND e.status IN ('queued', 'sending'))"
    };
}

/// Rows of `outbox o` matching `$condition` that head their line, in `$order`,
/// at most `$4`: the two kinds of claim candidate below.
macro_rules! candidates {
    ($condition:literal, $order:literal) => {
        concat!(
            "SELECT o.id FROM outbox o WHERE ",
            $condition,
            " AND ",
            head_of_line!(),
            " ORDER BY ",
            $order,
            " LIMIT $4"
        )
    };
}

/// Makes the waiting broadcast messages of conversation `$11` (the one a
/// message's step read) replies: the contact wrote, so they are in a
/// conversation, and their reply (which queues behind those messages, order
/// per contact being kept) must not wait for the broadcast's queue (SPEC §9.3).
/// A probe of `outbox_unfinished` that finds nothing almost always, and then
/// writes nothing. Its predicate is spelled out so both planners may take that
/// index, and `bulk <> 0` (not `bulk = 1`) keeps them off `outbox_bulk_due`:
/// without statistics Postgres's generic plan walked all of that index,
/// 10,000 rows for every webhook while a broadcast waited.
macro_rules! promote_bulk {
    () => {
        "UPDATE outbox SET bulk = 0 \
         WHERE conversation_id = $11 AND status IN ('queued', 'sending') \
           AND status = 'queued' AND bulk <> 0"
    };
}

/// The queued replies a claim at `$1` (now, ms) may take, oldest first. Kept
/// apart from expired leases (no `OR`): this shape walks the `outbox_reply_due`
/// index in order and stops after `$4` heads, so a claim costs the rows it
/// passes over, not the whole backlog. With an `OR` Postgres fetches every
/// queued row, checks each one's line and sorts them: seconds per claim under a
/// large backlog (docs/decisions.md, "Found by the soak").
macro_rules! due_replies {
    () => {
        candidates!(
            "o.status = 'queued' AND o.bulk = 0 AND o.next_attempt_at <= $1",
            "o.next_attempt_at, o.id"
        )
    };
}

/// Bot `$5`'s queued broadcast messages a claim at `$1` may take, oldest
/// first, at most `$4`: a walk of `outbox_bulk_due` (bot, due time), claimed
/// bot by bot after the replies (SPEC §9.3, replies first; see
/// `Store::claim_due`).
macro_rules! due_bulk {
    () => {
        concat!(
            "SELECT o.id FROM outbox o \
             WHERE o.bot = $5 AND o.status = 'queued' AND o.bulk = 1 \
               AND o.next_attempt_at <= $1 AND ",
            head_of_line!(),
            " ORDER BY o.next_attempt_at, o.id LIMIT $4"
        )
    };
}

/// Each bot with broadcast messages queued, and when its first one that
/// heads its line falls due (`NULL`: every one waits behind a reply): a skip
/// from bot to bot along `outbox_bulk_due`, then one ordered probe a bot, so it
/// reads a few entries a bot however many messages wait.
pub(super) const BULK_BOTS: &str = concat!(
    "WITH RECURSIVE bots (bot) AS ( \
         SELECT MIN(bot) FROM outbox WHERE status = 'queued' AND bulk = 1 \
         UNION ALL \
         SELECT (SELECT MIN(e.bot) FROM outbox e \
             WHERE e.status = 'queued' AND e.bulk = 1 AND e.bot > bots.bot) \
         FROM bots WHERE bots.bot IS NOT NULL \
     ) \
     SELECT bot, (SELECT o.next_attempt_at FROM outbox o \
         WHERE o.bot = bots.bot AND o.status = 'queued' AND o.bulk = 1 AND ",
    head_of_line!(),
    "    ORDER BY o.next_attempt_at, o.id LIMIT 1) AS due \
     FROM bots WHERE bot IS NOT NULL"
);

/// Claimed rows whose lease expired by `$1` (their sender died).
macro_rules! expired_leases {
    () => {
        candidates!(
            "o.status = 'sending' AND o.lease_until <= $1",
            "o.lease_until, o.id"
        )
    };
}

pub(super) const LOOKUP: &str = "SELECT \
         EXISTS (SELECT 1 FROM inbound_messages WHERE bot = $1 AND message_sid = $2) AS seen, \
         c.id, c.node, c.handler, c.vars, c.version, c.updated_at, c.opted_out_at, \
         c.handoff_queue, c.handoff_at, c.handoff_answered_at \
     FROM (SELECT 1 AS one) AS one \
     LEFT JOIN conversations c ON c.bot = $1 AND c.contact = $3";

pub(super) const LOAD_CONVERSATION: &str = "SELECT id, node, handler, vars, version, updated_at, \
         opted_out_at, handoff_queue, handoff_at, handoff_answered_at \
     FROM conversations WHERE bot = $1 AND contact = $2";

/// What [`Store::contact_status`](super::Store::contact_status) reads.
pub(super) const CONTACT_STATUS: &str = "SELECT opted_out_at, last_inbound_at, window_closed_at \
     FROM conversations WHERE bot = $1 AND contact = $2";

/// Marks the contact of conversation `$1` opted out at `$2`, unless they are
/// already (the earlier time stays).
pub(super) const MARK_OPTED_OUT: &str = "UPDATE conversations \
     SET opted_out_at = $2 WHERE id = $1 AND opted_out_at IS NULL";

/// Closes the window of conversation `$1` at `$2`, unless the contact wrote
/// after the message that failed was queued (`$3`): their new message opened
/// a new window.
pub(super) const MARK_WINDOW_CLOSED: &str = "UPDATE conversations \
     SET window_closed_at = $2 WHERE id = $1 AND COALESCE(last_inbound_at, 0) <= $3";

/// The conversation and queue time of the message Twilio knows as `$2` (bot `$1`),
/// for marking its contact.
pub(super) const SENT_MESSAGE: &str = "SELECT conversation_id, created_at FROM outbox \
     WHERE bot = $1 AND twilio_sid = $2 ORDER BY id LIMIT 1";

/// `CASE` mapping a status column to [`OutboxStatus::rank`], built from the Rust
/// definition so the forward-only rule of status callbacks lives in one place.
pub(super) static RANK_OF_STATUS: LazyLock<String> = LazyLock::new(|| {
    let arms: String = OutboxStatus::ALL
        .iter()
        .map(|s| format!(" WHEN '{}' THEN {}", s.as_str(), s.rank()))
        .collect();
    format!("CASE status{arms} END")
});

/// A status callback: moves every row Twilio knows by this SID forward, never
/// back. `$1` new status, `$2` its rank, `$3` error code and `$7` its meaning
/// (kept only for the failure statuses), `$4` now, `$5` bot, `$6` SID, `$8`
/// the move as a line of the row's history (`history::StatusEvent::line`).
pub(super) static APPLY_STATUS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE outbox SET status = $1, \
             error_code = CASE WHEN $1 IN ('undelivered', 'failed') \
                          THEN COALESCE($3, error_code) ELSE error_code END, \
             error_message = CASE WHEN $1 IN ('undelivered', 'failed') \
                             THEN COALESCE($7, error_message) ELSE error_message END, \
             lease_until = NULL, claim_token = NULL, updated_at = $4, \
             history = history || $8 \
         WHERE bot = $5 AND twilio_sid = $6 AND ({}) < $2",
        *RANK_OF_STATUS
    )
});

/// Ends a claim, if the caller still holds it (`$1` id, `$2` token). A `NULL`
/// SID or due time leaves the column as it was. `$9` is the attempt's line of
/// the row's history without its opening (`history::attempt_line`): the
/// statement puts the attempt's number, which only the row knows, in front.
pub(super) const COMPLETE_SEND: &str = concat!(
    "UPDATE outbox SET status = $3, \
         twilio_sid = COALESCE($4, twilio_sid), \
         next_attempt_at = COALESCE($5, next_attempt_at), \
         error_code = $6, error_message = $7, \
         lease_until = NULL, claim_token = NULL, updated_at = $8, \
         history = history || ",
    attempt_number!("attempts"),
    " || $9 \
     WHERE id = $1 AND claim_token = $2 AND status = 'sending'"
);

/// Extends a claim still held (same token, still sending).
pub(super) const RENEW_CLAIM: &str = "UPDATE outbox SET lease_until = $3 \
     WHERE id = $1 AND claim_token = $2 AND status = 'sending'";

/// Gives a claim back uncounted; `next_attempt_at` already lies in the past, so
/// the row is due at once.
pub(super) const RELEASE_CLAIM: &str = "UPDATE outbox SET status = 'queued', \
         attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, \
         lease_until = NULL, claim_token = NULL \
     WHERE id = $1 AND claim_token = $2 AND status = 'sending'";

/// The earliest time a claim could take a reply: a head-of-line queued
/// reply's due time or a lease's end (broadcast messages: [`BULK_BOTS`]).
/// Queued rows blocked behind an unfinished one are left out; counting them
/// would make an idle sender spin on a row it cannot take. An ordered walk
/// that stops at the first hit, like the claim.
pub(super) const NEXT_DUE_AT: &str = concat!(
    "SELECT MIN(due) FROM ( \
         SELECT due FROM (SELECT o.next_attempt_at AS due FROM outbox o \
             WHERE o.status = 'queued' AND o.bulk = 0 AND ",
    head_of_line!(),
    "    ORDER BY o.next_attempt_at, o.id LIMIT 1) AS first_reply \
         UNION ALL \
         SELECT MIN(lease_until) AS due FROM outbox WHERE status = 'sending' \
     ) AS due_times"
);

/// Conversations are not pruned: a conversation holds the state a returning
/// contact resumes from (or times out of, which needs its `updated_at`), its row
/// is small, and outbox rows reference it. Only the message logs grow without bound.
pub(super) const PRUNE_OUTBOX: &str = "DELETE FROM outbox \
     WHERE status IN ('sent', 'delivered', 'read', 'undelivered', 'failed') AND updated_at < $1";

pub(super) const PRUNE_INBOUND: &str = "DELETE FROM inbound_messages WHERE received_at < $1";

pub(super) const OUTBOX_DEPTH: &str = "SELECT status, COUNT(*) FROM outbox GROUP BY status";

pub(super) const OUTBOX_FOR: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    " FROM outbox WHERE conversation_id = \
       (SELECT id FROM conversations WHERE bot = $1 AND contact = $2) \
     ORDER BY id"
);

/// The Content resource created for bot `$1`'s menu shape `$2`.
pub(super) const CONTENT_RESOURCE: &str =
    "SELECT sid FROM content_resources WHERE bot = $1 AND shape = $2";

/// Remembers a created Content resource, unless another sender remembered one
/// for the same shape first: then theirs stays, and the caller reads it back.
pub(super) const REMEMBER_CONTENT_RESOURCE: &str = "INSERT INTO content_resources \
     (bot, shape, sid, created_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (bot, shape) DO NOTHING";

pub(super) const INBOUND_COUNT: &str = "SELECT COUNT(*) FROM inbound_messages WHERE bot = $1";

/// The values the writes of one processed message bind as `$1` to `$12`, the
/// same in both backends' statements (see [`bind_step!`]): `$1` bot, `$2`
/// message SID, `$3` contact, `$4` body, `$5` payload, `$6` received at (also
/// when the replies are due, and the contact's last message for the window),
/// `$7` node, `$8` handler, `$9` vars, `$10` state time, `$11` id and `$12`
/// version of the conversation the step read (`NULL` when the contact had
/// none). Each backend binds [`StepWrite::replies`] and
/// [`StepWrite::opt_out_change`] in its own way, after those.
pub(super) struct StepWrite<'a> {
    pub(super) msg: &'a super::NewInbound,
    pub(super) payload: String,
    pub(super) state: &'a ConversationState,
    pub(super) vars: String,
    pub(super) seen_id: Option<i64>,
    pub(super) seen_version: Option<i64>,
    /// Each reply's body, media list (as the JSON the column holds) and kind,
    /// in order.
    pub(super) replies: Vec<(&'a str, String, &'static str)>,
    /// Each reply's `content` column (JSON, `None` for text), in the same order.
    pub(super) contents: Vec<Option<String>>,
    /// `1` when the step opted the contact out, `0` when it opted them back in,
    /// `NULL` when it left that as it was read. Only a change is written, so an
    /// opt-out the sender recorded meanwhile (Twilio's 21610) is kept.
    pub(super) opt_out_change: Option<i64>,
    /// The handoff columns: queue, when, a person's last answer (SPEC §10.2).
    pub(super) handoff: (Option<&'a str>, Option<i64>, Option<i64>),
    /// The notice for the bot's `handoff_notify` this write records: its
    /// event and queue ([`notice`]).
    pub(super) notice: Option<(&'static str, &'a str)>,
}

/// A notice for a bot's `handoff_notify` no message caused (`$1` bot, `$2`
/// contact, `$3` event, `$4` queue, `$5` text), due at `$6`.
pub(super) const INSERT_NOTICE: &str = "INSERT INTO handoff_notices (bot, contact, event, queue, \
         text, status, attempts, next_attempt_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)";

/// The handoff columns of `state`: queue, when handed off, a person's last answer.
pub(super) fn handoff_columns(
    state: &ConversationState,
) -> (Option<&str>, Option<i64>, Option<i64>) {
    match &state.handoff {
        Some(h) => (Some(h.queue.as_str()), Some(h.at_ms), h.answered_at_ms),
        None => (None, None, None),
    }
}

/// The notice a write of `state` records (SPEC §10.2): `handoff` when the
/// conversation was not handed off before (`was_handed_off`), `message` when
/// it was and the contact wrote (`inbound`); with its queue.
pub(super) fn notice(
    was_handed_off: bool,
    state: &ConversationState,
    inbound: bool,
) -> Option<(&'static str, &str)> {
    let handoff = state.handoff.as_ref()?;
    match (was_handed_off, inbound) {
        (false, _) => Some(("handoff", handoff.queue.as_str())),
        (true, true) => Some(("message", handoff.queue.as_str())),
        (true, false) => None,
    }
}

impl<'a> StepWrite<'a> {
    pub(super) fn new(
        msg: &'a super::NewInbound,
        seen: Option<&super::record::ConversationRecord>,
        out: &'a super::StepOutput,
    ) -> StepWrite<'a> {
        StepWrite {
            msg,
            payload: super::record::to_json(&msg.payload),
            state: &out.state,
            vars: super::record::to_json(&out.state.vars),
            seen_id: seen.map(|c| c.id),
            seen_version: seen.map(|c| c.version),
            replies: out
                .replies
                .iter()
                .map(|r| {
                    (
                        r.body.as_str(),
                        super::record::to_json(&r.media),
                        r.kind.as_str(),
                    )
                })
                .collect(),
            contents: out
                .replies
                .iter()
                .map(|r| r.content.as_ref().map(super::record::to_json))
                .collect(),
            opt_out_change: {
                let before = seen.is_some_and(|c| c.opted_out_at.is_some());
                (before != out.state.opted_out).then_some(i64::from(out.state.opted_out))
            },
            handoff: handoff_columns(&out.state),
            notice: notice(
                seen.is_some_and(|c| c.handoff_queue.is_some()),
                &out.state,
                true,
            ),
        }
    }
}

impl StepWrite<'_> {
    /// The replies as SQLite's write script reads them: one JSON list per
    /// column (bodies, media lists as JSON text, kinds, contents as JSON text or
    /// null), each parsed once by `json_each`. (One list of rows made SQLite
    /// parse each reply's text again for every column it extracted: a menu's
    /// content several times over.)
    pub(super) fn reply_columns_json(&self) -> [String; 4] {
        use super::record::to_json;
        let bodies: Vec<&str> = self.replies.iter().map(|r| r.0).collect();
        let media: Vec<&str> = self.replies.iter().map(|r| r.1.as_str()).collect();
        let kinds: Vec<&str> = self.replies.iter().map(|r| r.2).collect();
        [
            to_json(&bodies),
            to_json(&media),
            to_json(&kinds),
            to_json(&self.contents),
        ]
    }
}

/// Binds a [`StepWrite`]'s `$1` to `$12` to a query of either backend. A macro
/// rather than a generic function: the sqlx bounds a generic version needs (an
/// encode bound per Rust type and backend) would be longer than the binds.
macro_rules! bind_step {
    ($query:expr, $write:expr) => {{
        let write: &$crate::store::sql::StepWrite<'_> = $write;
        $query
            .bind(&write.msg.bot)
            .bind(&write.msg.message_sid)
            .bind(&write.msg.contact)
            .bind(&write.msg.body)
            .bind(&write.payload)
            .bind(write.msg.received_at_ms)
            .bind(&write.state.node)
            .bind(&write.state.handler)
            .bind(&write.vars)
            .bind(write.state.updated_at_ms)
            .bind(write.seen_id)
            .bind(write.seen_version)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_case_covers_every_status_with_its_rank() {
        for status in OutboxStatus::ALL {
            let arm = format!("WHEN '{}' THEN {}", status.as_str(), status.rank());
            assert!(RANK_OF_STATUS.contains(&arm), "{arm} missing");
        }
    }
}
