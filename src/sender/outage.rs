//! The sender's view of an unreachable database: logs once when claiming starts
//! failing and once when it works again, not once per try, and paces the tries.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::{Backoff, Failures};
use crate::store::StoreError;

/// First and longest pause between claims while the database is unreachable.
const OUTAGE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

pub(super) struct Outage {
    since: Option<Instant>,
    failures: Failures,
}

impl Default for Outage {
    fn default() -> Outage {
        Outage {
            since: None,
            failures: Failures::new(OUTAGE_BACKOFF),
        }
    }
}

impl Outage {
    /// Records a failed claim and waits before the next one (or until `stop`
    /// fires). A wake-up does not shorten the wait: the database is what we wait for.
    pub(super) async fn failed(&mut self, error: &StoreError, stop: &CancellationToken) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            metrics::gauge!("switchboard_sender_database_up").set(0.0);
            tracing::warn!(%error, unavailable = error.is_unavailable(), "sender: cannot claim replies; backing off until the database answers");
        }
        self.failures.wait(stop).await;
    }

    /// Records a claim that worked.
    pub(super) fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            metrics::gauge!("switchboard_sender_database_up").set(1.0);
            tracing::info!(
                down_ms = since.elapsed().as_millis() as u64,
                "sender: database answers again; sending"
            );
            self.failures.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    async fn timed_failure(outage: &mut Outage) -> Duration {
        let error = StoreError::Database(sqlx::Error::PoolTimedOut);
        let start = Instant::now();
        outage.failed(&error, &CancellationToken::new()).await;
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn claims_back_off_from_100_ms_to_5_s_and_start_over_after_a_recovery() {
        let mut outage = Outage::default();
        let first = timed_failure(&mut outage).await;
        assert!(
            (50 * MS..=101 * MS).contains(&first),
            "first wait {first:?}"
        );
        let mut last = first;
        for _ in 0..10 {
            last = timed_failure(&mut outage).await;
        }
        assert!(
            (2500 * MS..=5001 * MS).contains(&last),
            "wait after 11 failures {last:?}"
        );
        outage.recovered();
        let again = timed_failure(&mut outage).await;
        assert!(
            (50 * MS..=101 * MS).contains(&again),
            "after recovering {again:?}"
        );
    }
}
