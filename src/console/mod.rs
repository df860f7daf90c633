//! The web console's pages (SPEC §10.3), as HTML text: what each page shows and
//! the actions behind its forms, the signed-in sessions, and the simulator.
//! Templates, stylesheet and script are compiled into the binary
//! (`include_str!`); nothing is fetched from elsewhere.
//!
//! No HTTP here: `http/console.rs` owns the routes, cookies, CSRF checks and
//! status codes, and calls these methods. Reads go through `store/` (indexed,
//! paged), bots through the registry, the simulator through `chat`.

mod broadcasts;
mod diagram;
mod inbox;
mod sessions;
mod simulator;

pub use broadcasts::{BroadcastsQuery, ScheduledQuery, BROADCASTS_PAGE, SCHEDULED_PAGE};
pub use inbox::{InboxNote, InboxQuery, INBOX_MESSAGES};
pub use sessions::{Session, Sessions, MAX_SESSIONS, SESSION_LIFETIME};
pub use simulator::{Line, MAX_LINES, MAX_MESSAGE_BYTES, MAX_SIMULATORS};

use std::sync::Arc;
use std::time::Instant;

use minijinja::{context, AutoEscape, Environment, Value};
use serde::Serialize;

use crate::domain::{BotId, Clock, Diagnostic, OutboxStatus};
use crate::flow::graph::{EdgeKind, Graph, NodeKind};
use crate::flow::{GraphFormat, Registry};
use crate::message::Reply;
use crate::outbox_signal::OutboxSignal;
use crate::script::ScriptEngine;
use crate::store::{
    ConversationSummary, Cursor, OutboxRow, StatusEvent, Store, StoreError, TimelineEntry,
    CANCELLED_MESSAGE,
};
use simulator::{OpenError, Simulators};

/// The stylesheet, served at `assets/console.css`.
pub const STYLESHEET: &str = include_str!("assets/console.css");
/// The one script (live forms, simulator refresh), served at `assets/console.js`.
pub const SCRIPT: &str = include_str!("assets/console.js");

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("disabled.html", include_str!("templates/disabled.html")),
    ("error.html", include_str!("templates/error.html")),
    ("reply.html", include_str!("templates/reply.html")),
    ("bots.html", include_str!("templates/bots.html")),
    ("bot.html", include_str!("templates/bot.html")),
    (
        "conversations.html",
        include_str!("templates/conversations.html"),
    ),
    (
        "conversation.html",
        include_str!("templates/conversation.html"),
    ),
    ("outbox.html", include_str!("templates/outbox.html")),
    ("simulators.html", include_str!("templates/simulators.html")),
    ("inbox.html", include_str!("templates/inbox.html")),
    (
        "inbox_conversation.html",
        include_str!("templates/inbox_conversation.html"),
    ),
    ("inbox_gone.html", include_str!("templates/inbox_gone.html")),
    ("simulator.html", include_str!("templates/simulator.html")),
    ("broadcasts.html", include_str!("templates/broadcasts.html")),
    ("scheduled.html", include_str!("templates/scheduled.html")),
];

/// Rows per page of the conversation and outbox lists.
pub const LIST_PAGE: usize = 50;
/// Entries per page of a timeline.
pub const TIMELINE_PAGE: usize = 100;
/// Longest search text taken.
pub const MAX_QUERY_CHARS: usize = 256;

/// Why a page or action could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No such bot, conversation or reply.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be done as sent; the message says what to change.
    #[error("{0}")]
    BadInput(String),
    /// Too many simulators are open.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A template failed: a bug.
    #[error("page could not be rendered: {0}")]
    Render(#[from] minijinja::Error),
}

/// The pages and actions, shared by every request.
pub struct Console {
    env: Environment<'static>,
    sessions: Sessions,
    simulators: Simulators,
    store: Store,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    outbox: OutboxSignal,
    /// Where the console is mounted: `/console`, after any host prefix.
    base: String,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("base", &self.base)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

/// The top navigation: (path under the base, label).
const NAV: &[(&str, &str)] = &[
    ("bots", "Bots"),
    ("conversations", "Conversations"),
    ("outbox", "Outbox"),
    ("inbox", "Inbox"),
    ("simulator", "Simulator"),
    ("broadcasts", "Broadcasts"),
    ("scheduled", "Scheduled"),
];

/// What a page's query string may ask of the conversation list.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ConversationsQuery {
    pub bot: Option<String>,
    pub q: Option<String>,
    pub before: Option<String>,
    pub note: Option<String>,
}

/// What a page's query string may ask of the outbox page.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct OutboxQuery {
    pub bot: Option<String>,
    pub queued_after: Option<String>,
    pub failed_before: Option<String>,
    pub note: Option<String>,
}

/// What an action did, shown on the page it returns to (`?note=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    Retried,
    NotRetried,
    Cancelled,
    NotCancelled,
    BroadcastCancelled,
    StartCancelled,
    StartNotCancelled,
}

impl Note {
    pub fn as_str(self) -> &'static str {
        match self {
            Note::Retried => "retried",
            Note::NotRetried => "not-retried",
            Note::Cancelled => "cancelled",
            Note::NotCancelled => "not-cancelled",
            Note::BroadcastCancelled => "broadcast-cancelled",
            Note::StartCancelled => "start-cancelled",
            Note::StartNotCancelled => "start-not-cancelled",
        }
    }

    fn text(code: &str) -> Option<&'static str> {
        Some(match code {
            "retried" => "The reply is queued again; the sender sends it like a new one.",
            "not-retried" => {
                "Not retried: the reply is no longer failed (someone retried it already)."
            }
            "cancelled" => "The reply is cancelled and will not be sent.",
            "not-cancelled" => {
                "Not cancelled: the reply is no longer queued (it is being sent, or finished)."
            }
            "broadcast-cancelled" => {
                "The broadcast is cancelled: its contacts not started yet will not be."
            }
            "start-cancelled" => "The scheduled start is cancelled.",
            "start-not-cancelled" => "Not cancelled: the start has run already.",
            _ => return None,
        })
    }
}

/// `ms` as `2024-01-01 09:00:00` (UTC).
fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A cursor as it goes in a URL: `ms.id`.
fn cursor_text(c: Cursor) -> String {
    c.to_string()
}

fn parse_cursor(text: Option<&str>, default: Cursor) -> Result<Cursor, ConsoleError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(default);
    };
    match Cursor::parse(text) {
        Some(cursor) => Ok(cursor),
        None => Err(ConsoleError::BadInput(format!(
            "`{}` is not a page position: follow the page's own links",
            text.chars().take(40).collect::<String>()
        ))),
    }
}

#[derive(Serialize)]
struct NavItem {
    path: &'static str,
    label: &'static str,
}

#[derive(Serialize)]
struct MediaView {
    url: String,
    /// Only http(s) URLs are links; anything else is shown as text.
    linkable: bool,
}

/// A reply as `reply.html` draws it: the one place a reply's look is decided,
/// for the simulator and the timeline alike.
#[derive(Serialize)]
struct ReplyView<'a> {
    body: &'a str,
    media: Vec<MediaView>,
    /// Buttons or a list (SPEC §8.1): the text above them and each choice's label.
    menu: Option<MenuView>,
    /// An approved template (SPEC §8.2): its name and variables.
    template: Option<&'a crate::message::TemplateSend>,
}

#[derive(Serialize)]
struct MenuView {
    style: &'static str,
    text: String,
    button: Option<String>,
    choices: Vec<String>,
}

#[derive(Serialize)]
struct DiagnosticView {
    location: String,
    message: String,
    /// As `switchboard check` prints it: source line, caret, hint.
    text: String,
}

fn diagnostic_view(d: &Diagnostic) -> DiagnosticView {
    let mut location = d.file.display().to_string();
    if d.line > 0 {
        location.push_str(&format!(":{}", d.line));
        if d.column > 0 {
            location.push_str(&format!(":{}", d.column));
        }
    }
    DiagnosticView {
        location,
        message: d.message.clone(),
        text: d.to_string(),
    }
}

fn status_class(status: OutboxStatus) -> &'static str {
    match status {
        OutboxStatus::Queued | OutboxStatus::Sending => "pending",
        OutboxStatus::Sent | OutboxStatus::Delivered | OutboxStatus::Read => "ok",
        OutboxStatus::Undelivered | OutboxStatus::Failed => "bad",
    }
}

/// A reply's error for a person: the code, what it means, and what was
/// recorded when that says more.
fn error_text(row: &OutboxRow) -> String {
    explain(row.error_code, row.error_message.as_deref())
}

/// An error code and what was recorded with it, for a person: the code, what
/// it means, and the recorded message when that says more.
fn explain(code: Option<i64>, message: Option<&str>) -> String {
    let message = message.unwrap_or("");
    match code {
        Some(code) => {
            let meaning = crate::twilio::errors::meaning(code);
            if message.is_empty() || message == meaning {
                format!("{code}: {meaning}")
            } else {
                format!("{code}: {meaning} ({message})")
            }
        }
        None => message.to_owned(),
    }
}

/// One step of a reply's status history, as the timeline shows it.
#[derive(Serialize)]
struct EventRow {
    at: String,
    status: String,
    status_class: &'static str,
    /// The attempt, SID, error with its meaning, next try, who did it.
    detail: String,
}

fn history_rows(events: &[StatusEvent]) -> Vec<EventRow> {
    events
        .iter()
        .map(|e| {
            let mut detail = Vec::new();
            if let Some(n) = e.attempt {
                detail.push(format!("attempt {n}"));
            }
            if let Some(sid) = &e.sid {
                detail.push(format!("as {sid}"));
            }
            let error = explain(e.code, e.error.as_deref());
            if !error.is_empty() {
                detail.push(error);
            }
            if let Some(next) = e.next_attempt_at_ms {
                detail.push(format!("next try {} UTC", when(next)));
            }
            if let Some(by) = &e.by {
                detail.push(format!("by the {by}"));
            }
            let status_class = match OutboxStatus::parse(&e.status) {
                Some(status) => status_class(status),
                // `retry`: an attempt failed and another is due.
                None => "pending",
            };
            EventRow {
                at: when(e.at_ms),
                status: e.status.clone(),
                status_class,
                detail: detail.join(" · "),
            }
        })
        .collect()
}

/// What an inbound message carried besides its text, one line each: media
/// (with its type), a pressed button (with its payload), a shared location.
fn inbound_details(payload: &str) -> Vec<String> {
    let message: crate::message::InboundMessage = serde_json::from_str(payload).unwrap_or_default();
    let mut lines: Vec<String> = message
        .media
        .iter()
        .enumerate()
        .map(|(i, url)| match message.media_types.get(i) {
            Some(kind) => format!("[media {kind}] {url}"),
            None => format!("[media] {url}"),
        })
        .collect();
    match (&message.button, &message.button_payload) {
        (Some(text), Some(payload)) if text != payload => {
            lines.push(format!("[button] {text} (payload {payload})"))
        }
        (Some(text), _) => lines.push(format!("[button] {text}")),
        (None, Some(payload)) => lines.push(format!("[button] payload {payload}")),
        (None, None) => {}
    }
    if let (Some(lat), Some(lon)) = (message.latitude, message.longitude) {
        let mut place = format!("[location] {lat}, {lon}");
        for part in [&message.label, &message.address].into_iter().flatten() {
            place.push_str(&format!(" · {part}"));
        }
        lines.push(place);
    }
    lines
}

fn excerpt(text: &str) -> String {
    const CHARS: usize = 120;
    if text.chars().count() <= CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(CHARS - 1).collect();
    cut.push('…');
    cut
}

impl Console {
    /// The console of an engine mounted at `prefix` (`""` or a host's
    /// `/bots`): simulators load bots with `engine`, actions stamp rows with
    /// `clock` and wake the sender through `outbox`.
    pub fn new(
        prefix: &str,
        store: Store,
        registry: Arc<Registry>,
        engine: ScriptEngine,
        clock: Arc<dyn Clock>,
        outbox: OutboxSignal,
    ) -> Console {
        Console {
            env: environment(),
            sessions: Sessions::default(),
            simulators: Simulators::new(engine),
            store,
            registry,
            clock,
            outbox,
            base: format!("{}/console", prefix.trim_end_matches('/')),
        }
    }

    /// `/console`, after the host's prefix: what every link starts with.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Ends a session and closes its simulators.
    pub fn sign_out(&self, session: &Session) {
        self.sessions.end(&session.id);
        self.simulators.close_session(&session.id);
    }

    fn render(&self, name: &str, ctx: Value) -> Result<String, ConsoleError> {
        Ok(self.env.get_template(name)?.render(ctx)?)
    }

    /// A whole page: `body` (rendered from `template` with `ctx`, plus `base`
    /// and `csrf`) inside the layout. `session` is `None` on pages before sign-in.
    fn page(
        &self,
        session: Option<&Session>,
        title: &str,
        active: &str,
        note: Option<&str>,
        template: &str,
        ctx: Value,
    ) -> Result<String, ConsoleError> {
        let csrf = session.map(|s| s.csrf.as_str()).unwrap_or("");
        let body = self.render(
            template,
            context! { base => &self.base, csrf => csrf, ..ctx },
        )?;
        let nav: Vec<NavItem> = NAV
            .iter()
            .map(|(path, label)| NavItem { path, label })
            .collect();
        self.render(
            "layout.html",
            context! {
                base => &self.base,
                title => title,
                csrf => csrf,
                nav => nav,
                active => active,
                note => note.and_then(Note::text),
                content => Value::from_safe_string(body),
            },
        )
    }

    /// A reply drawn by `reply.html`, ready to put in a page.
    fn reply_html(
        &self,
        body: &str,
        media: &[String],
        content: Option<&crate::message::Content>,
    ) -> Result<Value, ConsoleError> {
        use crate::message::{Content, InteractiveStyle};
        let menu = match content {
            Some(Content::Menu(menu)) => Some(MenuView {
                style: match menu.style {
                    InteractiveStyle::Buttons => "buttons",
                    InteractiveStyle::List => "list",
                },
                text: menu.text.clone(),
                button: menu.button.clone(),
                choices: menu.choices.iter().map(|c| c.label.clone()).collect(),
            }),
            _ => None,
        };
        let template = match content {
            Some(Content::Template(template)) => Some(template),
            _ => None,
        };
        let view = ReplyView {
            menu,
            template,
            body,
            media: media
                .iter()
                .map(|url| MediaView {
                    url: url.clone(),
                    linkable: url.starts_with("https://") || url.starts_with("http://"),
                })
                .collect(),
        };
        let html = self.render("reply.html", context! { reply => view })?;
        Ok(Value::from_safe_string(html))
    }

    /// The sign-in page; `error` after a wrong token, `next` the page to go to.
    pub fn signin_page(&self, error: Option<&str>, next: &str) -> Result<String, ConsoleError> {
        self.page(
            None,
            "Sign in",
            "",
            None,
            "signin.html",
            context! { error => error, next => next },
        )
    }

    /// What the console says when the server has no admin token.
    pub fn disabled_page(&self) -> Result<String, ConsoleError> {
        self.page(None, "Console off", "", None, "disabled.html", context! {})
    }

    /// An error inside the layout.
    pub fn error_page(
        &self,
        session: Option<&Session>,
        heading: &str,
        message: &str,
    ) -> Result<String, ConsoleError> {
        self.page(
            session,
            heading,
            "",
            None,
            "error.html",
            context! { heading => heading, message => message },
        )
    }

    /// Bots: load status, errors with their source lines, last load.
    pub fn bots_page(&self, session: &Session) -> Result<String, ConsoleError> {
        #[derive(Serialize)]
        struct BotView {
            id: String,
            name: String,
            loaded_at: Option<String>,
            nodes: usize,
            serving: bool,
            status: &'static str,
            status_class: &'static str,
            errors: Vec<DiagnosticView>,
            warnings: Vec<DiagnosticView>,
        }
        let bots: Vec<BotView> = self
            .registry
            .status()
            .into_iter()
            .map(|status| {
                let bot = self.registry.get(status.id.as_str());
                let serving = bot.is_some();
                let (label, class) = match (serving, status.errors.is_empty()) {
                    (true, true) => ("loaded", "ok"),
                    (true, false) => ("errors: serving the last good version", "bad"),
                    (false, _) => ("not loaded", "bad"),
                };
                BotView {
                    id: status.id.to_string(),
                    name: status.name,
                    loaded_at: status.loaded_at.map(|t| when(t.timestamp_millis())),
                    nodes: status.nodes,
                    serving,
                    status: label,
                    status_class: class,
                    errors: status.errors.iter().map(diagnostic_view).collect(),
                    warnings: bot
                        .map(|b| b.warnings.iter().map(diagnostic_view).collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        self.page(
            Some(session),
            "Bots",
            "bots",
            None,
            "bots.html",
            context! { bots => bots },
        )
    }

    /// One bot's diagram, with its nodes and links as a list too.
    pub fn bot_page(&self, session: &Session, id: &str) -> Result<String, ConsoleError> {
        #[derive(Serialize)]
        struct LinkView {
            how: String,
            to: String,
        }
        #[derive(Serialize)]
        struct NodeView {
            name: String,
            script: bool,
            summary: String,
            links: Vec<LinkView>,
        }
        let bot = self.loaded_bot(id)?;
        let graph = Graph::of(&bot);
        let nodes: Vec<NodeView> = graph
            .nodes
            .iter()
            .map(|n| NodeView {
                name: n.name.clone(),
                script: n.kind == NodeKind::Script,
                summary: n.summary.clone(),
                links: graph
                    .edges
                    .iter()
                    .filter(|e| e.from == n.name)
                    .map(|e| LinkView {
                        how: match &e.kind {
                            EdgeKind::Option(label) => format!("option “{label}”"),
                            EdgeKind::Goto => "goto".to_owned(),
                            EdgeKind::ScriptGoTo => "go_to in the script".to_owned(),
                            EdgeKind::Timeout(after) => format!("no answer within {after}"),
                        },
                        to: e.to.clone(),
                    })
                    .collect(),
            })
            .collect();
        let svg = diagram::svg(&graph).map(Value::from_safe_string);
        self.page(
            Some(session),
            &bot.name,
            "bots",
            None,
            "bot.html",
            context! {
                bot => context! { id => bot.id.as_str(), name => &bot.name },
                loaded_at => when(bot.loaded_at.timestamp_millis()),
                start => &bot.start,
                nodes => nodes,
                keywords => &graph.keywords,
                svg => svg,
                mermaid => graph.render(GraphFormat::Mermaid),
            },
        )
    }

    fn loaded_bot(&self, id: &str) -> Result<Arc<crate::flow::Bot>, ConsoleError> {
        self.registry
            .get(id)
            .ok_or_else(|| ConsoleError::NotFound(format!("no bot named `{id}` is loaded")))
    }

    /// The bot a list page shows: the one asked for (any well-formed id, so
    /// the rows of a bot that was removed stay readable), else the first loaded.
    fn chosen_bot(&self, asked: Option<&str>) -> Result<(String, Vec<String>), ConsoleError> {
        let ids: Vec<String> = self.registry.ids().iter().map(|b| b.to_string()).collect();
        let bot = match asked.filter(|b| !b.is_empty()) {
            Some(b) => BotId::parse(b)
                .map(|id| id.to_string())
                .ok_or_else(|| ConsoleError::BadInput(format!(
                    "`{}` is not a bot id: a bot id is its folder's name (lower-case letters, digits, `-`, `_`)",
                    b.chars().take(64).collect::<String>()
                )))?,
            None => ids.first().cloned().unwrap_or_default(),
        };
        let mut all = ids;
        if !bot.is_empty() && !all.contains(&bot) {
            all.push(bot.clone());
        }
        Ok((bot, all))
    }

    /// Conversations of a bot, newest activity first, or those matching a
    /// search by contact or MessageSid.
    pub async fn conversations_page(
        &self,
        session: &Session,
        query: &ConversationsQuery,
    ) -> Result<String, ConsoleError> {
        #[derive(Serialize)]
        struct Row {
            id: i64,
            contact: String,
            node: Option<String>,
            updated_at: String,
            last_inbound_at: String,
            opted_out_at: Option<String>,
        }
        let (bot, bots) = self.chosen_bot(query.bot.as_deref())?;
        let q = query.q.as_deref().unwrap_or("").trim();
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(ConsoleError::BadInput(format!(
                "the search text is longer than {MAX_QUERY_CHARS} characters: search for a contact (+14155550100) or a MessageSid (SM…)"
            )));
        }
        let from = parse_cursor(query.before.as_deref(), Cursor::NEWEST)?;
        let (rows, next): (Vec<ConversationSummary>, Option<Cursor>) = if bot.is_empty() {
            (Vec::new(), None)
        } else if q.is_empty() {
            let page = self.store.conversations(&bot, from, LIST_PAGE).await?;
            (page.rows, page.next)
        } else {
            (self.store.search_conversations(&bot, q).await?, None)
        };
        let rows: Vec<Row> = rows
            .into_iter()
            .map(|c| Row {
                id: c.id,
                contact: c.contact,
                node: c.node,
                updated_at: when(c.updated_at_ms),
                last_inbound_at: c.last_inbound_at_ms.map(when).unwrap_or_default(),
                opted_out_at: c.opted_out_at_ms.map(when),
            })
            .collect();
        self.page(
            Some(session),
            "Conversations",
            "conversations",
            query.note.as_deref(),
            "conversations.html",
            context! {
                bot => bot,
                bots => bots,
                q => q,
                rows => rows,
                next => next.map(cursor_text),
            },
        )
    }

    /// One conversation: where it stands and its timeline, each reply with its
    /// status and error, and a retry or cancel button where one applies.
    pub async fn conversation_page(
        &self,
        session: &Session,
        id: i64,
        before_ms: Option<i64>,
        note: Option<&str>,
    ) -> Result<String, ConsoleError> {
        #[derive(Serialize)]
        struct Entry {
            inbound: bool,
            id: i64,
            at: String,
            sid: String,
            text: String,
            media: Vec<String>,
            html: Option<Value>,
            status: &'static str,
            status_class: &'static str,
            attempts: i32,
            twilio_sid: Option<String>,
            error: String,
            can_retry: bool,
            can_cancel: bool,
            /// A message's node: where the conversation stood after it.
            node: Option<String>,
            /// A reply's status history, oldest first.
            history: Vec<EventRow>,
        }
        let detail = self
            .store
            .conversation_by_id(id)
            .await?
            .ok_or_else(|| ConsoleError::NotFound(format!("there is no conversation {id}")))?;
        let page = self
            .store
            .timeline(
                &detail.summary,
                before_ms.unwrap_or(i64::MAX),
                TIMELINE_PAGE,
            )
            .await?;
        let mut entries = Vec::with_capacity(page.entries.len());
        for entry in &page.entries {
            entries.push(match entry {
                TimelineEntry::Inbound(row) => Entry {
                    inbound: true,
                    id: row.id,
                    at: when(row.received_at_ms),
                    sid: row.message_sid.clone(),
                    text: row.body.clone(),
                    media: inbound_details(&row.payload),
                    html: None,
                    status: "",
                    status_class: "",
                    attempts: 0,
                    twilio_sid: None,
                    error: String::new(),
                    can_retry: false,
                    can_cancel: false,
                    node: row.node.clone(),
                    history: Vec::new(),
                },
                TimelineEntry::Reply(row) => Entry {
                    inbound: false,
                    id: row.id,
                    at: when(row.created_at_ms),
                    sid: String::new(),
                    text: String::new(),
                    media: Vec::new(),
                    html: Some(self.reply_html(&row.body, &row.media, row.content.as_ref())?),
                    status: row.status.as_str(),
                    status_class: status_class(row.status),
                    attempts: row.attempts,
                    twilio_sid: row.twilio_sid.clone(),
                    error: error_text(row),
                    can_retry: matches!(
                        row.status,
                        OutboxStatus::Failed | OutboxStatus::Undelivered
                    ),
                    can_cancel: row.status == OutboxStatus::Queued,
                    node: None,
                    history: history_rows(&row.history),
                },
            });
        }
        let c = &detail.summary;
        let here = match before_ms {
            Some(b) => format!("{}/conversations/{id}?before={b}", self.base),
            None => format!("{}/conversations/{id}", self.base),
        };
        self.page(
            Some(session),
            &c.contact,
            "conversations",
            note,
            "conversation.html",
            context! {
                c => context! {
                    id => c.id,
                    bot => &c.bot,
                    contact => &c.contact,
                    node => &c.node,
                    updated_at => when(c.updated_at_ms),
                    opted_out_at => c.opted_out_at_ms.map(when),
                    timeout_at => detail.timeout_at_ms.map(when),
                    on_timeout => &detail.on_timeout,
                },
                vars => serde_json::to_string_pretty(&detail.vars).unwrap_or_default(),
                entries => entries,
                older => page.older_before_ms,
                here => here,
            },
        )
    }

    /// Queued and failed replies of a bot.
    pub async fn outbox_page(
        &self,
        session: &Session,
        query: &OutboxQuery,
    ) -> Result<String, ConsoleError> {
        #[derive(Serialize)]
        struct Row {
            id: i64,
            conversation_id: i64,
            contact: String,
            excerpt: String,
            due: String,
            updated: String,
            attempts: i32,
            status: &'static str,
            error: String,
        }
        fn row(r: OutboxRow) -> Row {
            Row {
                id: r.id,
                conversation_id: r.conversation_id,
                excerpt: excerpt(&r.body),
                due: when(r.next_attempt_at_ms),
                updated: when(r.updated_at_ms),
                attempts: r.attempts,
                status: r.status.as_str(),
                error: error_text(&r),
                contact: r.contact,
            }
        }
        let (bot, bots) = self.chosen_bot(query.bot.as_deref())?;
        let queued_from = parse_cursor(query.queued_after.as_deref(), Cursor::OLDEST)?;
        let failed_from = parse_cursor(query.failed_before.as_deref(), Cursor::NEWEST)?;
        let (queued, failed) = if bot.is_empty() {
            (Default::default(), Default::default())
        } else {
            (
                self.store
                    .queued_replies(&bot, queued_from, LIST_PAGE)
                    .await?,
                self.store
                    .failed_replies(&bot, failed_from, LIST_PAGE)
                    .await?,
            )
        };
        let here = format!("{}/outbox?bot={bot}", self.base);
        self.page(
            Some(session),
            "Outbox",
            "outbox",
            query.note.as_deref(),
            "outbox.html",
            context! {
                bot => &bot,
                bots => bots,
                here => here,
                queued => queued.rows.into_iter().map(row).collect::<Vec<_>>(),
                queued_next => queued.next.map(cursor_text),
                failed => failed.rows.into_iter().map(row).collect::<Vec<_>>(),
                failed_next => failed.next.map(cursor_text),
            },
        )
    }

    /// Queues failed reply `id` again and wakes the sender.
    pub async fn retry(&self, id: i64) -> Result<Note, ConsoleError> {
        let now_ms = self.clock.now().timestamp_millis();
        Ok(match self.store.retry_reply(id, now_ms).await? {
            Some(bot) => {
                tracing::info!(%bot, outbox_id = id, "reply queued again from the console");
                self.outbox.queued();
                Note::Retried
            }
            None => Note::NotRetried,
        })
    }

    /// Cancels queued reply `id`.
    pub async fn cancel(&self, id: i64) -> Result<Note, ConsoleError> {
        let now_ms = self.clock.now().timestamp_millis();
        Ok(match self.store.cancel_reply(id, now_ms).await? {
            Some(bot) => {
                tracing::info!(%bot, outbox_id = id, reason = CANCELLED_MESSAGE, "reply cancelled from the console");
                Note::Cancelled
            }
            None => Note::NotCancelled,
        })
    }

    /// The simulator's list of bots.
    pub fn simulators_page(&self, session: &Session) -> Result<String, ConsoleError> {
        let bots: Vec<Value> = self
            .registry
            .ids()
            .iter()
            .filter_map(|id| self.registry.get(id.as_str()))
            .map(|b| context! { id => b.id.as_str(), name => &b.name })
            .collect();
        self.page(
            Some(session),
            "Simulator",
            "simulator",
            None,
            "simulators.html",
            context! { bots => bots },
        )
    }

    /// Runs `f` on the simulator of `session` for `bot` (opened, loading the
    /// bot, if need be) on a blocking thread: loading reads files, and a step
    /// may run a script.
    async fn with_simulator<T: Send + 'static>(
        self: &Arc<Self>,
        session: &Session,
        bot: &str,
        f: impl FnOnce(&mut simulator::Simulator) -> T + Send + 'static,
    ) -> Result<T, ConsoleError> {
        let loaded = self.loaded_bot(bot)?;
        let console = self.clone();
        let session = session.id.clone();
        let done = tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            let sim = console
                .simulators
                .open(&session, &loaded, |s| console.sessions.is_live(s, now))?;
            let mut sim = simulator::lock(&sim);
            Ok::<T, OpenError>(f(&mut sim))
        })
        .await
        .map_err(|e| ConsoleError::Busy(format!("the simulator stopped: {e}")))?;
        done.map_err(|e| match e {
            OpenError::Load(diagnostics) => ConsoleError::BadInput(format!(
                "{bot}'s files do not load, so the simulator cannot start:\n\n{}",
                diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n\n")
            )),
            OpenError::Full => ConsoleError::Busy(format!(
                "{MAX_SIMULATORS} simulators are open: sign out of other console sessions, or try again later"
            )),
        })
    }

    /// The simulator for `bot`: the chat, the node and vars beside it.
    pub async fn simulator_page(
        self: &Arc<Self>,
        session: &Session,
        bot: &str,
    ) -> Result<String, ConsoleError> {
        struct Snapshot {
            lines: Vec<Line>,
            node: Option<String>,
            vars: String,
            name: String,
            start: String,
            version: u64,
        }
        let snap = self
            .with_simulator(session, bot, |sim| {
                sim.reload_if_changed();
                Snapshot {
                    lines: sim.lines().cloned().collect(),
                    node: sim.node().map(str::to_owned),
                    vars: sim.vars_json(),
                    name: sim.bot().name.clone(),
                    start: sim.bot().start.clone(),
                    version: sim.version,
                }
            })
            .await?;
        let mut lines = Vec::with_capacity(snap.lines.len());
        for line in &snap.lines {
            lines.push(match line {
                Line::You(text) => context! { kind => "you", text => text },
                Line::Bot(reply) => context! { kind => "bot", html => self.reply(reply)? },
                Line::Notice(text) => context! { kind => "notice", text => text },
                Line::Error(text) => context! { kind => "error", text => text },
            });
        }
        self.page(
            Some(session),
            &format!("Simulator: {}", snap.name),
            "simulator",
            None,
            "simulator.html",
            context! {
                bot => bot,
                name => snap.name,
                start => snap.start,
                lines => lines,
                node => snap.node,
                vars => snap.vars,
                version => snap.version,
            },
        )
    }

    fn reply(&self, reply: &Reply) -> Result<Value, ConsoleError> {
        self.reply_html(&reply.body, &reply.media, reply.content.as_ref())
    }

    /// Sends `text` to `bot` in the simulator of `session`.
    pub async fn simulator_send(
        self: &Arc<Self>,
        session: &Session,
        bot: &str,
        text: &str,
    ) -> Result<(), ConsoleError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(ConsoleError::BadInput(format!(
                "the message is longer than {} KiB: WhatsApp takes at most 4,096 characters",
                MAX_MESSAGE_BYTES / 1024
            )));
        }
        let text = text.to_owned();
        self.with_simulator(session, bot, move |sim| sim.send(&text))
            .await
    }

    /// Starts the simulator's conversation over.
    pub async fn simulator_reset(
        self: &Arc<Self>,
        session: &Session,
        bot: &str,
    ) -> Result<(), ConsoleError> {
        self.with_simulator(session, bot, |sim| sim.reset()).await
    }

    /// The simulator's conversation as a transcript test named `name`.
    pub async fn simulator_transcript(
        self: &Arc<Self>,
        session: &Session,
        bot: &str,
        name: &str,
    ) -> Result<String, ConsoleError> {
        let name = test_name(name)?;
        self.with_simulator(session, bot, move |sim| sim.transcript(&name))
            .await
    }

    /// Writes the simulator's conversation to the bot's `tests/NAME.yaml`; the
    /// chat says where, or why not.
    pub async fn simulator_save(
        self: &Arc<Self>,
        session: &Session,
        bot: &str,
        name: &str,
    ) -> Result<(), ConsoleError> {
        let name = test_name(name)?;
        self.with_simulator(session, bot, move |sim| sim.save(&name))
            .await
    }

    /// The simulator's version after a reload check, for the page's script:
    /// it refreshes when this changes.
    pub async fn simulator_version(
        self: &Arc<Self>,
        session: &Session,
        bot: &str,
    ) -> Result<u64, ConsoleError> {
        self.with_simulator(session, bot, |sim| {
            sim.reload_if_changed();
            sim.version
        })
        .await
    }
}

/// The console's templates, escaping for HTML everything but the values
/// marked safe (pages, replies and diagrams rendered here already).
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_formatter(html_formatter);
    env.set_trim_blocks(true);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .expect("the console's templates compile (tested)");
    }
    env
}

/// Writes a value into a page: safe values as they are, `none` as nothing,
/// anything else with `& < > " '` escaped. (minijinja's own escaping also
/// writes `/` as `&#x2f;`, which makes every URL in a page unreadable.)
fn html_formatter(
    out: &mut minijinja::Output<'_>,
    _state: &minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    let failed = |_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "could not write");
    if value.is_safe() {
        return out.write_str(&value.to_string()).map_err(failed);
    }
    if value.is_none() || value.is_undefined() {
        return Ok(());
    }
    let text = value.to_string();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
        out.write_str(&rest[..at]).map_err(failed)?;
        let entity = match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => "&#39;",
        };
        out.write_str(entity).map_err(failed)?;
        rest = &rest[at + 1..];
    }
    out.write_str(rest).map_err(failed)
}

/// A test name as the simulator takes it: a file name of letters, digits,
/// `-` and `_`.
fn test_name(name: &str) -> Result<String, ConsoleError> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(ConsoleError::BadInput(
            "a test name is 1 to 64 letters, digits, `-` or `_` (it becomes tests/NAME.yaml)"
                .to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_escapes_html() {
        let env = environment();
        let html = env
            .get_template("reply.html")
            .unwrap()
            .render(context! { reply => ReplyView {
                body: "<script>x</script>",
                media: vec![MediaView { url: "javascript:alert(1)".into(), linkable: false }],
                menu: None,
                template: None,
            } })
            .unwrap();
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(!html.contains("href=\"javascript"), "{html}");
        // Buttons are drawn as buttons, with hostile labels escaped.
        let menu = env
            .get_template("reply.html")
            .unwrap()
            .render(context! { reply => ReplyView {
                body: "Pick\n1. <b>\n2. No",
                media: vec![],
                menu: Some(MenuView {
                    style: "buttons",
                    text: "Pick".into(),
                    button: None,
                    choices: vec!["<b>".into(), "No".into()],
                }),
                template: None,
            } })
            .unwrap();
        assert!(
            menu.contains("<span class=\"choice\">&lt;b&gt;</span>"),
            "{menu}"
        );
        assert!(menu.contains("choices buttons"), "{menu}");
        assert!(
            !menu.contains("1. "),
            "the numbered text is not shown: {menu}"
        );
        let safe = env
            .render_str(
                "{{ a }}|{{ b }}|{{ c }}",
                context! { a => "'\"&", b => Value::from_safe_string("<b>".into()), c => () },
            )
            .unwrap();
        assert_eq!(safe, "&#39;&quot;&amp;|<b>|");
    }

    #[test]
    fn cursors_round_trip_and_hostile_ones_are_refused() {
        let c = Cursor {
            at_ms: 1700000000000,
            id: 42,
        };
        assert_eq!(
            parse_cursor(Some(&cursor_text(c)), Cursor::NEWEST).unwrap(),
            c
        );
        assert_eq!(parse_cursor(None, Cursor::NEWEST).unwrap(), Cursor::NEWEST);
        assert_eq!(
            parse_cursor(Some(""), Cursor::OLDEST).unwrap(),
            Cursor::OLDEST
        );
        for bad in ["x", "1", "1.", ".1", "1.2.3", "99999999999999999999.1"] {
            assert!(parse_cursor(Some(bad), Cursor::NEWEST).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_history_reads_as_attempts_errors_with_meanings_and_who() {
        let events = [
            StatusEvent {
                at_ms: 0,
                status: "retry".into(),
                attempt: Some(1),
                code: Some(20429),
                error: Some("busy".into()),
                next_attempt_at_ms: Some(1_000),
                ..StatusEvent::default()
            },
            StatusEvent {
                at_ms: 1_000,
                status: "sent".into(),
                attempt: Some(2),
                sid: Some("SM1".into()),
                ..StatusEvent::default()
            },
            StatusEvent {
                at_ms: 2_000,
                status: "queued".into(),
                by: Some("console".into()),
                ..StatusEvent::default()
            },
        ];
        let rows = history_rows(&events);
        assert_eq!(rows[0].status_class, "pending");
        assert_eq!(
            rows[0].detail,
            "attempt 1 · 20429: too many concurrent requests to Twilio's API (busy) · next try 1970-01-01 00:00:01 UTC"
        );
        assert_eq!(rows[1].status_class, "ok");
        assert_eq!(rows[1].detail, "attempt 2 · as SM1");
        assert_eq!(rows[2].detail, "by the console");
    }

    #[test]
    fn a_messages_details_come_from_its_payload_and_survive_a_bad_one() {
        let payload = serde_json::json!({
            "text": "", "media": ["https://x/a.png", "https://x/b"], "media_types": ["image/png"],
            "button": "Yes", "button_payload": "yes-1", "latitude": 1.0, "longitude": 2.5,
            "label": "Shop"
        })
        .to_string();
        assert_eq!(
            inbound_details(&payload),
            [
                "[media image/png] https://x/a.png",
                "[media] https://x/b",
                "[button] Yes (payload yes-1)",
                "[location] 1, 2.5 · Shop",
            ]
        );
        assert!(inbound_details("{not json").is_empty());
    }

    #[test]
    fn test_names_are_bare_file_names() {
        assert_eq!(test_name(" booking-1_a ").unwrap(), "booking-1_a");
        for bad in ["", "../x", "a/b", "a.yaml", &"x".repeat(65), "é"] {
            assert!(test_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_text_gives_code_meaning_and_what_was_recorded() {
        let mut row = OutboxRow {
            id: 1,
            bot: "b".into(),
            contact: "c".into(),
            conversation_id: 1,
            body: String::new(),
            media: vec![],
            status: OutboxStatus::Failed,
            attempts: 1,
            next_attempt_at_ms: 0,
            claim_token: None,
            twilio_sid: None,
            error_code: Some(63016),
            error_message: Some(crate::twilio::errors::meaning(63016)),
            created_at_ms: 0,
            updated_at_ms: 0,
            kind: crate::message::ReplyKind::FreeForm,
            contact_opted_out_at_ms: None,
            window_opened_at_ms: None,
            bulk: false,
            content: None,
            history: Vec::new(),
        };
        assert_eq!(
            error_text(&row),
            "63016: outside the 24-hour window: start with a template"
        );
        row.error_message = Some("Twilio said no".into());
        assert!(error_text(&row).ends_with("(Twilio said no)"));
        row.error_code = None;
        row.error_message = Some(CANCELLED_MESSAGE.into());
        assert_eq!(error_text(&row), CANCELLED_MESSAGE);
    }
}
