//! The SQLite store: the embedded default, one process. What differs from
//! Postgres: connecting (WAL, busy timeout), optimistic concurrency around the
//! conversation step, and claiming in one write statement.

use std::future::Future;
use std::str::FromStr;

use std::sync::Arc;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Connection;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::record::{self, ConversationRecord, Lookup, OutboxRecord};
use super::sql::{self, Written};
use super::{
    ClaimRequest, Completion, ConversationState, InboundOutcome, NewInbound, OutboxRow, StepOutput,
    StoreError, StoreOptions, MAX_STEP_ATTEMPTS,
};

/// The writes of one processed message, run as one prepared script (one
/// hand-off to SQLite's thread instead of one per statement) inside the
/// caller's `BEGIN IMMEDIATE`: the inbound row, the conversation, one outbox row
/// per reply in reply order (`$13`: a JSON list of `[body, media JSON]`). SQLite
/// has no data-modifying CTEs, so each statement runs and tags what it wrote;
/// the caller commits only if both the inbound row and the conversation were
/// written, and otherwise rolls the whole transaction back. The other binds are
/// [`sql::StepWrite`]'s. Two texts, as the conversation is updated or created.
macro_rules! write_step_script {
    ($conversation:literal) => {
        concat!(
            "INSERT INTO inbound_messages (bot, message_sid, contact, body, payload, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (bot, message_sid) DO NOTHING \
             RETURNING 'inbound'; ",
            $conversation,
            " RETURNING 'conversation'; \
             INSERT INTO outbox (conversation_id, bot, contact, body, media, status, attempts, \
                                 next_attempt_at, created_at, updated_at) \
             SELECT (SELECT id FROM conversations WHERE bot = $1 AND contact = $3), $1, $3, \
                    json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'), \
                    'queued', 0, $6, $6, $6 \
             FROM json_each($13) AS r \
             ORDER BY r.key"
        )
    };
}

/// Writes the new state only if nobody did since the step read it.
const WRITE_STEP_UPDATING: &str = write_step_script!(
    "UPDATE conversations \
     SET node = $7, handler = $8, vars = $9, updated_at = $10, version = version + 1 \
     WHERE id = $11 AND version = $12"
);

/// Creates the conversation, unless another writer created it first. (`$11` and
/// `$12` are `NULL` here and unused: they are bound all the same.)
const WRITE_STEP_CREATING: &str = write_step_script!(
    "INSERT INTO conversations (bot, contact, node, handler, vars, version, updated_at) \
     VALUES ($1, $3, $7, $8, $9, 0, $10) \
     ON CONFLICT (bot, contact) DO NOTHING"
);

/// How long a writer waits for another connection's write lock before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Read connections of a file database. SQLite has one writer at a time; these
/// let the per-message lookups (dedupe, state) and `/readyz` go on beside it in
/// WAL mode.
const DEFAULT_READ_CONNECTIONS: u32 = 4;

#[derive(Clone)]
pub(super) struct SqliteStore {
    /// The one write connection, held for the store's life: every write (and
    /// the rarer reads) queue for it in order on a fair async mutex, instead of
    /// several connections contending for SQLite's write lock, where a loser
    /// sleeps in the busy handler (1, 2, 5, 10... ms) while the lock is long free
    /// again. Held rather than pooled: a pool pings the connection on every
    /// release, one more hand-off to SQLite's thread per transaction.
    /// `None` once closed.
    writer: Arc<Mutex<Option<SqliteConnection>>>,
    /// Connections for the per-message lookups; `None` for `:memory:`, whose
    /// only connection is the writer.
    readers: Option<sqlx::SqlitePool>,
}

impl SqliteStore {
    /// Accepts `sqlite://relative.db`, `sqlite:///abs/path.db` and
    /// `sqlite::memory:`; creates the file (not its folder) if missing.
    pub(super) async fn connect(
        url: &str,
        options: &StoreOptions,
    ) -> Result<SqliteStore, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // Still needed: another process (`switchboard send`) may write too.
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        if is_memory(url) {
            // Each connection would open its own empty in-memory database: the
            // writer is the only one.
            let writer = SqliteConnection::connect_with(&connect).await?;
            return Ok(SqliteStore {
                writer: Arc::new(Mutex::new(Some(writer))),
                readers: None,
            });
        }
        let connect = connect
            // Readers never block the writer and the writer never blocks them.
            .journal_mode(SqliteJournalMode::Wal)
            // Durable across a process crash; an OS crash may lose the last
            // commits, the usual WAL trade-off.
            .synchronous(SqliteSynchronous::Normal);
        // The writer first: it creates the file and switches it to WAL.
        let writer = tokio::time::timeout(
            options.acquire_timeout,
            SqliteConnection::connect_with(&connect),
        )
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
        let readers = SqlitePoolOptions::new()
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(super::ping_if_idle)
            .max_connections(options.max_connections.unwrap_or(DEFAULT_READ_CONNECTIONS))
            .connect_with(connect)
            .await?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(Some(writer))),
            readers: Some(readers),
        })
    }

    /// The write connection, once every earlier caller is done with it; the
    /// pool's error after [`SqliteStore::close`].
    pub(super) async fn writer(
        &self,
    ) -> Result<MappedMutexGuard<'_, SqliteConnection>, sqlx::Error> {
        MutexGuard::try_map(self.writer.lock().await, Option::as_mut)
            .map_err(|_| sqlx::Error::PoolClosed)
    }

    /// Closes the connections, the writer after any write in progress.
    pub(super) async fn close(&self) {
        if let Some(readers) = &self.readers {
            readers.close().await;
        }
        if let Some(writer) = self.writer.lock().await.take() {
            if let Err(error) = writer.close().await {
                tracing::warn!(%error, "closing the SQLite database");
            }
        }
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/sqlite")
            .run(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Optimistic: the dedupe check, the state read and the step run outside any
    /// transaction, so a slow step never holds SQLite's single write lock. The
    /// writes then run under `BEGIN IMMEDIATE` (the write lock is taken first, so
    /// no other writer can interleave and the transaction never has to upgrade a
    /// stale read snapshot) and commit only if the conversation is still at the
    /// version the step saw; otherwise the step runs again on the fresh state.
    pub(super) async fn process_inbound<F, Fut>(
        &self,
        msg: &NewInbound,
        mut step: F,
    ) -> Result<InboundOutcome, StoreError>
    where
        F: FnMut(Option<ConversationState>) -> Fut + Send,
        Fut: Future<Output = StepOutput> + Send,
    {
        for _ in 0..MAX_STEP_ATTEMPTS {
            let lookup = sqlx::query_as::<_, Lookup>(sql::LOOKUP)
                .bind(&msg.bot)
                .bind(&msg.message_sid)
                .bind(&msg.contact);
            let lookup = match &self.readers {
                Some(readers) => lookup.fetch_one(readers).await?,
                None => lookup.fetch_one(&mut *self.writer().await?).await?,
            };
            if lookup.seen {
                return Ok(InboundOutcome::Duplicate);
            }
            let current = lookup.conversation();
            let state = current
                .as_ref()
                .map(ConversationRecord::state)
                .transpose()?;
            let out = step(state).await;

            let mut writer = self.writer().await?;
            let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
            let write = sql::StepWrite::new(msg, current.as_ref(), &out);
            let script = if current.is_some() {
                WRITE_STEP_UPDATING
            } else {
                WRITE_STEP_CREATING
            };
            let replies: Vec<(&str, String)> = out
                .replies
                .iter()
                .map(|r| (r.body.as_str(), record::to_json(&r.media)))
                .collect();
            let written: Vec<String> = bind_step!(sqlx::query_scalar(script), &write)
                .bind(record::to_json(&replies))
                .fetch_all(&mut *tx)
                .await?;
            let wrote = |what: &str| written.iter().any(|w| w == what);
            match Written::from(wrote("inbound"), wrote("conversation")) {
                Written::Done => {
                    tx.commit().await?;
                    return Ok(InboundOutcome::Processed {
                        replies: out.replies.len(),
                    });
                }
                Written::Duplicate => {
                    tx.rollback().await?;
                    return Ok(InboundOutcome::Duplicate);
                }
                Written::Stale => {
                    tx.rollback().await?;
                    tracing::debug!(
                        bot = %msg.bot,
                        message_sid = %msg.message_sid,
                        "conversation changed during the step; stepping again"
                    );
                }
            }
        }
        Err(StoreError::Contention {
            attempts: MAX_STEP_ATTEMPTS,
        })
    }

    /// One write transaction for the batch: SQLite's statements are cheap, its
    /// commits are what cost (and hold the single write lock).
    pub(super) async fn complete_sends(
        &self,
        batch: &[Completion],
    ) -> Result<Vec<bool>, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut recorded = Vec::with_capacity(batch.len());
        for completion in batch {
            let changed = completion
                .bind(sqlx::query(sql::COMPLETE_SEND))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            recorded.push(changed > 0);
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// One `UPDATE ... RETURNING`: a single write statement takes the write lock
    /// before it reads, so two claimers are simply serialized.
    pub(super) async fn claim_due(
        &self,
        req: ClaimRequest,
        token: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        const CLAIM: &str = concat!(
            "UPDATE outbox SET status = 'sending', lease_until = $2, claim_token = $3, \
                 attempts = attempts + 1, updated_at = $1 \
             WHERE id IN (SELECT id FROM (",
            expired_leases!(),
            ") UNION ALL SELECT id FROM (",
            due_queued!(),
            ") LIMIT $4) \
             RETURNING ",
            outbox_columns!()
        );
        let records: Vec<OutboxRecord> = sqlx::query_as(CLAIM)
            .bind(req.now_ms)
            .bind(super::lease_until(&req))
            .bind(token)
            .bind(super::limit(&req))
            .fetch_all(&mut *self.writer().await?)
            .await?;
        record::outbox_rows(records)
    }
}

fn is_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    rest.starts_with(":memory:") || rest.contains("mode=memory")
}

#[cfg(test)]
mod tests {
    use super::is_memory;

    #[test]
    fn recognises_in_memory_urls() {
        assert!(is_memory("sqlite::memory:"));
        assert!(is_memory("sqlite://:memory:"));
        assert!(is_memory("sqlite://file:x?mode=memory&cache=shared"));
        assert!(!is_memory("sqlite://switchboard.db"));
        assert!(!is_memory("sqlite:///var/lib/switchboard/memory.db"));
    }
}
