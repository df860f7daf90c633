//! All SQL lives here: one [`Store`] type the rest of the code calls, over SQLite
//! (the embedded default) or Postgres (production, several instances).
//!
//! Times are integer milliseconds since the Unix epoch, passed in by the caller, so
//! both backends store the same portable `BIGINT`s and tests can move the clock.
//!
//! Layout: `sql` holds the query text and query code both backends share (most of
//! it), `record` maps rows to the public types, and `sqlite`/`postgres` hold only
//! what differs: connecting, how one contact's messages are serialized around the
//! conversation step, claiming, and LISTEN/NOTIFY. Nothing outside this module
//! sees SQL or a pool.

#[macro_use]
mod sql;
mod history;
mod postgres;
mod record;
mod sqlite;

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use crate::domain::{ContactMark, ConversationState, OutboxStatus, SideEffects};
use crate::message::{Reply, ReplyKind};

pub use broadcast::{BroadcastProgress, NewBroadcast};
pub use handoff::{HandedOff, HandoffMessage, NoticeOutcome, NoticeRow};
pub use history::{StatusEvent, BY_CONSOLE};
pub use outbound::{
    CancelStart, DueTimeout, IfActive, InsertedStart, NewStart, PersonWritten, StartRow,
    StartStatus, StartStep, StartWritten, TimeoutWritten,
};
pub use postgres::OutboxListener;

/// Runs the same code on either backend: `$body` is expanded once per backend,
/// with `$pool` bound to that backend's pool (Postgres) or its one write
/// connection (SQLite). Used for the queries in `sql` that
/// are identical on both.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.inner {
            Inner::Sqlite(backend) => {
                let mut writer = backend.writer().await?;
                let $pool = &mut *writer;
                $body
            }
            Inner::Postgres(backend) => {
                let $pool = &backend.pool;
                $body
            }
        }
    };
}

/// Like [`on_pool!`], for reads that must not queue behind writes: on SQLite
/// the read connections (the write connection only for `:memory:`, which has
/// no others).
macro_rules! on_read_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.sqlite_readers() {
            Some($pool) => $body,
            None => on_pool!($store, |$pool| $body),
        }
    };
}

// After the macros above, which they use.
mod broadcast;
mod console;
mod handoff;
mod outbound;

pub use console::{
    ConversationDetail, ConversationSummary, Cursor, InboundRow, Page, TimelineEntry, TimelinePage,
    CANCELLED_MESSAGE,
};

/// How many times `process_inbound` steps one message when the conversation keeps
/// changing underneath it. Each retry means another message of the same contact
/// committed, so this only runs out under a storm of messages from one contact
/// that nobody serialized.
const MAX_STEP_ATTEMPTS: u32 = 50;

/// Pauses before trying a failed write of a stepped message again (the step
/// is not run again): a dropped connection or a busy database often passes
/// within these 1.75 s, and a webhook's deadline bounds them anyway.
const WRITE_RETRIES: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];

/// How a backend's write of a stepped message came out.
enum Written {
    /// Committed: inbound row, conversation and replies.
    Done,
    /// The SID was recorded meanwhile (by another contact's message); nothing written.
    Duplicate,
    /// Nothing written: the conversation is no longer as the step read it, or
    /// the write's fate is unknown; read again (and step again if still new).
    LookAgain,
}

/// One message's way through a backend: on Postgres its turn at the contact,
/// or none for a step that may run again; nothing on SQLite, whose one process
/// serializes contacts itself.
enum StepTurn<'a> {
    Sqlite(&'a sqlite::SqliteStore),
    Postgres(&'a postgres::PgStore, Option<postgres::PgTurn>),
}

impl StepTurn<'_> {
    /// On Postgres without a turn: makes the message take one from now on
    /// (`true`). Otherwise nothing changes (`false`).
    fn take_turn(&mut self, msg: &NewInbound) -> bool {
        match self {
            StepTurn::Postgres(p, turn @ None) => {
                *turn = Some(p.turn(msg));
                true
            }
            _ => false,
        }
    }

    /// What the step may do: effects are refused only while a Postgres
    /// message has no turn.
    fn side_effects(&self) -> SideEffects {
        match self {
            StepTurn::Postgres(_, None) => SideEffects::Refused,
            _ => SideEffects::Allowed,
        }
    }
}

/// Whether a message's conversation step may be run more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepRuns {
    /// The step always has effects beyond its output: it runs once per
    /// message, so on Postgres the message takes the contact's turn first.
    Once,
    /// The step is first run with effects refused ([`SideEffects::Refused`]),
    /// which makes it repeatable: when another instance writes the contact's
    /// conversation meanwhile, it runs again on what that wrote, with the same
    /// result as if it had waited its turn. Saves Postgres the turn's two row
    /// writes. The message takes the turn after all (and steps again, effects
    /// allowed) when the step answers [`Stepped::NeedsTurn`], when the contact
    /// has no conversation yet, and when its write meets another message's.
    Repeatable,
}

/// What a conversation step answered.
#[derive(Debug)]
pub enum Stepped {
    Output(StepOutput),
    /// Only with effects refused: the step reached an effect (a script's HTTP
    /// call, host function or log line) and stopped; step again holding the turn.
    NeedsTurn,
}

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

/// The backend only: the pool's URL may hold a password.
impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Inner {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Why the store could not do what it was asked. The database's own error is
/// printed, not returned as `source`: log lines show an error with `{}`, and
/// sqlx's errors print their own causes already.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL `{0}` is not understood: use sqlite://PATH or postgres://...")]
    BadUrl(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The conversation changed under every one of `attempts` steps.
    #[error("conversation kept changing during {attempts} attempts to process a message")]
    Contention { attempts: u32 },
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        StoreError::Database(error)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> StoreError {
        StoreError::Migrate(error)
    }
}

impl StoreError {
    /// Whether the database is unreachable or overloaded right now (pool timeout,
    /// lost connection, server shutting down, SQLite busy) rather than the request
    /// being wrong: the HTTP layer answers 503 so Twilio retries later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => {
                    let Some(code) = db.code() else {
                        return false;
                    };
                    if db
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .is_some()
                    {
                        postgres_unavailable(&code)
                    } else {
                        sqlite_busy(&code)
                    }
                }
                _ => false,
            },
            StoreError::Contention { .. } => true,
            StoreError::BadUrl(_) | StoreError::Migrate(_) | StoreError::Corrupt(_) => false,
        }
    }
}

/// SQLSTATEs for a lost or refused connection (class 08), a server going down
/// (57P01-57P03) or out of resources (class 53), and 55000, which a new connection
/// gets while the database is not accepting connections (`ALLOW_CONNECTIONS false`,
/// as during maintenance).
fn postgres_unavailable(sqlstate: &str) -> bool {
    sqlstate.starts_with("08")
        || sqlstate.starts_with("53")
        || matches!(sqlstate, "57P01" | "57P02" | "57P03" | "55000")
}

/// SQLite's BUSY and LOCKED (primary codes 5 and 6, also as extended codes such
/// as 517, BUSY_SNAPSHOT): another connection held the lock past the busy timeout.
fn sqlite_busy(code: &str) -> bool {
    code.parse::<i32>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
}

/// The answer of [`Store::take_send_slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendSlot {
    /// Send now; the send is counted.
    Granted,
    /// The window is full; ask again after this long.
    Wait(Duration),
    /// This store does not share rate windows between processes.
    NotShared,
}

/// What [`Store::renew_claims`] found for one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Still held; its lease now runs until the time asked for.
    Renewed,
    /// No longer held: finished, released, or claimed by another sender after
    /// its lease expired. Its sender must not send it.
    Lost,
    /// Locked by another statement right now (Postgres; most likely the
    /// sender's own completion of that row), so neither renewed nor known lost.
    Busy,
}

/// Pool tuning for [`Store::connect_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the pool; `None` for the backend's default (Postgres 16;
    /// SQLite 4 for reads, beside its one write connection). An in-memory
    /// SQLite database always uses exactly one.
    pub max_connections: Option<u32>,
    /// How long an operation waits for a connection before failing with an error
    /// for which [`StoreError::is_unavailable`] holds, so an outage surfaces
    /// quickly instead of hanging requests.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            max_connections: None,
            acquire_timeout: Duration::from_secs(5),
        }
    }
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
    /// Which rules the sender applies before sending it.
    pub kind: ReplyKind,
    /// An interactive menu or template, sent through the Content API; `None`
    /// for text.
    pub content: Option<crate::message::Content>,
    /// When the contact opted out of this bot, as read with the row (a claim
    /// reads it as it claims); `None` while they may be sent to.
    pub contact_opted_out_at_ms: Option<i64>,
    /// When the contact's 24-hour WhatsApp window opened (their last message), as
    /// read with the row; `None` when they never wrote, or when Twilio reported
    /// the window closed and they have not written since.
    pub window_opened_at_ms: Option<i64>,
    /// A broadcast's message, sent after every due reply (SPEC §9.3).
    pub bulk: bool,
    /// What happened to it, oldest first, from `queued` on (SPEC §10.1). Read
    /// only for a timeline; empty for rows read to be sent.
    pub history: Vec<StatusEvent>,
}

/// What the store knows about one contact of one bot besides their
/// conversation (SPEC §8.2, §8.3; for the contact API of §10).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContactStatus {
    /// When they opted out; `None` while they may be sent to.
    pub opted_out_at_ms: Option<i64>,
    /// When they last wrote: their WhatsApp window runs 24 hours from here.
    pub last_inbound_at_ms: Option<i64>,
    /// When Twilio reported their window closed (63016), if it has not been
    /// reopened by a message of theirs since.
    pub window_closed_at_ms: Option<i64>,
}

/// A claim on due rows, valid until `lease` has passed.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest {
    pub now_ms: i64,
    pub lease: Duration,
    pub limit: usize,
    /// Of `limit`, how many may be broadcast messages (taken only after every
    /// due reply, SPEC §9.3); the sender keeps the rest of its sends for
    /// replies.
    pub bulk_limit: usize,
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

/// One finished send attempt, for [`Store::complete_sends`].
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: i64,
    /// The token of the claim the send was made under.
    pub claim_token: i64,
    pub result: SendResult,
    pub now_ms: i64,
}

impl Completion {
    /// The columns [`sql::COMPLETE_SEND`] writes: status, SID, next attempt,
    /// error code, error message (`None` leaves SID and next attempt as they were).
    fn columns(
        &self,
    ) -> (
        OutboxStatus,
        Option<&str>,
        Option<i64>,
        Option<i64>,
        Option<&str>,
    ) {
        match &self.result {
            SendResult::Sent { sid } => (OutboxStatus::Sent, Some(sid.as_str()), None, None, None),
            SendResult::Retry {
                next_attempt_at_ms,
                error_code,
                error_message,
            } => (
                OutboxStatus::Queued,
                None,
                Some(*next_attempt_at_ms),
                *error_code,
                Some(error_message.as_str()),
            ),
            SendResult::Failed {
                error_code,
                error_message,
            } => (
                OutboxStatus::Failed,
                None,
                None,
                *error_code,
                Some(error_message.as_str()),
            ),
        }
    }

    /// Binds [`sql::COMPLETE_SEND`]'s parameters.
    fn bind<'q, DB>(
        &'q self,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    ) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        DB: sqlx::Database,
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        let (status, sid, next_attempt_at, error_code, error_message) = self.columns();
        query
            .bind(self.id)
            .bind(self.claim_token)
            .bind(status.as_str())
            .bind(sid)
            .bind(next_attempt_at)
            .bind(error_code)
            .bind(error_message)
            .bind(self.now_ms)
            .bind(self.history_line())
    }

    /// The attempt's line of the row's history, as [`sql::COMPLETE_SEND`]
    /// takes it.
    fn history_line(&self) -> String {
        history::attempt_line(&self.result, self.now_ms)
    }
}

/// A status callback from Twilio.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub bot: String,
    pub sid: String,
    pub status: OutboxStatus,
    pub error_code: Option<i64>,
    /// What the error code means, recorded with it.
    pub error_message: Option<String>,
    pub now_ms: i64,
}

/// The migrations this binary applies, to tell `/readyz` what "migrated" means.
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// What [`Store::schema`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Every migration this binary knows is applied (later ones may be too).
    Current,
    /// `missing` of this binary's `known` migrations are not applied (all of
    /// them on an empty database).
    NotMigrated { missing: Vec<i64>, known: usize },
}

/// See [`Store::hold_writer`].
#[doc(hidden)]
pub struct WriterHold(#[allow(dead_code)] sqlite::HeldWriter);

impl std::fmt::Debug for WriterHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterHold")
    }
}

/// Rows by status, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    /// One entry per status, in [`OutboxStatus::ALL`] order, zeros included (so a
    /// gauge drops back to 0 when its last row moves on).
    pub counts: Vec<(OutboxStatus, i64)>,
}

impl OutboxDepth {
    /// Rows in `status`.
    pub fn count(&self, status: OutboxStatus) -> i64 {
        self.counts
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }
}

impl Store {
    /// Connects (creating a SQLite file if missing) without migrating.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, &StoreOptions::default()).await
    }

    /// [`Store::connect`] with pool tuning.
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let inner = if url.starts_with("sqlite:") {
            Inner::Sqlite(sqlite::SqliteStore::connect(url, options).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Inner::Postgres(postgres::PgStore::connect(url, options).await?)
        } else {
            return Err(StoreError::BadUrl(crate::config::redact_url(url)));
        };
        Ok(Store { inner })
    }

    pub fn backend(&self) -> Backend {
        match &self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// SQLite's read connections, when it has them (not for `:memory:`), for
    /// [`on_read_pool!`]; `None` sends reads to [`on_pool!`].
    fn sqlite_readers(&self) -> Option<&sqlx::SqlitePool> {
        match &self.inner {
            Inner::Sqlite(backend) => backend.readers(),
            Inner::Postgres(_) => None,
        }
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        match &self.inner {
            Inner::Sqlite(s) => s.close().await,
            Inner::Postgres(p) => p.pool.close().await,
        }
    }
}

// The operations the rest of the code uses. Each dispatches to the backend.
impl Store {
    /// Applies pending migrations (`migrations/sqlite` or `migrations/postgres`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.inner {
            Inner::Sqlite(s) => s.migrate().await,
            Inner::Postgres(p) => p.migrate().await,
        }
    }

    /// A cheap query, for `/readyz`; on SQLite on a read connection, so it never
    /// waits for a write.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_read_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Whether every migration this binary knows has been applied, for
    /// `/readyz`. Reads `_sqlx_migrations` (on SQLite on a read connection).
    pub async fn schema(&self) -> Result<SchemaStatus, StoreError> {
        let (exists_sql, migrator) = match &self.inner {
            Inner::Sqlite(_) => (
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                &SQLITE_MIGRATIONS,
            ),
            Inner::Postgres(_) => (
                "SELECT COUNT(*) FROM pg_catalog.pg_class c \
                 WHERE c.oid = to_regclass('_sqlx_migrations')",
                &POSTGRES_MIGRATIONS,
            ),
        };
        let known: Vec<i64> = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
            .collect();
        let exists: i64 = on_read_pool!(self, |pool| sqlx::query_scalar(exists_sql)
            .fetch_one(pool)
            .await)?;
        let applied: Vec<i64> = if exists > 0 {
            on_read_pool!(self, |pool| sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success"
            )
            .fetch_all(pool)
            .await)?
        } else {
            Vec::new()
        };
        let missing: Vec<i64> = known
            .iter()
            .copied()
            .filter(|v| !applied.contains(v))
            .collect();
        Ok(if missing.is_empty() {
            SchemaStatus::Current
        } else {
            SchemaStatus::NotMigrated {
                missing,
                known: known.len(),
            }
        })
    }

    /// Holds SQLite's write connection until the hold is dropped, as a long
    /// write would; `None` on Postgres. For tests of what must not queue behind
    /// writes.
    #[doc(hidden)]
    pub async fn hold_writer(&self) -> Option<WriterHold> {
        match &self.inner {
            Inner::Sqlite(s) => Some(WriterHold(s.hold_writer().await)),
            Inner::Postgres(_) => None,
        }
    }

    /// Handles one inbound message atomically: if `msg.message_sid` was seen before,
    /// returns `Duplicate` and writes nothing (and does not call `step`). Otherwise calls
    /// `step` with the conversation's current state and commits, in one transaction,
    /// the inbound row, the new state and one outbox row per reply.
    ///
    /// No connection or transaction is held while `step` runs (SPEC §7): the state
    /// is read, `step` runs, and the write checks that the conversation is still
    /// as read. One contact at a time: on Postgres this message first takes the
    /// contact's turn, also against other instances, and the write gives it back;
    /// the caller serializes within the process. A write that fails for a reason
    /// that passes (a lost connection, a busy database) is tried again with the
    /// same step output, so `step` (and its script HTTP calls) runs once per
    /// message; it runs again only if the conversation changed under it, which
    /// takes a writer outside these rules (another process on SQLite, or a step
    /// that outlived its turn).
    ///
    /// Outbox rows are due at `msg.received_at_ms`. The conversation row stores
    /// the new state's `updated_at_ms` as given.
    pub async fn process_inbound<F, Fut>(
        &self,
        msg: &NewInbound,
        step: F,
    ) -> Result<InboundOutcome, StoreError>
    where
        F: FnMut(Option<ConversationState>) -> Fut + Send,
        Fut: Future<Output = StepOutput> + Send,
    {
        let mut step = step;
        self.process_inbound_as(msg, StepRuns::Once, move |state, _| {
            let stepped = step(state);
            async move { Stepped::Output(stepped.await) }
        })
        .await
    }

    /// [`Store::process_inbound`] for a step that may run more than once
    /// ([`StepRuns`]). On Postgres a [`StepRuns::Repeatable`] message first takes
    /// no turn: it reads, steps with effects refused and writes with the version
    /// check, as SQLite does. The write fails when another message holds the
    /// turn or wrote first; the message then takes the turn, so the contact's
    /// messages still take effect one at a time and an effect happens once.
    /// SQLite steps with effects allowed: its one process serializes contacts.
    pub async fn process_inbound_as<F, Fut>(
        &self,
        msg: &NewInbound,
        runs: StepRuns,
        mut step: F,
    ) -> Result<InboundOutcome, StoreError>
    where
        F: FnMut(Option<ConversationState>, SideEffects) -> Fut + Send,
        Fut: Future<Output = Stepped> + Send,
    {
        let mut turn = match &self.inner {
            Inner::Sqlite(s) => StepTurn::Sqlite(s),
            Inner::Postgres(p) => {
                StepTurn::Postgres(p, (runs == StepRuns::Once).then(|| p.turn(msg)))
            }
        };
        for _ in 0..MAX_STEP_ATTEMPTS {
            let lookup = match &mut turn {
                StepTurn::Sqlite(s) => s.lookup(msg).await?,
                StepTurn::Postgres(p, Some(turn)) => p.take_turn(msg, turn).await?,
                StepTurn::Postgres(p, None) => p.lookup(msg).await?,
            };
            if lookup.seen {
                return Ok(InboundOutcome::Duplicate);
            }
            let current = lookup.conversation();
            // A contact's first message takes the turn: a turned step's write
            // is protected from a turnless one by the conversation row (taking
            // a turn bumps its version), and there is none yet.
            if current.is_none() && turn.take_turn(msg) {
                continue;
            }
            let state = current
                .as_ref()
                .map(record::ConversationRecord::state)
                .transpose()?;
            let out = match step(state, turn.side_effects()).await {
                Stepped::Output(out) => out,
                Stepped::NeedsTurn => {
                    turn.take_turn(msg);
                    continue;
                }
            };
            let mut failures = 0;
            let written = loop {
                let written = match &mut turn {
                    StepTurn::Sqlite(s) => s.write_step(msg, current.as_ref(), &out).await,
                    StepTurn::Postgres(p, turn) => {
                        p.write_step(msg, current.as_ref(), &out, turn.as_mut())
                            .await
                    }
                };
                match written {
                    Err(error) if error.is_unavailable() && failures < WRITE_RETRIES.len() => {
                        tracing::warn!(bot = %msg.bot, message_sid = %msg.message_sid, %error, "writing a stepped message failed; trying the write again");
                        tokio::time::sleep(WRITE_RETRIES[failures]).await;
                        failures += 1;
                    }
                    written => break written?,
                }
            };
            match written {
                Written::Done => {
                    return Ok(InboundOutcome::Processed {
                        replies: out.replies.len(),
                    })
                }
                Written::Duplicate => return Ok(InboundOutcome::Duplicate),
                // Another message holds the turn or wrote first: wait in line
                // rather than race it again.
                Written::LookAgain => {
                    turn.take_turn(msg);
                }
            }
        }
        Err(StoreError::Contention {
            attempts: MAX_STEP_ATTEMPTS,
        })
    }

    /// The conversation's current state, if it has one.
    pub async fn conversation(
        &self,
        bot: &str,
        contact: &str,
    ) -> Result<Option<ConversationState>, StoreError> {
        let found: Option<record::ConversationRecord> = on_pool!(self, |pool| {
            sqlx::query_as(sql::LOAD_CONVERSATION)
                .bind(bot)
                .bind(contact)
                .fetch_optional(pool)
                .await
        })?;
        found
            .as_ref()
            .map(record::ConversationRecord::state)
            .transpose()
    }

    /// What the store knows of `contact` besides their conversation; `None` for
    /// a contact who never wrote to this bot.
    pub async fn contact_status(
        &self,
        bot: &str,
        contact: &str,
    ) -> Result<Option<ContactStatus>, StoreError> {
        let found: Option<(Option<i64>, Option<i64>, Option<i64>)> = on_read_pool!(self, |pool| {
            sqlx::query_as(sql::CONTACT_STATUS)
                .bind(bot)
                .bind(contact)
                .fetch_optional(pool)
                .await
        })?;
        Ok(
            found.map(|(opted_out, last_inbound, window_closed)| ContactStatus {
                opted_out_at_ms: opted_out,
                last_inbound_at_ms: last_inbound,
                window_closed_at_ms: window_closed,
            }),
        )
    }

    /// Records `mark` at `now_ms` for the contact of conversation
    /// `conversation_id`, whom a message queued at `queued_at_ms` failed to reach.
    /// `false` when nothing changed: the contact had opted out already, or
    /// (for a closed window) wrote after that message was queued, so their
    /// message opened a new window.
    pub async fn mark_contact(
        &self,
        conversation_id: i64,
        queued_at_ms: i64,
        mark: ContactMark,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let changed = on_pool!(self, |pool| {
            match mark {
                ContactMark::OptedOut => sqlx::query(sql::MARK_OPTED_OUT)
                    .bind(conversation_id)
                    .bind(now_ms)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected()),
                ContactMark::WindowClosed => sqlx::query(sql::MARK_WINDOW_CLOSED)
                    .bind(conversation_id)
                    .bind(now_ms)
                    .bind(queued_at_ms)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected()),
            }
        })?;
        Ok(changed > 0)
    }

    /// The SID of the Content resource created for `bot`'s menu `shape`, if one
    /// was (by any instance).
    pub async fn content_resource(
        &self,
        bot: &str,
        shape: &str,
    ) -> Result<Option<String>, StoreError> {
        let sid: Option<String> =
            on_read_pool!(self, |pool| sqlx::query_scalar(sql::CONTENT_RESOURCE)
                .bind(bot)
                .bind(shape)
                .fetch_optional(pool)
                .await)?;
        Ok(sid)
    }

    /// Remembers `sid` as the Content resource of `bot`'s menu `shape` and
    /// returns the SID every instance will use: `sid`, or the one another
    /// instance remembered first (then `sid` is left unused).
    pub async fn remember_content_resource(
        &self,
        bot: &str,
        shape: &str,
        sid: &str,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        on_pool!(self, |pool| sqlx::query(sql::REMEMBER_CONTENT_RESOURCE)
            .bind(bot)
            .bind(shape)
            .bind(sid)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        let stored: Option<String> =
            on_pool!(self, |pool| sqlx::query_scalar(sql::CONTENT_RESOURCE)
                .bind(bot)
                .bind(shape)
                .fetch_optional(pool)
                .await)?;
        Ok(stored.unwrap_or_else(|| sid.to_owned()))
    }

    /// [`Store::mark_contact`] for the contact of the message Twilio knows as
    /// `sid` (a status callback); `false` when `bot` sent no message with it.
    pub async fn mark_contact_of_message(
        &self,
        bot: &str,
        sid: &str,
        mark: ContactMark,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let found: Option<(i64, i64)> = on_pool!(self, |pool| {
            sqlx::query_as(sql::SENT_MESSAGE)
                .bind(bot)
                .bind(sid)
                .fetch_optional(pool)
                .await
        })?;
        match found {
            Some((conversation_id, queued_at_ms)) => {
                self.mark_contact(conversation_id, queued_at_ms, mark, now_ms)
                    .await
            }
            None => Ok(false),
        }
    }

    /// Claims up to `limit` due rows: queued rows whose `next_attempt_at` has come, and
    /// `sending` rows whose lease expired; only the oldest unfinished row of each
    /// conversation. Claimed rows become `sending` with a fresh `claim_token`, a lease
    /// until `now + lease`, and `attempts + 1`. Never hands one row to two claimers.
    ///
    /// Replies come before broadcast messages (at most `bulk_limit` of those).
    /// Rows come back in claim order: replies first, then by
    /// `next_attempt_at`, then id.
    pub async fn claim_due(&self, req: ClaimRequest) -> Result<Vec<OutboxRow>, StoreError> {
        let mut rows = self.claim_replies(req).await?;
        let room = req.bulk_limit.min(req.limit.saturating_sub(rows.len()));
        let bulk = ClaimRequest {
            limit: room,
            bulk_limit: room,
            ..req
        };
        rows.extend(self.claim_bulk(bulk, |_| usize::MAX).await?);
        Ok(rows)
    }

    /// The first half of [`Store::claim_due`]: due replies and expired
    /// claims only, in claim order.
    pub async fn claim_replies(&self, req: ClaimRequest) -> Result<Vec<OutboxRow>, StoreError> {
        // One token per claim: a row's completion must present the token of the
        // claim that holds it, and a reclaim after a lease expiry draws a new one.
        let token: i64 = rand::random();
        let mut rows = match &self.inner {
            Inner::Sqlite(s) => s.claim_due(req, token).await?,
            Inner::Postgres(p) => p.claim_due(req, token).await?,
        };
        // RETURNING gives no order.
        rows.sort_by_key(|r| (r.bulk, r.next_attempt_at_ms, r.id));
        Ok(rows)
    }

    /// The second half of [`Store::claim_due`]: up to `req.limit` due
    /// broadcast messages, at most `bulk_room(bot)` of a bot's. The room is
    /// shared between the bots that have some due, each bot's oldest first
    /// (SPEC §9.3: one bot's broadcast waiting on its `max_per_second` holds
    /// back no other bot's); a bot that takes less than its share leaves the
    /// rest to the others.
    pub async fn claim_bulk(
        &self,
        req: ClaimRequest,
        bulk_room: impl Fn(&str) -> usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut room = req.limit;
        let mut rows = Vec::new();
        if room == 0 {
            return Ok(rows);
        }
        let mut bots: Vec<(String, usize)> = self
            .bulk_bots()
            .await?
            .into_iter()
            .filter(|(_, due)| due.is_some_and(|due| due <= req.now_ms))
            .map(|(bot, _)| {
                let allowed = bulk_room(&bot);
                (bot, allowed)
            })
            .filter(|(_, allowed)| *allowed > 0)
            .collect();
        // When there is room for fewer rows than bots, a different bot goes
        // first each time.
        if !bots.is_empty() {
            let first = rand::random::<usize>() % bots.len();
            bots.rotate_left(first);
        }
        let token: i64 = rand::random();
        let mut left = bots.len();
        for (bot, allowed) in bots {
            if room == 0 {
                break;
            }
            let share = room.div_ceil(left).min(allowed);
            left -= 1;
            let req = ClaimRequest {
                limit: share,
                ..req
            };
            let claimed = match &self.inner {
                Inner::Sqlite(s) => s.claim_bulk(req, token, &bot).await?,
                Inner::Postgres(p) => p.claim_bulk(req, token, &bot).await?,
            };
            room = room.saturating_sub(claimed.len());
            rows.extend(claimed);
        }
        rows.sort_by_key(|r| (r.next_attempt_at_ms, r.id));
        Ok(rows)
    }

    /// Each bot with broadcast messages queued, and when its first that heads
    /// its line falls due (`None`: every one waits behind a reply).
    async fn bulk_bots(&self) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        let bots = on_pool!(self, |pool| {
            sqlx::query_as(sql::BULK_BOTS).fetch_all(pool).await
        })?;
        Ok(bots)
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
        let done = self
            .complete_sends(&[Completion {
                id,
                claim_token,
                result: result.clone(),
                now_ms,
            }])
            .await?;
        Ok(done.first().copied().unwrap_or(false))
    }

    /// Records several send outcomes at once, in one transaction (one commit, one
    /// WAL flush, for the whole batch): answers, in `batch` order, whether each
    /// claim was still held and so recorded, as [`Store::complete_send`] does.
    pub async fn complete_sends(&self, batch: &[Completion]) -> Result<Vec<bool>, StoreError> {
        match batch {
            [] => Ok(Vec::new()),
            [one] => {
                // One statement, autocommitted: the common case at low rates.
                let changed = on_pool!(self, |pool| {
                    one.bind(sqlx::query(sql::COMPLETE_SEND))
                        .execute(pool)
                        .await
                        .map(|done| done.rows_affected())
                })?;
                Ok(vec![changed > 0])
            }
            _ => match &self.inner {
                Inner::Sqlite(s) => s.complete_sends(batch).await,
                Inner::Postgres(p) => p.complete_sends(batch).await,
            },
        }
    }

    /// Extends a claim this sender still holds until `lease_until_ms`; `false` when
    /// the claim was lost (its lease expired and another sender took the row).
    pub async fn renew_claim(
        &self,
        id: i64,
        claim_token: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, |pool| {
            sqlx::query(sql::RENEW_CLAIM)
                .bind(id)
                .bind(claim_token)
                .bind(lease_until_ms)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }

    /// Extends every claim of `claims` (`(id, token)` pairs) still held until
    /// `lease_until_ms`, in one statement however many there are; answers, in
    /// `claims` order, what it found for each. A claim that is no longer held is
    /// left as it is, so this can never take a row from the sender holding it.
    /// On Postgres a row another transaction has locked is passed over
    /// ([`Renewal::Busy`]) rather than waited for: the caller's own completions
    /// lock the same rows in another order, and waiting could deadlock.
    pub async fn renew_claims(
        &self,
        claims: &[(i64, i64)],
        lease_until_ms: i64,
    ) -> Result<Vec<Renewal>, StoreError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        match &self.inner {
            Inner::Sqlite(s) => s.renew_claims(claims, lease_until_ms).await,
            Inner::Postgres(p) => p.renew_claims(claims, lease_until_ms).await,
        }
    }

    /// Gives a claimed row back (shutdown): `queued` again, due now, attempt not counted.
    /// Does nothing when the claim was already lost.
    pub async fn release_claim(&self, id: i64, claim_token: i64) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query(sql::RELEASE_CLAIM)
                .bind(id)
                .bind(claim_token)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Applies a status callback if it moves the row forward; `true` when it did.
    /// Idempotent and insensitive to the order callbacks arrive in. An error code
    /// is kept only with `undelivered` and `failed`.
    pub async fn apply_status(&self, update: &StatusUpdate) -> Result<bool, StoreError> {
        let event = StatusEvent::callback(
            update.status,
            update.error_code,
            update.error_message.as_deref(),
            update.now_ms,
        )
        .line();
        let changed = on_pool!(self, |pool| {
            sqlx::query(sql::APPLY_STATUS.as_str())
                .bind(update.status.as_str())
                .bind(i64::from(update.status.rank()))
                .bind(update.error_code)
                .bind(update.now_ms)
                .bind(&update.bot)
                .bind(&update.sid)
                .bind(update.error_message.as_deref())
                .bind(&event)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(changed > 0)
    }

    /// When the next row becomes claimable (earliest due retry or lease expiry).
    /// Rows waiting behind an earlier unfinished reply of their conversation do
    /// not count: they become claimable when that one finishes. Broadcast
    /// messages count only with `with_bulk` (the sender has room for them).
    pub async fn next_due_at(&self, with_bulk: bool) -> Result<Option<i64>, StoreError> {
        let due: Option<i64> = on_pool!(self, |pool| {
            sqlx::query_scalar(sql::NEXT_DUE_AT).fetch_one(pool).await
        })?;
        if !with_bulk {
            return Ok(due);
        }
        let bulk = self
            .bulk_bots()
            .await?
            .into_iter()
            .filter_map(|(_, due)| due);
        Ok(due.into_iter().chain(bulk).min())
    }

    /// Deletes finished outbox rows (sent, delivered, read, undelivered, failed)
    /// last updated before `before_ms`, and inbound rows received before it.
    /// Returns how many rows went. Conversations are kept (see `sql::PRUNE_OUTBOX`).
    ///
    /// On Postgres it then vacuums both tables, so the space of the deleted rows
    /// (and of the outbox's updated ones) is reused even where autovacuum is off
    /// or behind; otherwise a queue table grows on disk while its live rows stay
    /// level (docs/decisions.md, "Found by the soak").
    pub async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let deleted = on_pool!(self, |pool| {
            async {
                let mut tx = sqlx::Acquire::begin(pool).await?;
                let outbox = sqlx::query(sql::PRUNE_OUTBOX)
                    .bind(before_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let inbound = sqlx::query(sql::PRUNE_INBOUND)
                    .bind(before_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok::<_, sqlx::Error>(outbox + inbound)
            }
            .await
        })?;
        // Only after deleting something: vacuuming a table that is still empty
        // (the first prune runs at start-up) would record "0 rows" as its
        // statistics, and where autovacuum is off nothing corrects that, so the
        // planner picks sequential scans for claims and lookups as it grows.
        if let (Inner::Postgres(p), true) = (&self.inner, deleted > 0) {
            // Not in a transaction (VACUUM refuses one): a plain statement. No
            // ANALYZE: it holds a snapshot for its whole run, and while one is
            // held the outbox's dead index entries cannot be skipped, so every
            // claim walks them all.
            sqlx::query("VACUUM outbox, inbound_messages")
                .execute(&p.pool)
                .await?;
        }
        Ok(deleted)
    }

    /// Outbox rows by status, every status listed.
    pub async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        let rows: Vec<(String, i64)> = on_read_pool!(self, |pool| {
            sqlx::query_as(sql::OUTBOX_DEPTH).fetch_all(pool).await
        })?;
        let mut counts: Vec<(OutboxStatus, i64)> =
            OutboxStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for (name, n) in rows {
            let status = OutboxStatus::parse(&name)
                .ok_or_else(|| StoreError::Corrupt(format!("outbox status `{name}`")))?;
            if let Some(entry) = counts.iter_mut().find(|(s, _)| *s == status) {
                entry.1 = n;
            }
        }
        Ok(OutboxDepth { counts })
    }

    /// Every outbox row of one conversation, oldest first. A diagnostic: it
    /// scans the outbox, as no index serves it (one would cost every reply three
    /// more index entries; migration 0005 on Postgres).
    pub async fn outbox_for(&self, bot: &str, contact: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let records: Vec<record::OutboxRecord> = on_pool!(self, |pool| {
            sqlx::query_as(sql::OUTBOX_FOR)
                .bind(bot)
                .bind(contact)
                .fetch_all(pool)
                .await
        })?;
        record::outbox_rows(records)
    }

    /// How many inbound messages are recorded for a bot.
    pub async fn inbound_count(&self, bot: &str) -> Result<i64, StoreError> {
        let n: i64 = on_pool!(self, |pool| {
            sqlx::query_scalar(sql::INBOUND_COUNT)
                .bind(bot)
                .fetch_one(pool)
                .await
        })?;
        Ok(n)
    }

    /// Wakes senders in other instances: Postgres `NOTIFY`; nothing on SQLite,
    /// where the one process wakes its sender in memory. Coalescing is the
    /// caller's business.
    pub async fn notify_outbox(&self) -> Result<(), StoreError> {
        match &self.inner {
            Inner::Sqlite(_) => Ok(()),
            Inner::Postgres(p) => p.notify_outbox().await,
        }
    }

    /// Takes one send for `bot` in the rate window shared by every instance:
    /// [`SendSlot::Granted`] when fewer than `max` sends happened in the last
    /// `window` (by the database's clock), [`SendSlot::Wait`] with the time until
    /// the oldest leaves the window otherwise. On SQLite, one process, the caller
    /// limits in memory: [`SendSlot::NotShared`].
    pub async fn take_send_slot(
        &self,
        bot: &str,
        max: u32,
        window: Duration,
    ) -> Result<SendSlot, StoreError> {
        match &self.inner {
            Inner::Sqlite(_) => Ok(SendSlot::NotShared),
            Inner::Postgres(p) => p.take_send_slot(bot, max, window).await,
        }
    }

    /// A listener for [`Store::notify_outbox`]; `None` on SQLite.
    pub async fn listen_outbox(&self) -> Result<Option<OutboxListener>, StoreError> {
        match &self.inner {
            Inner::Sqlite(_) => Ok(None),
            Inner::Postgres(p) => p.listen_outbox().await.map(Some),
        }
    }
}

/// A connection idle this long is checked with a ping before it is handed out;
/// a busy one is not (sqlx's default pings on every acquire, a round trip per
/// transaction). A connection that died meanwhile fails its next statement, which
/// answers 503 or is retried, and sqlx closes it.
const PING_IDLE_AFTER: Duration = Duration::from_secs(5);

/// The pools' `before_acquire` hook, see [`PING_IDLE_AFTER`].
fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if meta.idle_for >= PING_IDLE_AFTER {
            conn.ping().await?;
        }
        Ok(true)
    })
}

/// The lease's end, in ms.
fn lease_until(req: &ClaimRequest) -> i64 {
    let lease = i64::try_from(req.lease.as_millis()).unwrap_or(i64::MAX);
    req.now_ms.saturating_add(lease)
}

/// `LIMIT` as SQL wants it.
fn limit(req: &ClaimRequest) -> i64 {
    i64::try_from(req.limit).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_codes() {
        assert!(postgres_unavailable("08006"));
        assert!(postgres_unavailable("57P01"));
        assert!(postgres_unavailable("53300"));
        assert!(postgres_unavailable("55000"));
        assert!(!postgres_unavailable("23505"));
        assert!(sqlite_busy("5"));
        assert!(sqlite_busy("517"));
        assert!(!sqlite_busy("19"));
        assert!(!sqlite_busy("2067"));
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
    }
}
