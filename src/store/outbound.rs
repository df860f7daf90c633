//! Conversations the business starts (SPEC §9.1): the `starts` table (one row
//! per start asked for, now or later), claiming due ones across instances, and
//! the write of a start's step: the conversation, its replies and the start's
//! outcome in one transaction, after the same per-contact turn an inbound
//! message takes (no connection held while the step runs).
//!
//! The queries are the same text on both backends, except the claim, which on
//! Postgres passes over rows another instance is claiming (`SKIP LOCKED`).

use std::future::Future;
use std::time::Duration;

use serde_json::{Map, Value};

use super::record::{self, ConversationRecord, Lookup};
use super::sql;
use super::{Inner, NewInbound, StepOutput, StepTurn, Store, StoreError, MAX_STEP_ATTEMPTS};
use crate::domain::ConversationState;

/// What to do when the contact's conversation is live (SPEC §9.1 `if_active`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfActive {
    /// Move the conversation to the start's node (the default).
    #[default]
    Interrupt,
    /// Leave it as it is; the start is skipped with reason `active`.
    Skip,
}

impl IfActive {
    pub fn as_str(self) -> &'static str {
        match self {
            IfActive::Interrupt => "interrupt",
            IfActive::Skip => "skip",
        }
    }

    pub fn parse(s: &str) -> Option<IfActive> {
        match s {
            "interrupt" => Some(IfActive::Interrupt),
            "skip" => Some(IfActive::Skip),
            _ => None,
        }
    }
}

/// Where a start stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartStatus {
    /// Waiting for its time.
    Scheduled,
    /// Claimed by one instance, which is running it.
    Running,
    /// The node was entered.
    Started,
    /// Not run: the contact opted out, was busy (`if_active: skip`), was outside
    /// the 24-hour window... (`reason` says which).
    Skipped,
    /// Cancelled before it ran.
    Cancelled,
}

impl StartStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StartStatus::Scheduled => "scheduled",
            StartStatus::Running => "running",
            StartStatus::Started => "started",
            StartStatus::Skipped => "skipped",
            StartStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<StartStatus> {
        Some(match s {
            "scheduled" => StartStatus::Scheduled,
            "running" => StartStatus::Running,
            "started" => StartStatus::Started,
            "skipped" => StartStatus::Skipped,
            "cancelled" => StartStatus::Cancelled,
            _ => return None,
        })
    }
}

/// A start to record.
#[derive(Debug, Clone)]
pub struct NewStart {
    pub bot: String,
    pub contact: String,
    pub node: String,
    pub vars: Map<String, Value>,
    pub if_active: IfActive,
    /// When it is due; a start due now is inserted already claimed.
    pub run_at_ms: i64,
    pub idempotency_key: Option<String>,
    pub now_ms: i64,
}

/// One row of `starts`.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRow {
    pub id: i64,
    pub bot: String,
    pub contact: String,
    pub node: String,
    pub vars: Map<String, Value>,
    pub if_active: IfActive,
    pub run_at_ms: i64,
    pub status: StartStatus,
    pub reason: Option<String>,
    /// What the API answered the request that made it; `None` while that
    /// request is still running it.
    pub answer: Option<String>,
    pub created_at_ms: i64,
    /// The claim's token while [`StartStatus::Running`].
    pub claim_token: Option<i64>,
    /// The broadcast it is a contact of; its messages are then sent after
    /// every due reply (SPEC §9.3).
    pub broadcast_id: Option<i64>,
}

/// What [`Store::insert_start`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum InsertedStart {
    /// A new row (claimed by the caller when it was due at once).
    New(StartRow),
    /// A row with the same idempotency key existed: nothing was inserted.
    Existing(StartRow),
}

/// What [`Store::cancel_start`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStart {
    /// Cancelled now, or already before.
    Cancelled,
    /// It ran (or is running): too late.
    Ran(StartStatus),
    NotFound,
}

/// What a start's step decided.
#[derive(Debug, Clone)]
pub enum StartStep {
    /// Enter the node: write this state and queue these replies.
    Enter(StepOutput),
    /// Do nothing, for this reason (`opted_out`, `active`, `outside_window`...).
    Skip(String),
}

/// How [`Store::process_start`] came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartWritten {
    /// Committed: the conversation and `replies` outbox rows.
    Started { replies: usize },
    /// Committed as skipped, with the reason.
    Skipped(String),
    /// The claim was no longer ours (its lease lapsed and another instance took
    /// the start over, or it was finished): nothing written.
    Lost,
}

/// A conversation whose wait ran out, found by [`Store::due_timeouts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimeout {
    pub bot: String,
    pub contact: String,
    pub timeout_at_ms: i64,
}

/// How [`Store::process_timeout`] came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutWritten {
    /// The conversation moved on: its new state and `replies` outbox rows.
    Fired { replies: usize },
    /// The wait was gone (answered, moved on, fired elsewhere) or not over yet:
    /// nothing written.
    NotDue,
}

/// How [`Store::process_person`] came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonWritten {
    /// Committed: the conversation and `replies` outbox rows.
    Done { replies: usize },
    /// The step refused (the conversation is not handed off): nothing written.
    Refused,
}

/// What [`Store::write_outbound`] writes.
struct OutboundWrite<'a> {
    bot: &'a str,
    contact: &'a str,
    now_ms: i64,
    /// The conversation as the step read it.
    current: Option<&'a ConversationRecord>,
    /// The step's state and replies; `None` leaves the conversation alone.
    out: Option<&'a StepOutput>,
    /// The start whose outcome this is: id, claim token, status, reason.
    start: Option<(i64, i64, StartStatus, Option<&'a str>)>,
    /// The contact's turn on Postgres, given back with the write.
    turn_token: Option<i64>,
    /// The broadcast whose messages the replies are (`outbox.bulk`,
    /// `outbox.broadcast_id`).
    broadcast: Option<i64>,
}

/// How [`Store::write_outbound`] came out; only `Done` wrote anything.
enum OutboundWritten {
    Done,
    /// The start's claim is no longer held.
    ClaimLost,
    /// The conversation changed since it was read.
    Moved,
}

/// The contact's turn for a step no message of theirs caused (a start, a
/// timer): on Postgres their turn across instances, as a message takes it;
/// nothing on SQLite, whose one process serializes contacts itself.
struct OutsideTurn<'a> {
    /// Only its bot and contact are read: no inbound row is written, and the
    /// empty SID is never a recorded one.
    msg: NewInbound,
    turn: StepTurn<'a>,
}

impl<'a> OutsideTurn<'a> {
    fn new(store: &'a Store, bot: &str, contact: &str, now_ms: i64) -> OutsideTurn<'a> {
        let msg = NewInbound {
            bot: bot.to_owned(),
            contact: contact.to_owned(),
            message_sid: String::new(),
            body: String::new(),
            payload: Value::Null,
            received_at_ms: now_ms,
        };
        let turn = match &store.inner {
            Inner::Sqlite(s) => StepTurn::Sqlite(s),
            // Starts and timers may run scripts: they always take the turn.
            Inner::Postgres(p) => StepTurn::Postgres(p, Some(p.turn(&msg))),
        };
        OutsideTurn { msg, turn }
    }

    /// Takes the turn (waiting while another instance holds it) and reads the
    /// conversation.
    async fn look(&mut self) -> Result<Lookup, StoreError> {
        match &mut self.turn {
            StepTurn::Sqlite(s) => s.lookup(&self.msg).await,
            StepTurn::Postgres(p, Some(turn)) => p.take_turn(&self.msg, turn).await,
            StepTurn::Postgres(p, None) => p.lookup(&self.msg).await,
        }
    }

    /// The token a write presents to give the turn back (Postgres).
    fn token(&self) -> Option<i64> {
        match &self.turn {
            StepTurn::Sqlite(_) => None,
            StepTurn::Postgres(_, turn) => turn.as_ref().map(|turn| turn.token()),
        }
    }

    /// A committed write gave the turn back.
    fn given_back(&mut self) {
        if let StepTurn::Postgres(_, Some(turn)) = &mut self.turn {
            turn.given_back();
        }
    }
}

/// The columns of [`StartRecord`].
const START_COLUMNS: &str = "id, bot, contact, node, vars, if_active, run_at, status, reason, \
     answer, created_at, claim_token, broadcast_id";

/// A `starts` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct StartRecord {
    id: i64,
    bot: String,
    contact: String,
    node: String,
    vars: String,
    if_active: String,
    run_at: i64,
    status: String,
    reason: Option<String>,
    answer: Option<String>,
    created_at: i64,
    claim_token: Option<i64>,
    broadcast_id: Option<i64>,
}

impl StartRecord {
    fn row(self) -> Result<StartRow, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("start {}: {what}", self.id));
        let vars = serde_json::from_str(&self.vars)
            .map_err(|e| corrupt(format!("vars are not a JSON object: {e}")))?;
        let if_active = IfActive::parse(&self.if_active)
            .ok_or_else(|| corrupt(format!("if_active `{}`", self.if_active)))?;
        let status = StartStatus::parse(&self.status)
            .ok_or_else(|| corrupt(format!("status `{}`", self.status)))?;
        Ok(StartRow {
            id: self.id,
            bot: self.bot,
            contact: self.contact,
            node: self.node,
            vars,
            if_active,
            run_at_ms: self.run_at,
            status,
            reason: self.reason,
            answer: self.answer,
            created_at_ms: self.created_at,
            claim_token: self.claim_token,
            broadcast_id: self.broadcast_id,
        })
    }
}

fn rows(records: Vec<StartRecord>) -> Result<Vec<StartRow>, StoreError> {
    records.into_iter().map(StartRecord::row).collect()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The columns of a claimed start ([`StartRecord`]).
macro_rules! start_columns {
    () => {
        "id, bot, contact, node, vars, if_active, run_at, status, reason, answer, created_at, \
         claim_token, broadcast_id"
    };
}

/// Due starts and starts whose claim lapsed (their instance died), claimed at
/// `$1` (now) until `$2` with token `$3`, at most `$4`. The status is checked
/// again in the outer `WHERE`, so on Postgres a row claimed meanwhile by another
/// statement is re-checked on its new version and left out.
///
/// Lapsed claims first (a broadcast's too), then due single starts, each a
/// walk of its own index (`starts_running`, `starts_due`) that stops after
/// `$4`, so 100,000 waiting broadcast contacts cost a single start's claim
/// nothing. Ordered by due time only: a broadcast's contacts share one, and a
/// tie broken by id would make Postgres read all of them to sort.
macro_rules! claim_starts {
    ($lock:literal) => {
        concat!(
            "UPDATE starts SET status = 'running', lease_until = $2, claim_token = $3, \
                 updated_at = $1 \
             WHERE id IN (SELECT id FROM (SELECT id FROM starts \
                     WHERE status = 'running' AND lease_until <= $1 \
                     ORDER BY lease_until LIMIT $4",
            $lock,
            ") AS lapsed \
                 UNION ALL SELECT id FROM (SELECT id FROM starts \
                     WHERE status = 'scheduled' AND broadcast_id IS NULL AND run_at <= $1 \
                     ORDER BY run_at LIMIT $4",
            $lock,
            ") AS single LIMIT $4) \
             AND ((status = 'scheduled' AND run_at <= $1) \
                 OR (status = 'running' AND lease_until <= $1)) \
             RETURNING ",
            start_columns!()
        )
    };
}

/// Claims one bot's (`$5`) due broadcast contacts: a walk of
/// `starts_broadcast_due` (bot, run_at); the other binds as [`claim_starts!`].
macro_rules! claim_broadcast_starts {
    ($lock:literal) => {
        concat!(
            "UPDATE starts SET status = 'running', lease_until = $2, claim_token = $3, \
                 updated_at = $1 \
             WHERE id IN (SELECT id FROM starts \
                     WHERE status = 'scheduled' AND broadcast_id IS NOT NULL AND bot = $5 \
                         AND run_at <= $1 \
                     ORDER BY run_at LIMIT $4",
            $lock,
            ") AND status = 'scheduled' AND run_at <= $1 \
             RETURNING ",
            start_columns!()
        )
    };
}

impl Store {
    /// Records a start. Due at once (`run_at_ms <= now_ms`), it is inserted
    /// claimed by the caller (token `claim_token`, lease `lease`), who runs it
    /// with [`Store::process_start`]; later, it is `scheduled` and answered so.
    /// With an idempotency key already used for this bot, nothing is inserted
    /// and the existing row comes back.
    pub async fn insert_start(
        &self,
        start: &NewStart,
        claim_token: i64,
        lease: Duration,
    ) -> Result<InsertedStart, StoreError> {
        let due = start.run_at_ms <= start.now_ms;
        let (status, answer, lease_until, token) = if due {
            (
                StartStatus::Running,
                None,
                Some(start.now_ms.saturating_add(ms(lease))),
                Some(claim_token),
            )
        } else {
            (
                StartStatus::Scheduled,
                Some(StartStatus::Scheduled.as_str()),
                None,
                None,
            )
        };
        let insert = format!(
            "INSERT INTO starts (bot, contact, node, vars, if_active, run_at, status, answer, \
                 lease_until, claim_token, idempotency_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
             ON CONFLICT DO NOTHING RETURNING {START_COLUMNS}"
        );
        let vars = record::to_json(&start.vars);
        let inserted: Option<StartRecord> = on_pool!(self, |pool| {
            sqlx::query_as(&insert)
                .bind(&start.bot)
                .bind(&start.contact)
                .bind(&start.node)
                .bind(&vars)
                .bind(start.if_active.as_str())
                .bind(start.run_at_ms)
                .bind(status.as_str())
                .bind(answer)
                .bind(lease_until)
                .bind(token)
                .bind(start.idempotency_key.as_deref())
                .bind(start.now_ms)
                .fetch_optional(pool)
                .await
        })?;
        if let Some(inserted) = inserted {
            return Ok(InsertedStart::New(inserted.row()?));
        }
        let Some(key) = &start.idempotency_key else {
            return Err(StoreError::Corrupt(
                "a start without an idempotency key was not inserted".into(),
            ));
        };
        match self.start_with_key(&start.bot, key).await? {
            Some(existing) => Ok(InsertedStart::Existing(existing)),
            // Expired and pruned between the two statements: nothing to answer
            // with, so this request is refused like a busy database.
            None => Err(StoreError::Contention { attempts: 1 }),
        }
    }

    /// The start `bot` recorded with idempotency key `key`, if it is still kept.
    pub async fn start_with_key(
        &self,
        bot: &str,
        key: &str,
    ) -> Result<Option<StartRow>, StoreError> {
        let select =
            format!("SELECT {START_COLUMNS} FROM starts WHERE bot = $1 AND idempotency_key = $2");
        let found: Option<StartRecord> = on_pool!(self, |pool| {
            sqlx::query_as(&select)
                .bind(bot)
                .bind(key)
                .fetch_optional(pool)
                .await
        })?;
        found.map(StartRecord::row).transpose()
    }

    /// One start by id.
    pub async fn start(&self, id: i64) -> Result<Option<StartRow>, StoreError> {
        let select = format!("SELECT {START_COLUMNS} FROM starts WHERE id = $1");
        let found: Option<StartRecord> = on_pool!(self, |pool| {
            sqlx::query_as(&select).bind(id).fetch_optional(pool).await
        })?;
        found.map(StartRecord::row).transpose()
    }

    /// Pending starts (`scheduled`), of `bot` or of every bot, soonest first, at
    /// most `limit`: the single starts' and the broadcast contacts' walks of
    /// their own indexes (`starts_due`, `starts_broadcast_due`), merged; each
    /// walk is ordered by due time only, so among starts due at the same
    /// moment beyond `limit` which are listed is arbitrary.
    pub async fn scheduled_starts(
        &self,
        bot: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StartRow>, StoreError> {
        let select = format!(
            "SELECT * FROM (SELECT {START_COLUMNS} FROM starts \
                 WHERE status = 'scheduled' AND broadcast_id IS NULL \
                   AND ($1 IS NULL OR bot = $1) \
                 ORDER BY run_at LIMIT $2) AS single \
             UNION ALL SELECT * FROM (SELECT {START_COLUMNS} FROM starts \
                 WHERE status = 'scheduled' AND broadcast_id IS NOT NULL \
                   AND ($1 IS NULL OR bot = $1) \
                 ORDER BY run_at LIMIT $2) AS broadcast \
             ORDER BY run_at, id LIMIT $2"
        );
        let found: Vec<StartRecord> = on_pool!(self, |pool| {
            sqlx::query_as(&select)
                .bind(bot)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await
        })?;
        rows(found)
    }

    /// A page of `bot`'s pending starts of its own (a broadcast's contacts
    /// are its broadcast's business), due first, after `from` (`run_at`, id):
    /// a walk of `starts_scheduled_bot` (migrations: SQLite 0010, Postgres 0012).
    pub async fn scheduled_page(
        &self,
        bot: &str,
        from: super::Cursor,
        page: usize,
    ) -> Result<super::Page<StartRow>, StoreError> {
        let select = format!(
            "SELECT {START_COLUMNS} FROM starts \
             WHERE status = 'scheduled' AND broadcast_id IS NULL AND bot = $1 \
               AND (run_at, id) > ($2, $3) \
             ORDER BY run_at, id LIMIT $4"
        );
        let found: Vec<StartRecord> = on_read_pool!(self, |pool| {
            sqlx::query_as(&select)
                .bind(bot)
                .bind(from.at_ms)
                .bind(from.id)
                .bind(i64::try_from(page + 1).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await
        })?;
        let mut rows = rows(found)?;
        let next = super::console::page_end(&mut rows, page, |r| super::Cursor {
            at_ms: r.run_at_ms,
            id: r.id,
        });
        Ok(super::Page { rows, next })
    }

    /// Cancels a start that has not run.
    pub async fn cancel_start(&self, id: i64, now_ms: i64) -> Result<CancelStart, StoreError> {
        let cancelled = on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE starts SET status = 'cancelled', updated_at = $2 \
                 WHERE id = $1 AND status = 'scheduled'",
            )
            .bind(id)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        if cancelled > 0 {
            return Ok(CancelStart::Cancelled);
        }
        Ok(match self.start(id).await? {
            None => CancelStart::NotFound,
            Some(row) if row.status == StartStatus::Cancelled => CancelStart::Cancelled,
            Some(row) => CancelStart::Ran(row.status),
        })
    }

    /// Runs a leased claim (starts, handoff notices): `sqlite` on SQLite's
    /// one writer, `postgres` (the same statement with `FOR UPDATE SKIP
    /// LOCKED`, so claimers pass over each other's rows) on the pool, both
    /// bound `$1` now, `$2` the lease's end, `$3` the token, `$4` the limit,
    /// and `$5` the bot when one is given.
    pub(super) async fn claim_leased<R>(
        &self,
        (sqlite, postgres): (&'static str, &'static str),
        now_ms: i64,
        lease: Duration,
        token: i64,
        limit: usize,
        bot: Option<&str>,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let until = now_ms.saturating_add(ms(lease));
        Ok(match &self.inner {
            Inner::Sqlite(s) => {
                let query = sqlx::query_as(sqlite)
                    .bind(now_ms)
                    .bind(until)
                    .bind(token)
                    .bind(limit);
                let query = match bot {
                    Some(bot) => query.bind(bot),
                    None => query,
                };
                query.fetch_all(&mut *s.writer().await?).await?
            }
            Inner::Postgres(p) => {
                let query = sqlx::query_as(postgres)
                    .bind(now_ms)
                    .bind(until)
                    .bind(token)
                    .bind(limit);
                let query = match bot {
                    Some(bot) => query.bind(bot),
                    None => query,
                };
                query.fetch_all(&p.pool).await?
            }
        })
    }

    /// Claims up to `limit` single starts due at `now_ms` (and starts whose
    /// claim lapsed) until `now_ms + lease`, with `token`. Never hands one
    /// start to two claimers. A broadcast's contacts are claimed bot by bot
    /// ([`Store::claim_broadcast_starts`]).
    pub async fn claim_due_starts(
        &self,
        now_ms: i64,
        lease: Duration,
        token: i64,
        limit: usize,
    ) -> Result<Vec<StartRow>, StoreError> {
        let statements = (claim_starts!(""), claim_starts!(" FOR UPDATE SKIP LOCKED"));
        let claimed: Vec<StartRecord> = self
            .claim_leased(statements, now_ms, lease, token, limit, None)
            .await?;
        let mut claimed = rows(claimed)?;
        claimed.sort_by_key(|r| (r.run_at_ms, r.id));
        Ok(claimed)
    }

    /// Claims up to `limit` of `bot`'s broadcast contacts due at `now_ms`,
    /// as [`Store::claim_due_starts`] does single starts. The scheduler calls
    /// it only for a bot under the high-water mark of waiting messages.
    pub async fn claim_broadcast_starts(
        &self,
        bot: &str,
        now_ms: i64,
        lease: Duration,
        token: i64,
        limit: usize,
    ) -> Result<Vec<StartRow>, StoreError> {
        let statements = (
            claim_broadcast_starts!(""),
            claim_broadcast_starts!(" FOR UPDATE SKIP LOCKED"),
        );
        let claimed: Vec<StartRecord> = self
            .claim_leased(statements, now_ms, lease, token, limit, Some(bot))
            .await?;
        let mut claimed = rows(claimed)?;
        claimed.sort_by_key(|r| (r.run_at_ms, r.id));
        Ok(claimed)
    }

    /// `bot`'s broadcast messages waiting to be sent, counted up to `cap` (the
    /// scheduler only needs to know whether it is reached): a walk of
    /// `outbox_bulk_due` (bot, due time).
    pub async fn bulk_waiting(&self, bot: &str, cap: usize) -> Result<usize, StoreError> {
        let count: i64 = on_read_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT 1 FROM outbox \
                     WHERE status = 'queued' AND bulk = 1 AND bot = $1 LIMIT $2) AS waiting",
            )
            .bind(bot)
            .bind(i64::try_from(cap).unwrap_or(i64::MAX))
            .fetch_one(pool)
            .await
        })?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// When the next single start falls due (or a claim lapses), if any.
    pub async fn next_start_due(&self) -> Result<Option<i64>, StoreError> {
        let due: Option<i64> = on_read_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT MIN(due) FROM ( \
                     SELECT MIN(run_at) AS due FROM starts \
                         WHERE status = 'scheduled' AND broadcast_id IS NULL \
                     UNION ALL \
                     SELECT MIN(lease_until) AS due FROM starts WHERE status = 'running' \
                 ) AS due_times",
            )
            .fetch_one(pool)
            .await
        })?;
        Ok(due)
    }

    /// Each bot with broadcast contacts waiting to be started, and when its
    /// first is due: a skip from bot to bot along `starts_broadcast_due`, so
    /// it reads two index entries a bot however many contacts wait.
    pub async fn broadcast_bots_due(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let bots: Vec<(String, i64)> = on_read_pool!(self, |pool| {
            sqlx::query_as(
                "WITH RECURSIVE bots (bot) AS ( \
                     SELECT MIN(bot) FROM starts \
                         WHERE status = 'scheduled' AND broadcast_id IS NOT NULL \
                     UNION ALL \
                     SELECT (SELECT MIN(s.bot) FROM starts s \
                         WHERE s.status = 'scheduled' AND s.broadcast_id IS NOT NULL \
                             AND s.bot > bots.bot) \
                     FROM bots WHERE bots.bot IS NOT NULL \
                 ) \
                 SELECT bot, (SELECT MIN(s.run_at) FROM starts s \
                     WHERE s.status = 'scheduled' AND s.broadcast_id IS NOT NULL \
                         AND s.bot = bots.bot) AS due \
                 FROM bots WHERE bot IS NOT NULL",
            )
            .fetch_all(pool)
            .await
        })?;
        Ok(bots)
    }

    /// Forgets idempotency keys of starts created before `keys_before_ms`, and
    /// deletes finished starts last changed before `finished_before_ms`.
    pub async fn prune_starts(
        &self,
        keys_before_ms: i64,
        finished_before_ms: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            async {
                let mut tx = sqlx::Acquire::begin(pool).await?;
                sqlx::query(
                    "UPDATE starts SET idempotency_key = NULL \
                     WHERE idempotency_key IS NOT NULL AND created_at < $1",
                )
                .bind(keys_before_ms)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "DELETE FROM starts \
                     WHERE status IN ('started', 'skipped', 'cancelled') AND updated_at < $1",
                )
                .bind(finished_before_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }
            .await
        })?;
        Ok(())
    }

    /// Deletes a start the caller claimed and could not run (its request
    /// failed), so it does not run later behind the caller's back.
    pub async fn abandon_start(&self, id: i64, claim_token: i64) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query("DELETE FROM starts WHERE id = $1 AND claim_token = $2")
                .bind(id)
                .bind(claim_token)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Runs the start `start` (claimed by the caller with `start.claim_token`) as
    /// an inbound message is run: the contact's turn (Postgres, across
    /// instances; the caller serializes within the process), the conversation
    /// read, `step` with no connection held, then one transaction that writes
    /// the conversation (no inbound row, and the contact's window is left as it
    /// is: they did not write), one outbox row per reply due at `now_ms`, and
    /// the start's outcome, if the claim is still held and the conversation is
    /// still as read (otherwise it reads and steps again).
    pub async fn process_start<F, Fut>(
        &self,
        start: &StartRow,
        now_ms: i64,
        mut step: F,
    ) -> Result<StartWritten, StoreError>
    where
        F: FnMut(Option<ConversationState>) -> Fut + Send,
        Fut: Future<Output = StartStep> + Send,
    {
        let token = start.claim_token.ok_or_else(|| {
            StoreError::Corrupt(format!("start {} is run without a claim", start.id))
        })?;
        let mut turn = OutsideTurn::new(self, &start.bot, &start.contact, now_ms);
        for _ in 0..MAX_STEP_ATTEMPTS {
            let lookup = turn.look().await?;
            let current = lookup.conversation();
            let state = current
                .as_ref()
                .map(ConversationRecord::state)
                .transpose()?;
            let decided = step(state).await;
            let turn_token = turn.token();
            let (status, reason, out) = match &decided {
                StartStep::Enter(out) => (StartStatus::Started, None, Some(out)),
                StartStep::Skip(reason) => (StartStatus::Skipped, Some(reason.as_str()), None),
            };
            let written = self
                .write_outbound(&OutboundWrite {
                    bot: &start.bot,
                    contact: &start.contact,
                    now_ms,
                    current: current.as_ref(),
                    out,
                    start: Some((start.id, token, status, reason)),
                    turn_token,
                    broadcast: start.broadcast_id,
                })
                .await?;
            let written = match written {
                OutboundWritten::Moved => continue,
                OutboundWritten::ClaimLost => return Ok(StartWritten::Lost),
                OutboundWritten::Done => match decided {
                    StartStep::Enter(out) => StartWritten::Started {
                        replies: out.replies.len(),
                    },
                    StartStep::Skip(reason) => StartWritten::Skipped(reason),
                },
            };
            // The transaction gave the turn back as it committed.
            turn.given_back();
            return Ok(written);
        }
        Err(StoreError::Contention {
            attempts: MAX_STEP_ATTEMPTS,
        })
    }

    /// Conversations whose wait ran out by `now_ms` (SPEC §9.2), soonest
    /// first, at most `limit`.
    pub async fn due_timeouts(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueTimeout>, StoreError> {
        let due: Vec<(String, String, i64)> = on_read_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT bot, contact, timeout_at FROM conversations \
                 WHERE timeout_at IS NOT NULL AND timeout_at <= $1 \
                 ORDER BY timeout_at LIMIT $2",
            )
            .bind(now_ms)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await
        })?;
        Ok(due
            .into_iter()
            .map(|(bot, contact, timeout_at_ms)| DueTimeout {
                bot,
                contact,
                timeout_at_ms,
            })
            .collect())
    }

    /// When the next wait runs out, if any conversation waits with a limit.
    pub async fn next_timeout_due(&self) -> Result<Option<i64>, StoreError> {
        let due: Option<i64> = on_read_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT MIN(timeout_at) FROM conversations WHERE timeout_at IS NOT NULL",
            )
            .fetch_one(pool)
            .await
        })?;
        Ok(due)
    }

    /// Moves on a conversation whose wait ran out, as a message would be run
    /// (the contact's turn, no connection held during `step`, one
    /// transaction): `step` gets the waiting state with its `on_timeout`, and
    /// runs only if the wait is still there and over at `now_ms` (an answer or
    /// another instance may have moved the conversation on since it was
    /// found), so a timer fires once.
    pub async fn process_timeout<F, Fut>(
        &self,
        due: &DueTimeout,
        now_ms: i64,
        mut step: F,
    ) -> Result<TimeoutWritten, StoreError>
    where
        F: FnMut(ConversationState) -> Fut + Send,
        Fut: Future<Output = StepOutput> + Send,
    {
        let mut turn = OutsideTurn::new(self, &due.bot, &due.contact, now_ms);
        for _ in 0..MAX_STEP_ATTEMPTS {
            let lookup = turn.look().await?;
            let Some(current) = lookup.conversation() else {
                return Ok(TimeoutWritten::NotDue);
            };
            let timer: Option<(Option<i64>, Option<String>)> = on_pool!(self, |pool| {
                sqlx::query_as(
                    "SELECT timeout_at, on_timeout FROM conversations \
                     WHERE id = $1 AND version = $2",
                )
                .bind(current.id)
                .bind(current.version)
                .fetch_optional(pool)
                .await
            })?;
            let Some((timeout_at, on_timeout)) = timer else {
                // Written since the look: look again.
                continue;
            };
            if timeout_at.is_none_or(|at| at > now_ms) {
                return Ok(TimeoutWritten::NotDue);
            }
            let mut state = current.state()?;
            state.timeout_at_ms = timeout_at;
            state.on_timeout = on_timeout;
            let out = step(state).await;
            if self.write_turned(&mut turn, Some(&current), &out).await? {
                return Ok(TimeoutWritten::Fired {
                    replies: out.replies.len(),
                });
            }
        }
        Err(StoreError::Contention {
            attempts: MAX_STEP_ATTEMPTS,
        })
    }

    /// Runs a person's step on a conversation (SPEC §10.2: an answer, a hand
    /// back) as a timer's is run: the contact's turn, the conversation read,
    /// `step` with no connection held, then one transaction writing the state
    /// and its replies, only if the conversation is still as read. `step`
    /// answering `None` refuses (the conversation is not handed off) and
    /// writes nothing.
    pub async fn process_person<F, Fut>(
        &self,
        bot: &str,
        contact: &str,
        now_ms: i64,
        mut step: F,
    ) -> Result<PersonWritten, StoreError>
    where
        F: FnMut(Option<ConversationState>) -> Fut + Send,
        Fut: Future<Output = Option<StepOutput>> + Send,
    {
        let mut turn = OutsideTurn::new(self, bot, contact, now_ms);
        for _ in 0..MAX_STEP_ATTEMPTS {
            let lookup = turn.look().await?;
            let current = lookup.conversation();
            let state = current
                .as_ref()
                .map(ConversationRecord::state)
                .transpose()?;
            let Some(out) = step(state).await else {
                return Ok(PersonWritten::Refused);
            };
            if self.write_turned(&mut turn, current.as_ref(), &out).await? {
                return Ok(PersonWritten::Done {
                    replies: out.replies.len(),
                });
            }
        }
        Err(StoreError::Contention {
            attempts: MAX_STEP_ATTEMPTS,
        })
    }

    /// Writes the state and replies of a timer's or a person's step on
    /// `current` under `turn`, giving the turn back when it lands; `false`
    /// when the conversation moved meanwhile (look and step again).
    async fn write_turned(
        &self,
        turn: &mut OutsideTurn<'_>,
        current: Option<&ConversationRecord>,
        out: &StepOutput,
    ) -> Result<bool, StoreError> {
        let written = self
            .write_outbound(&OutboundWrite {
                bot: &turn.msg.bot,
                contact: &turn.msg.contact,
                now_ms: turn.msg.received_at_ms,
                current,
                out: Some(out),
                start: None,
                broadcast: None,
                turn_token: turn.token(),
            })
            .await?;
        let done = matches!(written, OutboundWritten::Done);
        if done {
            turn.given_back();
        }
        Ok(done)
    }

    /// The transaction of a step nobody's message caused (a start, a timer):
    /// the start's outcome if any (only while its claim is held), the
    /// conversation if the step entered a node (only if it is still as read;
    /// the contact's window and opt-out are left alone: they did not write),
    /// one outbox row per reply due at `now_ms`, and on Postgres the contact's
    /// turn given back.
    async fn write_outbound(&self, w: &OutboundWrite<'_>) -> Result<OutboundWritten, StoreError> {
        let written = on_pool!(self, |pool| {
            async {
                let mut tx = sqlx::Acquire::begin(pool).await?;
                if let Some((id, token, status, reason)) = w.start {
                    let claimed = sqlx::query(
                        "UPDATE starts SET status = $3, reason = $4, \
                             answer = COALESCE(answer, $3), lease_until = NULL, \
                             claim_token = NULL, updated_at = $5 \
                         WHERE id = $1 AND claim_token = $2 AND status = 'running'",
                    )
                    .bind(id)
                    .bind(token)
                    .bind(status.as_str())
                    .bind(reason)
                    .bind(w.now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if claimed == 0 {
                        tx.rollback().await?;
                        return Ok::<_, sqlx::Error>(OutboundWritten::ClaimLost);
                    }
                }
                if let Some(out) = w.out {
                    let state = &out.state;
                    let vars = record::to_json(&state.vars);
                    let handoff = sql::handoff_columns(state);
                    let conversation: Option<i64> =
                        match w.current {
                            Some(seen) => {
                                sqlx::query_scalar(
                                    "UPDATE conversations SET node = $3, handler = $4, vars = $5, \
                                     updated_at = $6, version = version + 1, \
                                     timeout_at = $7, on_timeout = $8, handoff_queue = $9, \
                                     handoff_at = $10, handoff_answered_at = $11 \
                                 WHERE id = $1 AND version = $2 RETURNING id",
                                )
                                .bind(seen.id)
                                .bind(seen.version)
                                .bind(&state.node)
                                .bind(&state.handler)
                                .bind(&vars)
                                .bind(state.updated_at_ms)
                                .bind(state.timeout_at_ms)
                                .bind(&state.on_timeout)
                                .bind(handoff.0)
                                .bind(handoff.1)
                                .bind(handoff.2)
                                .fetch_optional(&mut *tx)
                                .await?
                            }
                            None => sqlx::query_scalar(
                                "INSERT INTO conversations (bot, contact, node, handler, vars, \
                                     version, updated_at, timeout_at, on_timeout, handoff_queue, \
                                     handoff_at, handoff_answered_at) \
                                 VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9, $10, $11) \
                                 ON CONFLICT DO NOTHING RETURNING id",
                            )
                            .bind(w.bot)
                            .bind(w.contact)
                            .bind(&state.node)
                            .bind(&state.handler)
                            .bind(&vars)
                            .bind(state.updated_at_ms)
                            .bind(state.timeout_at_ms)
                            .bind(&state.on_timeout)
                            .bind(handoff.0)
                            .bind(handoff.1)
                            .bind(handoff.2)
                            .fetch_optional(&mut *tx)
                            .await?,
                        };
                    let Some(conversation) = conversation else {
                        tx.rollback().await?;
                        return Ok(OutboundWritten::Moved);
                    };
                    let was_handed_off = w.current.is_some_and(|c| c.handoff_queue.is_some());
                    if let Some((event, queue)) = sql::notice(was_handed_off, state, false) {
                        sqlx::query(sql::INSERT_NOTICE)
                            .bind(w.bot)
                            .bind(w.contact)
                            .bind(event)
                            .bind(queue)
                            .bind("")
                            .bind(w.now_ms)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for reply in &out.replies {
                        sqlx::query(
                            "INSERT INTO outbox (conversation_id, bot, contact, body, media, \
                                 status, attempts, next_attempt_at, created_at, updated_at, kind, \
                                 content, bulk, broadcast_id) \
                             VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $6, $6, $7, $8, $9, \
                                 $10)",
                        )
                        .bind(conversation)
                        .bind(w.bot)
                        .bind(w.contact)
                        .bind(&reply.body)
                        .bind(record::to_json(&reply.media))
                        .bind(w.now_ms)
                        .bind(reply.kind.as_str())
                        // A menu as buttons or a list, or a template (SPEC §8.1, §8.2).
                        .bind(reply.content.as_ref().map(record::to_json))
                        .bind(i16::from(w.broadcast.is_some()))
                        .bind(w.broadcast)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                if let Some(turn) = w.turn_token {
                    // Postgres: the contact's turn, given back with the write.
                    sqlx::query(
                        "UPDATE contact_turns SET until_ms = 0 \
                         WHERE bot = $1 AND contact = $2 AND token = $3",
                    )
                    .bind(w.bot)
                    .bind(w.contact)
                    .bind(turn)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(OutboundWritten::Done)
            }
            .await
        })?;
        Ok(written)
    }
}
