//! The one exponential backoff with jitter: the delays of the retry policy, and the
//! waits between tries of something that keeps failing (reconnecting LISTEN,
//! claiming while the database is down). Owns no I/O; its waits are tokio sleeps.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter, capped: the delay after a run of failures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) const fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max }
    }

    /// The delay after `failures` failures in a row (1 = after the first): `base`
    /// doubled per failure after the first, capped at `max`, then a random 50% to
    /// 100% of that, so callers that failed together do not retry in lockstep.
    ///
    /// `asked`, a wait the other side asked for (a `Retry-After`), is a floor that
    /// takes the place of the exponential delay: it is waited out in full, plus up
    /// to 10% so that everyone it throttled does not come back in the same instant.
    pub(crate) fn delay(&self, failures: u32, asked: Option<Duration>) -> Duration {
        let mut rng = rand::thread_rng();
        if let Some(floor) = asked {
            return floor + floor.mul_f64(rng.gen_range(0.0..=0.1));
        }
        let doublings = failures.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1u32 << doublings).min(self.max);
        full.mul_f64(rng.gen_range(0.5..=1.0))
    }
}

/// A run of failures of one thing tried again and again, paced by a [`Backoff`].
#[derive(Debug)]
pub(super) struct Failures {
    backoff: Backoff,
    count: u32,
}

impl Failures {
    pub(super) fn new(backoff: Backoff) -> Failures {
        Failures { backoff, count: 0 }
    }

    /// Counts one more failure and sleeps out its delay, or until `stop` fires.
    pub(super) async fn wait(&mut self, stop: &CancellationToken) {
        self.count = self.count.saturating_add(1);
        let delay = self.backoff.delay(self.count, None);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }

    /// It worked: the next failure waits the shortest delay again.
    pub(super) fn reset(&mut self) {
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn samples(backoff: Backoff, failures: u32, asked: Option<Duration>) -> Vec<Duration> {
        (0..1000).map(|_| backoff.delay(failures, asked)).collect()
    }

    /// Every sample lies in `[low, high]`, and they spread over most of it.
    fn assert_spread(delays: &[Duration], low: Duration, high: Duration) {
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        assert!(
            min >= low && max <= high,
            "{min:?}..{max:?} not in {low:?}..{high:?}"
        );
        let quarter = (high - low) / 4;
        assert!(min < low + quarter, "no delay near {low:?}: lowest {min:?}");
        assert!(
            max > high - quarter,
            "no delay near {high:?}: highest {max:?}"
        );
    }

    #[test]
    fn delays_double_per_failure_with_jitter_between_half_and_all() {
        let backoff = Backoff::new(100 * MS, Duration::from_secs(60));
        assert_spread(&samples(backoff, 1, None), 50 * MS, 100 * MS);
        assert_spread(&samples(backoff, 2, None), 100 * MS, 200 * MS);
        assert_spread(&samples(backoff, 5, None), 800 * MS, 1600 * MS);
    }

    #[test]
    fn delays_stop_growing_at_the_cap() {
        let backoff = Backoff::new(100 * MS, 1000 * MS);
        for failures in [5, 31, 1000, u32::MAX] {
            assert_spread(&samples(backoff, failures, None), 500 * MS, 1000 * MS);
        }
    }

    #[test]
    fn an_asked_for_wait_is_a_floor_with_up_to_a_tenth_more() {
        let backoff = Backoff::new(100 * MS, 1000 * MS);
        let asked = Duration::from_secs(30);
        for failures in [1, 8] {
            let delays = samples(backoff, failures, Some(asked));
            assert_spread(&delays, asked, asked + asked / 10);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_grow_until_reset() {
        let backoff = Backoff::new(100 * MS, 400 * MS);
        let mut failures = Failures::new(backoff);
        let stop = CancellationToken::new();
        let mut waited = Vec::new();
        for _ in 0..4 {
            let start = Instant::now();
            failures.wait(&stop).await;
            waited.push(start.elapsed());
        }
        // The timer counts whole milliseconds, so a wait may end up to 1 ms late.
        let bounds = [(50, 101), (100, 201), (200, 401), (200, 401)];
        for (waited, (low, high)) in waited.iter().zip(bounds) {
            assert!(
                (low * MS..=high * MS).contains(waited),
                "waited {waited:?}, not {low}..{high} ms"
            );
        }
        failures.reset();
        let start = Instant::now();
        failures.wait(&stop).await;
        assert!(
            start.elapsed() <= 101 * MS,
            "after a reset: {:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_a_wait_at_once() {
        let mut failures = Failures::new(Backoff::new(
            Duration::from_secs(10),
            Duration::from_secs(10),
        ));
        let stop = CancellationToken::new();
        stop.cancel();
        let start = Instant::now();
        failures.wait(&stop).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
