//! The Postgres store: production, shared by several instances. What differs from
//! SQLite: a contact's turn (a row in an unlogged table, taken and read in one
//! statement) so one message of a contact is stepped at a time across instances
//! with no connection held during the step, a message's writes as one
//! data-modifying CTE that also gives the turn back, claiming with `FOR UPDATE
//! SKIP LOCKED`, and LISTEN/NOTIFY to wake senders in other instances.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgListener, PgPoolOptions};

use super::record::{self, ConversationRecord, Lookup};
use super::sql;
use super::{
    ClaimRequest, Completion, NewInbound, OutboxRow, Renewal, SendSlot, StepOutput, StoreError,
    StoreOptions, Written,
};

/// Takes the contact's turn (SPEC §2: one message of a contact at a time, across
/// instances) and reads, in the same statement, what the step needs: whether the
/// SID was seen and the conversation. `$1` bot, `$2` message SID, `$3` contact,
/// `$4` this message's token, `$5` the turn's lease in ms. The turn is taken when
/// nobody holds it, when its holder's lease lapsed (the holder died), or when it
/// is already ours (a second look after a stale write).
///
/// The reads see the statement's snapshot, taken before the turn: they are
/// current only if no other turn was taken or given back since. Every take
/// counts up `turns`, so `read_again` is set when the count moved by more than
/// our own take after the snapshot, or when somebody else held the turn in it
/// (and gave it back, with its write, since): the caller then reads again.
const TAKE_TURN: &str = "WITH now AS ( \
         SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT AS ms), \
     seen_turn AS ( \
         SELECT token, until_ms, turns FROM contact_turns WHERE bot = $1 AND contact = $3), \
     taken AS ( \
         INSERT INTO contact_turns (bot, contact, token, until_ms, turns) \
         SELECT $1, $3, $4, now.ms + $5, 1 FROM now \
         ON CONFLICT (bot, contact) DO UPDATE \
         SET token = EXCLUDED.token, until_ms = EXCLUDED.until_ms, \
             turns = contact_turns.turns + 1 \
         WHERE contact_turns.until_ms <= (SELECT ms FROM now) \
            OR contact_turns.token = EXCLUDED.token \
         RETURNING turns), \
     bumped AS ( \
         UPDATE conversations SET version = version + 1 \
         WHERE bot = $1 AND contact = $3 AND EXISTS (SELECT 1 FROM taken) \
         RETURNING id, node, handler, vars, version, updated_at, opted_out_at, \
                   handoff_queue, handoff_at, handoff_answered_at) \
     SELECT EXISTS (SELECT 1 FROM taken) AS taken, \
         NOT EXISTS (SELECT 1 FROM taken \
                     WHERE turns = COALESCE((SELECT turns FROM seen_turn), 0) + 1) \
         OR EXISTS (SELECT 1 FROM seen_turn, now \
                    WHERE seen_turn.token <> $4 AND seen_turn.until_ms > now.ms) AS read_again, \
         EXISTS (SELECT 1 FROM inbound_messages WHERE bot = $1 AND message_sid = $2) AS seen, \
         c.id, c.node, c.handler, c.vars, c.version, c.updated_at, c.opted_out_at, \
         c.handoff_queue, c.handoff_at, c.handoff_answered_at \
     FROM (SELECT 1 AS one) AS one \
     LEFT JOIN bumped c ON TRUE";

/// The writes of one stepped message as one statement (one round trip, one
/// commit), all or nothing: the inbound row, only while we still hold the turn
/// (`$15`; `NULL` for a repeatable step, which took none) and the conversation is as the step read it (`$11`/`$12`, or none
/// when `$11` is `NULL`); then, only if that row was new, the conversation,
/// with the contact's opt-out change (`$16`), last message and its wait's time
/// limit (`$19` when, `$20` what then) and handoff (`$21` queue, `$22` when,
/// `$23` a person's last answer); then, only if
/// that was written, one outbox row per reply (`$13` bodies, `$14` media lists
/// as JSON, `$17` kinds, `$18` contents as JSON or `NULL`), due at once and inserted in reply order, so their ids
/// keep the order the sender goes by; and the turn is given back. Should the
/// conversation change after the snapshot (only a writer not holding the turn
/// could do that), `switchboard_conversation_moved()` aborts the statement.
/// Whatever it writes, the contact's waiting broadcast messages become replies
/// (`promote_bulk!`). Answers what was written and why not. The other binds
/// are [`sql::StepWrite`]'s.
const WRITE_STEP: &str = concat!(
    "WITH turn AS ( \
         SELECT 1 WHERE $15::BIGINT IS NULL AND NOT EXISTS ( \
             SELECT 1 FROM contact_turns WHERE bot = $1 AND contact = $3 \
               AND until_ms > (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT) \
         UNION ALL SELECT 1 FROM contact_turns WHERE bot = $1 AND contact = $3 AND token = $15), \
     as_read AS ( \
         SELECT 1 WHERE CASE WHEN $11::BIGINT IS NULL \
             THEN NOT EXISTS (SELECT 1 FROM conversations WHERE bot = $1 AND contact = $3) \
             ELSE EXISTS (SELECT 1 FROM conversations WHERE id = $11 AND version = $12) END), \
     inbound AS ( \
         INSERT INTO inbound_messages (bot, message_sid, contact, body, payload, received_at, \
                                       node) \
         SELECT $1, $2, $3, $4, $5, $6, $7 \
         WHERE EXISTS (SELECT 1 FROM turn) AND EXISTS (SELECT 1 FROM as_read) \
         ON CONFLICT (bot, message_sid) DO NOTHING \
         RETURNING 1), \
     updated AS ( \
         UPDATE conversations \
         SET node = $7, handler = $8, vars = $9, updated_at = $10, version = version + 1, \
             opted_out_at = CASE $16::BIGINT WHEN 1 THEN $6 WHEN 0 THEN NULL \
                            ELSE opted_out_at END, \
             last_inbound_at = $6, window_closed_at = NULL, \
             timeout_at = $19::BIGINT, on_timeout = $20::TEXT, \
             handoff_queue = $21::TEXT, handoff_at = $22::BIGINT, \
             handoff_answered_at = $23::BIGINT \
         WHERE id = $11 AND version = $12 AND EXISTS (SELECT 1 FROM inbound) \
         RETURNING id), \
     created AS ( \
         INSERT INTO conversations (bot, contact, node, handler, vars, version, updated_at, \
                                    opted_out_at, last_inbound_at, timeout_at, on_timeout, \
                                    handoff_queue, handoff_at, handoff_answered_at) \
         SELECT $1, $3, $7, $8, $9, 0, $10, CASE $16::BIGINT WHEN 1 THEN $6 END, $6, \
                $19::BIGINT, $20::TEXT, $21::TEXT, $22::BIGINT, $23::BIGINT \
         WHERE $11::BIGINT IS NULL AND EXISTS (SELECT 1 FROM inbound) \
         ON CONFLICT (bot, contact) DO NOTHING \
         RETURNING id), \
     conversation AS (SELECT id FROM updated UNION ALL SELECT id FROM created), \
     noticed AS ( \
         INSERT INTO handoff_notices (bot, contact, event, queue, text, message_sid, status, \
                                      attempts, next_attempt_at, created_at, updated_at) \
         SELECT $1, $3, $24::TEXT, $25::TEXT, $4, $2, 'pending', 0, $6, $6, $6 \
         FROM conversation WHERE $24::TEXT IS NOT NULL \
         RETURNING 1), \
     queued AS ( \
         INSERT INTO outbox (conversation_id, bot, contact, body, media, status, attempts, \
                             next_attempt_at, created_at, updated_at, kind, content) \
         SELECT c.id, $1, $3, r.body, r.media, 'queued', 0, $6, $6, $6, r.kind, r.content \
         FROM conversation c \
         CROSS JOIN unnest($13::TEXT[], $14::TEXT[], $17::TEXT[], $18::TEXT[]) \
             WITH ORDINALITY AS r(body, media, kind, content, n) \
         ORDER BY r.n \
         RETURNING 1), \
     released AS ( \
         UPDATE contact_turns SET until_ms = 0 \
         WHERE bot = $1 AND contact = $3 AND token = $15 \
           AND EXISTS (SELECT 1 FROM conversation) \
         RETURNING 1), \
     promoted AS (",
    promote_bulk!(),
    " RETURNING 1) \
     SELECT EXISTS (SELECT 1 FROM inbound), EXISTS (SELECT 1 FROM turn), \
         EXISTS (SELECT 1 FROM as_read), \
         CASE WHEN EXISTS (SELECT 1 FROM inbound) AND NOT EXISTS (SELECT 1 FROM conversation) \
              THEN switchboard_conversation_moved() ELSE TRUE END"
);

/// Gives a turn back without writing (a duplicate, or a failure). Turns are
/// given back by lapsing them at once rather than deleting the row: the next
/// message takes the row over with an update that touches no indexed column, so
/// Postgres updates it in place (HOT) and prunes the old versions as it goes,
/// with or without autovacuum.
const RELEASE_TURN: &str =
    "UPDATE contact_turns SET until_ms = 0 WHERE bot = $1 AND contact = $2 AND token = $3";

/// How long a turn lasts before another instance may take it over. Longer than
/// any step may run (a webhook's deadline stops steps well before), so only a
/// holder that died loses its turn this way.
const TURN_LEASE: Duration = Duration::from_secs(30);

/// Longest pause between two tries at a turn somebody else holds.
const TURN_POLL_MAX: Duration = Duration::from_millis(100);

/// The channel senders listen on for "replies were queued".
const OUTBOX_CHANNEL: &str = "switchboard_outbox";

/// Every instance shares the server's connection limit; 16 per instance leaves
/// room for several instances under Postgres's default of 100.
const DEFAULT_MAX_CONNECTIONS: u32 = 16;

#[derive(Clone)]
pub(super) struct PgStore {
    pub(super) pool: sqlx::PgPool,
}

impl PgStore {
    pub(super) async fn connect(url: &str, options: &StoreOptions) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS))
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(super::ping_if_idle)
            .connect(url)
            .await?;
        Ok(PgStore { pool })
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx holds an advisory lock while migrating, so instances starting
        // together apply each migration once.
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes the contact's turn for `msg`, waiting while another instance holds
    /// it, and reads whether the SID was seen and the conversation. Holds no
    /// connection while waiting or afterwards: the turn is a row, and `turn`
    /// gives it back when dropped unless [`PgStore::write_step`] did.
    pub(super) async fn take_turn(
        &self,
        msg: &NewInbound,
        turn: &mut PgTurn,
    ) -> Result<Lookup, StoreError> {
        let lease = i64::try_from(TURN_LEASE.as_millis()).unwrap_or(i64::MAX / 2);
        let mut pause = Duration::from_millis(2);
        loop {
            let taken: TakenTurn = sqlx::query_as(TAKE_TURN)
                .bind(&msg.bot)
                .bind(&msg.message_sid)
                .bind(&msg.contact)
                .bind(turn.token)
                .bind(lease)
                .fetch_one(&self.pool)
                .await?;
            if taken.taken {
                turn.held = true;
                if !taken.read_again {
                    return Ok(taken.lookup);
                }
                // Another message's turn came and went after this statement's
                // snapshot: read what it wrote.
                return Ok(sqlx::query_as(sql::LOOKUP)
                    .bind(&msg.bot)
                    .bind(&msg.message_sid)
                    .bind(&msg.contact)
                    .fetch_one(&self.pool)
                    .await?);
            }
            // Another instance is stepping one of this contact's messages (this
            // process serializes its own): wait for it, briefly at first.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(TURN_POLL_MAX);
        }
    }

    /// Whether the SID was seen, and the conversation: the read of a repeatable
    /// step, which takes no turn.
    pub(super) async fn lookup(&self, msg: &NewInbound) -> Result<Lookup, StoreError> {
        Ok(sqlx::query_as(sql::LOOKUP)
            .bind(&msg.bot)
            .bind(&msg.message_sid)
            .bind(&msg.contact)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Writes what the step decided, in one statement that also gives the turn
    /// back (if the message took one); see [`WRITE_STEP`].
    pub(super) async fn write_step(
        &self,
        msg: &NewInbound,
        current: Option<&ConversationRecord>,
        out: &StepOutput,
        mut turn: Option<&mut PgTurn>,
    ) -> Result<Written, StoreError> {
        let write = sql::StepWrite::new(msg, current, out);
        let written: Result<(bool, bool, bool, bool), sqlx::Error> =
            bind_step!(sqlx::query_as(WRITE_STEP), &write)
                .bind(write.replies.iter().map(|r| r.0).collect::<Vec<_>>())
                .bind(
                    write
                        .replies
                        .iter()
                        .map(|r| r.1.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(turn.as_ref().map(|turn| turn.token))
                .bind(write.opt_out_change)
                .bind(write.replies.iter().map(|r| r.2).collect::<Vec<_>>())
                .bind(&write.contents)
                .bind(write.state.timeout_at_ms)
                .bind(&write.state.on_timeout)
                .bind(write.handoff.0)
                .bind(write.handoff.1)
                .bind(write.handoff.2)
                .bind(write.notice.map(|n| n.0))
                .bind(write.notice.map(|n| n.1))
                .fetch_one(&self.pool)
                .await;
        let (inbound_written, turn_held, as_read, _) = match written {
            Ok(row) => row,
            // `switchboard_conversation_moved()`: nothing was written.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("40001") => {
                return Ok(Written::LookAgain)
            }
            Err(error) => return Err(error.into()),
        };
        Ok(match (inbound_written, turn_held, as_read) {
            (true, _, _) => {
                if let Some(turn) = turn.as_mut() {
                    turn.held = false;
                }
                Written::Done
            }
            // The turn lapsed (a step longer than its lease) and somebody else
            // may have moved the conversation on, or this write already went
            // through on a connection that broke before answering: look again.
            (false, false, _) => {
                if let Some(turn) = turn.as_mut() {
                    turn.held = false;
                }
                Written::LookAgain
            }
            (false, true, false) => Written::LookAgain,
            // Another contact's message carrying the same SID (the turn is per
            // contact, the dedupe key per bot).
            (false, true, true) => Written::Duplicate,
        })
    }

    /// A turn for one message, not yet taken.
    pub(super) fn turn(&self, msg: &NewInbound) -> PgTurn {
        PgTurn {
            pool: self.pool.clone(),
            bot: msg.bot.clone(),
            contact: msg.contact.clone(),
            token: rand::random(),
            held: false,
        }
    }

    /// Candidates are locked with `SKIP LOCKED`, so concurrent claimers (other
    /// tasks or instances) pass over each other's rows instead of waiting, and a
    /// row whose lease another claimer renewed meanwhile is re-checked against the
    /// claim condition on its new version and dropped. The head-of-line test
    /// keeps a conversation's next row back while an earlier one is queued or
    /// sending, whether or not that claim has committed yet. The CTEs are
    /// materialized (they lock rows), so each `LIMIT` is applied once; expired
    /// leases go first, and a due row locked but left out (the limit was filled)
    /// is unlocked when the statement ends. (`picked_id`: a plain `id` would be
    /// ambiguous in `RETURNING`.)
    pub(super) async fn claim_due(
        &self,
        req: ClaimRequest,
        token: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        const CLAIM: &str = concat!(
            "WITH expired AS (",
            expired_leases!(),
            " FOR UPDATE SKIP LOCKED), \
             due AS (",
            due_replies!(),
            " FOR UPDATE SKIP LOCKED), \
             picked AS (SELECT id AS picked_id FROM expired \
                 UNION ALL SELECT id FROM due LIMIT $4) \
             UPDATE outbox SET status = 'sending', lease_until = $2, claim_token = $3, \
                 attempts = attempts + 1, updated_at = $1 \
             FROM picked WHERE outbox.id = picked.picked_id \
             RETURNING ",
            outbox_columns!()
        );
        let records = claim_query!(CLAIM, req, token)
            .fetch_all(&self.pool)
            .await?;
        record::outbox_rows(records)
    }

    /// Claims up to `req.limit` of `bot`'s due broadcast messages, as
    /// [`PostgresStore::claim_due`] claims replies.
    pub(super) async fn claim_bulk(
        &self,
        req: ClaimRequest,
        token: i64,
        bot: &str,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        const CLAIM: &str = concat!(
            "WITH picked AS (",
            due_bulk!(),
            " FOR UPDATE SKIP LOCKED) \
             UPDATE outbox SET status = 'sending', lease_until = $2, claim_token = $3, \
                 attempts = attempts + 1, updated_at = $1 \
             FROM (SELECT id AS picked_id FROM picked) AS p WHERE outbox.id = p.picked_id \
             RETURNING ",
            outbox_columns!()
        );
        let records = claim_query!(CLAIM, req, token, bot)
            .fetch_all(&self.pool)
            .await?;
        record::outbox_rows(records)
    }

    /// The whole batch in one statement (one round trip, one commit): the
    /// outcomes travel as parallel arrays and are joined to their rows, with the
    /// same claim check as a single completion.
    pub(super) async fn complete_sends(
        &self,
        batch: &[Completion],
    ) -> Result<Vec<bool>, StoreError> {
        const COMPLETE_SENDS: &str = concat!(
            "UPDATE outbox AS o SET status = c.status, \
                 twilio_sid = COALESCE(c.sid, o.twilio_sid), \
                 next_attempt_at = COALESCE(c.next_at, o.next_attempt_at), \
                 error_code = c.code, error_message = c.message, \
                 lease_until = NULL, claim_token = NULL, updated_at = c.now, \
                 history = o.history || ",
            attempt_number!("o.attempts"),
            " || c.line \
             FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], \
                         $5::BIGINT[], $6::BIGINT[], $7::TEXT[], $8::BIGINT[], $9::TEXT[]) \
                  AS c(id, token, status, sid, next_at, code, message, now, line) \
             WHERE o.id = c.id AND o.claim_token = c.token AND o.status = 'sending' \
             RETURNING o.id"
        );
        let mut columns = CompletionColumns::default();
        for completion in batch {
            let (status, sid, next_at, code, message) = completion.columns();
            columns.ids.push(completion.id);
            columns.tokens.push(completion.claim_token);
            columns.statuses.push(status.as_str());
            columns.sids.push(sid);
            columns.next_ats.push(next_at);
            columns.codes.push(code);
            columns.messages.push(message);
            columns.nows.push(completion.now_ms);
            columns.lines.push(completion.history_line());
        }
        let recorded: Vec<i64> = sqlx::query_scalar(COMPLETE_SENDS)
            .bind(&columns.ids)
            .bind(&columns.tokens)
            .bind(&columns.statuses)
            .bind(&columns.sids)
            .bind(&columns.next_ats)
            .bind(&columns.codes)
            .bind(&columns.messages)
            .bind(&columns.nows)
            .bind(&columns.lines)
            .fetch_all(&self.pool)
            .await?;
        let recorded: std::collections::HashSet<i64> = recorded.into_iter().collect();
        Ok(batch.iter().map(|c| recorded.contains(&c.id)).collect())
    }

    /// The claims travel as parallel arrays. Rows are locked with `SKIP LOCKED`
    /// before the claim check, so the check sees the latest committed version
    /// and nothing waits; a row not locked is `Busy` if it still exists (a
    /// missing one was finished and pruned long ago: lost).
    pub(super) async fn renew_claims(
        &self,
        claims: &[(i64, i64)],
        lease_until_ms: i64,
    ) -> Result<Vec<Renewal>, StoreError> {
        const RENEW_CLAIMS: &str = "WITH asked AS ( \
                 SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[]) AS a(id, token)), \
             locked AS ( \
                 SELECT o.id, (o.status = 'sending' AND o.claim_token = a.token) AS held \
                 FROM outbox o JOIN asked a ON o.id = a.id \
                 FOR UPDATE OF o SKIP LOCKED), \
             renewed AS ( \
                 UPDATE outbox SET lease_until = $3 FROM locked \
                 WHERE outbox.id = locked.id AND locked.held) \
             SELECT a.id, CASE WHEN l.id IS NOT NULL THEN COALESCE(l.held, FALSE) \
                               WHEN NOT EXISTS (SELECT 1 FROM outbox x WHERE x.id = a.id) \
                               THEN FALSE END \
             FROM asked a LEFT JOIN locked l ON l.id = a.id";
        let (ids, tokens): (Vec<i64>, Vec<i64>) = claims.iter().copied().unzip();
        let found: Vec<(i64, Option<bool>)> = sqlx::query_as(RENEW_CLAIMS)
            .bind(&ids)
            .bind(&tokens)
            .bind(lease_until_ms)
            .fetch_all(&self.pool)
            .await?;
        let found: std::collections::HashMap<i64, Option<bool>> = found.into_iter().collect();
        Ok(ids
            .iter()
            .map(|id| match found.get(id).copied().flatten() {
                Some(true) => Renewal::Renewed,
                Some(false) => Renewal::Lost,
                None => Renewal::Busy,
            })
            .collect())
    }

    pub(super) async fn notify_outbox(&self) -> Result<(), StoreError> {
        sqlx::query(&format!("NOTIFY {OUTBOX_CHANNEL}"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The bot's advisory lock serializes the count-then-insert, so two senders
    /// never both take the last slot of a window. The lock key space is the
    /// contacts' too; a collision only makes two unrelated waits share a lock.
    pub(super) async fn take_send_slot(
        &self,
        bot: &str,
        max: u32,
        window: Duration,
    ) -> Result<SendSlot, StoreError> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(contact_lock_key(bot, "\u{0}send_slots"))
            .execute(&mut *tx)
            .await?;
        let now: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT")
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM send_slots WHERE bot = $1 AND sent_at <= $2")
            .bind(bot)
            .bind(now - window_ms)
            .execute(&mut *tx)
            .await?;
        let (count, oldest): (i64, Option<i64>) =
            sqlx::query_as("SELECT count(*), min(sent_at) FROM send_slots WHERE bot = $1")
                .bind(bot)
                .fetch_one(&mut *tx)
                .await?;
        let slot = if count < i64::from(max.max(1)) {
            sqlx::query("INSERT INTO send_slots (bot, sent_at) VALUES ($1, $2)")
                .bind(bot)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            SendSlot::Granted
        } else {
            let free_at = oldest.unwrap_or(now) + window_ms;
            SendSlot::Wait(Duration::from_millis(
                u64::try_from(free_at - now).unwrap_or(0).max(1),
            ))
        };
        tx.commit().await?;
        Ok(slot)
    }

    pub(super) async fn listen_outbox(&self) -> Result<OutboxListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(OUTBOX_CHANNEL).await?;
        Ok(OutboxListener { listener })
    }
}

/// [`Completion`]s turned inside out, one array per column, for `unnest`.
#[derive(Default)]
struct CompletionColumns<'a> {
    ids: Vec<i64>,
    tokens: Vec<i64>,
    statuses: Vec<&'a str>,
    sids: Vec<Option<&'a str>>,
    next_ats: Vec<Option<i64>>,
    codes: Vec<Option<i64>>,
    messages: Vec<Option<&'a str>>,
    nows: Vec<i64>,
    /// Each attempt's line of its row's history.
    lines: Vec<String>,
}

/// [`TAKE_TURN`]'s answer.
#[derive(sqlx::FromRow)]
struct TakenTurn {
    taken: bool,
    read_again: bool,
    #[sqlx(flatten)]
    lookup: Lookup,
}

/// One message's turn at its contact (see [`PgStore::take_turn`]). Given back by
/// the write that records the message, or, when dropped while still held (a
/// duplicate, an error, a cancelled request), by a statement sent from a task of
/// its own; should that fail too, the turn lapses after [`TURN_LEASE`].
pub(super) struct PgTurn {
    pool: sqlx::PgPool,
    bot: String,
    contact: String,
    token: i64,
    held: bool,
}

impl PgTurn {
    /// The token a statement presents to act under this turn.
    pub(super) fn token(&self) -> i64 {
        self.token
    }

    /// The caller's own statement gave the turn back (a start's write).
    pub(super) fn given_back(&mut self) {
        self.held = false;
    }
}

impl Drop for PgTurn {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (pool, bot, contact, token) = (
            self.pool.clone(),
            std::mem::take(&mut self.bot),
            std::mem::take(&mut self.contact),
            self.token,
        );
        runtime.spawn(async move {
            let released = sqlx::query(RELEASE_TURN)
                .bind(&bot)
                .bind(&contact)
                .bind(token)
                .execute(&pool)
                .await;
            if let Err(error) = released {
                tracing::warn!(%bot, %error, "could not give a contact's turn back; it lapses by itself");
            }
        });
    }
}

/// Wakes a sender when any instance queued replies (Postgres only).
pub struct OutboxListener {
    listener: PgListener,
}

impl std::fmt::Debug for OutboxListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboxListener")
    }
}

impl OutboxListener {
    /// Waits for the next wake-up. Notifications that piled up meanwhile are folded
    /// into this one. After a lost connection the listener reconnects on its own,
    /// but notifications sent in between are gone: callers also poll.
    pub async fn recv(&mut self) -> Result<(), StoreError> {
        self.listener.recv().await?;
        while self.listener.next_buffered().is_some() {}
        Ok(())
    }
}

/// A stable 64-bit key for the contact's advisory lock: the same in every
/// instance and every build (unlike `std`'s hasher, whose output may change
/// between Rust releases). Length-prefixed so `("ab", "c")` and `("a", "bc")`
/// differ.
fn contact_lock_key(bot: &str, contact: &str) -> i64 {
    let mut hasher = Sha256::new();
    hasher.update((bot.len() as u64).to_be_bytes());
    hasher.update(bot.as_bytes());
    hasher.update(contact.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::contact_lock_key;

    #[test]
    fn lock_key_is_stable_and_separates_bot_from_contact() {
        // Pinned: instances of different builds running side by side (a rolling
        // deploy) must lock the same key for the same contact.
        let key = contact_lock_key("kibo", "whatsapp:+14155550100");
        assert_eq!(key, -77_789_742_967_404_868);
        assert_ne!(key, contact_lock_key("kibo", "whatsapp:+14155550101"));
        assert_ne!(contact_lock_key("ab", "c"), contact_lock_key("a", "bc"));
    }
}
