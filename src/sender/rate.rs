//! Each bot's `max_per_second`: a slot per send, from a window shared by every
//! instance (the store's, on Postgres) or from an in-memory one (SQLite, a single
//! process).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::leases::Lease;
use super::Sender;
use crate::store::{SendSlot, StoreError};

/// The window `max_per_second` is counted over: one second, plus a margin for the
/// jitter between taking a slot and the request reaching Twilio, so Twilio never
/// sees more than `max` in any one second of its own.
pub const RATE_WINDOW: Duration = Duration::from_millis(1250);

/// How much later than a reply a broadcast message waiting for a slot looks
/// again, so a freed slot goes to a waiting reply first (SPEC §9.3, replies
/// first): longer than the replies' own jitter, short beside a slot's length.
const BULK_DEFERRAL: Duration = Duration::from_millis(25);

impl Sender {
    /// Waits until `bot` may send once more under `max` per window. On Postgres
    /// the window is shared by every instance (the store counts sends per bot);
    /// on SQLite, a single process, an in-memory window does. Gives up after a
    /// few database errors in a row, so the row is retried later instead.
    ///
    /// A backlog can make the wait longer than the claim's lease: the claim is
    /// renewed meanwhile with the others ([`Sender::renew_leases`]), and
    /// `Ok(false)` means it was lost anyway (another sender took the row), so
    /// this one must not send it.
    ///
    /// A broadcast message (`bulk`) leaves [`kept_for_replies`] of the
    /// window's slots to replies, so a reply during a broadcast is sent at
    /// once rather than at the next window; and it looks again
    /// [`BULK_DEFERRAL`] after a reply would, so replies waiting on the same
    /// bot take freed slots first.
    pub(super) async fn rate_slot(
        &self,
        bot: &str,
        max: u32,
        bulk: bool,
        lease: &Lease,
    ) -> Result<bool, StoreError> {
        let (max, deferral) = if bulk {
            (max - kept_for_replies(max), BULK_DEFERRAL)
        } else {
            (max, Duration::ZERO)
        };
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
                    tokio::time::sleep(wait + jitter + deferral).await;
                }
                Ok(SendSlot::NotShared) => {
                    self.limits.acquire(bot, max, deferral).await;
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
}

/// Of a bot's `max_per_second`, the slots a broadcast's messages leave to
/// replies: a tenth, at least one from 5 a second up (below that, a broadcast
/// would lose too much of its pace; replies still take freed slots first).
pub(super) fn kept_for_replies(max: u32) -> u32 {
    if max < 5 {
        0
    } else {
        (max / 10).max(1)
    }
}

/// Per-bot `max_per_second` in one process: at most `max` sends in any sliding
/// one-second window.
#[derive(Default)]
pub(super) struct RateLimits {
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimits {
    /// Waits for a slot of `bot`'s; a waiter looks again `deferral` after the
    /// window frees (broadcast messages defer to replies).
    pub(super) async fn acquire(&self, bot: &str, max: u32, deferral: Duration) {
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
            tokio::time::sleep(wait_for + deferral).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_bot_gets_max_slots_per_second_and_others_are_not_held_up() {
        let limits = RateLimits::default();
        let start = Instant::now();
        limits.acquire("shop", 2, Duration::ZERO).await;
        limits.acquire("shop", 2, Duration::ZERO).await;
        limits.acquire("bank", 2, Duration::ZERO).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        limits.acquire("shop", 2, Duration::ZERO).await;
        assert_eq!(
            start.elapsed(),
            SECOND,
            "the third waits for the first to leave the window"
        );
        limits.acquire("shop", 2, Duration::ZERO).await;
        assert_eq!(start.elapsed(), SECOND);
        limits.acquire("shop", 2, Duration::ZERO).await;
        assert_eq!(start.elapsed(), 2 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reply_takes_the_freed_slot_before_waiting_broadcast_messages() {
        let limits = std::sync::Arc::new(RateLimits::default());
        limits.acquire("shop", 1, Duration::ZERO).await;
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        // Three broadcast messages start waiting before the reply does.
        for who in ["bulk 1", "bulk 2", "bulk 3", "reply"] {
            let (limits, order) = (limits.clone(), order.clone());
            let deferral = if who == "reply" {
                Duration::ZERO
            } else {
                BULK_DEFERRAL
            };
            waiting.push(tokio::spawn(async move {
                limits.acquire("shop", 1, deferral).await;
                order.lock().unwrap().push(who);
            }));
            tokio::task::yield_now().await;
        }
        for task in waiting {
            task.await.unwrap();
        }
        assert_eq!(order.lock().unwrap()[0], "reply");
    }

    #[test]
    fn broadcasts_leave_a_tenth_of_the_rate_to_replies() {
        assert_eq!(kept_for_replies(1), 0);
        assert_eq!(kept_for_replies(4), 0);
        assert_eq!(kept_for_replies(5), 1);
        assert_eq!(kept_for_replies(20), 2);
        assert_eq!(kept_for_replies(80), 8);
    }
}
