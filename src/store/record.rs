//! Rows as both backends read them, and their conversion to the public types:
//! the one place that knows how JSON columns and status strings are stored.

use serde::Serialize;

use super::{OutboxRow, StoreError};
use crate::domain::{ConversationState, Handoff, OutboxStatus};
use crate::message::ReplyKind;

/// A `conversations` row, with the id and version a write must present.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ConversationRecord {
    pub(super) id: i64,
    pub(super) node: Option<String>,
    pub(super) handler: Option<String>,
    pub(super) vars: String,
    pub(super) version: i64,
    pub(super) updated_at: i64,
    pub(super) opted_out_at: Option<i64>,
    pub(super) handoff_queue: Option<String>,
    pub(super) handoff_at: Option<i64>,
    pub(super) handoff_answered_at: Option<i64>,
}

impl ConversationRecord {
    pub(super) fn state(&self) -> Result<ConversationState, StoreError> {
        let vars = serde_json::from_str(&self.vars).map_err(|e| {
            StoreError::Corrupt(format!(
                "conversation {}: vars are not a JSON object: {e}",
                self.id
            ))
        })?;
        Ok(ConversationState {
            node: self.node.clone(),
            handler: self.handler.clone(),
            vars,
            updated_at_ms: self.updated_at,
            opted_out: self.opted_out_at.is_some(),
            // Read only when a timer fires (`Store::process_timeout`): a step
            // sets the wait of the node it leaves the conversation at afresh.
            timeout_at_ms: None,
            on_timeout: None,
            handoff: self.handoff_queue.as_ref().map(|queue| Handoff {
                queue: queue.clone(),
                at_ms: self.handoff_at.unwrap_or(self.updated_at),
                answered_at_ms: self.handoff_answered_at,
            }),
        })
    }
}

/// What [`LOOKUP`](super::sql::LOOKUP) reads: the dedupe answer and the
/// conversation, whose columns are all `NULL` when it does not exist yet.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct Lookup {
    pub(super) seen: bool,
    id: Option<i64>,
    node: Option<String>,
    handler: Option<String>,
    vars: Option<String>,
    version: Option<i64>,
    updated_at: Option<i64>,
    opted_out_at: Option<i64>,
    handoff_queue: Option<String>,
    handoff_at: Option<i64>,
    handoff_answered_at: Option<i64>,
}

impl Lookup {
    /// The conversation, if the contact has one.
    pub(super) fn conversation(self) -> Option<ConversationRecord> {
        Some(ConversationRecord {
            id: self.id?,
            node: self.node,
            handler: self.handler,
            vars: self.vars.unwrap_or_else(|| "{}".to_owned()),
            version: self.version.unwrap_or_default(),
            updated_at: self.updated_at.unwrap_or_default(),
            opted_out_at: self.opted_out_at,
            handoff_queue: self.handoff_queue,
            handoff_at: self.handoff_at,
            handoff_answered_at: self.handoff_answered_at,
        })
    }
}

/// An `outbox` row, as selected by `outbox_columns!()`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct OutboxRecord {
    id: i64,
    conversation_id: i64,
    bot: String,
    contact: String,
    body: String,
    media: String,
    status: String,
    attempts: i32,
    next_attempt_at: i64,
    claim_token: Option<i64>,
    twilio_sid: Option<String>,
    error_code: Option<i64>,
    error_message: Option<String>,
    created_at: i64,
    updated_at: i64,
    kind: String,
    content: Option<String>,
    contact_opted_out_at: Option<i64>,
    window_opened_at: Option<i64>,
    bulk: i16,
    /// Only in the timeline's read; absent (`None`) from the sender's.
    #[sqlx(default)]
    history: Option<String>,
}

impl TryFrom<OutboxRecord> for OutboxRow {
    type Error = StoreError;

    fn try_from(r: OutboxRecord) -> Result<OutboxRow, StoreError> {
        let status = OutboxStatus::parse(&r.status).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "outbox row {}: unknown status `{}`",
                r.id, r.status
            ))
        })?;
        let kind = ReplyKind::parse(&r.kind).ok_or_else(|| {
            StoreError::Corrupt(format!("outbox row {}: unknown kind `{}`", r.id, r.kind))
        })?;
        let content = match &r.content {
            None => None,
            Some(json) => Some(serde_json::from_str(json).map_err(|e| {
                StoreError::Corrupt(format!(
                    "outbox row {}: content is not a menu or template: {e}",
                    r.id
                ))
            })?),
        };
        let media = serde_json::from_str(&r.media).map_err(|e| {
            StoreError::Corrupt(format!(
                "outbox row {}: media is not a JSON list: {e}",
                r.id
            ))
        })?;
        let history = r
            .history
            .as_deref()
            .map(|text| super::history::parse(r.id, r.created_at, text))
            .unwrap_or_default();
        Ok(OutboxRow {
            history,
            id: r.id,
            bot: r.bot,
            contact: r.contact,
            conversation_id: r.conversation_id,
            body: r.body,
            media,
            status,
            attempts: r.attempts,
            next_attempt_at_ms: r.next_attempt_at,
            claim_token: r.claim_token,
            twilio_sid: r.twilio_sid,
            error_code: r.error_code,
            error_message: r.error_message,
            created_at_ms: r.created_at,
            updated_at_ms: r.updated_at,
            kind,
            content,
            contact_opted_out_at_ms: r.contact_opted_out_at,
            window_opened_at_ms: r.window_opened_at,
            bulk: r.bulk != 0,
        })
    }
}

pub(super) fn outbox_rows(records: Vec<OutboxRecord>) -> Result<Vec<OutboxRow>, StoreError> {
    records.into_iter().map(OutboxRow::try_from).collect()
}

/// JSON text for a column. Only called with maps, lists of strings and
/// `serde_json::Value`s, which always serialize.
pub(super) fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("JSON values, maps and string lists always serialize")
}
