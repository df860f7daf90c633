//! Accepting one inbound message: one at a time per contact, the conversation step,
//! and the store transaction that commits message, state and replies together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedMutexGuard};

use crate::conversation::{self, Runtime, Turn};
use crate::flow::Bot;
use crate::hooks::{Events, MessageEvent};
use crate::store::{ConversationState, InboundOutcome, NewInbound, StepOutput, Store, StoreError};
use crate::twilio::webhook::InboundWebhook;

/// Records `webhook` for `bot` and runs the conversation step, committing the
/// result in one transaction. Wakes the sender when replies were queued, and emits a
/// [`MessageEvent`] after the commit.
#[allow(clippy::too_many_arguments)]
pub async fn accept(
    store: &Store,
    locks: &ContactLocks,
    runtime: &Runtime,
    wake: &Notify,
    events: &Events,
    bot: Arc<Bot>,
    webhook: InboundWebhook,
    now_ms: i64,
) -> Result<InboundOutcome, StoreError> {
    // In-process serialization first, so waiting messages of one contact do not each
    // hold a database connection; the store adds the cross-instance lock.
    let _turn = locks.lock(bot.id.as_str(), &webhook.from).await;

    let record = NewInbound {
        bot: bot.id.to_string(),
        contact: webhook.from.clone(),
        message_sid: webhook.message_sid.clone(),
        body: webhook.message.text.clone(),
        payload: serde_json::to_value(&webhook.message).unwrap_or_default(),
        received_at_ms: now_ms,
    };
    let webhook = Arc::new(webhook);
    // The step's flow error, for the event; the last attempt's if the store retried.
    let flow_error: Arc<Mutex<Option<String>>> = Arc::default();
    let outcome = store
        .process_inbound(&record, |state| {
            let bot = bot.clone();
            let webhook = webhook.clone();
            let runtime = runtime.clone();
            let flow_error = flow_error.clone();
            async move {
                if !bot.has_scripts() {
                    // Menus and templates never block: stepping here saves two
                    // thread hand-offs per message.
                    return step(&bot, &webhook, &runtime, state, now_ms, &flow_error);
                }
                // Scripts are synchronous and may wait on HTTP: keep them off the
                // async workers.
                let error_reply = bot.error_reply.clone();
                let step_error = flow_error.clone();
                let stepped = tokio::task::spawn_blocking(move || {
                    step(&bot, &webhook, &runtime, state, now_ms, &step_error)
                })
                .await;
                match stepped {
                    Ok(out) => out,
                    // Only a panic gets here (the step itself never fails); nothing of
                    // the flow survives, so answer like any flow error.
                    Err(join_error) => {
                        tracing::error!(%join_error, "conversation step panicked");
                        *flow_error.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some("the conversation step panicked".to_owned());
                        StepOutput {
                            state: Default::default(),
                            replies: vec![crate::message::Reply::text(error_reply)],
                        }
                    }
                }
            }
        })
        .await?;
    if let InboundOutcome::Processed { replies } = outcome {
        if replies > 0 {
            wake.notify_one();
        }
        if events.enabled() {
            let error = flow_error.lock().unwrap_or_else(|e| e.into_inner()).take();
            events.message_processed(MessageEvent::new(
                &record.bot,
                &record.contact,
                &record.message_sid,
                now_ms,
                replies,
                error,
            ));
        }
    }
    Ok(outcome)
}

/// One conversation step, noting its flow error (if any) in `flow_error` for the
/// event, the metrics and the log.
fn step(
    bot: &Bot,
    webhook: &InboundWebhook,
    runtime: &Runtime,
    state: Option<ConversationState>,
    now_ms: i64,
    flow_error: &Mutex<Option<String>>,
) -> StepOutput {
    let outcome = conversation::handle(
        Turn {
            bot,
            contact: &webhook.from,
            state,
            user: &webhook.user,
            message: &webhook.message,
            now_ms,
        },
        runtime,
    );
    *flow_error.lock().unwrap_or_else(|e| e.into_inner()) =
        outcome.error.as_ref().map(ToString::to_string);
    if let Some(error) = &outcome.error {
        metrics::counter!("switchboard_script_errors_total", "bot" => bot.id.to_string())
            .increment(1);
        tracing::warn!(bot = %bot.id, message_sid = %webhook.message_sid, %error, "flow failed; sent error_reply and reset the conversation");
    }
    StepOutput {
        state: outcome.state,
        replies: outcome.replies,
    }
}

/// One async mutex per (bot, contact) currently in use; entries are removed when
/// nobody holds or waits for them, so the map stays as small as the traffic.
#[derive(Default)]
pub struct ContactLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while one message of a contact is processed.
pub struct ContactGuard<'a> {
    locks: &'a ContactLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl ContactLocks {
    pub async fn lock(&self, bot: &str, contact: &str) -> ContactGuard<'_> {
        let key = format!("{bot}\u{0}{contact}");
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        // tokio's Mutex is fair: waiters get it in the order they asked, which keeps
        // a contact's messages in arrival order.
        let guard = mutex.lock_owned().await;
        ContactGuard {
            locks: self,
            key,
            guard: Some(guard),
        }
    }

    /// Entries currently held or awaited (for tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ContactGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        let guard = self.guard.take();
        if let Some(mutex) = map.get(&self.key) {
            // Two references: the map's and the one inside our guard. More means
            // someone is waiting: keep the entry.
            if Arc::strong_count(mutex) <= 2 {
                map.remove(&self.key);
            }
        }
        drop(guard);
    }
}
