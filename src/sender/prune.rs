//! Deleting finished outbox and inbound rows past their retention, in a task
//! beside the loop: deleting a period's rows can take a while, and claims must
//! not wait for it.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Sender;

/// When the last pruning started, and the one running, if any.
#[derive(Default)]
pub(super) struct Pruning {
    last: Option<Instant>,
    running: Option<JoinHandle<()>>,
}

impl Pruning {
    /// Starts a pruning in the background when one is due and none is running.
    pub(super) fn start_if_due(&mut self, sender: &Sender) {
        let idle = self.running.as_ref().is_none_or(|p| p.is_finished());
        let every = prune_every(sender.config.retention);
        if idle && self.last.is_none_or(|t| t.elapsed() > every) {
            self.last = Some(Instant::now());
            self.running = Some(tokio::spawn(sender.clone().prune()));
        }
    }

    /// Stops a pruning still running; the next one deletes what it left.
    pub(super) fn stop(self) {
        if let Some(running) = self.running {
            running.abort();
        }
    }
}

impl Sender {
    async fn prune(self) {
        let retention = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX / 2);
        match self.store.prune(self.now_ms() - retention).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "pruned finished outbox and inbound rows"),
            Err(error) => tracing::warn!(%error, "pruning failed; will try again"),
        }
    }
}

/// How often finished rows past their retention are deleted: hourly, or ten
/// times per retention period when that is shorter (so a short retention keeps
/// the tables small), but at most once a second.
fn prune_every(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
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
