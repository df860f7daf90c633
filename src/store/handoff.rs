//! Human handoff's reads and writes (SPEC §10.2) beyond a step's own: the
//! console's inbox of handed-off conversations, and the notices for a bot's
//! `handoff_notify` URL, claimed with a lease like outbox rows (`SKIP LOCKED`
//! on Postgres) so one instance delivers each, and completed by the
//! delivery task. A notice is written with the step that causes it
//! (`sqlite.rs`, `postgres.rs`, `outbound.rs`).

use std::time::Duration;

use super::{Inner, Store, StoreError};

/// A handed-off conversation, as the inbox lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct HandedOff {
    /// The conversation's id (its console page).
    pub id: i64,
    pub bot: String,
    pub contact: String,
    pub queue: String,
    /// The node that handed it off.
    pub node: Option<String>,
    /// When it was handed off, ms since the epoch.
    pub handoff_at: i64,
    /// When a person last answered; `None` until one does.
    pub answered_at: Option<i64>,
    /// The conversation's last activity.
    pub updated_at: i64,
    /// The contact's last message (the start of their 24-hour window).
    pub last_inbound_at: Option<i64>,
    /// When Twilio reported their window closed; `None` when it did not.
    pub window_closed_at: Option<i64>,
}

/// A message of a handed-off conversation, either way.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct HandoffMessage {
    /// When it arrived or was queued, ms since the epoch.
    pub at: i64,
    /// From the contact (`true`) or to them.
    pub inbound: bool,
    pub text: String,
    /// A reply's status; empty for the contact's messages.
    pub status: String,
}

/// The columns of [`HandedOff`], from `conversations`.
const HANDED_OFF_COLUMNS: &str = "id, bot, contact, handoff_queue AS queue, node, \
     handoff_at, handoff_answered_at AS answered_at, updated_at, last_inbound_at, \
     window_closed_at";

/// A notice claimed for delivery.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NoticeRow {
    pub id: i64,
    pub bot: String,
    pub contact: String,
    /// `handoff` or `message`.
    pub event: String,
    pub queue: String,
    pub text: String,
    /// Attempts so far, this one included.
    pub attempts: i64,
    /// When the step that caused it committed, ms since the epoch.
    pub created_at: i64,
    pub claim_token: i64,
}

/// How one delivery of a notice came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Try again at `at_ms`; `error` says what went wrong this time.
    Retry { at_ms: i64, error: String },
    /// Given up (the bot no longer notifies, or retries ran out).
    Failed { error: String },
}

/// Due notices and notices whose claim lapsed (their instance died), claimed
/// at `$1` (now) until `$2` with token `$3`, at most `$4`, oldest first; the
/// status is checked again on the row the update locks.
macro_rules! claim_notices {
    ($lock:literal) => {
        concat!(
            "UPDATE handoff_notices SET status = 'sending', lease_until = $2, claim_token = $3, \
                 attempts = attempts + 1, updated_at = $1 \
             WHERE id IN (SELECT id FROM handoff_notices \
                 WHERE (status = 'pending' AND next_attempt_at <= $1) \
                    OR (status = 'sending' AND lease_until <= $1) \
                 ORDER BY next_attempt_at, id LIMIT $4",
            $lock,
            ") AND ((status = 'pending' AND next_attempt_at <= $1) \
                 OR (status = 'sending' AND lease_until <= $1)) \
             RETURNING id, bot, contact, event, queue, text, attempts, created_at, claim_token"
        )
    };
}

impl Store {
    /// Handed-off conversations (of `bot`, or every bot), newest handoff
    /// first, at most `limit`, before the cursor `(handoff_at, id)` when
    /// given: an ordered walk of the partial index `conversations_handoff`.
    pub async fn handed_off(
        &self,
        bot: Option<&str>,
        before: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<HandedOff>, StoreError> {
        let (at, id) = before.unwrap_or((i64::MAX, i64::MAX));
        let sql = format!(
            "SELECT {HANDED_OFF_COLUMNS} FROM conversations \
             WHERE handoff_queue IS NOT NULL AND ($1 IS NULL OR bot = $1) \
               AND (handoff_at < $2 OR (handoff_at = $2 AND id < $3)) \
             ORDER BY handoff_at DESC, id DESC LIMIT $4"
        );
        let rows: Vec<HandedOff> = on_read_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(bot)
                .bind(at)
                .bind(id)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }

    /// The conversation of `contact` with `bot`, if it is handed off.
    pub async fn handed_off_conversation(
        &self,
        bot: &str,
        contact: &str,
    ) -> Result<Option<HandedOff>, StoreError> {
        let sql = format!(
            "SELECT {HANDED_OFF_COLUMNS} FROM conversations \
             WHERE bot = $1 AND contact = $2 AND handoff_queue IS NOT NULL"
        );
        let row: Option<HandedOff> = on_read_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(bot)
                .bind(contact)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row)
    }

    /// What was said in `conversation` since `since_ms`, oldest first: the
    /// contact's last `limit` messages and the last `limit` replies, each
    /// read by its index (`inbound_messages_contact`,
    /// `outbox_conversation_created`).
    pub async fn handoff_messages(
        &self,
        conversation: &HandedOff,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<HandoffMessage>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut said: Vec<HandoffMessage> = on_read_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT received_at AS at, TRUE AS inbound, body AS text, '' AS status \
                 FROM inbound_messages WHERE bot = $1 AND contact = $2 AND received_at >= $3 \
                     AND received_at >= 0 \
                 ORDER BY received_at DESC LIMIT $4",
            )
            .bind(&conversation.bot)
            .bind(&conversation.contact)
            .bind(since_ms)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        let replies: Vec<HandoffMessage> = on_read_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT created_at AS at, FALSE AS inbound, body AS text, status \
                 FROM outbox WHERE conversation_id = $1 AND created_at >= $2 \
                     AND created_at >= 0 \
                 ORDER BY created_at DESC LIMIT $3",
            )
            .bind(conversation.id)
            .bind(since_ms)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        said.extend(replies);
        said.sort_by_key(|m| (m.at, !m.inbound));
        Ok(said)
    }

    /// Claims up to `limit` notices due at `now_ms` for `lease`, with `token`.
    pub async fn claim_notices(
        &self,
        now_ms: i64,
        lease: Duration,
        token: i64,
        limit: usize,
    ) -> Result<Vec<NoticeRow>, StoreError> {
        let mut claimed: Vec<NoticeRow> = self
            .claim_leased(
                (
                    claim_notices!(""),
                    claim_notices!(" FOR UPDATE SKIP LOCKED"),
                ),
                now_ms,
                lease,
                token,
                limit,
                None,
            )
            .await?;
        claimed.sort_by_key(|n| n.id);
        Ok(claimed)
    }

    /// Records how a delivery of notice `id` came out, if the claim `token`
    /// is still held; answers whether it was.
    pub async fn complete_notice(
        &self,
        id: i64,
        token: i64,
        outcome: &NoticeOutcome,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (status, next_at, error) = match outcome {
            NoticeOutcome::Delivered => ("delivered", None, None),
            NoticeOutcome::Retry { at_ms, error } => ("pending", Some(*at_ms), Some(error)),
            NoticeOutcome::Failed { error } => ("failed", None, Some(error)),
        };
        let done = on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE handoff_notices SET status = $3, \
                     next_attempt_at = COALESCE($4, next_attempt_at), last_error = $5, \
                     lease_until = NULL, claim_token = NULL, updated_at = $6 \
                 WHERE id = $1 AND claim_token = $2 AND status = 'sending'",
            )
            .bind(id)
            .bind(token)
            .bind(status)
            .bind(next_at)
            .bind(error)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(done == 1)
    }

    /// When the next notice falls due (or a claim lapses), if any.
    pub async fn next_notice_due(&self) -> Result<Option<i64>, StoreError> {
        let due: Option<i64> = on_read_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT MIN(due) FROM ( \
                     SELECT MIN(next_attempt_at) AS due FROM handoff_notices \
                     WHERE status = 'pending' \
                     UNION ALL \
                     SELECT MIN(lease_until) AS due FROM handoff_notices \
                     WHERE status = 'sending' \
                 ) AS due_times",
            )
            .fetch_one(pool)
            .await
        })?;
        Ok(due)
    }

    /// Deletes delivered and failed notices last changed before `before_ms`.
    pub async fn prune_notices(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = on_pool!(self, |pool| {
            sqlx::query(
                "DELETE FROM handoff_notices \
                 WHERE status IN ('delivered', 'failed') AND updated_at < $1",
            )
            .bind(before_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(done)
    }

    /// The notices of `bot` for `contact`, oldest first, as (event, status,
    /// attempts): what tests and the console check.
    pub async fn notices_for(
        &self,
        bot: &str,
        contact: &str,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = on_read_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT event, status, attempts FROM handoff_notices \
                 WHERE bot = $1 AND contact = $2 ORDER BY id",
            )
            .bind(bot)
            .bind(contact)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows)
    }
}
