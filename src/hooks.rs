//! Events for the host program: one per processed message and one per recorded send
//! outcome, for its own analytics, audit or CRM sync.
//!
//! Events are emitted only after the store committed what they describe, and they
//! can never break or slow delivery: the webhook and the sender only `try_send` into a
//! bounded queue; one task drains it into the host's [`EventSink`], catching panics.
//! When the sink falls behind and the queue is full, new events are dropped and
//! counted ([`Events::dropped`], metric `switchboard_events_dropped_total`).
//! Events are at-most-once: a crash loses the queued ones.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// Events queued but not yet handed to the sink, by default.
pub const DEFAULT_EVENT_QUEUE: usize = 1024;

/// An inbound message was processed: its message, the new conversation state and
/// `replies` outbox rows are committed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MessageEvent {
    pub bot: String,
    /// The contact's address (`whatsapp:+15551234567`).
    pub contact: String,
    pub message_sid: String,
    pub received_at_ms: i64,
    /// Replies queued for sending.
    pub replies: usize,
    /// Set when the flow failed and the contact got the bot's `error_reply`.
    pub flow_error: Option<String>,
}

/// One send attempt of an outbox row finished and its outcome is recorded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SendEvent {
    pub bot: String,
    pub contact: String,
    pub outbox_id: i64,
    /// Attempts so far, this one included.
    pub attempt: u32,
    pub outcome: SendEventOutcome,
    pub at_ms: i64,
}

/// How a send attempt ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SendEventOutcome {
    /// Twilio accepted it (or `dry_run` recorded it), with the message SID.
    Sent { sid: String },
    /// Failed; tried again at `next_attempt_at_ms`.
    Retry {
        next_attempt_at_ms: i64,
        error_code: Option<i64>,
        error: String,
    },
    /// Failed for good.
    Failed {
        error_code: Option<i64>,
        error: String,
    },
}

/// What the host program does with events. Both methods default to doing nothing.
/// They run on one task of their own, one event at a time, in order; a slow sink
/// only delays later events (and drops them once the queue is full).
pub trait EventSink: Send + Sync + 'static {
    fn message_processed(&self, _event: &MessageEvent) {}
    fn send_finished(&self, _event: &SendEvent) {}
}

enum Event {
    Message(MessageEvent),
    Send(SendEvent),
}

/// The emitting side of the event queue, held by the webhook and the sender. Cheap
/// to clone; [`Events::none`] emits nothing.
#[derive(Clone, Default)]
pub struct Events {
    queue: Option<mpsc::Sender<Event>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("enabled", &self.queue.is_some())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Events {
    /// No sink: events are not built at all.
    pub fn none() -> Events {
        Events::default()
    }

    /// Starts the task that hands events to `sink`, with room for `capacity` queued
    /// events. Must be called inside a Tokio runtime. The task ends once every
    /// clone of the returned `Events` is dropped and the queue is drained.
    pub fn spawn(sink: Arc<dyn EventSink>, capacity: usize) -> Events {
        let (tx, mut rx) = mpsc::channel::<Event>(capacity.max(1));
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let sink = sink.clone();
                // The sink is the host's code and may block: keep it off the async
                // workers, and contain its panics.
                let handled = tokio::task::spawn_blocking(move || {
                    catch_unwind(AssertUnwindSafe(|| match &event {
                        Event::Message(e) => sink.message_processed(e),
                        Event::Send(e) => sink.send_finished(e),
                    }))
                })
                .await;
                if !matches!(handled, Ok(Ok(()))) {
                    tracing::error!("event sink panicked; the event is lost, delivery goes on");
                }
            }
        });
        Events {
            queue: Some(tx),
            dropped: Arc::default(),
        }
    }

    /// Whether a sink listens (so callers can skip building events).
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues a message event; never waits.
    pub fn message_processed(&self, event: MessageEvent) {
        self.emit(Event::Message(event));
    }

    /// Queues a send event; never waits.
    pub fn send_finished(&self, event: SendEvent) {
        self.emit(Event::Send(event));
    }

    fn emit(&self, event: Event) {
        let Some(queue) = &self.queue else {
            return;
        };
        if queue.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("switchboard_events_dropped_total").increment(1);
        }
    }
}

impl MessageEvent {
    pub(crate) fn new(
        bot: &str,
        contact: &str,
        message_sid: &str,
        received_at_ms: i64,
        replies: usize,
        flow_error: Option<String>,
    ) -> MessageEvent {
        MessageEvent {
            bot: bot.to_owned(),
            contact: contact.to_owned(),
            message_sid: message_sid.to_owned(),
            received_at_ms,
            replies,
            flow_error,
        }
    }
}

impl SendEvent {
    pub(crate) fn new(
        row: &crate::store::OutboxRow,
        result: &crate::store::SendResult,
        at_ms: i64,
    ) -> SendEvent {
        use crate::store::SendResult;
        let outcome = match result {
            SendResult::Sent { sid } => SendEventOutcome::Sent { sid: sid.clone() },
            SendResult::Retry {
                next_attempt_at_ms,
                error_code,
                error_message,
            } => SendEventOutcome::Retry {
                next_attempt_at_ms: *next_attempt_at_ms,
                error_code: *error_code,
                error: error_message.clone(),
            },
            SendResult::Failed {
                error_code,
                error_message,
            } => SendEventOutcome::Failed {
                error_code: *error_code,
                error: error_message.clone(),
            },
        };
        SendEvent {
            bot: row.bot.clone(),
            contact: row.contact.clone(),
            outbox_id: row.id,
            attempt: u32::try_from(row.attempts).unwrap_or(0),
            outcome,
            at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recording(Mutex<Vec<String>>, mpsc::UnboundedSender<()>);

    impl EventSink for Recording {
        fn message_processed(&self, event: &MessageEvent) {
            if event.bot == "boom" {
                self.1.send(()).unwrap();
                panic!("sink bug");
            }
            self.0.lock().unwrap().push(event.message_sid.clone());
            self.1.send(()).unwrap();
        }
    }

    fn event(bot: &str, sid: &str) -> MessageEvent {
        MessageEvent::new(bot, "c", sid, 0, 1, None)
    }

    #[tokio::test]
    async fn a_panicking_sink_does_not_stop_later_events() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink = Arc::new(Recording(Mutex::default(), tx));
        let events = Events::spawn(sink.clone(), 8);
        events.message_processed(event("boom", "1"));
        events.message_processed(event("ok", "2"));
        rx.recv().await.unwrap();
        rx.recv().await.unwrap();
        assert_eq!(*sink.0.lock().unwrap(), vec!["2".to_owned()]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let events = Events::spawn(Arc::new(Recording(Mutex::default(), tx)), 1);
        // On a current-thread runtime the draining task cannot run before we await:
        // the queue takes one event and the other nine are dropped.
        for i in 0..10 {
            events.message_processed(event("b", &i.to_string()));
        }
        assert_eq!(events.dropped(), 9);
    }
}
