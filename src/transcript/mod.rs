//! Transcript tests (SPEC §3), for `switchboard test`: [`read`] turns a bot's
//! `tests/*.yaml` into typed [`TranscriptTest`]s (every problem located, with the
//! same YAML reader and messages as flow files), and [`run`] replays each one
//! offline against the loaded bot, compares, and describes what differed; [`write`]
//! writes a conversation down as a test (`chat`'s `/save`).
//!
//! A test runs in memory: a fresh conversation, no database, a fixed clock, and
//! script HTTP answered only by the test's `http:` stubs. Nothing here touches the
//! network, the store or Twilio.

mod read;
mod run;
mod write;

pub use read::{load_tests, parse_stubs, parse_tests, read_stubs};
pub use run::run_test;
pub use write::{write_test, RecordedCall, RecordedStep};

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use regex::Regex;
use serde_json::{Map, Value};

use crate::domain::Diagnostic;
use crate::flow::Bot;
use crate::message::{InboundMessage, InteractiveStyle, Reply, UserInfo};
use crate::script::{HttpResponse, ScriptEngine};

/// The contact every transcript test talks as.
pub const TEST_CONTACT: &str = "whatsapp:+15550000001";

/// When every transcript test runs: `now()` in scripts returns this.
pub const TEST_TIME: &str = "2024-01-01T09:00:00Z";

/// One test: a name, the steps, and the HTTP stubs its scripts may call.
#[derive(Debug)]
pub struct TranscriptTest {
    pub file: PathBuf,
    /// Line of the test's first key, 1-based.
    pub line: usize,
    pub name: String,
    pub steps: Vec<Step>,
    /// `"GET https://..."` -> canned response.
    pub http: Vec<(String, HttpResponse)>,
}

/// One message from the user and what must hold after the bot answered it.
#[derive(Debug)]
pub struct Step {
    /// Line of the step's `user:` (or first key), 1-based.
    pub line: usize,
    pub user: InboundMessage,
    /// `None`: replies are not checked.
    pub bot: Option<Vec<Expect>>,
    pub vars: Option<Map<String, Value>>,
    pub node: Option<String>,
    /// `handoff: sales`: the conversation is with a person in this queue
    /// after the step (SPEC §10.2).
    pub handoff: Option<String>,
    /// What the step does; `user` is empty unless it is [`StepKind::User`].
    pub kind: StepKind,
}

/// What a step does (SPEC §3, §9.4).
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// `user:`: the contact sends a message.
    User,
    /// `wait: 2h`: time passes (waits that run out meanwhile fire); `bot:`
    /// expects what was sent meanwhile, nothing when absent.
    Wait(std::time::Duration),
    /// `start: {node: reminder, vars: {...}}`: the business starts the
    /// conversation, as the start API would.
    Start {
        node: String,
        vars: Map<String, Value>,
    },
}

/// What one reply must be.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The reply contains this text.
    Contains(String),
    /// The reply is exactly this text.
    Exact(String),
    /// The reply matches this regular expression somewhere.
    Regex(Regex),
    /// The reply is an interactive menu of this style with these labels, in
    /// order (SPEC §8.1: `{buttons: [...]}`, `{list: [...]}`).
    Menu(InteractiveStyle, Vec<String>),
    /// The reply sends this template (SPEC §8.2: `{template: name}`).
    Template(String),
}

impl Expect {
    fn matches(&self, reply: &Reply) -> bool {
        let body = reply.body.as_str();
        match self {
            Expect::Contains(text) => body.contains(text.as_str()),
            Expect::Exact(text) => body == text,
            Expect::Regex(re) => re.is_match(body),
            Expect::Menu(style, labels) => reply.menu().is_some_and(|menu| {
                menu.style == *style
                    && menu.choices.len() == labels.len()
                    && menu.choices.iter().zip(labels).all(|(c, l)| c.label == *l)
            }),
            Expect::Template(name) => reply.template_send().is_some_and(|t| t.name == *name),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Contains(text) => write!(f, "contains {text:?}"),
            Expect::Exact(text) => write!(f, "is exactly {text:?}"),
            Expect::Regex(re) => write!(f, "matches regex {:?}", re.as_str()),
            Expect::Menu(style, labels) => write!(f, "is {} {labels:?}", style.as_str()),
            Expect::Template(name) => write!(f, "is template `{name}`"),
        }
    }
}

/// The outcome of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    pub file: PathBuf,
    pub name: String,
    /// `None` when the test passed; otherwise what went wrong, ready to print.
    pub failure: Option<String>,
    /// What the run saw without failing, each `note: ...`, ready to print: the
    /// flow's error at a step that expected the bot's `error_reply` and got it.
    pub notes: Vec<String>,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// What running one bot's tests found.
#[derive(Debug, Default)]
pub struct Report {
    pub results: Vec<TestResult>,
    /// Problems in the test files themselves (each fails the run).
    pub errors: Vec<Diagnostic>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// No failed test and no broken test file.
    pub fn is_success(&self) -> bool {
        self.failed() == 0 && self.errors.is_empty()
    }
}

/// Tests found per bot and how they went, for `switchboard test`.
#[derive(Debug, Default)]
pub struct Summary {
    pub reports: BTreeMap<String, Report>,
}

impl Summary {
    pub fn passed(&self) -> usize {
        self.reports.values().map(Report::passed).sum()
    }

    pub fn failed(&self) -> usize {
        self.reports.values().map(Report::failed).sum()
    }
}

/// Reads and runs every test in `bot.dir/tests/*.yaml` (and `*.yml`).
pub fn run_bot_tests(bot: &Bot, engine: &ScriptEngine) -> Report {
    let (tests, errors) = load_tests(&bot.dir.join("tests"));
    Report {
        results: tests
            .iter()
            .map(|test| run_test(bot, engine, test))
            .collect(),
        errors,
    }
}

/// The user every transcript test and `chat` talks as.
pub fn test_user() -> UserInfo {
    UserInfo {
        phone: "+15550000001".into(),
        name: "Test User".into(),
        channel: "whatsapp".into(),
    }
}

#[cfg(test)]
mod tests;
