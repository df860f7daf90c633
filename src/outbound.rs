//! Conversations the business starts (SPEC §9.1): [`Outbound::request`] checks
//! and records a start and runs it at once, or leaves it to the scheduler
//! ([`Outbound::run`]), which claims due starts from the `starts` table (so
//! they survive restarts and run once across instances) and runs each through
//! [`Inbound::start`], the same way a message is run.
//!
//! Must not: know HTTP (the API's status codes are `http/`'s), or SQL.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::Clock;
use crate::flow::{Bot, Registry};
use crate::inbound::Inbound;
use crate::store::{
    IfActive, InsertedStart, NewBroadcast, NewStart, StartRow, StartStatus, StartStep,
    StartWritten, Store, StoreError,
};

/// How long a claimed start is an instance's before another may take it over
/// (its instance died). Longer than any step runs.
const START_LEASE: Duration = Duration::from_secs(60);

/// The longest the scheduler sleeps between looks, so a start is at most about
/// this late (and a clock moved by a test is noticed).
const POLL: Duration = Duration::from_millis(250);

/// Due starts claimed (and run side by side) at once.
const BATCH: usize = 32;

/// Waits that ran out moved on at once, side by side. More than [`BATCH`]:
/// 10,000 waits set within 15 s (a reminder's buttons sent to a broadcast's
/// contacts) fire as fast as they were set only with more of them in flight
/// (32 at a time left them 2 s late; docs/performance.md, "Timers").
const TIMER_BATCH: usize = 128;

/// While this instance has had a webhook within [`BUSY_WINDOW`], a
/// broadcast's contacts are started this many at a time, one batch per
/// [`BROADCAST_PACE`] (at most 160 a second; about 70 on the 2 cores of
/// docs/performance.md); otherwise [`BATCH`] at a time, back to back. Unpaced,
/// starting 100,000 contacts (each a conversation step and a write, then a
/// send) beside 600 webhooks/s took the machine's spare capacity and more:
/// webhook p50 went from 3 to 24 ms; paced, 4.5 to 6 ms (docs/performance.md,
/// "Broadcasts").
const BROADCAST_BATCH: usize = 8;
const BROADCAST_PACE: Duration = Duration::from_millis(50);
const BUSY_WINDOW: Duration = Duration::from_secs(1);

/// A bot's broadcast messages waiting to be sent at which the scheduler stops
/// starting more of its broadcast contacts until the sender catches up
/// (RapidPro pauses an org's broadcasts at the same outbox size).
pub const BULK_HIGH_WATER: usize = 10_000;

/// How long idempotency keys are kept (SPEC §9.1), and finished starts.
const KEYS_KEPT: Duration = Duration::from_secs(24 * 60 * 60);
const FINISHED_KEPT: Duration = Duration::from_secs(30 * 24 * 60 * 60);
const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);

/// A start asked for through the API, checked for shape by the caller.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// The contact's address, `whatsapp:+1...` or `+1...`.
    pub to: String,
    pub node: String,
    pub vars: Map<String, Value>,
    /// When to start (ms since the epoch); now when `None` or past.
    pub at_ms: Option<i64>,
    pub if_active: IfActive,
    pub idempotency_key: Option<String>,
}

/// One contact of a broadcast: their address and vars.
pub type Contact = (String, Map<String, Value>);

/// A broadcast asked for through the API (SPEC §9.3), checked for shape by
/// the caller: one start of `node` per contact.
#[derive(Debug, Clone, Default)]
pub struct BroadcastRequest {
    pub node: String,
    /// Each contact's address and vars; a contact listed twice is started once.
    pub contacts: Vec<Contact>,
    pub at_ms: Option<i64>,
    pub if_active: IfActive,
}

/// The API's answer to an accepted start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartAnswer {
    pub id: i64,
    /// `started`, `scheduled` or `skipped`.
    pub status: String,
    /// Why it was skipped.
    pub reason: Option<String>,
}

/// Why a start was refused; nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum StartRefused {
    #[error("bot `{bot}` has no node `{node}`")]
    UnknownNode { bot: String, node: String },
    #[error("node `{node}` is not in bot.yaml `outbound:`, the list of nodes that may be started: add it there, or start one of {allowed}")]
    NotOutbound { node: String, allowed: String },
    #[error("the contact opted out of this bot's messages (they sent a stop word); nothing is sent to them until they send a start word")]
    OptedOut,
    #[error("a request with this Idempotency-Key is still being processed; retry in a moment")]
    InProgress,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Starts conversations: one per engine, shared by the API and the scheduler.
pub struct Outbound {
    store: Store,
    registry: Arc<Registry>,
    inbound: Arc<Inbound>,
    clock: Arc<dyn Clock>,
    /// Rung when a start is scheduled, so the scheduler looks again.
    wake: Notify,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").finish_non_exhaustive()
    }
}

impl Outbound {
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        inbound: Arc<Inbound>,
        clock: Arc<dyn Clock>,
    ) -> Outbound {
        Outbound {
            store,
            registry,
            inbound,
            clock,
            wake: Notify::new(),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Starts a conversation for `bot` now, or records it for later. A retried
    /// request (same idempotency key within 24 hours) gets the first answer and
    /// starts nothing.
    pub async fn request(
        &self,
        bot: &Arc<Bot>,
        request: StartRequest,
    ) -> Result<StartAnswer, StartRefused> {
        if let Some(key) = &request.idempotency_key {
            if let Some(first) = self.store.start_with_key(bot.id.as_str(), key).await? {
                return answer_of(&first);
            }
        }
        startable(bot, &request.node)?;
        let status = self
            .store
            .contact_status(bot.id.as_str(), &request.to)
            .await?;
        if bot.opt_out.is_some() && status.is_some_and(|s| s.opted_out_at_ms.is_some()) {
            return Err(StartRefused::OptedOut);
        }
        let now_ms = self.now_ms();
        let new = NewStart {
            bot: bot.id.to_string(),
            contact: request.to,
            node: request.node,
            vars: request.vars,
            if_active: request.if_active,
            run_at_ms: request.at_ms.unwrap_or(now_ms).max(now_ms),
            idempotency_key: request.idempotency_key,
            now_ms,
        };
        let row = match self
            .store
            .insert_start(&new, rand::random(), START_LEASE)
            .await?
        {
            // Another request with the same key got there first.
            InsertedStart::Existing(first) => return answer_of(&first),
            InsertedStart::New(row) => row,
        };
        if row.status == StartStatus::Scheduled {
            self.wake.notify_one();
            return Ok(StartAnswer {
                id: row.id,
                status: StartStatus::Scheduled.as_str().to_owned(),
                reason: None,
            });
        }
        match self.inbound.start(bot.clone(), &row).await {
            Ok(written) => Ok(match written {
                StartWritten::Started { .. } => StartAnswer {
                    id: row.id,
                    status: StartStatus::Started.as_str().to_owned(),
                    reason: None,
                },
                StartWritten::Skipped(reason) => StartAnswer {
                    id: row.id,
                    status: StartStatus::Skipped.as_str().to_owned(),
                    reason: Some(reason),
                },
                // Only after a step longer than the lease: whoever took the
                // start over recorded the answer.
                StartWritten::Lost => match self.store.start(row.id).await? {
                    Some(now) if now.answer.is_some() => return answer_of(&now),
                    _ => return Err(StartRefused::InProgress),
                },
            }),
            Err(error) => {
                // The client is told it failed: the start must not run later.
                if let Some(token) = row.claim_token {
                    if let Err(cleanup) = self.store.abandon_start(row.id, token).await {
                        tracing::warn!(start = row.id, error = %cleanup, "could not drop a start whose request failed; it runs when its claim lapses");
                    }
                }
                Err(error.into())
            }
        }
    }

    /// Records a broadcast (SPEC §9.3): one scheduled start per contact, all
    /// in one transaction, due at `at_ms` or now; the scheduler starts them in
    /// batches, skipping opted-out, busy and out-of-window contacts with the
    /// reason. Answers the broadcast's id and how many contacts it has.
    pub async fn broadcast(
        &self,
        bot: &Arc<Bot>,
        request: BroadcastRequest,
    ) -> Result<(i64, usize), StartRefused> {
        startable(bot, &request.node)?;
        let mut seen = std::collections::HashSet::new();
        let contacts: Vec<_> = request
            .contacts
            .into_iter()
            .filter(|(to, _)| seen.insert(to.clone()))
            .collect();
        let now_ms = self.now_ms();
        let total = contacts.len();
        let id = self
            .store
            .insert_broadcast(&NewBroadcast {
                bot: bot.id.to_string(),
                node: request.node,
                if_active: request.if_active,
                run_at_ms: request.at_ms.unwrap_or(now_ms).max(now_ms),
                contacts,
                now_ms,
            })
            .await?;
        self.wake.notify_one();
        Ok((id, total))
    }

    /// Runs due starts until `stop` is cancelled: every instance runs one, and
    /// each start is claimed by one of them.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut last_prune: Option<i64> = None;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let now_ms = self.now_ms();
            let wait = self
                .starts_due(now_ms)
                .await
                .min(self.timeouts_due(now_ms).await);
            let prune_due = last_prune.is_none_or(|at| {
                now_ms - at >= i64::try_from(PRUNE_EVERY.as_millis()).unwrap_or(0)
            });
            if prune_due {
                last_prune = Some(now_ms);
                let keys = now_ms - i64::try_from(KEYS_KEPT.as_millis()).unwrap_or(0);
                let finished = now_ms - i64::try_from(FINISHED_KEPT.as_millis()).unwrap_or(0);
                if let Err(error) = self.store.prune_starts(keys, finished).await {
                    tracing::warn!(%error, "pruning conversation starts");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs the starts due at `now_ms`, single ones and broadcasts'
    /// contacts; answers how long until more may be due.
    async fn starts_due(&self, now_ms: i64) -> Duration {
        let single = self.single_starts_due(now_ms).await;
        single.min(self.broadcast_starts_due(now_ms).await)
    }

    /// Runs the single starts (and lapsed claims) due at `now_ms`, never held
    /// back by a broadcast.
    async fn single_starts_due(&self, now_ms: i64) -> Duration {
        match self.store.next_start_due().await {
            Ok(Some(due)) if due <= now_ms => {
                match self
                    .store
                    .claim_due_starts(now_ms, START_LEASE, rand::random(), BATCH)
                    .await
                {
                    Ok(claimed) => {
                        self.run_all(&claimed).await;
                        // A full batch: more may be waiting.
                        if claimed.len() == BATCH {
                            Duration::ZERO
                        } else {
                            POLL
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "claiming due conversation starts");
                        POLL
                    }
                }
            }
            Ok(due) => until(due, now_ms),
            Err(error) => {
                tracing::warn!(%error, "looking for due conversation starts");
                POLL
            }
        }
    }

    /// Starts the broadcasts' contacts due at `now_ms`, bot by bot: each bot
    /// with contacts due gets its share of a batch, unless
    /// [`BULK_HIGH_WATER`] of its messages wait to be sent. A broadcast then
    /// goes out at the pace its bot sends, each contact's conversation is
    /// entered shortly before its message leaves (so a contact who writes
    /// meanwhile is skipped as active, not interrupted), the outbox does not
    /// fill with 100,000 rows at once, and one bot's slow broadcast (a low
    /// `max_per_second`) holds back no other bot's.
    async fn broadcast_starts_due(&self, now_ms: i64) -> Duration {
        let bots = match self.store.broadcast_bots_due().await {
            Ok(bots) => bots,
            Err(error) => {
                tracing::warn!(%error, "looking for due broadcast contacts");
                return POLL;
            }
        };
        let (due, later): (Vec<_>, Vec<_>) = bots.into_iter().partition(|(_, at)| *at <= now_ms);
        let next = later
            .iter()
            .map(|(_, at)| until(Some(*at), now_ms))
            .min()
            .unwrap_or(POLL);
        if due.is_empty() {
            return next;
        }
        // Paced only while webhooks come in: otherwise a broadcast has the
        // machine to itself.
        let paced = self.inbound.busy(BUSY_WINDOW);
        let share = if paced { BROADCAST_BATCH } else { BATCH }.div_ceil(due.len());
        let mut claimed = Vec::new();
        let mut full = false;
        for (bot, _) in &due {
            if !self.broadcast_may_start(bot).await {
                continue;
            }
            match self
                .store
                .claim_broadcast_starts(bot, now_ms, START_LEASE, rand::random(), share)
                .await
            {
                Ok(rows) => {
                    full |= rows.len() == share;
                    claimed.extend(rows);
                }
                Err(error) => tracing::warn!(%bot, %error, "claiming due broadcast contacts"),
            }
        }
        self.run_all(&claimed).await;
        next.min(match claimed.is_empty() {
            // Every due bot held back (or a claim failed): look again later.
            true => POLL,
            // At a pace that leaves the webhooks room.
            false if paced => BROADCAST_PACE,
            // A full share: more may be waiting.
            false if full => Duration::ZERO,
            false => POLL,
        })
    }
    /// Moves on the conversations whose wait ran out by `now_ms` (SPEC §9.2);
    /// answers how long until more may run out. Not claimed: each runs under
    /// its contact's turn and only if its wait is still there, so an instance
    /// that finds one fired elsewhere does nothing.
    async fn timeouts_due(&self, now_ms: i64) -> Duration {
        match self.store.next_timeout_due().await {
            Ok(Some(due)) if due <= now_ms => {
                match self.store.due_timeouts(now_ms, TIMER_BATCH).await {
                    Ok(due) => {
                        let count = due.len();
                        futures::future::join_all(due.iter().map(|due| async move {
                            let bot = self.registry.get(&due.bot);
                            if let Err(error) = self.inbound.time_out(bot, due).await {
                                tracing::warn!(bot = %due.bot, contact = %due.contact, %error, "a wait ran out but moving the conversation on failed; trying again");
                            }
                        }))
                        .await;
                        if count == TIMER_BATCH {
                            Duration::ZERO
                        } else {
                            POLL
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "reading conversations whose wait ran out");
                        POLL
                    }
                }
            }
            Ok(due) => until(due, now_ms),
            Err(error) => {
                tracing::warn!(%error, "looking for waits that ran out");
                POLL
            }
        }
    }

    /// Whether `bot`'s broadcast contacts may be started now: not while
    /// [`BULK_HIGH_WATER`] of its broadcast messages wait to be sent.
    async fn broadcast_may_start(&self, bot: &str) -> bool {
        match self.store.bulk_waiting(bot, BULK_HIGH_WATER).await {
            Ok(waiting) => waiting < BULK_HIGH_WATER,
            Err(error) => {
                tracing::warn!(%bot, %error, "counting waiting broadcast messages");
                false
            }
        }
    }

    /// Runs claimed starts side by side.
    async fn run_all(&self, claimed: &[StartRow]) {
        futures::future::join_all(claimed.iter().map(|row| self.run_one(row))).await;
    }

    /// Runs one claimed start; a start whose bot or node went away meanwhile
    /// is skipped with that reason.
    async fn run_one(&self, row: &StartRow) {
        let ran = match self.registry.get(&row.bot) {
            Some(bot) if bot.may_start_at(&row.node) => self.inbound.start(bot, row).await,
            gone => {
                let reason = if gone.is_none() {
                    "bot_not_loaded"
                } else {
                    "unknown_node"
                };
                self.store
                    .process_start(row, self.now_ms(), move |_| async move {
                        StartStep::Skip(reason.to_owned())
                    })
                    .await
            }
        };
        match ran {
            Ok(written) => {
                tracing::debug!(start = row.id, bot = %row.bot, outcome = ?written, "scheduled start ran")
            }
            // The claim lapses and the start is tried again (by any instance).
            Err(error) => {
                tracing::warn!(start = row.id, bot = %row.bot, %error, "a scheduled start failed; it is tried again when its claim lapses")
            }
        }
    }
}

/// How long to sleep before `due` (at most [`POLL`]; `None`: nothing pending).
fn until(due: Option<i64>, now_ms: i64) -> Duration {
    match due {
        Some(due) => POLL.min(Duration::from_millis(
            u64::try_from(due.saturating_sub(now_ms)).unwrap_or(0),
        )),
        None => POLL,
    }
}

/// Whether the API may start `node` of `bot`: it exists, and `outbound:`
/// names it when the bot has that list.
fn startable(bot: &Bot, node: &str) -> Result<(), StartRefused> {
    if bot.node(node).is_none() {
        return Err(StartRefused::UnknownNode {
            bot: bot.id.to_string(),
            node: node.to_owned(),
        });
    }
    if !bot.may_start_at(node) {
        let allowed = bot
            .outbound
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(StartRefused::NotOutbound {
            node: node.to_owned(),
            allowed,
        });
    }
    Ok(())
}

/// The answer recorded for a start, for a retried request.
fn answer_of(row: &StartRow) -> Result<StartAnswer, StartRefused> {
    let Some(status) = &row.answer else {
        return Err(StartRefused::InProgress);
    };
    Ok(StartAnswer {
        id: row.id,
        status: status.clone(),
        reason: (status == StartStatus::Skipped.as_str())
            .then(|| row.reason.clone())
            .flatten(),
    })
}
