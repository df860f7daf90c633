//! The outbox drain: claims due rows with a lease, sends them through Twilio (or
//! records them under `--dry-run`), and records the outcome with the retry policy.
//!
//! Per-conversation order comes from the store, which only ever hands out the oldest
//! unfinished reply of a conversation. This loop only decides *when* and *how*.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::SenderConfig;
use crate::flow::Registry;
use crate::hooks::{Events, SendEvent};
use crate::script::Clock;
use crate::store::{ClaimRequest, OutboxRow, SendResult, Store, StoreError};
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
        }
    }

    /// Emits a [`SendEvent`] to `events` after each recorded send outcome.
    pub fn with_events(mut self, events: Events) -> Sender {
        self.events = events;
        self
    }

    /// Runs until `stop` fires, then waits for sends in flight (each bounded by the
    /// request timeout) so no claimed row is left half-done. Dropping the future
    /// aborts the sends in flight, as a crash would; their leases then expire.
    pub async fn run(self, stop: CancellationToken) {
        let concurrency = self.config.concurrency.max(1);
        let mut in_flight = JoinSet::new();
        let mut last_prune: Option<Instant> = None;
        while !stop.is_cancelled() {
            if last_prune.is_none_or(|t| t.elapsed() > PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                self.prune().await;
            }
            while in_flight.try_join_next().is_some() {}
            let free = concurrency
                .saturating_sub(in_flight.len())
                .min(self.config.batch);
            let mut claimed = 0;
            if free > 0 {
                match self.claim(free).await {
                    Ok(rows) => {
                        claimed = rows.len();
                        for row in rows {
                            let sender = self.clone();
                            in_flight.spawn(async move { sender.send_one(row).await });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "sender: could not claim rows; backing off");
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
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
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
        futures::future::join_all(rows.into_iter().map(|row| self.send_one(row))).await;
        Ok(count)
    }

    /// Sends one claimed row and records the outcome.
    async fn send_one(&self, row: OutboxRow) {
        let Some(token) = row.claim_token else {
            return;
        };
        let result = self.attempt(&row).await;
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
                bot = %row.bot, outbox_id = row.id, attempt = row.attempts, ?error_code,
                error = %error_message, retry_in_ms = next_attempt_at_ms - self.now_ms(), "send failed; will retry"
            ),
            SendResult::Failed {
                error_code,
                error_message,
            } => tracing::error!(
                bot = %row.bot, outbox_id = row.id, attempt = row.attempts, ?error_code,
                error = %error_message, "send failed for good"
            ),
        }
        let now_ms = self.now_ms();
        match self
            .store
            .complete_send(row.id, token, &result, now_ms)
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

    /// One attempt at sending `row`, classified by the retry policy.
    async fn attempt(&self, row: &OutboxRow) -> SendResult {
        let Some(bot) = self.registry.get(&row.bot) else {
            return SendResult::Failed {
                error_code: None,
                error_message: format!("bot `{}` is no longer loaded", row.bot),
            };
        };
        if self.dry_run {
            // The one place a body is logged: showing what would be sent is the point
            // of --dry-run, which is for trying bots out, not for production.
            tracing::info!(bot = %row.bot, outbox_id = row.id, to = %row.contact, body = %row.body, media = ?row.media, "dry-run: not calling Twilio");
            return SendResult::Sent {
                sid: format!("DRYRUN{:028}", row.id),
            };
        }
        let twilio = &bot.twilio;
        let (Some(account_sid), Some(auth_token), Some(sender)) =
            (&twilio.account_sid, &twilio.auth_token, &twilio.sender)
        else {
            return SendResult::Failed {
                error_code: None,
                error_message: format!("bot `{}` has no Twilio credentials", row.bot),
            };
        };
        if let Some(max) = twilio.max_per_second {
            self.limits.acquire(&row.bot, max).await;
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
        self.classify(row, outcome)
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

    async fn prune(&self) {
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
}

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

/// How often finished rows past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

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
