//! Where a conversation stands between two messages: what the conversation step
//! reads and returns, and what the store keeps per (bot, contact).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A conversation's state between messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationState {
    /// Node the conversation stands at; `None` when it has ended.
    pub node: Option<String>,
    /// The `ask` handler waiting for the next message (script nodes).
    pub handler: Option<String>,
    pub vars: Map<String, Value>,
    /// When the last message was handled, ms since the epoch.
    pub updated_at_ms: i64,
    /// The contact opted out of this bot's messages (SPEC §8.3: a `stop` word, or
    /// Twilio refusing a send with 21610). Outlives the conversation: ending it or
    /// a session timeout leaves this as it is; only a `start` word clears it.
    #[serde(default)]
    pub opted_out: bool,
    /// When the current node's wait runs out (SPEC §9.2 `timeout`), ms since
    /// the epoch; `None` when it waits without a limit, or nothing waits.
    #[serde(default)]
    pub timeout_at_ms: Option<i64>,
    /// What follows when it runs out: a node (a menu's `on_timeout`) or a
    /// function of the waiting script (an `ask`'s); `None` ends quietly.
    #[serde(default)]
    pub on_timeout: Option<String>,
    /// Set while a person, not the bot, answers the contact (SPEC §10.2).
    #[serde(default)]
    pub handoff: Option<Handoff>,
}

/// A conversation handed to a person: the bot sends nothing until it is
/// released or `handoff_timeout` passes with no answer from a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The queue named by `handoff: QUEUE` or `handoff("QUEUE")`.
    pub queue: String,
    /// When it was handed off, ms since the epoch.
    pub at_ms: i64,
    /// When a person last answered; `None` until one does.
    pub answered_at_ms: Option<i64>,
}

/// Longest queue name.
pub const MAX_QUEUE_NAME: usize = 64;

impl Handoff {
    /// What is wrong with `name` as a queue name, if anything: 1 to
    /// [`MAX_QUEUE_NAME`] ASCII letters, digits, `-`, `_` or `.`.
    pub fn queue_problem(name: &str) -> Option<String> {
        if name.is_empty() {
            return Some("a handoff queue name is empty".to_owned());
        }
        if name.len() > MAX_QUEUE_NAME {
            return Some(format!(
                "handoff queue name is {} characters long; at most {MAX_QUEUE_NAME} are allowed",
                name.chars().count()
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Some(format!(
                "handoff queue `{name}` has {c:?}, which a queue name may not have"
            ));
        }
        None
    }

    /// The hint that goes with [`Handoff::queue_problem`].
    pub const QUEUE_HINT: &'static str =
        "a queue name is 1 to 64 letters, digits, `-`, `_` or `.`, such as `sales`";

    /// When the conversation returns to the bot if no person answers: the
    /// `timeout` after the handoff or the last answer from a person.
    pub fn returns_at_ms(&self, timeout: std::time::Duration) -> i64 {
        let after = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2);
        self.answered_at_ms
            .unwrap_or(self.at_ms)
            .max(self.at_ms)
            .saturating_add(after)
    }
}
