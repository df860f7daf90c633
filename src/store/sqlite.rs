//! The SQLite store: the embedded default, one process. What differs from
//! Postgres: connecting (WAL, busy timeout), one held write connection,
//! optimistic concurrency around the conversation step with the message's write
//! transaction as one script, and claiming in one write statement.

use std::str::FromStr;

use std::sync::Arc;

use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::Connection;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::record::{self, ConversationRecord, Lookup};
use super::sql;
use super::{
    ClaimRequest, Completion, NewInbound, OutboxRow, Renewal, StepOutput, StoreError, StoreOptions,
    Written,
};

/// The whole write transaction of one processed message as one prepared
/// script, so it costs one hand-off to SQLite's thread (a hand-off per statement
/// was most of the time the write lock was held). SQLite has no data-modifying
/// CTEs, so each statement is guarded by the one before it, and a statement
/// that writes nothing makes the rest write nothing: the inbound row is
/// inserted only if the conversation is still as the step read it (checked
/// under the write lock `BEGIN IMMEDIATE` takes) and the SID is new; the
/// conversation is written only if the inbound row was (`changes()` is the
/// count of the statement before), with the contact's opt-out change (`$14`)
/// and last message, and its wait's time limit (`$15` when, `$16` what then);
/// the replies (JSON lists, one per column: `$13` bodies, `$17` media JSON, `$18`
/// kinds, `$19` content JSON or null; inserted in reply order) only if the
/// conversation was; the handoff columns (`$20` queue, `$21` when, `$22` a
/// person's last answer). The variants with a notice (SPEC §10.2) insert it,
/// `$23` event and `$24` queue, right after the conversation, only if that
/// was written; its one row is then what the replies' `changes() = 1` sees.
/// Last, whatever was written, the contact's waiting broadcast messages become
/// replies (`promote_bulk!`).
/// Each
/// write tags what it wrote; with no tags the script commits an empty
/// transaction and the caller looks again (the SID was seen, or the
/// conversation moved on). The other binds are [`sql::StepWrite`]'s.
macro_rules! write_step_script {
    ($conversation_is_as_read:expr, $write_conversation:expr) => {
        write_step_script!($conversation_is_as_read, $write_conversation, "")
    };
    ($conversation_is_as_read:expr, $write_conversation:expr, $notice:expr) => {
        concat!(
            "BEGIN IMMEDIATE; \
             INSERT INTO inbound_messages (bot, message_sid, contact, body, payload, received_at, \
                                           node) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE ",
            $conversation_is_as_read,
            " ON CONFLICT (bot, message_sid) DO NOTHING \
             RETURNING 'inbound'; ",
            $write_conversation,
            " RETURNING 'conversation'; ",
            $notice,
            " INSERT INTO outbox (conversation_id, bot, contact, body, media, status, attempts, \
                                 next_attempt_at, created_at, updated_at, kind, content) \
             SELECT (SELECT id FROM conversations WHERE bot = $1 AND contact = $3), $1, $3, \
                    b.value, m.value, 'queued', 0, $6, $6, $6, k.value, c.value \
             FROM json_each($13) AS b \
             JOIN json_each($17) AS m ON m.key = b.key \
             JOIN json_each($18) AS k ON k.key = b.key \
             JOIN json_each($19) AS c ON c.key = b.key \
             WHERE changes() = 1 \
             ORDER BY b.key; ",
            promote_bulk!(),
            "; COMMIT"
        )
    };
}

/// The contact had a conversation: it must still be at the version read (`$11`,
/// `$12`).
macro_rules! step_updating {
    () => {
        "EXISTS (SELECT 1 FROM conversations WHERE id = $11 AND version = $12)"
    };
}
macro_rules! step_update {
    () => {
        "UPDATE conversations \
         SET node = $7, handler = $8, vars = $9, updated_at = $10, version = version + 1, \
             opted_out_at = CASE $14 WHEN 1 THEN $6 WHEN 0 THEN NULL ELSE opted_out_at END, \
             last_inbound_at = $6, window_closed_at = NULL, timeout_at = $15, on_timeout = $16, \
             handoff_queue = $20, handoff_at = $21, handoff_answered_at = $22 \
         WHERE id = $11 AND version = $12 AND changes() = 1"
    };
}
const WRITE_STEP_UPDATING: &str = write_step_script!(step_updating!(), step_update!());

/// The contact had none: nobody may have created one since. (`$11` and `$12`
/// are `NULL` here and unused.)
macro_rules! step_creating {
    () => {
        "NOT EXISTS (SELECT 1 FROM conversations WHERE bot = $1 AND contact = $3)"
    };
}
macro_rules! step_create {
    () => {
        "INSERT INTO conversations (bot, contact, node, handler, vars, version, updated_at, \
                                    opted_out_at, last_inbound_at, timeout_at, on_timeout, \
                                    handoff_queue, handoff_at, handoff_answered_at) \
         SELECT $1, $3, $7, $8, $9, 0, $10, CASE $14 WHEN 1 THEN $6 END, $6, $15, $16, \
                $20, $21, $22 \
         WHERE changes() = 1"
    };
}
const WRITE_STEP_CREATING: &str = write_step_script!(step_creating!(), step_create!());

/// The notice of a handoff or of a message while one waits (SPEC §10.2),
/// only if the conversation was written; due at once.
macro_rules! step_notice {
    () => {
        "INSERT INTO handoff_notices (bot, contact, event, queue, text, message_sid, status, \
                                      attempts, next_attempt_at, created_at, updated_at) \
         SELECT $1, $3, $23, $24, $4, $2, 'pending', 0, $6, $6, $6 \
         WHERE changes() = 1; "
    };
}
const WRITE_STEP_UPDATING_NOTICE: &str =
    write_step_script!(step_updating!(), step_update!(), step_notice!());
const WRITE_STEP_CREATING_NOTICE: &str =
    write_step_script!(step_creating!(), step_create!(), step_notice!());

/// How long a writer waits for another connection's write lock before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Read connections of a file database. SQLite has one writer at a time; these
/// let the per-message lookups (dedupe, state) and `/readyz` go on beside it in
/// WAL mode.
const DEFAULT_READ_CONNECTIONS: u32 = 4;

/// The write connection and whether a script of ours may have left a
/// transaction open on it.
struct Writer {
    conn: SqliteConnection,
    /// Set while a write script runs. Still set when the next caller takes the
    /// connection means the script failed or its caller was cancelled part-way
    /// (sqlx's worker stops a script at an error or when nobody reads its
    /// results), so the transaction it began is rolled back first.
    in_script: bool,
}

impl Writer {
    fn new(conn: SqliteConnection) -> Arc<Mutex<Option<Writer>>> {
        Arc::new(Mutex::new(Some(Writer {
            conn,
            in_script: false,
        })))
    }
}

/// The write connection's lock, taken away from every writer (a test hook).
pub(crate) struct HeldWriter(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<Option<Writer>>);

#[derive(Clone)]
pub(super) struct SqliteStore {
    /// The one write connection, held for the store's life: every write (and
    /// the rarer reads) queue for it in order on a fair async mutex, instead of
    /// several connections contending for SQLite's write lock, where a loser
    /// sleeps in the busy handler (1, 2, 5, 10... ms) while the lock is long free
    /// again. Held rather than pooled: a pool pings the connection on every
    /// release, one more hand-off to SQLite's thread per transaction.
    /// `None` once closed.
    writer: Arc<Mutex<Option<Writer>>>,
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
                writer: Writer::new(writer),
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
            writer: Writer::new(writer),
            readers: Some(readers),
        })
    }

    /// The read connections; `None` for `:memory:`.
    pub(super) fn readers(&self) -> Option<&sqlx::SqlitePool> {
        self.readers.as_ref()
    }

    /// The write connection's lock, held until dropped.
    pub(super) async fn hold_writer(&self) -> HeldWriter {
        HeldWriter(self.writer.clone().lock_owned().await)
    }

    /// The write connection, once every earlier caller is done with it; the
    /// pool's error after [`SqliteStore::close`].
    pub(super) async fn writer(
        &self,
    ) -> Result<MappedMutexGuard<'_, SqliteConnection>, sqlx::Error> {
        let guard = self.writer_state().await?;
        Ok(MappedMutexGuard::map(guard, |w| &mut w.conn))
    }

    /// The writer, with any transaction a broken script left behind rolled back.
    async fn writer_state(&self) -> Result<MappedMutexGuard<'_, Writer>, sqlx::Error> {
        let mut writer = MutexGuard::try_map(self.writer.lock().await, Option::as_mut)
            .map_err(|_| sqlx::Error::PoolClosed)?;
        if writer.in_script {
            // "No transaction is active" (the script got to its COMMIT, or
            // SQLite rolled back itself) is fine too.
            if let Err(error) = sqlx::query("ROLLBACK").execute(&mut writer.conn).await {
                tracing::debug!(%error, "rolling back after an interrupted write");
            }
            writer.in_script = false;
        }
        Ok(writer)
    }

    /// Runs one write script (it begins and commits its own transaction) and
    /// returns the tags its statements returned.
    async fn run_write_script<'q>(
        &self,
        script: sqlx::query::QueryScalar<'q, sqlx::Sqlite, String, SqliteArguments<'q>>,
    ) -> Result<Vec<String>, StoreError> {
        let mut writer = self.writer_state().await?;
        writer.in_script = true;
        let tags = script.fetch_all(&mut writer.conn).await?;
        // Only reached when every statement, COMMIT included, succeeded.
        writer.in_script = false;
        Ok(tags)
    }

    /// Closes the connections, the writer after any write in progress.
    pub(super) async fn close(&self) {
        if let Some(readers) = &self.readers {
            readers.close().await;
        }
        if let Some(writer) = self.writer.lock().await.take() {
            if let Err(error) = writer.conn.close().await {
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

    /// The dedupe answer and the conversation, read outside any transaction (on
    /// a read connection), so a slow step never holds SQLite's write lock.
    pub(super) async fn lookup(&self, msg: &NewInbound) -> Result<Lookup, StoreError> {
        let lookup = sqlx::query_as::<_, Lookup>(sql::LOOKUP)
            .bind(&msg.bot)
            .bind(&msg.message_sid)
            .bind(&msg.contact);
        Ok(match &self.readers {
            Some(readers) => lookup.fetch_one(readers).await?,
            None => lookup.fetch_one(&mut *self.writer().await?).await?,
        })
    }

    /// Optimistic: the writes run under `BEGIN IMMEDIATE` (the write lock is
    /// taken first, so no other writer can interleave and the transaction never
    /// has to upgrade a stale read snapshot) and write only if the SID is new and
    /// the conversation is still at the version the step saw; when they wrote
    /// nothing the caller looks again, which tells which: a duplicate, or a
    /// conversation that moved on (another process wrote), stepped again.
    pub(super) async fn write_step(
        &self,
        msg: &NewInbound,
        current: Option<&ConversationRecord>,
        out: &StepOutput,
    ) -> Result<Written, StoreError> {
        let write = sql::StepWrite::new(msg, current, out);
        let script = match (current.is_some(), write.notice.is_some()) {
            (true, false) => WRITE_STEP_UPDATING,
            (false, false) => WRITE_STEP_CREATING,
            (true, true) => WRITE_STEP_UPDATING_NOTICE,
            (false, true) => WRITE_STEP_CREATING_NOTICE,
        };
        let [bodies, media, kinds, contents] = write.reply_columns_json();
        let mut query = bind_step!(sqlx::query_scalar(script), &write)
            .bind(bodies)
            .bind(write.opt_out_change)
            .bind(write.state.timeout_at_ms)
            .bind(&write.state.on_timeout)
            .bind(media)
            .bind(kinds)
            .bind(contents)
            .bind(write.handoff.0)
            .bind(write.handoff.1)
            .bind(write.handoff.2);
        if let Some((event, queue)) = write.notice {
            query = query.bind(event).bind(queue);
        }
        let tags = self.run_write_script(query).await?;
        let wrote = |what: &str| tags.iter().any(|t| t == what);
        match (wrote("inbound"), wrote("conversation")) {
            (true, true) => Ok(Written::Done),
            (false, _) => {
                tracing::debug!(
                    bot = %msg.bot,
                    message_sid = %msg.message_sid,
                    "message seen or conversation changed during the step; looking again"
                );
                Ok(Written::LookAgain)
            }
            (true, false) => Err(StoreError::Corrupt(format!(
                "message {} was recorded but its conversation was not written",
                msg.message_sid
            ))),
        }
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

    /// One statement: the claims travel as a JSON array of `[id, token]` pairs
    /// (the ids find the rows through the primary key). The single write
    /// connection serializes it with every other write, so nothing is `Busy`.
    pub(super) async fn renew_claims(
        &self,
        claims: &[(i64, i64)],
        lease_until_ms: i64,
    ) -> Result<Vec<Renewal>, StoreError> {
        const RENEW_CLAIMS: &str = "UPDATE outbox SET lease_until = $2 \
             WHERE id IN (SELECT json_extract(value, '$[0]') FROM json_each($1)) \
               AND (id, claim_token) IN \
                   (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') \
                    FROM json_each($1)) \
               AND status = 'sending' \
             RETURNING id";
        let pairs: Vec<String> = claims.iter().map(|(id, t)| format!("[{id},{t}]")).collect();
        let pairs = format!("[{}]", pairs.join(","));
        let renewed: Vec<i64> = sqlx::query_scalar(RENEW_CLAIMS)
            .bind(pairs)
            .bind(lease_until_ms)
            .fetch_all(&mut *self.writer().await?)
            .await?;
        let renewed: std::collections::HashSet<i64> = renewed.into_iter().collect();
        Ok(claims
            .iter()
            .map(|(id, _)| {
                if renewed.contains(id) {
                    Renewal::Renewed
                } else {
                    Renewal::Lost
                }
            })
            .collect())
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
            due_replies!(),
            ") LIMIT $4) \
             RETURNING ",
            outbox_columns!()
        );
        let records = claim_query!(CLAIM, req, token)
            .fetch_all(&mut *self.writer().await?)
            .await?;
        record::outbox_rows(records)
    }

    /// Claims up to `req.limit` of `bot`'s due broadcast messages, as
    /// [`SqliteStore::claim_due`] claims replies.
    pub(super) async fn claim_bulk(
        &self,
        req: ClaimRequest,
        token: i64,
        bot: &str,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        const CLAIM: &str = concat!(
            "UPDATE outbox SET status = 'sending', lease_until = $2, claim_token = $3, \
                 attempts = attempts + 1, updated_at = $1 \
             WHERE id IN (",
            due_bulk!(),
            ") RETURNING ",
            outbox_columns!()
        );
        let records = claim_query!(CLAIM, req, token, bot)
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
    use super::*;
    use crate::store::InboundOutcome;

    /// A migrated file database (WAL, readers) in a temp folder.
    async fn store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        (store, dir)
    }

    fn message(sid: &str) -> NewInbound {
        NewInbound {
            bot: "kibo".into(),
            contact: "whatsapp:+1555".into(),
            message_sid: sid.into(),
            body: "hi".into(),
            payload: serde_json::json!({}),
            received_at_ms: 1_000,
        }
    }

    async fn process(store: &SqliteStore, sid: &str) -> InboundOutcome {
        let store = crate::store::Store {
            inner: crate::store::Inner::Sqlite(store.clone()),
        };
        store
            .process_inbound(&message(sid), |state| async move {
                StepOutput {
                    state: state.unwrap_or_default(),
                    replies: vec![crate::message::Reply::text("hello")],
                }
            })
            .await
            .unwrap()
    }

    async fn inbound_rows(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM inbound_messages")
            .fetch_one(&mut *store.writer().await.unwrap())
            .await
            .unwrap()
    }

    /// A script that writes, then fails at run time before its COMMIT.
    const FAILING_SCRIPT: &str = "BEGIN IMMEDIATE; \
         INSERT INTO inbound_messages (bot, message_sid, contact, body, payload, received_at) \
         VALUES ('kibo', 'SMbroken', 'whatsapp:+1555', 'x', '{}', 1) RETURNING 'inbound'; \
         SELECT json_extract('not json', '$'); \
         COMMIT";

    #[tokio::test]
    async fn a_script_failing_part_way_is_rolled_back_and_the_writer_works_on() {
        let (store, _dir) = store().await;
        let failed = store
            .run_write_script(sqlx::query_scalar(FAILING_SCRIPT))
            .await;
        assert!(failed.is_err(), "the script must fail: {failed:?}");
        // The next writer rolls the open transaction back before its own work.
        assert_eq!(
            process(&store, "SM1").await,
            InboundOutcome::Processed { replies: 1 }
        );
        assert_eq!(
            inbound_rows(&store).await,
            1,
            "only SM1: SMbroken rolled back"
        );
        assert_eq!(
            process(&store, "SM2").await,
            InboundOutcome::Processed { replies: 1 }
        );
        assert_eq!(inbound_rows(&store).await, 2);
    }

    #[tokio::test]
    async fn a_script_cancelled_part_way_writes_all_or_nothing_and_the_writer_works_on() {
        let (store, _dir) = store().await;
        for i in 0..20 {
            // Polled once (the script is sent to SQLite's thread), then dropped.
            let script = WRITE_STEP_CREATING;
            let msg = message(&format!("SMcancelled{i}"));
            let out = StepOutput {
                state: Default::default(),
                replies: vec![crate::message::Reply::text("hello")],
            };
            let write = sql::StepWrite::new(&msg, None, &out);
            let [bodies, media, kinds, contents] = write.reply_columns_json();
            let run = store.run_write_script(
                bind_step!(sqlx::query_scalar(script), &write)
                    .bind(bodies)
                    .bind(write.opt_out_change)
                    .bind(write.state.timeout_at_ms)
                    .bind(&write.state.on_timeout)
                    .bind(media)
                    .bind(kinds)
                    .bind(contents)
                    .bind(write.handoff.0)
                    .bind(write.handoff.1)
                    .bind(write.handoff.2),
            );
            tokio::select! {
                biased;
                _ = run => {}
                _ = std::future::ready(()) => {}
            }
            let rows: (i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM inbound_messages WHERE message_sid = $1), \
                        (SELECT COUNT(*) FROM conversations), (SELECT COUNT(*) FROM outbox)",
            )
            .bind(&msg.message_sid)
            .fetch_one(&mut *store.writer().await.unwrap())
            .await
            .unwrap();
            assert!(
                rows == (0, 0, 0) || rows == (1, 1, 1),
                "all or nothing, got {rows:?}"
            );
            if rows.0 == 1 {
                // Committed before the drop: start over without it.
                sqlx::query(
                    "DELETE FROM outbox; DELETE FROM conversations; DELETE FROM inbound_messages",
                )
                .execute(&mut *store.writer().await.unwrap())
                .await
                .unwrap();
            }
        }
        assert_eq!(
            process(&store, "SM1").await,
            InboundOutcome::Processed { replies: 1 }
        );
    }

    #[test]
    fn recognises_in_memory_urls() {
        assert!(is_memory("sqlite::memory:"));
        assert!(is_memory("sqlite://:memory:"));
        assert!(is_memory("sqlite://file:x?mode=memory&cache=shared"));
        assert!(!is_memory("sqlite://switchboard.db"));
        assert!(!is_memory("sqlite:///var/lib/switchboard/memory.db"));
    }
}
