//! Delivering handoff notices (SPEC §10.2): a JSON POST to a bot's
//! `handoff_notify` URL when a conversation is handed to a person and for
//! each message that arrives while it waits, signed
//! `X-Switchboard-Signature: sha256=<hex HMAC-SHA256 of the body>` with the
//! bot's `handoff_secret`.
//!
//! Durable like a send: the notice is a row written with the step that
//! causes it (`store/`); [`Notifier::run`], on every serving instance, claims
//! due rows with a lease (one instance delivers each), POSTs each with a
//! deadline, no redirects and no proxy, reads at most a few KiB of the
//! answer, and retries with backoff for a day. Only the URL in the bot's
//! bot.yaml at delivery time is ever called.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::domain::Clock;
use crate::flow::Registry;
use crate::sender::backoff::Backoff;
use crate::store::{NoticeOutcome, NoticeRow, Store, StoreError};

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Switchboard-Signature";
/// How long one delivery may take, connecting included.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of the receiver's answer is read (and thrown away).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// How long a notice is retried before it is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// A claim's lease: longer than a delivery may take, so a live instance
/// never loses one; a dead instance's lapses and another delivers.
const LEASE: Duration = Duration::from_secs(60);
/// Notices claimed at once.
const BATCH: usize = 16;
/// Longest sleep between looks for due notices (other instances write them).
const POLL: Duration = Duration::from_millis(500);
/// Delivered and failed notices are kept this long (for the log's sake).
const KEPT: Duration = Duration::from_secs(7 * 24 * 60 * 60);
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);
/// The wait after the first failure, doubled per failure to at most the max.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5 * 60));

/// The JSON body a receiver gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoticeBody {
    /// `handoff` (the conversation was handed off) or `message` (the contact
    /// wrote while it waits).
    pub event: String,
    pub bot: String,
    pub contact: String,
    pub queue: String,
    /// The contact's message (for a handoff, the one that led to it, if any).
    pub text: String,
    /// The conversation in the console's inbox.
    pub console: String,
    /// When it happened, RFC 3339.
    pub at: String,
}

/// The console's inbox page of `contact` with `bot`: under `public_url`
/// when the server has one, else a path from the server's root.
pub fn console_link(public_url: Option<&str>, bot: &str, contact: &str) -> String {
    let base = public_url.unwrap_or("").trim_end_matches('/');
    format!(
        "{base}/console/inbox/{}/{}",
        path_segment(bot),
        path_segment(contact)
    )
}

/// `text` as one path segment: everything but unreserved characters
/// percent-escaped (`whatsapp:+1415...` is `whatsapp%3A%2B1415...`).
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `sha256=` and the hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Delivers notices; one per serving instance.
pub struct Notifier {
    store: Store,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// `--public-url`, for the console links.
    public_url: Option<String>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// What one delivery attempt came to.
enum Attempt {
    Delivered,
    /// Not delivered; this says why.
    Failed(String),
}

impl Notifier {
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        public_url: Option<String>,
    ) -> Notifier {
        let http = reqwest::Client::builder()
            .connect_timeout(NOTIFY_TIMEOUT)
            .timeout(NOTIFY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with rustls builds");
        Notifier {
            store,
            registry,
            clock,
            http,
            public_url,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Delivers due notices until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut last_prune: Option<i64> = None;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let now_ms = self.now_ms();
            let wait = match self.deliver_due(now_ms).await {
                Ok(BATCH) => Duration::ZERO,
                Ok(_) => self.until_next(now_ms).await,
                Err(error) => {
                    tracing::warn!(%error, "claiming handoff notices");
                    POLL
                }
            };
            if last_prune.is_none_or(|at| now_ms - at >= ms(PRUNE_EVERY)) {
                last_prune = Some(now_ms);
                if let Err(error) = self.store.prune_notices(now_ms - ms(KEPT)).await {
                    tracing::warn!(%error, "pruning handoff notices");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// How long to sleep: until the next notice is due, at most [`POLL`].
    async fn until_next(&self, now_ms: i64) -> Duration {
        match self.store.next_notice_due().await {
            Ok(Some(due)) => {
                Duration::from_millis(u64::try_from(due.saturating_sub(now_ms)).unwrap_or(0))
                    .min(POLL)
            }
            Ok(None) => POLL,
            Err(error) => {
                tracing::warn!(%error, "looking for due handoff notices");
                POLL
            }
        }
    }

    /// Claims the notices due at `now_ms` and delivers them one after another,
    /// in the order they were written, so a receiver gets a handoff before the
    /// messages that follow it (a failed one is retried later, out of that
    /// order: receivers should order by `at`); answers how many were claimed.
    pub async fn deliver_due(&self, now_ms: i64) -> Result<usize, StoreError> {
        let claimed = self
            .store
            .claim_notices(now_ms, LEASE, rand::random(), BATCH)
            .await?;
        let count = claimed.len();
        for notice in &claimed {
            self.deliver(notice).await;
        }
        Ok(count)
    }

    /// One delivery of a claimed notice, and its outcome recorded.
    async fn deliver(&self, notice: &NoticeRow) {
        let bot = self.registry.get(&notice.bot);
        let target = bot.as_ref().and_then(|b| b.handoff.notify.clone());
        let outcome = match target {
            // Nobody to tell: the bot does not notify (any more), or is not loaded.
            None => NoticeOutcome::Failed {
                error: "the bot has no handoff_notify".to_owned(),
            },
            Some((url, secret)) => match self.post(notice, &url, secret.expose()).await {
                Attempt::Delivered => NoticeOutcome::Delivered,
                Attempt::Failed(error) => {
                    let now_ms = self.now_ms();
                    let failures = u32::try_from(notice.attempts).unwrap_or(u32::MAX);
                    let at_ms = now_ms.saturating_add(ms(RETRY.delay(failures, None)));
                    tracing::warn!(bot = %notice.bot, notice = notice.id, attempts = notice.attempts, %error, "handoff notice not delivered");
                    if at_ms - notice.created_at > ms(GIVE_UP_AFTER) {
                        NoticeOutcome::Failed { error }
                    } else {
                        NoticeOutcome::Retry { at_ms, error }
                    }
                }
            },
        };
        let label = match &outcome {
            NoticeOutcome::Delivered => "delivered",
            NoticeOutcome::Retry { .. } => "retried",
            NoticeOutcome::Failed { .. } => "failed",
        };
        metrics::counter!("switchboard_handoff_notices_total", "bot" => notice.bot.clone(), "outcome" => label)
            .increment(1);
        let now_ms = self.now_ms();
        match self
            .store
            .complete_notice(notice.id, notice.claim_token, &outcome, now_ms)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(notice = notice.id, "a handoff notice's claim lapsed before its outcome was written; it may be delivered again")
            }
            Err(error) => {
                tracing::warn!(notice = notice.id, %error, "recording a handoff notice's outcome; its claim lapses and it is delivered again")
            }
        }
    }

    /// The body of `notice`, as sent.
    pub fn body(&self, notice: &NoticeRow) -> NoticeBody {
        NoticeBody {
            event: notice.event.clone(),
            bot: notice.bot.clone(),
            contact: notice.contact.clone(),
            queue: notice.queue.clone(),
            text: notice.text.clone(),
            console: console_link(self.public_url.as_deref(), &notice.bot, &notice.contact),
            at: DateTime::<Utc>::from_timestamp_millis(notice.created_at)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    /// POSTs `notice` to `url`, signed with `secret`: delivered on a 2xx.
    async fn post(&self, notice: &NoticeRow, url: &str, secret: &str) -> Attempt {
        let body = match serde_json::to_vec(&self.body(notice)) {
            Ok(body) => body,
            Err(error) => return Attempt::Failed(format!("could not write the body: {error}")),
        };
        let sent = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(secret, &body))
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => {
                let what = if error.is_timeout() {
                    "timed out"
                } else if error.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                return Attempt::Failed(what.to_owned());
            }
        };
        // The answer is not used: read a little of it (so the connection can
        // be reused) and no more.
        let mut read = 0usize;
        while read < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        let status = response.status();
        if status.is_success() {
            Attempt::Delivered
        } else if status.is_redirection() {
            Attempt::Failed(format!(
                "answered {status}: redirects are not followed, set handoff_notify to the final URL"
            ))
        } else {
            Attempt::Failed(format!("answered {status}"))
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn console_links_escape_the_contact() {
        assert_eq!(
            console_link(
                Some("https://bots.example.com/"),
                "shop",
                "whatsapp:+14155550100"
            ),
            "https://bots.example.com/console/inbox/shop/whatsapp%3A%2B14155550100"
        );
        assert_eq!(
            console_link(None, "shop", "+1415"),
            "/console/inbox/shop/%2B1415"
        );
    }
}
