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
    pub(super) async fn rate_slot(
        &self,
        bot: &str,
        max: u32,
        lease: &Lease,
    ) -> Result<bool, StoreError> {
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
}

/// Per-bot `max_per_second` in one process: at most `max` sends in any sliding
/// one-second window.
#[derive(Default)]
pub(super) struct RateLimits {
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimits {
    pub(super) async fn acquire(&self, bot: &str, max: u32) {
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

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_bot_gets_max_slots_per_second_and_others_are_not_held_up() {
        let limits = RateLimits::default();
        let start = Instant::now();
        limits.acquire("shop", 2).await;
        limits.acquire("shop", 2).await;
        limits.acquire("bank", 2).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        limits.acquire("shop", 2).await;
        assert_eq!(
            start.elapsed(),
            SECOND,
            "the third waits for the first to leave the window"
        );
        limits.acquire("shop", 2).await;
        assert_eq!(start.elapsed(), SECOND);
        limits.acquire("shop", 2).await;
        assert_eq!(start.elapsed(), 2 * SECOND);
    }
}
