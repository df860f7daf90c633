//! Bots as data: the types a loaded bot is made of, and the loader that turns a
//! bot folder (`bot.yaml`, node files, `*.rhai` scripts) into them.
//!
//! This module does no network or database I/O; it reads files only when asked to
//! load, and every problem it finds is a [`Diagnostic`] naming file, line and column.

//! Layout: `load` walks a bot folder and runs the whole-bot checks; `settings`
//! reads `bot.yaml`; `nodes` reads menu nodes (both with `crate::source::yaml`,
//! which parses with positions and turns wrong shapes into diagnostics); `files` reads a bot's files within their
//! size limit and folder; `template` compiles (and bounds) `{{ }}` texts; `vars`
//! warns about `{{ name }}`s nothing sets;
//! `registry` holds the live bots; `watch` reloads them when their files change;
//! `graph` draws a loaded bot's nodes and links (Mermaid or DOT).

mod files;
pub mod graph;
mod load;
mod nodes;
mod outbound;
mod registry;
mod settings;
mod template;
mod vars;
mod watch;

pub use files::is_ignored;
pub use files::MAX_FLOW_FILE_BYTES;
pub(crate) use files::{read_author_file, read_bot_file};
pub use graph::{Graph, GraphFormat};
pub use load::{
    bot_ids, check_flows, load_bot, load_flows, load_path, unknown_bot, LoadOptions, LoadedFlows,
};
pub use outbound::begins_with_template;
pub use registry::{BotStatus, Registry};
pub use template::{TemplateContext, Text};
pub use watch::{
    changes_files, watch, Reload, ReloadOutcome, Touched, WatchError, WatchOptions, Watcher,
};

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;
use serde_json::{Map, Value};

use crate::domain::{BotId, Diagnostic, MessageSender, Secret};
use crate::script::CompiledScript;

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
    /// STOP, START and HELP (SPEC §8.3); `None` when `opt_out: off`.
    pub opt_out: Option<OptOut>,
    pub twilio: TwilioSettings,
    /// Hosts script HTTP calls may reach, matched exactly (any port). Shared with
    /// every script call of the bot.
    pub http_allow: Arc<[String]>,
    /// `outbound:` (SPEC §9.1): the nodes the start API may enter; `None` for any.
    pub outbound: Option<Vec<String>>,
    pub nodes: HashMap<String, Node>,
    pub loaded_at: DateTime<Utc>,
    /// Problems that do not stop the bot from loading (dead ends, unset optional vars...).
    pub warnings: Vec<Diagnostic>,
    /// Compiled `{{ }}` templates of this bot, looked up by [`Text`].
    pub(crate) templates: template::Templates,
    /// `menu_style:`: how menus without a `style` of their own are sent.
    pub menu_style: MenuStyle,
    /// `read_receipts: true`: mark each inbound WhatsApp message read (SPEC §8.5).
    pub read_receipts: bool,
    /// `templates:`: approved WhatsApp templates by name (SPEC §8.2).
    pub whatsapp_templates: HashMap<String, WhatsAppTemplate>,
    /// `handoff_timeout`, `handoff_notify`, `handoff_secret` (SPEC §10.2).
    pub handoff: HandoffSettings,
}

/// What bot.yaml says about handing conversations to people (SPEC §10.2).
#[derive(Debug, Clone)]
pub struct HandoffSettings {
    /// `handoff_timeout:` (default 24 h): with no answer from a person within
    /// it, a handed-off conversation returns to the bot and ends quietly.
    pub timeout: Duration,
    /// `handoff_notify:`: the URL told of each handoff and of each message
    /// that arrives while one waits; with the secret that signs the body.
    pub notify: Option<(String, Secret)>,
}

impl Default for HandoffSettings {
    fn default() -> HandoffSettings {
        HandoffSettings {
            timeout: settings::DEFAULT_HANDOFF_TIMEOUT,
            notify: None,
        }
    }
}

/// How a menu's options are sent (SPEC §8.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MenuStyle {
    /// The numbered list of SPEC §3.
    #[default]
    Text,
    Buttons,
    List,
    /// Buttons for up to 3 options whose labels fit, a list for up to 10, else text.
    Auto,
}

impl MenuStyle {
    pub const NAMES: [&'static str; 4] = ["text", "buttons", "list", "auto"];

    pub fn parse(s: &str) -> Option<MenuStyle> {
        match s.trim().to_lowercase().as_str() {
            "text" => Some(MenuStyle::Text),
            "buttons" => Some(MenuStyle::Buttons),
            "list" => Some(MenuStyle::List),
            "auto" => Some(MenuStyle::Auto),
            _ => None,
        }
    }

    /// The interactive style an explicit `buttons` or `list` asks for.
    pub fn explicit(self) -> Option<crate::message::InteractiveStyle> {
        match self {
            MenuStyle::Buttons => Some(crate::message::InteractiveStyle::Buttons),
            MenuStyle::List => Some(crate::message::InteractiveStyle::List),
            MenuStyle::Text | MenuStyle::Auto => None,
        }
    }
}

/// One entry of `templates:` in bot.yaml.
#[derive(Debug)]
pub struct WhatsAppTemplate {
    pub name: String,
    /// The approved Content resource (`HX...`).
    pub content_sid: String,
    /// Placeholder key -> text rendered from the conversation's vars.
    pub variables: Vec<(String, Text)>,
}

impl Bot {
    /// The node named `name`, YAML or script.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Whether any node is a script. Menu-only bots never block, so their steps
    /// run on the async workers; scripts may wait on HTTP and get a thread.
    pub fn has_scripts(&self) -> bool {
        self.nodes
            .values()
            .any(|node| matches!(node, Node::Script(_)))
    }

    /// How `menu` is sent, its own `style` before the bot's `menu_style`.
    pub fn style_of(&self, menu: &MenuNode) -> MenuStyle {
        menu.style.unwrap_or(self.menu_style)
    }

    /// Whether the start API (SPEC §9.1) may enter `node`: it exists, and
    /// `outbound:` names it when the bot has that list.
    pub fn may_start_at(&self, node: &str) -> bool {
        self.node(node).is_some()
            && self
                .outbound
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == node))
    }

    /// Fills in a text's `{{ }}` placeholders.
    pub fn render(&self, text: &Text, ctx: &TemplateContext<'_>) -> Result<String, String> {
        self.templates.render(text, ctx)
    }
}

/// `opt_out:` in bot.yaml: the words that opt a contact out, back in, or ask for
/// help, checked on the whole message before keywords and flows, and what is
/// answered to each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOut {
    /// Each trimmed and lowercased, as answers are compared.
    pub stop: Vec<String>,
    pub start: Vec<String>,
    pub help: Vec<String>,
    /// Sent as written; an empty reply is not sent.
    pub stop_reply: String,
    pub start_reply: String,
    pub help_reply: String,
}

impl Default for OptOut {
    /// SPEC §8.3's defaults.
    fn default() -> OptOut {
        let words = |list: &[&str]| list.iter().map(|w| w.to_lowercase()).collect();
        OptOut {
            stop: words(&["STOP", "STOPALL", "UNSUBSCRIBE"]),
            start: words(&["START", "UNSTOP"]),
            help: words(&["HELP"]),
            stop_reply: "You won't get more messages from us. Send START to undo.".to_owned(),
            start_reply: "Welcome back! Send hi to begin.".to_owned(),
            help_reply: "Send STOP to opt out, or hi to talk to us.".to_owned(),
        }
    }
}

/// Which list of [`OptOut`] a message's words are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptOutWord {
    Stop,
    Start,
    Help,
}

impl OptOut {
    /// The list `answer` (already trimmed and lowercased) is a word of, if any.
    pub fn word(&self, answer: &str) -> Option<OptOutWord> {
        let is_in = |list: &[String]| list.iter().any(|w| w == answer);
        if is_in(&self.stop) {
            Some(OptOutWord::Stop)
        } else if is_in(&self.start) {
            Some(OptOutWord::Start)
        } else if is_in(&self.help) {
            Some(OptOutWord::Help)
        } else {
            None
        }
    }
}

/// How this bot talks to Twilio's REST API.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    /// `None` only when the loader was told to tolerate missing credentials
    /// (`--dry-run`, `check`, `test`, `chat`) and the value is not set: an unset
    /// `${VAR}`, or no such key in `twilio:`.
    pub account_sid: Option<String>,
    pub auth_token: Option<Secret>,
    pub sender: Option<MessageSender>,
    /// `https://api.twilio.com` unless set; no trailing slash.
    pub api_base: String,
    /// Twilio's Content API (`https://content.twilio.com` unless set).
    pub content_api_base: String,
    /// Twilio's Messaging v2 API, for typing indicators
    /// (`https://messaging.twilio.com` unless set).
    pub messaging_api_base: String,
    pub max_per_second: Option<u32>,
}

/// A node of a bot's conversation graph.
// Nodes are built once per load and looked up by reference, never moved on a
// hot path: a menu's size costs nothing, and boxing it would touch every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Node {
    Menu(MenuNode),
    Script(ScriptNode),
}

impl Node {
    pub fn name(&self) -> &str {
        match self {
            Node::Menu(m) => &m.name,
            Node::Script(s) => &s.name,
        }
    }

    pub fn origin(&self) -> &Origin {
        match self {
            Node::Menu(m) => &m.origin,
            Node::Script(s) => &s.origin,
        }
    }
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
    /// The var this node fills: with `options`, the chosen option's
    /// [`MenuOption::value`]; without, the answer itself (trimmed).
    pub save_as: Option<String>,
    /// Anchored regex a typed answer to `save_as` must match (never with `options`).
    pub validate: Option<Regex>,
    /// Sent as written when an answer matches no option or fails `validate`.
    pub invalid: Option<Text>,
    pub goto: Option<String>,
    /// `style:`; `None` takes the bot's `menu_style`.
    pub style: Option<MenuStyle>,
    /// `button:`: the label of a list's button.
    pub button: Option<String>,
    /// `template:`: an approved template sent instead of `say` (SPEC §8.2).
    pub template: Option<String>,
    /// `timeout:` (SPEC §9.2): how long the node waits for an answer.
    pub timeout: Option<Duration>,
    /// `on_timeout:`: the node entered when the time runs out; `None` ends the
    /// conversation quietly.
    pub on_timeout: Option<String>,
    /// `handoff: QUEUE` (SPEC §10.2): after its `say`, the conversation goes
    /// to a person in this queue.
    pub handoff: Option<String>,
}

impl MenuNode {
    /// A node with options or `save_as` waits for the contact's next message.
    pub fn waits(&self) -> bool {
        !self.options.is_empty() || self.save_as.is_some()
    }

    /// The option an answer chooses: trimmed and case-insensitive, the answer
    /// equals the option's number, its label, or one of its `match` words.
    /// The first option that matches wins. Returns the 0-based index too.
    /// (A tapped button's payload is matched first, by [`MenuNode::tapped`].)
    pub fn choose(&self, answer: &str) -> Option<(usize, &MenuOption)> {
        let answer = answer.trim().to_lowercase();
        if answer.is_empty() {
            return None;
        }
        self.options
            .iter()
            .enumerate()
            .find(|(i, option)| option.answers(*i).any(|a| a == answer))
    }
}

impl MenuNode {
    /// The option whose payload ([`MenuOption::payload`]) is `payload`.
    pub fn tapped(&self, payload: &str) -> Option<(usize, &MenuOption)> {
        let payload = payload.trim();
        self.options
            .iter()
            .enumerate()
            .find(|(i, option)| option.payload(*i) == payload)
    }
}

/// One numbered choice of a menu.
#[derive(Debug)]
pub struct MenuOption {
    /// As written, trimmed.
    pub label: String,
    /// Extra answers that choose it, trimmed and lowercased.
    pub matches: Vec<String>,
    /// What the node's `save_as` stores when this option is chosen: `value:` as
    /// written (a number stays a number), else the label.
    pub value: Value,
    /// Vars set when this option is chosen (`set: {price: 25}`), values as written.
    pub set: Map<String, Value>,
    pub say: Vec<Text>,
    pub goto: Option<String>,
    /// `id:`: the payload WhatsApp returns when it is tapped.
    pub id: Option<String>,
    /// `description:`: shown under the label in a list.
    pub description: Option<String>,
    /// `handoff: QUEUE`: choosing it hands the conversation to a person, after
    /// the option's `say`.
    pub handoff: Option<String>,
}

impl MenuOption {
    /// The `ButtonPayload` that chooses this option, the `index`-th (0-based):
    /// its `id`, else its number.
    pub fn payload(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| (index + 1).to_string())
    }

    /// The answers (trimmed and lowercased) that choose this option, the
    /// `index`-th of its node (0-based): its number, its label, then its `match`
    /// words, in that order. [`MenuNode::choose`] and the loader's check for
    /// answers two options share both use this one rule.
    pub fn answers(&self, index: usize) -> impl Iterator<Item = Cow<'_, str>> {
        [
            Cow::Owned((index + 1).to_string()),
            Cow::Owned(self.label.to_lowercase()),
        ]
        .into_iter()
        .chain(self.matches.iter().map(|m| Cow::Borrowed(m.as_str())))
    }
}

/// A `*.rhai` file; entering it calls `fn start()`.
#[derive(Debug)]
pub struct ScriptNode {
    pub name: String,
    pub origin: Origin,
    pub script: Arc<CompiledScript>,
}
