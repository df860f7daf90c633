//! All SQL lives here: one [`Store`] type the rest of the code calls, over SQLite
//! (the embedded default) or Postgres (production, several instances).
//!
//! Times are integer milliseconds since the Unix epoch, passed in by the caller, so
//! both backends store the same portable `BIGINT`s and tests can move the clock.

mod postgres;
mod sqlite;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::message::Reply;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database, behind one API. Cheap to clone (a pool inside).
#[derive(Clone)]
pub struct Store {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL `{0}` is not understood: use sqlite://PATH or postgres://...")]
    BadUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A conversation's state between messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationState {
    /// Node the conversation stands at; `None` when it has ended.
    pub node: Option<String>,
    /// The `ask` handler waiting for the next message (script nodes).
    pub handler: Option<String>,
    pub vars: Map<String, Value>,
    /// When the last message was handled, ms since the epoch.
    pub updated_at_ms: i64,
}

/// An inbound message to record (and dedupe by `message_sid`).
#[derive(Debug, Clone)]
pub struct NewInbound {
    pub bot: String,
    /// The contact's full address (`From`), e.g. `whatsapp:+14155550100`.
    pub contact: String,
    pub message_sid: String,
    pub body: String,
    /// The whole message as JSON (media, button, location...).
    pub payload: Value,
    pub received_at_ms: i64,
}

/// What the conversation step decided, written in the same transaction as the
/// inbound message.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub state: ConversationState,
    pub replies: Vec<Reply>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundOutcome {
    /// Committed: inbound row, state and `replies` outbox rows.
    Processed { replies: usize },
    /// This `MessageSid` was seen before; nothing written.
    Duplicate,
}

/// Outbox row statuses, in the order they may advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    /// Waiting to be sent (or to be retried at `next_attempt_at`).
    Queued,
    /// Claimed by a sender holding a lease.
    Sending,
    Sent,
    Delivered,
    Read,
    Undelivered,
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Queued => "queued",
            OutboxStatus::Sending => "sending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Read => "read",
            OutboxStatus::Undelivered => "undelivered",
            OutboxStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxStatus> {
        Some(match s {
            "queued" => OutboxStatus::Queued,
            "sending" => OutboxStatus::Sending,
            "sent" => OutboxStatus::Sent,
            "delivered" => OutboxStatus::Delivered,
            "read" => OutboxStatus::Read,
            "undelivered" => OutboxStatus::Undelivered,
            "failed" => OutboxStatus::Failed,
            _ => return None,
        })
    }

    /// How far along a row is; a status callback only moves a row to a higher rank.
    pub fn rank(self) -> u8 {
        match self {
            OutboxStatus::Queued => 0,
            OutboxStatus::Sending => 1,
            OutboxStatus::Sent => 2,
            OutboxStatus::Delivered | OutboxStatus::Undelivered => 3,
            OutboxStatus::Read => 4,
            // A failure reported by a callback is final.
            OutboxStatus::Failed => 5,
        }
    }
}

/// One queued reply.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub bot: String,
    pub contact: String,
    pub conversation_id: i64,
    pub body: String,
    pub media: Vec<String>,
    pub status: OutboxStatus,
    /// Sends tried so far, including the current claim.
    pub attempts: i32,
    pub next_attempt_at_ms: i64,
    /// Set while claimed; completions must present it.
    pub claim_token: Option<i64>,
    pub twilio_sid: Option<String>,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A claim on due rows, valid until `lease` has passed.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest {
    pub now_ms: i64,
    pub lease: Duration,
    pub limit: usize,
}

/// How a send attempt ended, recorded by [`Store::complete_send`].
#[derive(Debug, Clone, PartialEq)]
pub enum SendResult {
    /// Twilio accepted it (or `--dry-run`).
    Sent { sid: String },
    /// Try again at `next_attempt_at_ms`.
    Retry {
        next_attempt_at_ms: i64,
        error_code: Option<i64>,
        error_message: String,
    },
    /// Failed for good.
    Failed {
        error_code: Option<i64>,
        error_message: String,
    },
}

/// A status callback from Twilio.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub bot: String,
    pub sid: String,
    pub status: OutboxStatus,
    pub error_code: Option<i64>,
    pub now_ms: i64,
}

/// Rows by status, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    pub counts: Vec<(OutboxStatus, i64)>,
}

impl Store {
    /// Connects (creating a SQLite file if missing) without migrating.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let inner = if url.starts_with("sqlite:") {
            Inner::Sqlite(sqlite::SqliteStore::connect(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Inner::Postgres(postgres::PgStore::connect(url).await?)
        } else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        Ok(Store { inner })
    }

    pub fn backend(&self) -> Backend {
        match &self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }
}

// The operations the rest of the code uses. Each dispatches to the backend.
impl Store {
    /// Applies pending migrations (`migrations/sqlite` or `migrations/postgres`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        todo!("store helper")
    }

    /// A cheap query, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        todo!("store helper")
    }

    /// Handles one inbound message atomically: if `msg.message_sid` was seen before,
    /// returns `Duplicate` and writes nothing (and does not call `step`). Otherwise calls
    /// `step` with the conversation's current state and commits, in one transaction,
    /// the inbound row, the new state and one outbox row per reply.
    ///
    /// One contact at a time: on Postgres the contact is locked for the whole step,
    /// also against other instances. The caller serializes within the process.
    /// `step` may be called again if another process changed the conversation meanwhile.
    pub async fn process_inbound<F, Fut>(
        &self,
        msg: &NewInbound,
        step: F,
    ) -> Result<InboundOutcome, StoreError>
    where
        F: FnMut(Option<ConversationState>) -> Fut + Send,
        Fut: Future<Output = StepOutput> + Send,
    {
        let _ = (msg, step);
        todo!("store helper")
    }

    /// The conversation's current state, if it has one.
    pub async fn conversation(
        &self,
        bot: &str,
        contact: &str,
    ) -> Result<Option<ConversationState>, StoreError> {
        let _ = (bot, contact);
        todo!("store helper")
    }

    /// Claims up to `limit` due rows: queued rows whose `next_attempt_at` has come, and
    /// `sending` rows whose lease expired; only the oldest unfinished row of each
    /// conversation. Claimed rows become `sending` with a fresh `claim_token`, a lease
    /// until `now + lease`, and `attempts + 1`. Never hands one row to two claimers.
    pub async fn claim_due(&self, req: ClaimRequest) -> Result<Vec<OutboxRow>, StoreError> {
        let _ = req;
        todo!("store helper")
    }

    /// Records how a send ended. `false` when the claim was lost (token no longer
    /// matches), in which case nothing changes.
    pub async fn complete_send(
        &self,
        id: i64,
        claim_token: i64,
        result: &SendResult,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let _ = (id, claim_token, result, now_ms);
        todo!("store helper")
    }

    /// Gives a claimed row back (shutdown): `queued` again, due now, attempt not counted.
    pub async fn release_claim(&self, id: i64, claim_token: i64) -> Result<(), StoreError> {
        let _ = (id, claim_token);
        todo!("store helper")
    }

    /// Applies a status callback if it moves the row forward; `true` when it did.
    pub async fn apply_status(&self, update: &StatusUpdate) -> Result<bool, StoreError> {
        let _ = update;
        todo!("store helper")
    }

    /// When the next row becomes claimable (earliest due retry or lease expiry).
    pub async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        todo!("store helper")
    }

    /// Deletes finished outbox rows and inbound rows older than `before_ms`.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let _ = before_ms;
        todo!("store helper")
    }

    pub async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        todo!("store helper")
    }

    /// Every outbox row of one conversation, oldest first.
    pub async fn outbox_for(&self, bot: &str, contact: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let _ = (bot, contact);
        todo!("store helper")
    }

    /// How many inbound messages are recorded for a bot.
    pub async fn inbound_count(&self, bot: &str) -> Result<i64, StoreError> {
        let _ = bot;
        todo!("store helper")
    }
}
