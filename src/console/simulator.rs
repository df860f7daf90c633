//! The console's simulator: a conversation with a loaded bot in the page, as
//! `switchboard chat` has in the terminal (it is a [`ChatSession`]): in memory,
//! no Twilio, no database rows. Script HTTP is answered by the stubs of the
//! bot's own transcript tests and refused otherwise, so trying a bot never
//! calls a real service. The bot is reloaded from its folder when its files
//! change, with a notice in the chat.
//!
//! One simulator per console session and bot, at most [`MAX_SIMULATORS`] in
//! all, each remembering at most [`MAX_LINES`] lines for the page.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::chat::ChatSession;
use crate::domain::Diagnostic;
use crate::flow::Bot;
use crate::message::{InboundMessage, Reply};
use crate::script::{ScriptEngine, StubHttp};
use crate::transcript::load_tests;

/// Simulators open at once, over all sessions.
pub const MAX_SIMULATORS: usize = 64;

/// Lines of a simulator the page shows; older ones are dropped.
pub const MAX_LINES: usize = 300;

/// Longest message the simulator takes, in bytes: WhatsApp's 4,096 characters
/// at up to four bytes each.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// One line of the chat.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// What the person typed.
    You(String),
    Bot(Reply),
    /// Something about the simulator: a reload, a reset, a save.
    Notice(String),
    /// The flow failed (the contact would get the bot's `error_reply`).
    Error(String),
}

/// One conversation with one bot.
#[derive(Debug)]
pub struct Simulator {
    chat: ChatSession,
    lines: VecDeque<Line>,
    /// Bumped by every change the page should show (a line, a reload); the
    /// page's script asks for it to know when to refresh.
    pub version: u64,
}

impl Simulator {
    fn push(&mut self, line: Line) {
        if self.lines.len() == MAX_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
        self.version += 1;
    }

    /// Reloads the bot if its files changed, with a notice saying so.
    pub fn reload_if_changed(&mut self) {
        match self.chat.reload_if_changed() {
            Some(Ok(())) => self.push(Line::Notice(format!(
                "{} was reloaded: its files changed. The conversation goes on with the new version.",
                self.chat.bot().id
            ))),
            Some(Err(diagnostics)) => {
                let first = diagnostics
                    .iter()
                    .find(|d| d.is_error())
                    .map(|d| format!(": {}", first_line(d)))
                    .unwrap_or_default();
                self.push(Line::Notice(format!(
                    "{}'s files changed but do not load{first}. Still using the last good version.",
                    self.chat.bot().id
                )));
            }
            None => {}
        }
    }

    /// Sends `text` as the contact; the bot's replies (or its error) follow.
    pub fn send(&mut self, text: &str) {
        self.reload_if_changed();
        self.push(Line::You(text.to_owned()));
        let outcome = self.chat.send(&InboundMessage::text(text));
        for reply in outcome.replies {
            self.push(Line::Bot(reply));
        }
        if let Some(error) = outcome.error {
            self.push(Line::Error(error.to_string()));
        }
    }

    /// Starts the conversation over.
    pub fn reset(&mut self) {
        self.chat.reset();
        self.lines.clear();
        self.push(Line::Notice("New conversation.".to_owned()));
    }

    /// The conversation since the last reset as a transcript test.
    pub fn transcript(&self, name: &str) -> String {
        self.chat.transcript(name)
    }

    /// Writes the conversation to the bot's `tests/NAME.yaml` (never replacing
    /// a file) and notes in the chat where, or why not.
    pub fn save(&mut self, name: &str) {
        let said = self.chat.save_to_tests(name);
        let said = said
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or(&said)
            .to_owned();
        self.push(Line::Notice(said));
    }

    pub fn lines(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter()
    }

    pub fn node(&self) -> Option<&str> {
        self.chat.node()
    }

    /// The vars, as indented JSON.
    pub fn vars_json(&self) -> String {
        serde_json::to_string_pretty(&self.chat.vars()).unwrap_or_default()
    }

    pub fn bot(&self) -> &Bot {
        self.chat.bot()
    }
}

/// The first line of a diagnostic (`file:line:col: error: message`).
fn first_line(d: &Diagnostic) -> String {
    d.to_string().lines().next().unwrap_or_default().to_owned()
}

/// Open simulators by (session id, bot id).
type Open = HashMap<(String, String), Arc<Mutex<Simulator>>>;

/// Every simulator, by (session id, bot id).
#[derive(Debug)]
pub struct Simulators {
    engine: ScriptEngine,
    open: Mutex<Open>,
}

/// Why a simulator could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The bot's files do not load (the serving version may be older).
    Load(Vec<Diagnostic>),
    /// [`MAX_SIMULATORS`] are open for live sessions.
    Full,
}

/// Locks a simulator, whatever a panic in another request left behind.
pub fn lock(sim: &Mutex<Simulator>) -> MutexGuard<'_, Simulator> {
    sim.lock().unwrap_or_else(|e| e.into_inner())
}

impl Simulators {
    /// Simulators load bots with `engine`, the one the server's bots use.
    pub fn new(engine: ScriptEngine) -> Simulators {
        Simulators {
            engine,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The simulator of `session` for `bot`, if open.
    pub fn get(&self, session: &str, bot: &str) -> Option<Arc<Mutex<Simulator>>> {
        self.map()
            .get(&(session.to_owned(), bot.to_owned()))
            .cloned()
    }

    /// The simulator of `session` for `bot`, opened (the bot loaded from its
    /// folder, blocking) if need be. Simulators of sessions that `live` says
    /// ended are closed first when the limit is reached.
    pub fn open(
        &self,
        session: &str,
        bot: &Bot,
        live: impl Fn(&str) -> bool,
    ) -> Result<Arc<Mutex<Simulator>>, OpenError> {
        if let Some(sim) = self.get(session, bot.id.as_str()) {
            return Ok(sim);
        }
        {
            let mut map = self.map();
            if map.len() >= MAX_SIMULATORS {
                map.retain(|(s, _), _| live(s));
            }
            if map.len() >= MAX_SIMULATORS {
                return Err(OpenError::Full);
            }
        }
        let flows = bot.dir.parent().unwrap_or(Path::new("."));
        let chat = ChatSession::start(
            flows,
            bot.id.as_str(),
            self.engine.clone(),
            Arc::new(stubs_of(bot)),
        )
        .map_err(OpenError::Load)?;
        let sim = Arc::new(Mutex::new(Simulator {
            chat,
            lines: VecDeque::new(),
            version: 0,
        }));
        let mut map = self.map();
        let entry = map
            .entry((session.to_owned(), bot.id.to_string()))
            .or_insert(sim);
        Ok(entry.clone())
    }

    /// Closes every simulator of `session` (sign-out).
    pub fn close_session(&self, session: &str) {
        self.map().retain(|(s, _), _| s != session);
    }
}

/// The `http:` stubs of every transcript test of `bot`; a test file that does
/// not read adds none (`switchboard test` reports it).
fn stubs_of(bot: &Bot) -> StubHttp {
    let (tests, _errors) = load_tests(&bot.dir.join("tests"));
    let stubs: Vec<_> = tests.into_iter().flat_map(|t| t.http).collect();
    StubHttp::from_stubs(&stubs)
}
