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
}
