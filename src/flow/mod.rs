//! Bots as data: the types a loaded bot is made of, and the loader that turns a
//! bot folder (`bot.yaml`, node files, `*.rhai` scripts) into them.
//!
//! This module does no network or database I/O; it reads files only when asked to
//! load, and every problem it finds is a [`Diagnostic`] naming file, line and column.

mod diagnostic;
mod load;
mod registry;
mod template;

pub use diagnostic::{Diagnostic, Severity};
pub use load::{load_bot, load_flows, LoadOptions, LoadedFlows};
pub use registry::{BotStatus, Registry};
pub use template::{TemplateContext, Text};

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;

use crate::script::CompiledScript;

/// A bot's id: its folder name, `[a-z0-9_-]+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BotId(String);

impl BotId {
    /// Checks the folder-name rule; `None` when the name is not a valid id.
    pub fn parse(name: &str) -> Option<BotId> {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        ok.then(|| BotId(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret string (auth tokens) whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for signing and Basic auth only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One loaded, validated bot. Immutable: a reload builds a new one and swaps it in.
#[derive(Debug)]
pub struct Bot {
    pub id: BotId,
    /// Display name (`name:`), the id when not given.
    pub name: String,
    /// The bot's folder.
    pub dir: PathBuf,
    /// Node a conversation starts at.
    pub start: String,
    pub session_timeout: Duration,
    pub error_reply: String,
    /// Keyword (trimmed, lowercased) -> node name.
    pub keywords: HashMap<String, String>,
    pub twilio: TwilioSettings,
    /// Hosts script HTTP calls may reach, matched exactly (any port).
    pub http_allow: Vec<String>,
    pub nodes: HashMap<String, Node>,
    pub loaded_at: DateTime<Utc>,
    /// Problems that do not stop the bot from loading (dead ends, unset optional vars...).
    pub warnings: Vec<Diagnostic>,
    /// Compiled `{{ }}` templates of this bot, looked up by [`Text`].
    pub(crate) templates: template::Templates,
}

impl Bot {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Fills in a text's `{{ }}` placeholders.
    pub fn render(&self, text: &Text, ctx: &TemplateContext<'_>) -> Result<String, String> {
        self.templates.render(text, ctx)
    }
}

/// How this bot talks to Twilio's REST API.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    /// `None` only when `${VAR}` was unset and the loader was told to tolerate it
    /// (`--dry-run`, `check`, `test`, `chat`).
    pub account_sid: Option<String>,
    pub auth_token: Option<Secret>,
    pub sender: Option<MessageSender>,
    /// `https://api.twilio.com` unless set; no trailing slash.
    pub api_base: String,
    pub max_per_second: Option<u32>,
}

/// Who a reply is sent from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSender {
    From(String),
    MessagingService(String),
}

/// A node of a bot's conversation graph.
#[derive(Debug)]
pub enum Node {
    Menu(MenuNode),
    Script(ScriptNode),
}

/// Where a node was defined, for messages and the reset-on-reload rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

/// A YAML node: say, options, save_as, goto.
#[derive(Debug)]
pub struct MenuNode {
    pub name: String,
    pub origin: Origin,
    /// Each entry is one message.
    pub say: Vec<Text>,
    /// Sent with the first message of `say`.
    pub media: Vec<Text>,
    pub options: Vec<MenuOption>,
    /// Store the answer in `vars[save_as]`.
    pub save_as: Option<String>,
    /// Anchored regex the answer to `save_as` must match.
    pub validate: Option<Regex>,
    /// Sent as written when an answer matches no option or fails `validate`.
    pub invalid: Option<Text>,
    pub goto: Option<String>,
}

impl MenuNode {
    /// A node with options or `save_as` waits for the contact's next message.
    pub fn waits(&self) -> bool {
        !self.options.is_empty() || self.save_as.is_some()
    }
}

/// One numbered choice of a menu.
#[derive(Debug)]
pub struct MenuOption {
    pub label: String,
    /// Extra answers that choose it, trimmed and lowercased.
    pub matches: Vec<String>,
    pub say: Vec<Text>,
    pub goto: Option<String>,
}

/// A `*.rhai` file; entering it calls `fn start()`.
#[derive(Debug)]
pub struct ScriptNode {
    pub name: String,
    pub origin: Origin,
    pub script: Arc<CompiledScript>,
}
