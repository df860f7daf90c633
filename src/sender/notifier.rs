//! The other side of the cross-instance wake-up: `NOTIFY` for replies this
//! instance's webhooks queued, coalesced (Postgres only).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{Backend, Store};

/// Sends `NOTIFY` for replies queued by this instance's webhooks so senders in
/// other instances wake at once, coalesced: however many replies are queued, at
/// most one `NOTIFY` goes out per [`NOTIFY_WINDOW`]. Nothing on SQLite.
#[derive(Clone, Default)]
pub struct OutboxNotifier {
    queued: Arc<Notify>,
}

impl OutboxNotifier {
    /// Notes that replies were committed; cheap, never blocks.
    pub fn queued(&self) {
        self.queued.notify_one();
    }

    /// Sends the coalesced `NOTIFY`s until `stop` fires.
    pub async fn run(self, store: Store, stop: CancellationToken) {
        if store.backend() != Backend::Postgres {
            return;
        }
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.queued.notified() => {}
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
