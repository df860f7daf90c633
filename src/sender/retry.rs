//! The retry policy: after a send failed in a way a retry can fix, whether to try
//! again and how long to wait first (docs/decisions.md, "Sending").

use std::time::Duration;

use super::backoff::Backoff;
use crate::config::SenderConfig;

/// When to try a failed send again, from [`SenderConfig`]'s `max_attempts`,
/// `retry_base` and `retry_max`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
}

impl RetryPolicy {
    pub(super) fn new(config: &SenderConfig) -> RetryPolicy {
        RetryPolicy {
            max_attempts: config.max_attempts,
            backoff: Backoff::new(config.retry_base, config.retry_max),
        }
    }

    /// After try number `attempts` (1 = the first) failed: how long to wait
    /// before the next, or `None` when that was the last one allowed.
    /// `retry_after` (Twilio's `Retry-After`) is a floor, never shortened.
    pub(super) fn after_failure(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        (attempts < self.max_attempts).then(|| self.backoff.delay(attempts, retry_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// The shortest and longest of many delays after try number `attempts`.
    fn range(
        policy: RetryPolicy,
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> (Duration, Duration) {
        let delays: Vec<Duration> = (0..1000)
            .map(|_| policy.after_failure(attempts, retry_after).unwrap())
            .collect();
        (*delays.iter().min().unwrap(), *delays.iter().max().unwrap())
    }

    #[test]
    fn the_defaults_retry_after_1_s_doubling_each_time_with_jitter() {
        let policy = RetryPolicy::new(&SenderConfig::default());
        let (low, high) = range(policy, 1, None);
        assert!(low >= SECOND / 2 && low < SECOND * 6 / 10, "{low:?}");
        assert!(high <= SECOND && high > SECOND * 9 / 10, "{high:?}");
        let (low, high) = range(policy, 4, None);
        assert!(low >= 4 * SECOND && low < 5 * SECOND, "{low:?}");
        assert!(high <= 8 * SECOND && high > 7 * SECOND, "{high:?}");
        let (low, high) = range(policy, 9, None);
        assert!(
            low >= 128 * SECOND && high <= 256 * SECOND,
            "{low:?}..{high:?}"
        );
    }

    #[test]
    fn delays_stop_growing_at_5_minutes() {
        let config = SenderConfig {
            max_attempts: 100,
            ..SenderConfig::default()
        };
        let policy = RetryPolicy::new(&config);
        for attempts in [10, 40, 99] {
            let (low, high) = range(policy, attempts, None);
            assert!(low >= 150 * SECOND && low < 165 * SECOND, "{low:?}");
            assert!(high <= 300 * SECOND && high > 285 * SECOND, "{high:?}");
        }
    }

    #[test]
    fn retry_after_is_waited_in_full_plus_at_most_a_tenth() {
        let policy = RetryPolicy::new(&SenderConfig::default());
        let floor = 120 * SECOND;
        for attempts in [1, 9] {
            let (low, high) = range(policy, attempts, Some(floor));
            assert!(
                low >= floor && high <= floor + floor / 10,
                "{low:?}..{high:?}"
            );
            assert!(high > low, "spread past the floor");
        }
    }

    #[test]
    fn the_last_allowed_attempt_is_not_retried() {
        let policy = RetryPolicy::new(&SenderConfig {
            max_attempts: 3,
            ..SenderConfig::default()
        });
        assert!(policy.after_failure(1, None).is_some());
        assert!(policy.after_failure(2, None).is_some());
        assert_eq!(policy.after_failure(3, None), None);
        assert_eq!(policy.after_failure(4, Some(SECOND)), None);
    }
}
