//! Claims as leases: what a sender knows of each claim it holds, their renewal
//! together while the sends run, and the check that a claim is still held before
//! its send starts.
//!
//! The database is the authority (the row's token and `lease_until`); a [`Lease`]
//! is this sender's knowledge of it: until when the row is surely its own. One
//! statement every third of a lease renews every claim that needs it, so a sender
//! that dies loses its rows within one lease, and a send never starts on a claim
//! that is lost or that could not be renewed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::{Id, JoinError};

use super::Sender;
use crate::store::{OutboxRow, Renewal, StoreError};

/// One claim a sender holds, shared by the task sending the row and the renewal.
pub(super) struct Lease {
    id: i64,
    token: i64,
    /// The lease's end as last claimed or renewed (ms, this sender's clock, which
    /// computed it); [`LOST`] once the claim is known to be gone.
    held_until_ms: AtomicI64,
}

/// [`Lease::held_until_ms`] of a claim known lost.
const LOST: i64 = i64::MIN;

impl Lease {
    /// The claim `row` came with: the claim set `updated_at` to when it began.
    pub(super) fn new(row: &OutboxRow, lease_ms: i64) -> Lease {
        Lease {
            id: row.id,
            token: row.claim_token.unwrap_or_default(),
            held_until_ms: AtomicI64::new(row.updated_at_ms.saturating_add(lease_ms)),
        }
    }

    fn held_until(&self) -> i64 {
        self.held_until_ms.load(Ordering::Acquire)
    }

    pub(super) fn is_lost(&self) -> bool {
        self.held_until() == LOST
    }

    /// Records a renewal until `until`; never revives a lost claim.
    fn extend(&self, until: i64) {
        let _ = self
            .held_until_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held != LOST && held < until).then_some(until)
            });
    }

    fn lose(&self) {
        self.held_until_ms.store(LOST, Ordering::Release);
    }
}

/// A sender's claims in flight, by the task sending each: renewed together, and
/// released at shutdown if their sends had to be stopped.
#[derive(Clone, Default)]
pub(super) struct Claims(Arc<Mutex<HashMap<Id, Arc<Lease>>>>);

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Arc<Lease>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `lease` for as long as `task` sends its row.
    pub(super) fn hold(&self, task: Id, lease: Arc<Lease>) {
        self.lock().insert(task, lease);
    }

    /// Drops a finished send's claim.
    pub(super) fn forget<T>(&self, done: &Result<(Id, T), JoinError>) {
        let id = match done {
            Ok((id, _)) => *id,
            Err(error) => error.id(),
        };
        self.lock().remove(&id);
    }

    /// Takes every claim still held, as `(row id, claim token)`, to release them.
    pub(super) fn take_all(&self) -> Vec<(i64, i64)> {
        self.lock()
            .drain()
            .map(|(_, lease)| (lease.id, lease.token))
            .collect()
    }

    /// The claims not known lost that end by `by`.
    fn ending_by(&self, by: i64) -> Vec<Arc<Lease>> {
        self.lock()
            .values()
            .filter(|lease| !lease.is_lost() && lease.held_until() <= by)
            .cloned()
            .collect()
    }
}

impl Sender {
    /// Keeps this sender's claims alive while their sends run (or wait for a
    /// rate-limit slot): every third of a lease, one statement renews each claim
    /// that has used a third of its lease, so a short send costs no renewal and
    /// the cost per round does not grow with the sends in flight. A claim found
    /// lost is marked so its send does not start; one that could not be renewed
    /// (database unreachable) simply runs down, and [`Sender::still_held`] stops
    /// its send from starting once little of it is left.
    pub(super) async fn renew_leases(self, claims: Claims) {
        let tick = (self.config.lease / 3).max(Duration::from_millis(10));
        let tick_ms = i64::try_from(tick.as_millis()).unwrap_or(i64::MAX / 2);
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            let now_ms = self.now_ms();
            let until = now_ms + self.lease_ms();
            let due = claims.ending_by(until - tick_ms);
            if due.is_empty() {
                continue;
            }
            let asked: Vec<(i64, i64)> = due.iter().map(|l| (l.id, l.token)).collect();
            match self.store.renew_claims(&asked, until).await {
                Ok(found) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("sender: renewing claims again");
                    }
                    for (lease, renewal) in due.iter().zip(found) {
                        match renewal {
                            Renewal::Renewed => lease.extend(until),
                            Renewal::Lost => lease.lose(),
                            Renewal::Busy => {}
                        }
                    }
                }
                Err(error) => {
                    if !failing {
                        failing = true;
                        tracing::warn!(%error, claims = asked.len(), "sender: cannot renew claims; no send starts on a claim about to lapse");
                    }
                }
            }
        }
    }

    /// Whether this sender may start sending the row now: its claim is not known
    /// lost and is held for at least a quarter of a lease more, time enough for
    /// the request to reach Twilio before anyone else could claim the row. The
    /// background renewal keeps a third of a lease or more, so this costs no
    /// round trip (which would sit between a rate-limit slot and its request);
    /// when renewals have been failing, the claim is renewed here first.
    pub(super) async fn still_held(&self, lease: &Lease) -> Result<bool, StoreError> {
        if lease.is_lost() {
            return Ok(false);
        }
        let now_ms = self.now_ms();
        if lease.held_until() - now_ms >= self.lease_ms() / 4 {
            return Ok(true);
        }
        let until = now_ms + self.lease_ms();
        let held = self.store.renew_claim(lease.id, lease.token, until).await?;
        if held {
            lease.extend(until);
        } else {
            lease.lose();
        }
        Ok(held)
    }
}
