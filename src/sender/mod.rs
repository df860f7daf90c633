//! The outbox drain: claims due rows with a lease, sends them through Twilio (or
//! records them under `--dry-run`), and records the outcome with the retry policy.
//!
//! Per-conversation order comes from the store, which only ever hands out the oldest
//! unfinished reply of a conversation. This loop only decides *when* and *how*:
//! woken in-process by the webhook side, by Postgres `NOTIFY` from other instances,
//! and by polling as the fallback; backing off while the database is unreachable.
//!
//! - `mod.rs`: [`Sender`] and its loop (claim, spawn sends, idle, shut down).
//! - `attempt`: one send, its classification and the recording of its outcome.
//! - `gate`: what a row must pass to be sent at all (opt-out, the 24-hour window).
//! - `content`: the Content resources interactive menus are sent from.
//! - `retry`: the retry policy; `backoff`: the one exponential backoff with jitter.
//! - `leases`: the claims held, renewed together, checked before a send starts.
//! - `rate`: each bot's `max_per_second` (across instances on Postgres).
//! - `completions`: the group-commit writer of outcomes.
//! - `outage`: backing off while claims fail; `prune`: deleting old rows.
//! - `listen`: wake-ups from other instances (their `NOTIFY`s; sending ours is
//!   [`OutboxSignal`]'s).
//!
//! Times stored with rows (due times, lease ends) come from the injected
//! [`Clock`]; every wait is a tokio sleep and every elapsed time a tokio
//! `Instant`, so the waits can be tested under `tokio::time::pause()`.

mod attempt;
pub(crate) mod backoff;
mod completions;
mod content;
mod gate;
mod leases;
mod listen;
mod outage;
mod prune;
mod rate;
mod retry;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::completions::Completions;
use self::leases::{Claims, Lease};
use self::outage::Outage;
use self::prune::Pruning;
use self::rate::RateLimits;
use self::retry::RetryPolicy;
use crate::config::SenderConfig;
use crate::domain::Clock;
use crate::flow::Registry;
use crate::hooks::Events;
use crate::outbox_signal::OutboxSignal;
use crate::store::{ClaimRequest, OutboxRow, Store, StoreError};
use crate::twilio::TwilioClient;

pub use self::rate::RATE_WINDOW;

/// The sender task's parts. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    store: Store,
    registry: Arc<Registry>,
    twilio: TwilioClient,
    clock: Arc<dyn Clock>,
    config: SenderConfig,
    retry: RetryPolicy,
    wake: OutboxSignal,
    dry_run: bool,
    public_url: Option<String>,
    limits: Arc<RateLimits>,
    events: Events,
    completions: Arc<OnceLock<Completions>>,
    content: Arc<content::ContentResources>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("config", &self.config)
            .field("dry_run", &self.dry_run)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Sender {
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        config: SenderConfig,
        wake: OutboxSignal,
        dry_run: bool,
        public_url: Option<String>,
    ) -> Sender {
        let twilio = TwilioClient::new(config.request_timeout);
        Sender {
            store,
            registry,
            twilio,
            clock,
            retry: RetryPolicy::new(&config),
            config,
            wake,
            dry_run,
            public_url,
            limits: Arc::default(),
            events: Events::none(),
            completions: Arc::default(),
            content: Arc::default(),
        }
    }

    /// Emits a [`SendEvent`](crate::hooks::SendEvent) to `events` after each
    /// recorded send outcome.
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
        let claims = Claims::default();
        let bulk = BulkInFlight::default();
        // In a JoinSet so that dropping this future stops the renewals too.
        let mut renewal = JoinSet::new();
        renewal.spawn(self.clone().renew_leases(claims.clone()));
        let mut pruning = Pruning::default();
        let mut outage = Outage::default();
        let listener = tokio::spawn(self.clone().listen(stop.clone()));
        while !stop.is_cancelled() {
            pruning.start_if_due(&self);
            while let Some(done) = in_flight.try_join_next_with_id() {
                claims.forget(&done);
            }
            let free = concurrency
                .saturating_sub(in_flight.len())
                .min(self.config.batch);
            let bulk_free = bulk_share(concurrency)
                .saturating_sub(bulk.in_flight())
                .min(free);
            let mut claimed = 0;
            if free > 0 {
                // Replies first, their sends started before broadcast
                // messages are even looked for.
                let mut failed = None;
                match self.claim_replies(free).await {
                    Ok(rows) => {
                        claimed += rows.len();
                        self.start_sends(rows, &mut in_flight, &claims, &bulk);
                    }
                    Err(error) => failed = Some(error),
                }
                let room = bulk_free.min(free - claimed);
                if failed.is_none() && room > 0 {
                    match self.claim_bulk(room, &bulk).await {
                        Ok(rows) => {
                            claimed += rows.len();
                            self.start_sends(rows, &mut in_flight, &claims, &bulk);
                        }
                        Err(error) => failed = Some(error),
                    }
                }
                match failed {
                    None => outage.recovered(),
                    Some(error) => {
                        outage.failed(&error, &stop).await;
                        continue;
                    }
                }
            }
            // A full batch means more may be waiting: claim again at once.
            if free > 0 && claimed == free {
                continue;
            }
            let idle = if claimed == 0 && free > 0 {
                self.idle_time(bulk_free > 0).await
            } else {
                self.config.poll_interval
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = self.wake.woken() => {}
                _ = tokio::time::sleep(idle) => {}
                // A finished send may unblock its conversation's next reply.
                Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    claims.forget(&done);
                }
            }
        }
        listener.abort();
        pruning.stop();
        let drain = async {
            while let Some(done) = in_flight.join_next_with_id().await {
                claims.forget(&done);
            }
        };
        if tokio::time::timeout(self.drain_bound(), drain)
            .await
            .is_err()
        {
            in_flight.abort_all();
            while in_flight.join_next().await.is_some() {}
            renewal.abort_all();
            self.release(claims.take_all()).await;
        }
    }

    /// Gives back the claims of sends stopped at shutdown, so the next sender
    /// need not wait for their leases to run out.
    async fn release(&self, left: Vec<(i64, i64)>) {
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

    /// How long shutdown waits for sends in flight
    /// ([`SenderConfig::shutdown_drain`](crate::SenderConfig::shutdown_drain)).
    pub fn drain_bound(&self) -> Duration {
        self.config.shutdown_drain
    }

    /// How long to sleep when there is nothing to do: until the next retry or lease
    /// expiry is due (broadcast messages only `with_bulk`), at most the poll
    /// interval.
    async fn idle_time(&self, with_bulk: bool) -> Duration {
        let poll = self.config.poll_interval;
        match self.store.next_due_at(with_bulk).await {
            Ok(Some(due)) => {
                let now = self.now_ms();
                let ms = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
                Duration::from_millis(ms).min(poll)
            }
            _ => poll,
        }
    }

    /// Starts a send for each claimed row, holding its claim (renewed while it
    /// runs) and, for a broadcast message, its count.
    fn start_sends(
        &self,
        rows: Vec<OutboxRow>,
        in_flight: &mut JoinSet<()>,
        claims: &Claims,
        bulk: &BulkInFlight,
    ) {
        for row in rows {
            let sender = self.clone();
            let lease = Arc::new(Lease::new(&row, self.lease_ms()));
            let held = lease.clone();
            let counted = row.bulk.then(|| bulk.count(&row.bot));
            let task = in_flight.spawn(async move {
                let _counted = counted;
                sender.send_one(row, &held).await
            });
            claims.hold(task.id(), lease);
        }
    }

    fn claim_request(&self, limit: usize) -> ClaimRequest {
        ClaimRequest {
            now_ms: self.now_ms(),
            lease: self.config.lease,
            limit,
            bulk_limit: limit,
        }
    }

    /// Claims up to `limit` due replies (and expired claims).
    async fn claim_replies(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.store.claim_replies(self.claim_request(limit)).await
    }

    /// Claims up to `limit` broadcast messages, shared between the bots that
    /// have some; a bot with `max_per_second` gets no more in flight than a
    /// second's worth ([`bulk_cap`]).
    async fn claim_bulk(
        &self,
        limit: usize,
        bulk: &BulkInFlight,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.store
            .claim_bulk(self.claim_request(limit), |bot| {
                let cap = self
                    .registry
                    .get(bot)
                    .and_then(|bot| bot.twilio.max_per_second)
                    .map_or(usize::MAX, bulk_cap);
                cap.saturating_sub(bulk.of(bot))
            })
            .await
    }

    /// Claims what is due and sends it, waiting for every send: one step of the
    /// loop, for tests and tools.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let mut rows = self.claim_replies(self.config.batch).await?;
        let room = self.config.batch - rows.len();
        rows.extend(self.claim_bulk(room, &BulkInFlight::default()).await?);
        let count = rows.len();
        futures::future::join_all(rows.into_iter().map(|row| async move {
            let lease = Lease::new(&row, self.lease_ms());
            self.send_one(row, &lease).await
        }))
        .await;
        Ok(count)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX / 2)
    }
}

/// Of `concurrency` sends in flight, how many may be broadcast messages: half
/// (at least one). The other half is always free for replies, so a reply is
/// claimed and sent at once however long a broadcast's sends wait on
/// `max_per_second` or on a slow Twilio (SPEC §9.3, replies first).
fn bulk_share(concurrency: usize) -> usize {
    (concurrency / 2).max(1)
}

/// Of a bot's broadcast messages, how many one sender has in flight at most
/// when the bot has `max_per_second`: a second's worth. More would only wait
/// for the bot's send slots while holding sends in flight another bot's
/// broadcast could use (SPEC §9.3).
fn bulk_cap(max_per_second: u32) -> usize {
    usize::try_from(max_per_second.max(1)).unwrap_or(usize::MAX)
}

/// Broadcast messages being sent by this sender, by bot: each send holds a
/// count while it runs.
#[derive(Clone, Default)]
struct BulkInFlight(Arc<std::sync::Mutex<BulkCounts>>);

#[derive(Default)]
struct BulkCounts {
    total: usize,
    by_bot: std::collections::HashMap<String, usize>,
}

impl BulkInFlight {
    fn in_flight(&self) -> usize {
        self.lock().total
    }

    /// `bot`'s broadcast messages in flight.
    fn of(&self, bot: &str) -> usize {
        self.lock().by_bot.get(bot).copied().unwrap_or(0)
    }

    fn count(&self, bot: &str) -> BulkCounted {
        let mut counts = self.lock();
        counts.total += 1;
        *counts.by_bot.entry(bot.to_owned()).or_default() += 1;
        BulkCounted {
            counts: self.clone(),
            bot: bot.to_owned(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BulkCounts> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One broadcast message's count in [`BulkInFlight`], given back when its
/// send ends (or is aborted).
struct BulkCounted {
    counts: BulkInFlight,
    bot: String,
}

impl Drop for BulkCounted {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_bot.get_mut(&self.bot) {
            *n -= 1;
            if *n == 0 {
                counts.by_bot.remove(&self.bot);
            }
        }
    }
}
