//! The outbox drain: claims due rows with a lease, sends them through Twilio (or
//! records them under `--dry-run`), and records the outcome with the retry policy.
//!
//! Per-conversation order comes from the store, which only ever hands out the oldest
//! unfinished reply of a conversation. This loop only decides *when* and *how*:
//! woken in-process by the webhook side, by Postgres `NOTIFY` from other instances
//! ([`OutboxNotifier`] sends them, coalesced), and by polling as the fallback; backing
//! off while the database is unreachable; holding each bot's `max_per_second` across
//! instances (through the store on Postgres, in memory on SQLite).
//!
//! Claims are short leases kept alive while their sends run: one statement every
//! third of a lease renews all of them (see [`Lease`]), so a sender that dies
//! loses its rows within one lease, and a send never starts on a claim that is
//! lost or that could not be renewed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::SenderConfig;
use crate::domain::Clock;
use crate::flow::Registry;
use crate::hooks::{Events, SendEvent};
use crate::logging::without_contact;
use crate::store::{
    Backend, ClaimRequest, Completion, OutboxRow, Renewal, SendResult, SendSlot, Store, StoreError,
};
use crate::twilio::{OutgoingMessage, SendOutcome, TwilioClient};

/// The sender task's parts. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    store: Store,
    registry: Arc<Registry>,
    twilio: TwilioClient,
    clock: Arc<dyn Clock>,
    config: SenderConfig,
    wake: Arc<Notify>,
    dry_run: bool,
    public_url: Option<String>,
    limits: Arc<RateLimits>,
    events: Events,
    completions: Arc<OnceLock<Completions>>,
}

impl Sender {
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        config: SenderConfig,
        wake: Arc<Notify>,
        dry_run: bool,
        public_url: Option<String>,
    ) -> Sender {
        let twilio = TwilioClient::new(config.request_timeout);
        Sender {
            store,
            registry,
            twilio,
            clock,
            config,
            wake,
            dry_run,
            public_url,
            limits: Arc::default(),
            events: Events::none(),
            completions: Arc::default(),
        }
    }

    /// Emits a [`SendEvent`] to `events` after each recorded send outcome.
    pub fn with_events(mut self, events: Events) -> Sender {
        self.events = events;
        self
    }

    /// Runs until `stop` fires, then waits (at most [`Sender::drain_bound`]) for
    /// sends in flight so no claimed row is left half-done; a send still running
    /// after that is aborted and its row released, to be sent again by whoever
    /// claims it next. Dropping the future aborts the sends in flight and the
    /// renewal of their claims, as a crash would; their leases then expire.
    pub async fn run(self, stop: CancellationToken) {
        let concurrency = self.config.concurrency.max(1);
        let mut in_flight = JoinSet::new();
        let claims: Claims = Arc::default();
        // In a JoinSet so that dropping this future stops the renewals too.
        let mut renewal = JoinSet::new();
        renewal.spawn(self.clone().renew_leases(claims.clone()));
        let mut last_prune: Option<Instant> = None;
        let mut pruning: Option<tokio::task::JoinHandle<()>> = None;
        let mut outage = Outage::default();
        let listener = tokio::spawn(self.clone().listen(stop.clone()));
        while !stop.is_cancelled() {
            // Pruning runs beside the loop: deleting a period's rows can take a
            // while, and claims must not wait for it (the soak saw sends stall).
            let pruned = pruning.as_ref().is_none_or(|p| p.is_finished());
            if pruned && last_prune.is_none_or(|t| t.elapsed() > prune_every(self.config.retention))
            {
                last_prune = Some(Instant::now());
                pruning = Some(tokio::spawn(self.clone().prune()));
            }
            while let Some(done) = in_flight.try_join_next_with_id() {
                forget(&claims, &done);
            }
            let free = concurrency
                .saturating_sub(in_flight.len())
                .min(self.config.batch);
            let mut claimed = 0;
            if free > 0 {
                match self.claim(free).await {
                    Ok(rows) => {
                        outage.recovered();
                        claimed = rows.len();
                        for row in rows {
                            let sender = self.clone();
                            let lease = Arc::new(Lease::new(&row, self.lease_ms()));
                            let held = lease.clone();
                            let task =
                                in_flight.spawn(async move { sender.send_one(row, &held).await });
                            lock(&claims).insert(task.id(), lease);
                        }
                    }
                    Err(error) => {
                        // Sleep out the backoff (or until told to stop); a wake-up
                        // does not shorten it: the database is what we wait for.
                        let delay = outage.failed(&error);
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = tokio::time::sleep(delay) => {}
                        }
                        continue;
                    }
                }
            }
            // A full batch means more may be waiting: claim again at once.
            if free > 0 && claimed == free {
                continue;
            }
            let idle = if claimed == 0 && free > 0 {
                self.idle_time().await
            } else {
                self.config.poll_interval
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
                // A finished send may unblock its conversation's next reply.
                Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    forget(&claims, &done);
                }
            }
        }
        listener.abort();
        if let Some(pruning) = pruning {
            pruning.abort();
        }
        let drain = async {
            while let Some(done) = in_flight.join_next_with_id().await {
                forget(&claims, &done);
            }
        };
        if tokio::time::timeout(self.drain_bound(), drain)
            .await
            .is_err()
        {
            in_flight.abort_all();
            while in_flight.join_next().await.is_some() {}
            renewal.abort_all();
            let left: Vec<(i64, i64)> = lock(&claims)
                .drain()
                .map(|(_, lease)| (lease.id, lease.token))
                .collect();
            tracing::warn!(
                rows = left.len(),
                "sends still in flight at shutdown were stopped; releasing their rows"
            );
            for (id, token) in left {
                if let Err(error) = self.store.release_claim(id, token).await {
                    tracing::warn!(outbox_id = id, %error, "could not release a row; its lease will expire");
                }
            }
        }
    }

    /// Keeps this sender's claims alive while their sends run (or wait for a
    /// rate-limit slot): every third of a lease, one statement renews each claim
    /// that has used a third of its lease, so a short send costs no renewal and
    /// the cost per round does not grow with the sends in flight. A claim found
    /// lost is marked so its send does not start; one that could not be renewed
    /// (database unreachable) simply runs down, and [`Sender::still_held`] stops
    /// its send from starting once little of it is left.
    async fn renew_leases(self, claims: Claims) {
        let tick = (self.config.lease / 3).max(Duration::from_millis(10));
        let tick_ms = i64::try_from(tick.as_millis()).unwrap_or(i64::MAX / 2);
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            let now_ms = self.now_ms();
            let until = now_ms + self.lease_ms();
            let due: Vec<Arc<Lease>> = lock(&claims)
                .values()
                .filter(|lease| !lease.is_lost() && lease.held_until() <= until - tick_ms)
                .cloned()
                .collect();
            if due.is_empty() {
                continue;
            }
            let asked: Vec<(i64, i64)> = due.iter().map(|l| (l.id, l.token)).collect();
            match self.store.renew_claims(&asked, until).await {
                Ok(found) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("sender: renewing claims again");
                    }
                    for (lease, renewal) in due.iter().zip(found) {
                        match renewal {
                            Renewal::Renewed => lease.extend(until),
                            Renewal::Lost => lease.lose(),
                            Renewal::Busy => {}
                        }
                    }
                }
                Err(error) => {
                    if !failing {
                        failing = true;
                        tracing::warn!(%error, claims = asked.len(), "sender: cannot renew claims; no send starts on a claim about to lapse");
                    }
                }
            }
        }
    }

    /// How long shutdown waits for sends in flight
    /// ([`SenderConfig::shutdown_drain`](crate::SenderConfig::shutdown_drain)).
    pub fn drain_bound(&self) -> Duration {
        self.config.shutdown_drain
    }

    /// Turns `NOTIFY`s from other instances into wake-ups of this sender, for as
    /// long as the sender runs (Postgres only). Reconnects after errors, with a
    /// capped backoff; each (re)connection also wakes the sender once, since
    /// notifications sent while disconnected are lost.
    async fn listen(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut failing = false;
        while !stop.is_cancelled() {
            let mut listener = match self.store.listen_outbox().await {
                Ok(Some(listener)) => listener,
                Ok(None) => return,
                Err(error) => {
                    if !failing {
                        failing = true;
                        tracing::warn!(%error, "sender: cannot LISTEN for wake-ups; polling meanwhile, will reconnect");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(backoff.next()) => {}
                    }
                    continue;
                }
            };
            if std::mem::take(&mut failing) {
                tracing::info!("sender: listening for wake-ups again");
            }
            backoff.reset();
            self.wake.notify_one();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    received = listener.recv() => match received {
                        Ok(()) => self.wake.notify_one(),
                        Err(error) => {
                            failing = true;
                            tracing::warn!(%error, "sender: lost the LISTEN connection; polling meanwhile, will reconnect");
                            break;
                        }
                    },
                }
            }
        }
    }

    /// How long to sleep when there is nothing to do: until the next retry or lease
    /// expiry is due, at most the poll interval.
    async fn idle_time(&self) -> Duration {
        let poll = self.config.poll_interval;
        match self.store.next_due_at().await {
            Ok(Some(due)) => {
                let now = self.now_ms();
                let ms = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
                Duration::from_millis(ms).min(poll)
            }
            _ => poll,
        }
    }

    async fn claim(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.store
            .claim_due(ClaimRequest {
                now_ms: self.now_ms(),
                lease: self.config.lease,
                limit,
            })
            .await
    }

    /// Claims what is due and sends it, waiting for every send: one step of the
    /// loop, for tests and tools.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let rows = self.claim(self.config.batch).await?;
        let count = rows.len();
        futures::future::join_all(rows.into_iter().map(|row| async move {
            let lease = Lease::new(&row, self.lease_ms());
            self.send_one(row, &lease).await
        }))
        .await;
        Ok(count)
    }

    /// Sends one claimed row and records the outcome.
    async fn send_one(&self, row: OutboxRow, lease: &Lease) {
        let Some(token) = row.claim_token else {
            return;
        };
        let Some(result) = self.attempt(&row, lease).await else {
            tracing::warn!(
                bot = %row.bot, outbox_id = row.id,
                "claim lost before sending; another sender has the row"
            );
            return;
        };
        let label = match &result {
            SendResult::Sent { .. } => "sent",
            SendResult::Retry { .. } => "retry",
            SendResult::Failed { .. } => "failed",
        };
        let code = match &result {
            SendResult::Retry { error_code, .. } | SendResult::Failed { error_code, .. } => {
                error_code.map(|c| c.to_string()).unwrap_or_default()
            }
            SendResult::Sent { .. } => String::new(),
        };
        metrics::counter!("switchboard_send_attempts_total", "bot" => row.bot.clone(), "outcome" => label, "code" => code)
            .increment(1);
        match &result {
            SendResult::Sent { sid } => {
                tracing::info!(bot = %row.bot, outbox_id = row.id, %sid, "sent")
            }
            SendResult::Retry {
                next_attempt_at_ms,
                error_code,
                error_message,
            } => tracing::warn!(
                bot = %row.bot, outbox_id = row.id, contact = %row.contact, attempt = row.attempts, ?error_code,
                error = %without_contact(error_message, &row.contact),
                retry_in_ms = next_attempt_at_ms - self.now_ms(), "send failed; will retry"
            ),
            SendResult::Failed {
                error_code,
                error_message,
            } => tracing::error!(
                bot = %row.bot, outbox_id = row.id, contact = %row.contact, attempt = row.attempts, ?error_code,
                error = %without_contact(error_message, &row.contact), "send failed for good"
            ),
        }
        let now_ms = self.now_ms();
        let completions = self
            .completions
            .get_or_init(|| Completions::start(self.store.clone()));
        match completions
            .record(Completion {
                id: row.id,
                claim_token: token,
                result: result.clone(),
                now_ms,
            })
            .await
        {
            Ok(true) if self.events.enabled() => self
                .events
                .send_finished(SendEvent::new(&row, &result, now_ms)),
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                bot = %row.bot, outbox_id = row.id,
                "claim lost before the send was recorded (lease expired); the row will be sent again"
            ),
            // The lease will expire and the row be claimed again: at-least-once.
            Err(error) => {
                tracing::error!(bot = %row.bot, outbox_id = row.id, %error, "could not record a send")
            }
        }
    }

    /// One attempt at sending `row`, classified by the retry policy; `None` when
    /// the claim was lost before sending (nothing sent, nothing to record).
    async fn attempt(&self, row: &OutboxRow, lease: &Lease) -> Option<SendResult> {
        let Some(bot) = self.registry.get(&row.bot) else {
            return Some(SendResult::Failed {
                error_code: None,
                error_message: format!("bot `{}` is no longer loaded", row.bot),
            });
        };
        if self.dry_run {
            // The one place a body is logged: showing what would be sent is the point
            // of --dry-run, which is for trying bots out, not for production.
            tracing::info!(bot = %row.bot, outbox_id = row.id, contact = %row.contact, body = %row.body, media = ?row.media, "dry-run: not calling Twilio");
            return Some(SendResult::Sent {
                sid: format!("DRYRUN{:028}", row.id),
            });
        }
        let twilio = &bot.twilio;
        let (Some(account_sid), Some(auth_token), Some(sender)) =
            (&twilio.account_sid, &twilio.auth_token, &twilio.sender)
        else {
            return Some(SendResult::Failed {
                error_code: None,
                error_message: format!("bot `{}` has no Twilio credentials", row.bot),
            });
        };
        if let Some(max) = twilio.max_per_second {
            match self.rate_slot(&row.bot, max, lease).await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(error) => {
                    return Some(SendResult::Retry {
                        next_attempt_at_ms: self.now_ms() + 1000,
                        error_code: None,
                        error_message: format!("could not take a send slot: {error}"),
                    })
                }
            }
        }
        match self.still_held(lease).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(error) => {
                return Some(SendResult::Retry {
                    next_attempt_at_ms: self.now_ms() + 1000,
                    error_code: None,
                    error_message: format!("could not confirm the claim before sending: {error}"),
                })
            }
        }
        let status_callback = self.public_url.as_deref().map(|base| {
            format!(
                "{}/webhooks/twilio/{}/status",
                base.trim_end_matches('/'),
                row.bot
            )
        });
        let started = Instant::now();
        let outcome = self
            .twilio
            .send(&OutgoingMessage {
                api_base: &twilio.api_base,
                account_sid,
                auth_token,
                sender,
                to: &row.contact,
                body: &row.body,
                media: &row.media,
                status_callback: status_callback.as_deref(),
            })
            .await;
        metrics::histogram!("switchboard_send_seconds").record(started.elapsed().as_secs_f64());
        Some(self.classify(row, outcome))
    }

    fn classify(&self, row: &OutboxRow, outcome: SendOutcome) -> SendResult {
        match outcome {
            SendOutcome::Accepted { sid, .. } => SendResult::Sent { sid },
            SendOutcome::Permanent {
                http_status,
                code,
                message,
            } => SendResult::Failed {
                error_code: code,
                error_message: format!("Twilio answered {http_status}: {message}"),
            },
            SendOutcome::Retryable {
                retry_after,
                http_status,
                code,
                message,
            } => {
                let message = match http_status {
                    Some(status) => format!("Twilio answered {status}: {message}"),
                    None => message,
                };
                let attempts = u32::try_from(row.attempts).unwrap_or(u32::MAX);
                if attempts >= self.config.max_attempts {
                    return SendResult::Failed {
                        error_code: code,
                        error_message: format!("gave up after {attempts} attempts: {message}"),
                    };
                }
                let delay = retry_delay(&self.config, attempts, retry_after);
                SendResult::Retry {
                    next_attempt_at_ms: self.now_ms()
                        + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2),
                    error_code: code,
                    error_message: message,
                }
            }
        }
    }

    async fn prune(self) {
        let retention = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX / 2);
        match self.store.prune(self.now_ms() - retention).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "pruned finished outbox and inbound rows"),
            Err(error) => tracing::warn!(%error, "pruning failed; will try again"),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Waits until `bot` may send once more under `max` per window. On Postgres
    /// the window is shared by every instance (the store counts sends per bot);
    /// on SQLite, a single process, an in-memory window does. Gives up after a
    /// few database errors in a row, so the row is retried later instead.
    ///
    /// A backlog can make the wait longer than the claim's lease: the claim is
    /// renewed meanwhile with the others ([`Sender::renew_leases`]), and
    /// `Ok(false)` means it was lost anyway (another sender took the row), so
    /// this one must not send it.
    async fn rate_slot(&self, bot: &str, max: u32, lease: &Lease) -> Result<bool, StoreError> {
        let mut errors = 0;
        loop {
            match self.store.take_send_slot(bot, max, RATE_WINDOW).await {
                Ok(SendSlot::Granted) => return Ok(true),
                Ok(SendSlot::Wait(wait)) => {
                    if lease.is_lost() {
                        return Ok(false);
                    }
                    // Spread the instances' retries so they do not all ask at once.
                    let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..=15));
                    tokio::time::sleep(wait + jitter).await;
                }
                Ok(SendSlot::NotShared) => {
                    self.limits.acquire(bot, max).await;
                    return Ok(true);
                }
                Err(error) => {
                    errors += 1;
                    if errors >= 5 {
                        return Err(error);
                    }
                    tokio::time::sleep(Duration::from_millis(200 * errors)).await;
                }
            }
        }
    }

    /// Whether this sender may start sending the row now: its claim is not known
    /// lost and is held for at least a quarter of a lease more, time enough for
    /// the request to reach Twilio before anyone else could claim the row. The
    /// background renewal keeps a third of a lease or more, so this costs no
    /// round trip (which would sit between a rate-limit slot and its request);
    /// when renewals have been failing, the claim is renewed here first.
    async fn still_held(&self, lease: &Lease) -> Result<bool, StoreError> {
        if lease.is_lost() {
            return Ok(false);
        }
        let now_ms = self.now_ms();
        if lease.held_until() - now_ms >= self.lease_ms() / 4 {
            return Ok(true);
        }
        let until = now_ms + self.lease_ms();
        let held = self.store.renew_claim(lease.id, lease.token, until).await?;
        if held {
            lease.extend(until);
        } else {
            lease.lose();
        }
        Ok(held)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX / 2)
    }
}

/// Records send outcomes in batches ("group commit"): the sends that finish while
/// one batch is being written make up the next, so under load N completions cost
/// one transaction instead of N, and at low rates a batch is a single row written
/// at once (no waiting to fill a batch). A send's task waits for its own answer,
/// so a send counts as finished only once its outcome is committed.
struct Completions {
    queue: mpsc::UnboundedSender<(Completion, oneshot::Sender<Result<bool, String>>)>,
}

/// The most completions written in one transaction.
const MAX_COMPLETION_BATCH: usize = 512;

impl Completions {
    /// Starts the writer task; it ends when the last [`Sender`] clone is dropped.
    fn start(store: Store) -> Completions {
        let (queue, mut pending) =
            mpsc::unbounded_channel::<(Completion, oneshot::Sender<Result<bool, String>>)>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while pending.recv_many(&mut batch, MAX_COMPLETION_BATCH).await > 0 {
                let (completions, answers): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                metrics::histogram!("switchboard_send_completion_batch_size")
                    .record(completions.len() as f64);
                match store.complete_sends(&completions).await {
                    Ok(recorded) => {
                        for (answer, recorded) in answers.into_iter().zip(recorded) {
                            let _ = answer.send(Ok(recorded));
                        }
                    }
                    Err(error) => {
                        let error = error.to_string();
                        for answer in answers {
                            let _ = answer.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Completions { queue }
    }

    /// Records one outcome with the next batch; `Ok(false)` when the claim was lost.
    async fn record(&self, completion: Completion) -> Result<bool, String> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((completion, answer))
            .map_err(|_| "the completion writer has stopped".to_owned())?;
        answered
            .await
            .map_err(|_| "the completion writer has stopped".to_owned())?
    }
}

/// The window `max_per_second` is counted over: one second, plus a margin for the
/// jitter between taking a slot and the request reaching Twilio, so Twilio never
/// sees more than `max` in any one second of its own.
pub const RATE_WINDOW: Duration = Duration::from_millis(1250);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A sender's claims in flight, by the task sending each: renewed together, and
/// released at shutdown if their sends had to be stopped.
type Claims = Arc<Mutex<HashMap<tokio::task::Id, Arc<Lease>>>>;

/// One claim a sender holds, shared by the task sending the row and the
/// renewal. The database is the authority (the row's token and `lease_until`);
/// this is the sender's knowledge of it: until when the row is surely its own.
struct Lease {
    id: i64,
    token: i64,
    /// The lease's end as last claimed or renewed (ms, this sender's clock, which
    /// computed it); [`LOST`] once the claim is known to be gone.
    held_until_ms: AtomicI64,
}

/// [`Lease::held_until_ms`] of a claim known lost.
const LOST: i64 = i64::MIN;

impl Lease {
    /// The claim `row` came with: the claim set `updated_at` to when it began.
    fn new(row: &OutboxRow, lease_ms: i64) -> Lease {
        Lease {
            id: row.id,
            token: row.claim_token.unwrap_or_default(),
            held_until_ms: AtomicI64::new(row.updated_at_ms.saturating_add(lease_ms)),
        }
    }

    fn held_until(&self) -> i64 {
        self.held_until_ms.load(Ordering::Acquire)
    }

    fn is_lost(&self) -> bool {
        self.held_until() == LOST
    }

    /// Records a renewal until `until`; never revives a lost claim.
    fn extend(&self, until: i64) {
        let _ = self
            .held_until_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held != LOST && held < until).then_some(until)
            });
    }

    fn lose(&self) {
        self.held_until_ms.store(LOST, Ordering::Release);
    }
}

/// Drops a finished send from the claims renewed and released at shutdown.
fn forget<T>(
    claims: &Mutex<HashMap<tokio::task::Id, Arc<Lease>>>,
    done: &Result<(tokio::task::Id, T), tokio::task::JoinError>,
) {
    let id = match done {
        Ok((id, _)) => *id,
        Err(error) => error.id(),
    };
    lock(claims).remove(&id);
}

/// Exponential backoff with jitter, capped.
struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            failures: 0,
        }
    }

    fn next(&mut self) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The sender's view of the database: logs once when claiming starts failing and
/// once when it works again, not once per attempt, and paces the attempts.
struct Outage {
    since: Option<Instant>,
    backoff: Backoff,
}

impl Default for Outage {
    fn default() -> Outage {
        Outage {
            since: None,
            backoff: Backoff::new(OUTAGE_BACKOFF_BASE, OUTAGE_BACKOFF_MAX),
        }
    }
}

impl Outage {
    /// Records a failed claim; returns how long to wait before the next one.
    fn failed(&mut self, error: &StoreError) -> Duration {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            metrics::gauge!("switchboard_sender_database_up").set(0.0);
            tracing::warn!(%error, unavailable = error.is_unavailable(), "sender: cannot claim replies; backing off until the database answers");
        }
        self.backoff.next()
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            metrics::gauge!("switchboard_sender_database_up").set(1.0);
            tracing::info!(
                down_ms = since.elapsed().as_millis() as u64,
                "sender: database answers again; sending"
            );
            self.backoff.reset();
        }
    }
}

/// First and longest pause between claims while the database is unreachable.
const OUTAGE_BACKOFF_BASE: Duration = Duration::from_millis(100);
const OUTAGE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Sends `NOTIFY` for replies queued by this instance's webhooks so senders in
/// other instances wake at once, coalesced: however many replies are queued, at
/// most one `NOTIFY` goes out per [`NOTIFY_WINDOW`]. Nothing on SQLite.
#[derive(Clone, Default)]
pub struct OutboxNotifier {
    queued: Arc<Notify>,
}

impl OutboxNotifier {
    /// Notes that replies were committed; cheap, never blocks.
    pub fn queued(&self) {
        self.queued.notify_one();
    }

    /// Sends the coalesced `NOTIFY`s until `stop` fires.
    pub async fn run(self, store: Store, stop: CancellationToken) {
        if store.backend() != Backend::Postgres {
            return;
        }
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.queued.notified() => {}
            }
            match store.notify_outbox().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("NOTIFY works again");
                }
                Ok(()) => {}
                // Senders poll too: a lost wake-up only delays a reply.
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "could not NOTIFY other senders; they will poll");
                }
                Err(_) => {}
            }
            metrics::counter!("switchboard_outbox_notifies_total").increment(1);
            // Everything queued during this window is covered by the next NOTIFY:
            // `notify_one` keeps one permit however often it is called.
            tokio::time::sleep(NOTIFY_WINDOW).await;
        }
    }
}

/// The shortest gap between two `NOTIFY`s from one instance.
pub const NOTIFY_WINDOW: Duration = Duration::from_millis(5);

/// Delay before retry number `attempts` (1 = after the first failure): exponential
/// from `retry_base`, capped at `retry_max`, with jitter in [50%, 100%] so a burst of
/// failures does not retry in lockstep. A `Retry-After` is a floor, never shortened.
pub fn retry_delay(
    config: &SenderConfig,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let full = config
        .retry_base
        .saturating_mul(1u32 << exp)
        .min(config.retry_max);
    let jittered = full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
    match retry_after {
        // Spread retries a little past the floor so they do not all land at once.
        Some(after) => after + after.mul_f64(rand::thread_rng().gen_range(0.0..=0.1)),
        None => jittered,
    }
}

/// How often finished rows past their retention are deleted: hourly, or ten
/// times per retention period when that is shorter (so a short retention keeps
/// the tables small), but at most once a second.
fn prune_every(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Per-bot `max_per_second`: at most `max` sends in any sliding one-second window.
#[derive(Default)]
struct RateLimits {
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimits {
    async fn acquire(&self, bot: &str, max: u32) {
        let max = usize::try_from(max.max(1)).unwrap_or(usize::MAX);
        loop {
            let wait_for = {
                let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
                let window = windows.entry(bot.to_owned()).or_default();
                let now = Instant::now();
                while window
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
                {
                    window.pop_front();
                }
                if window.len() < max {
                    window.push_back(now);
                    return;
                }
                let oldest = *window.front().unwrap_or(&now);
                Duration::from_secs(1).saturating_sub(now.duration_since(oldest))
            };
            tokio::time::sleep(wait_for).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_runs_hourly_or_ten_times_per_short_retention() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(prune_every(30 * day), Duration::from_secs(3600));
        assert_eq!(
            prune_every(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
        assert_eq!(prune_every(Duration::from_secs(2)), Duration::from_secs(1));
    }
}
