//! The signal that replies were queued: it wakes the sender of this process at
//! once and, coalesced, the senders of other instances (Postgres `NOTIFY`).
//!
//! Whoever commits replies calls [`OutboxSignal::queued`]; the sender waits on
//! [`OutboxSignal::woken`]. A sender's own `LISTEN` turns other instances' `NOTIFY`s
//! into [`OutboxSignal::wake_here`], which never sends one back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{Backend, Store};

/// Cheap to clone; clones share one signal.
#[derive(Clone, Debug, Default)]
pub struct OutboxSignal {
    /// Wakes this process's sender.
    here: Arc<Notify>,
    /// Asks [`OutboxSignal::notify_other_instances`] for a `NOTIFY`.
    others: Arc<Notify>,
}

impl OutboxSignal {
    /// Notes that replies were committed; cheap, never blocks.
    pub fn queued(&self) {
        self.here.notify_one();
        self.others.notify_one();
    }

    /// Wakes this process's sender only: for a `NOTIFY` received from another
    /// instance, which must not be echoed.
    pub fn wake_here(&self) {
        self.here.notify_one();
    }

    /// Returns once the sender of this process is woken (at once if it was woken
    /// since it last waited).
    pub async fn woken(&self) {
        self.here.notified().await;
    }

    /// Sends `NOTIFY` for replies queued here until `stop` fires, coalesced: however
    /// many replies are queued, at most one `NOTIFY` per [`NOTIFY_WINDOW`]. Nothing
    /// on SQLite.
    pub async fn notify_other_instances(self, store: Store, stop: CancellationToken) {
        if store.backend() != Backend::Postgres {
            return;
        }
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.others.notified() => {}
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::OutboxSignal;

    async fn is_set(notify: &tokio::sync::Notify) -> bool {
        tokio::time::timeout(Duration::ZERO, notify.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn queued_wakes_this_sender_and_asks_for_one_notify() {
        let signal = OutboxSignal::default();
        signal.queued();
        signal.queued();
        assert!(is_set(&signal.here).await, "the sender here was not woken");
        assert!(is_set(&signal.others).await, "no NOTIFY was asked for");
        // Coalesced: two replies, one permit each.
        assert!(!is_set(&signal.here).await);
        assert!(!is_set(&signal.others).await);
    }

    /// A NOTIFY received must not be echoed: two instances would wake each other
    /// for ever.
    #[tokio::test]
    async fn wake_here_sends_no_notify() {
        let signal = OutboxSignal::default();
        signal.clone().wake_here();
        tokio::time::timeout(Duration::ZERO, signal.woken())
            .await
            .expect("the sender here is woken");
        assert!(
            !is_set(&signal.others).await,
            "a received NOTIFY was echoed"
        );
    }
}
