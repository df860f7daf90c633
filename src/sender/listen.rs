//! Wake-ups from other instances: `LISTEN` for the `NOTIFY`s their webhooks send
//! (Postgres only), turned into wake-ups of this sender.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::backoff::{Backoff, Failures};
use super::Sender;

/// First and longest pause between tries to reconnect the `LISTEN` connection.
const RECONNECT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(10));

impl Sender {
    /// Turns `NOTIFY`s from other instances into wake-ups of this sender, for as
    /// long as the sender runs (Postgres only). Reconnects after errors, with a
    /// capped backoff; each (re)connection also wakes the sender once, since
    /// notifications sent while disconnected are lost.
    pub(super) async fn listen(self, stop: CancellationToken) {
        let mut reconnects = Failures::new(RECONNECT_BACKOFF);
        let mut failing = false;
        while !stop.is_cancelled() {
            let mut listener = match self.store.listen_outbox().await {
                Ok(Some(listener)) => listener,
                Ok(None) => return,
                Err(error) => {
                    if !failing {
                        failing = true;
                        tracing::warn!(%error, "sender: cannot LISTEN for wake-ups; polling meanwhile, will reconnect");
                    }
                    reconnects.wait(&stop).await;
                    continue;
                }
            };
            if std::mem::take(&mut failing) {
                tracing::info!("sender: listening for wake-ups again");
            }
            reconnects.reset();
            self.wake.wake_here();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    received = listener.recv() => match received {
                        Ok(()) => self.wake.wake_here(),
                        Err(error) => {
                            failing = true;
                            tracing::warn!(%error, "sender: lost the LISTEN connection; polling meanwhile, will reconnect");
                            break;
                        }
                    },
                }
            }
        }
    }
}
