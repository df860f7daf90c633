//! Transcript tests (SPEC §3): reading a bot's `tests/*.yaml` and replaying each
//! test offline against the loaded bot, for `switchboard test`.
//!
//! A test runs in memory: a fresh conversation, no database, a fixed clock, and
//! script HTTP answered only by the test's `http:` stubs. Nothing here touches the
//! network, the store or Twilio.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node};
use regex::Regex;
use serde_json::{Map, Number, Value};

use crate::conversation::{self, Runtime, Turn};
use crate::domain::{Clock, ConversationState, Diagnostic};
use crate::flow::Bot;
use crate::message::{InboundMessage, Reply, UserInfo};
use crate::script::{HttpRequest, HttpResponse, ScriptEngine, ScriptHttp, StubHttp};

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
}

impl Expect {
    fn matches(&self, body: &str) -> bool {
        match self {
            Expect::Contains(text) => body.contains(text.as_str()),
            Expect::Exact(text) => body == text,
            Expect::Regex(re) => re.is_match(body),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Contains(text) => write!(f, "contains {text:?}"),
            Expect::Exact(text) => write!(f, "is exactly {text:?}"),
            Expect::Regex(re) => write!(f, "matches regex {:?}", re.as_str()),
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

/// Reads and runs every test in `bot.dir/tests/*.yaml` (and `*.yml`).
pub fn run_bot_tests(bot: &Bot, engine: &ScriptEngine) -> Report {
    let mut report = Report::default();
    let (tests, errors) = load_tests(&bot.dir.join("tests"));
    report.errors = errors;
    for test in &tests {
        report.results.push(run_test(bot, engine, test));
    }
    report
}

/// Reads every `*.yaml`/`*.yml` file of `dir`, a bot's `tests` folder (sorted by
/// name; hidden and backup files skipped), each within the bounds of any flow
/// file (1 MiB, inside the bot folder). A missing folder has no tests.
pub fn load_tests(dir: &Path) -> (Vec<TranscriptTest>, Vec<Diagnostic>) {
    let mut tests = Vec::new();
    let mut errors = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (tests, errors);
    };
    let bot_dir = dir.parent().unwrap_or(dir);
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_test_file(p))
        .collect();
    files.sort();
    for file in files {
        match crate::flow::read_bot_file(bot_dir, &file) {
            Ok(text) => match parse_tests(&file, &text) {
                Ok(mut found) => tests.append(&mut found),
                Err(mut found) => errors.append(&mut found),
            },
            Err(diagnostic) => errors.push(diagnostic),
        }
    }
    (tests, errors)
}

fn is_test_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    !name.starts_with('.')
        && !name.ends_with('~')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Parses one test file: several YAML documents separated by `---` lines, one
/// test each. Every problem is reported with its line and column.
pub fn parse_tests(file: &Path, text: &str) -> Result<Vec<TranscriptTest>, Vec<Diagnostic>> {
    let mut reader = Reader {
        file,
        text,
        errors: Vec::new(),
    };
    let mut tests = Vec::new();
    for (offset, doc) in documents(text) {
        if let Some(test) = reader.document(offset, &doc) {
            tests.push(test);
        }
    }
    if tests.is_empty() && reader.errors.is_empty() {
        reader.errors.push(
            Diagnostic::file_error(file, "this file has no tests").with_hint(
                "a test is a `name:` and a list of `steps:`; see docs/transcript-tests.md",
            ),
        );
    }
    if reader.errors.is_empty() {
        Ok(tests)
    } else {
        Err(reader.errors)
    }
}

/// Parses a stubs file for `switchboard chat --stubs`: the same map as a test's
/// `http:` (`"GET https://...": {status: 200, json: ...}`).
pub fn parse_stubs(
    file: &Path,
    text: &str,
) -> Result<Vec<(String, HttpResponse)>, Vec<Diagnostic>> {
    let mut reader = Reader {
        file,
        text,
        errors: Vec::new(),
    };
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let stubs = match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(node) => reader.http(0, &node),
        Err(e) => {
            reader.load_error(0, e);
            Vec::new()
        }
    };
    if reader.errors.is_empty() {
        Ok(stubs)
    } else {
        Err(reader.errors)
    }
}

/// Splits `text` at `---` lines: (number of lines before the document, its text).
/// Documents with nothing but comments and blank lines are dropped.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let marker = line.starts_with("---") && line[3..].trim().is_empty();
        if marker {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 1;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs.retain(|(_, doc)| {
        doc.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
    });
    docs
}

/// Reads test documents, collecting every problem.
struct Reader<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<Diagnostic>,
}

/// A 1-based position in the whole file.
#[derive(Clone, Copy)]
struct At {
    line: usize,
    column: usize,
}

impl Reader<'_> {
    fn error(&mut self, at: At, message: impl Into<String>, hint: Option<String>) {
        let mut d =
            Diagnostic::error(self.file, at.line, at.column, message).with_source(self.text);
        d.hint = hint;
        self.errors.push(d);
    }

    fn document(&mut self, offset: usize, doc: &str) -> Option<TranscriptTest> {
        let options = LoaderOptions::default().error_on_duplicate_keys(true);
        let root = match marked_yaml::parse_yaml_with_options(0, doc, options) {
            Ok(Node::Mapping(map)) => map,
            Ok(other) => {
                let at = self.at(offset, &other);
                self.error(at, "a test must be a map with `name` and `steps`", None);
                return None;
            }
            Err(e) => {
                self.load_error(offset, e);
                return None;
            }
        };
        let first = root
            .keys()
            .next()
            .map(|k| self.at_scalar(offset, k))
            .unwrap_or(At {
                line: offset + 1,
                column: 1,
            });
        let errors_before = self.errors.len();
        self.check_keys(offset, &root, &["name", "steps", "http"], "in a test");

        let name = match root.get_node("name") {
            Some(Node::Scalar(s)) if !s.as_str().trim().is_empty() => s.as_str().trim().to_owned(),
            Some(other) => {
                let at = self.at(offset, other);
                self.error(at, "`name` must be a text value", None);
                String::new()
            }
            None => {
                self.error(
                    first,
                    "this test has no `name`",
                    Some("add `name: what this test checks`".into()),
                );
                String::new()
            }
        };

        let mut steps = Vec::new();
        match root.get_node("steps") {
            Some(Node::Sequence(items)) if !items.is_empty() => {
                for item in items.iter() {
                    if let Some(step) = self.step(offset, item) {
                        steps.push(step);
                    }
                }
            }
            Some(other) => {
                let at = self.at(offset, other);
                self.error(
                    at,
                    "`steps` must be a list of steps",
                    Some("each step starts with `- user: ...`".into()),
                );
            }
            None => self.error(
                first,
                "this test has no `steps`",
                Some("add `steps:` with a list of `- user: ...` lines".into()),
            ),
        }

        let http = match root.get_node("http") {
            Some(node) => self.http(offset, node),
            None => Vec::new(),
        };

        (self.errors.len() == errors_before).then(|| TranscriptTest {
            file: self.file.to_owned(),
            line: first.line,
            name,
            steps,
            http,
        })
    }

    fn step(&mut self, offset: usize, node: &Node) -> Option<Step> {
        let at = self.at(offset, node);
        let Node::Mapping(map) = node else {
            self.error(
                at,
                "a step must be a map with `user` (and `bot`, `vars`, `node`)",
                Some("write `- user: hi` then `bot: ...` on the next line, indented".into()),
            );
            return None;
        };
        self.check_keys(offset, map, &["user", "bot", "vars", "node"], "in a step");
        let user = match map.get_node("user") {
            Some(node) => self.user(offset, node)?,
            None => {
                self.error(at, "this step has no `user` message", None);
                return None;
            }
        };
        let bot = match map.get_node("bot") {
            Some(Node::Sequence(items)) => {
                let mut all = Vec::with_capacity(items.len());
                for item in items.iter() {
                    all.push(self.expect(offset, item)?);
                }
                Some(all)
            }
            Some(node) => Some(vec![self.expect(offset, node)?]),
            None => None,
        };
        let vars = match map.get_node("vars") {
            Some(Node::Mapping(vars)) => Some(
                vars.iter()
                    .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                    .collect(),
            ),
            Some(other) => {
                let at = self.at(offset, other);
                self.error(at, "`vars` must be a map like `{name: Amina}`", None);
                return None;
            }
            None => None,
        };
        let node_name = match map.get_node("node") {
            Some(Node::Scalar(s)) => Some(s.as_str().to_owned()),
            Some(other) => {
                let at = self.at(offset, other);
                self.error(at, "`node` must be a node name", None);
                return None;
            }
            None => None,
        };
        Some(Step {
            line: at.line,
            user,
            bot,
            vars,
            node: node_name,
        })
    }

    fn user(&mut self, offset: usize, node: &Node) -> Option<InboundMessage> {
        match node {
            Node::Scalar(s) => Some(InboundMessage::text(s.as_str())),
            Node::Mapping(map) => {
                self.check_keys(
                    offset,
                    map,
                    &["text", "button", "media", "latitude", "longitude"],
                    "in `user`",
                );
                let mut message = InboundMessage::default();
                for (key, value) in map.iter() {
                    let at = self.at(offset, value);
                    match (key.as_str(), value) {
                        ("text", Node::Scalar(s)) => message.text = s.as_str().to_owned(),
                        ("button", Node::Scalar(s)) => message.button = Some(s.as_str().to_owned()),
                        ("media", Node::Scalar(s)) => message.media = vec![s.as_str().to_owned()],
                        ("media", Node::Sequence(items)) => {
                            for item in items.iter() {
                                match item {
                                    Node::Scalar(s) => message.media.push(s.as_str().to_owned()),
                                    _ => {
                                        let at = self.at(offset, item);
                                        self.error(at, "each `media` entry must be a URL", None);
                                        return None;
                                    }
                                }
                            }
                        }
                        ("latitude" | "longitude", Node::Scalar(s)) => {
                            let Ok(number) = s.as_str().trim().parse::<f64>() else {
                                self.error(
                                    at,
                                    format!("`{}` must be a number", key.as_str()),
                                    Some("for example `latitude: -1.2921`".into()),
                                );
                                return None;
                            };
                            if key.as_str() == "latitude" {
                                message.latitude = Some(number);
                            } else {
                                message.longitude = Some(number);
                            }
                        }
                        ("text" | "button" | "media" | "latitude" | "longitude", _) => {
                            self.error(at, format!("`{}` must be a value", key.as_str()), None);
                            return None;
                        }
                        // Unknown keys were reported by `check_keys`.
                        _ => return None,
                    }
                }
                Some(message)
            }
            Node::Sequence(_) => {
                let at = self.at(offset, node);
                self.error(
                    at,
                    "`user` must be a message text or a map (`text`, `button`, `media`, `latitude`, `longitude`)",
                    Some("one step sends one message: use one step per message".into()),
                );
                None
            }
        }
    }

    fn expect(&mut self, offset: usize, node: &Node) -> Option<Expect> {
        let at = self.at(offset, node);
        match node {
            Node::Scalar(s) => Some(Expect::Contains(s.as_str().to_owned())),
            Node::Mapping(map) if map.len() == 1 => {
                let (key, value) = map.iter().next()?;
                let Node::Scalar(text) = value else {
                    self.error(at, format!("`{}` must be a text value", key.as_str()), None);
                    return None;
                };
                match key.as_str() {
                    "exact" => Some(Expect::Exact(text.as_str().to_owned())),
                    "regex" => match Regex::new(text.as_str()) {
                        Ok(re) => Some(Expect::Regex(re)),
                        Err(e) => {
                            let at = self.at(offset, value);
                            self.error(
                                at,
                                format!("invalid regex: {}", last_line(&e.to_string())),
                                Some("quote the pattern with single quotes, and escape `.`, `(`, `?` with `\\`".into()),
                            );
                            None
                        }
                    },
                    _ => {
                        self.check_keys(offset, map, &["exact", "regex"], "in a reply expectation");
                        None
                    }
                }
            }
            _ => {
                self.error(
                    at,
                    "a reply expectation is a text (contained), `{exact: ...}` or `{regex: ...}`",
                    Some("for several replies, write a list: `bot: [\"first\", {regex: \"second\"}]`".into()),
                );
                None
            }
        }
    }

    fn http(&mut self, offset: usize, node: &Node) -> Vec<(String, HttpResponse)> {
        let Node::Mapping(map) = node else {
            let at = self.at(offset, node);
            self.error(
                at,
                "`http` must be a map of `\"GET https://...\": {status: 200, json: ...}`",
                None,
            );
            return Vec::new();
        };
        let mut stubs = Vec::new();
        for (key, value) in map.iter() {
            let at = self.at_scalar(offset, key);
            let request = key.as_str().trim();
            let well_formed = request
                .split_once(' ')
                .is_some_and(|(m, url)| matches!(m, "GET" | "POST") && url.trim().contains("://"));
            if !well_formed {
                self.error(
                    at,
                    format!("`{request}` is not a request"),
                    Some(
                        "write the method and the full URL: `\"GET https://api.example.com/cars\"`"
                            .into(),
                    ),
                );
                continue;
            }
            if let Some(response) = self.response(offset, value) {
                stubs.push((request.to_owned(), response));
            }
        }
        stubs
    }

    fn response(&mut self, offset: usize, node: &Node) -> Option<HttpResponse> {
        let at = self.at(offset, node);
        let Node::Mapping(map) = node else {
            self.error(
                at,
                "a stub must be a map: `{status: 200, json: ...}` or `{status: 200, body: ...}`",
                None,
            );
            return None;
        };
        self.check_keys(offset, map, &["status", "json", "body"], "in an HTTP stub");
        let status = match map.get_node("status") {
            None => 200,
            Some(Node::Scalar(s)) => match s.as_str().trim().parse::<u16>() {
                Ok(code) if (100..600).contains(&code) => code,
                _ => {
                    let at = self.at_scalar(offset, s);
                    self.error(at, "`status` must be an HTTP status code like 200", None);
                    return None;
                }
            },
            Some(other) => {
                let at = self.at(offset, other);
                self.error(at, "`status` must be an HTTP status code like 200", None);
                return None;
            }
        };
        match (map.get_node("json"), map.get_node("body")) {
            (Some(_), Some(_)) => {
                self.error(at, "a stub has either `json` or `body`, not both", None);
                None
            }
            (Some(json), None) => Some(HttpResponse::json(status, &to_json(json))),
            (None, Some(Node::Scalar(body))) => Some(HttpResponse {
                status,
                body: body.as_str().to_owned(),
            }),
            (None, Some(other)) => {
                let at = self.at(offset, other);
                self.error(
                    at,
                    "`body` must be a text value",
                    Some("for structured data use `json:`".into()),
                );
                None
            }
            (None, None) => Some(HttpResponse {
                status,
                body: String::new(),
            }),
        }
    }

    fn check_keys(
        &mut self,
        offset: usize,
        map: &MarkedMappingNode,
        allowed: &[&str],
        context: &str,
    ) {
        for key in map.keys() {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let at = self.at_scalar(offset, key);
            let name = key.as_str();
            let hint = match closest(name, allowed) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!(
                    "allowed keys {context}: {}",
                    allowed
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            self.error(at, format!("unknown key `{name}` {context}"), Some(hint));
        }
    }

    fn load_error(&mut self, offset: usize, e: LoadError) {
        let marker = match &e {
            LoadError::TopLevelMustBeMapping(m)
            | LoadError::TopLevelMustBeSequence(m)
            | LoadError::UnexpectedAnchor(m)
            | LoadError::MappingKeyMustBeScalar(m)
            | LoadError::UnexpectedTag(m)
            | LoadError::ScanError(m, _) => Some(*m),
            LoadError::DuplicateKey(dup) => dup.key.span().start().copied(),
        };
        let at = marker.map_or(
            At {
                line: offset + 1,
                column: 1,
            },
            |m| At {
                line: offset + m.line(),
                column: m.column(),
            },
        );
        let message = match &e {
            LoadError::ScanError(_, scan) => format!("invalid YAML: {}", scan.info()),
            LoadError::DuplicateKey(dup) => format!("duplicate key `{}`", dup.key.as_str()),
            LoadError::TopLevelMustBeMapping(_) => {
                "a test must be a map with `name` and `steps`".to_owned()
            }
            other => format!("invalid YAML: {other}"),
        };
        self.error(
            at,
            message,
            Some("check the indentation, and quote texts that contain `: ` or start with `{`, `[` or `*`".into()),
        );
    }

    fn at(&self, offset: usize, node: &Node) -> At {
        if let Node::Mapping(map) = node {
            if let Some(key) = map.keys().next() {
                return self.at_scalar(offset, key);
            }
        }
        node.span().start().map_or(
            At {
                line: offset + 1,
                column: 1,
            },
            |m| At {
                line: offset + m.line(),
                column: m.column(),
            },
        )
    }

    fn at_scalar(&self, offset: usize, node: &MarkedScalarNode) -> At {
        node.span().start().map_or(
            At {
                line: offset + 1,
                column: 1,
            },
            |m| At {
                line: offset + m.line(),
                column: m.column(),
            },
        )
    }
}

/// The allowed key closest to a misspelt one.
fn closest<'c>(name: &str, allowed: &[&'c str]) -> Option<&'c str> {
    allowed
        .iter()
        .map(|c| (strsim::osa_distance(&name.to_lowercase(), c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or(text).trim()
}

/// A YAML value as JSON: unquoted `true`, `3`, `2.5`, `~` keep their YAML types.
pub fn to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => scalar_json(s),
        Node::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

fn scalar_json(s: &MarkedScalarNode) -> Value {
    let text = s.as_str();
    if !s.may_coerce() {
        return Value::String(text.to_owned());
    }
    match text {
        "~" | "null" | "Null" | "NULL" => return Value::Null,
        _ => {}
    }
    if let Some(b) = s.as_bool() {
        return Value::Bool(b);
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

/// Whether an expected var value holds: equal JSON, or, for plain values, the same
/// written form (`30` and `"30"`), since authors rarely mind the difference.
fn same_value(expected: &Value, actual: &Value) -> bool {
    if expected == actual {
        return true;
    }
    let plain = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_f64().map(|f| f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match (plain(expected), plain(actual)) {
        (Some(a), Some(b)) => a == b,
        _ => match (expected, actual) {
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x, y))
            }
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, x)| b.get(k).is_some_and(|y| same_value(x, y)))
            }
            _ => false,
        },
    }
}

/// A fixed clock: every test sees the same `now()`.
struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

fn test_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(TEST_TIME)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc.timestamp_opt(0, 0).single().unwrap_or_default())
}

/// Script HTTP answered by stubs only; remembers every call that had no stub, so
/// a test fails even when the script caught the error.
pub struct StubbedHttp {
    stubs: StubHttp,
    missing: Mutex<Vec<String>>,
}

impl StubbedHttp {
    pub fn new(stubs: &[(String, HttpResponse)]) -> StubbedHttp {
        let mut http = StubHttp::new();
        for (key, response) in stubs {
            http.insert(key, response.clone());
        }
        StubbedHttp {
            stubs: http,
            missing: Mutex::new(Vec::new()),
        }
    }

    /// Calls without a stub since the last call of this method.
    pub fn take_missing(&self) -> Vec<String> {
        std::mem::take(&mut *self.missing.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ScriptHttp for StubbedHttp {
    fn request(&self, req: &HttpRequest) -> Result<HttpResponse, String> {
        let answer = self.stubs.request(req);
        if answer.is_err() {
            self.missing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{} {}", req.method, req.url));
        }
        answer
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

/// Replays one test against `bot`.
pub fn run_test(bot: &Bot, engine: &ScriptEngine, test: &TranscriptTest) -> TestResult {
    let http = Arc::new(StubbedHttp::new(&test.http));
    let start = test_time();
    let runtime = Runtime {
        scripts: engine.clone(),
        http: http.clone(),
        clock: Arc::new(FixedClock(start)),
    };
    let user = test_user();
    let mut state: Option<ConversationState> = None;
    let failure = test.steps.iter().enumerate().find_map(|(i, step)| {
        let outcome = conversation::handle(
            Turn {
                bot,
                contact: TEST_CONTACT,
                state: state.take(),
                user: &user,
                message: &step.user,
                // A second per step keeps every test well inside any session timeout.
                now_ms: start.timestamp_millis() + 1_000 * i as i64,
                deadline: None,
            },
            &runtime,
        );
        let problem = check_step(step, &outcome, &http.take_missing());
        state = Some(outcome.state);
        problem.map(|what| describe_failure(test, i, step, &what))
    });
    TestResult {
        file: test.file.clone(),
        name: test.name.clone(),
        failure,
    }
}

/// What did not hold after a step, or `None`.
fn check_step(
    step: &Step,
    outcome: &conversation::TurnOutcome,
    missing: &[String],
) -> Option<String> {
    if !missing.is_empty() {
        let calls = missing.join(", ");
        return Some(format!(
            "the script called {calls}, which has no stub\n\
             add it under `http:` in this test, e.g.\n  http:\n    \"{}\": {{status: 200, json: {{}}}}",
            missing[0]
        ));
    }
    if let Some(error) = &outcome.error {
        let reply = outcome.replies.first().map_or("", |r| r.body.as_str());
        return Some(format!(
            "the flow failed and sent the error reply {reply:?}\n{error}"
        ));
    }
    if let Some(expected) = &step.bot {
        if let Some(problem) = check_replies(expected, &outcome.replies) {
            return Some(problem);
        }
    }
    if let Some(vars) = &step.vars {
        let mut wrong = String::new();
        for (name, want) in vars {
            match outcome.state.vars.get(name) {
                Some(got) if same_value(want, got) => {}
                Some(got) => {
                    let _ = writeln!(wrong, "  vars.{name}: expected {want}, got {got}");
                }
                None => {
                    let _ = writeln!(wrong, "  vars.{name}: expected {want}, but it is not set");
                }
            }
        }
        if !wrong.is_empty() {
            return Some(format!(
                "vars differ:\n{wrong}all vars: {}",
                Value::Object(outcome.state.vars.clone())
            ));
        }
    }
    if let Some(node) = &step.node {
        if outcome.state.node.as_deref() != Some(node.as_str()) {
            return Some(match &outcome.state.node {
                Some(at) => format!("expected the conversation at node `{node}`, it is at `{at}`"),
                None => format!(
                    "expected the conversation at node `{node}`, but it has ended (the next message starts over)"
                ),
            });
        }
    }
    None
}

fn check_replies(expected: &[Expect], replies: &[Reply]) -> Option<String> {
    let count_ok = expected.len() == replies.len();
    let all_ok = count_ok
        && expected
            .iter()
            .zip(replies)
            .all(|(want, got)| want.matches(&got.body));
    if all_ok {
        return None;
    }
    let mut text = String::new();
    if !count_ok {
        let _ = writeln!(
            text,
            "expected {} {}, got {}",
            expected.len(),
            plural(expected.len(), "reply", "replies"),
            replies.len()
        );
    }
    let _ = writeln!(text, "expected:");
    for (i, want) in expected.iter().enumerate() {
        let mark = match replies.get(i) {
            Some(got) if want.matches(&got.body) => "  ",
            _ => "✗ ",
        };
        let _ = writeln!(text, "  {mark}{}. {want}", i + 1);
    }
    let _ = write!(text, "got:");
    if replies.is_empty() {
        let _ = write!(text, "\n  (no reply)");
    }
    for (i, got) in replies.iter().enumerate() {
        let _ = write!(text, "\n  {}. {:?}", i + 1, got.body);
        for url in &got.media {
            let _ = write!(text, " [media {url}]");
        }
    }
    Some(text)
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn describe_failure(test: &TranscriptTest, index: usize, step: &Step, what: &str) -> String {
    let said = if !step.user.text.is_empty() {
        format!("{:?}", step.user.text)
    } else if let Some(button) = &step.user.button {
        format!("button {button:?}")
    } else if !step.user.media.is_empty() {
        format!("media {}", step.user.media.join(", "))
    } else if step.user.latitude.is_some() {
        "a location".to_owned()
    } else {
        "\"\"".to_owned()
    };
    let mut text = format!(
        "{}:{}: step {} (user: {said})\n",
        test.file.display(),
        step.line,
        index + 1
    );
    for line in what.lines() {
        let _ = writeln!(text, "  {line}");
    }
    text.trim_end().to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{load_bot, LoadOptions};
    use crate::script::Limits;

    fn bot_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Bot) {
        let dir = tempfile::tempdir().unwrap();
        let bot_dir = dir.path().join("t");
        std::fs::create_dir_all(bot_dir.join("tests")).unwrap();
        std::fs::write(
            bot_dir.join("bot.yaml"),
            "error_reply: Oops\nhttp:\n  allow: [api.example.com]\n",
        )
        .unwrap();
        for (name, text) in files {
            std::fs::write(bot_dir.join(name), text).unwrap();
        }
        let options = LoadOptions {
            allow_missing_credentials: true,
            ..LoadOptions::default()
        };
        let bot = load_bot(&bot_dir, &ScriptEngine::new(Limits::default()), &options)
            .unwrap_or_else(|d| panic!("{d:?}"));
        (dir, bot)
    }

    /// Test files obey the bot folder's bounds: a link leading outside it and
    /// a file over 1 MiB are errors naming the file, and are not run.
    #[test]
    fn test_files_linked_outside_or_oversized_are_errors() {
        let (dir, bot) = bot_with(&[("menus.yaml", "main:\n  say: hi\n")]);
        let outside = dir.path().join("outside.yaml");
        std::fs::write(
            &outside,
            "name: leaked\nsteps:\n  - user: hi\n    bot: hi\n",
        )
        .unwrap();
        let tests = bot.dir.join("tests");
        std::os::unix::fs::symlink(&outside, tests.join("linked.yaml")).unwrap();
        let padding = "#".repeat(1024 * 1024 + 1);
        std::fs::write(tests.join("big.yaml"), padding).unwrap();
        let (found, errors) = load_tests(&tests);
        assert!(found.is_empty(), "{found:?}");
        let messages: Vec<(PathBuf, &str)> = errors
            .iter()
            .map(|d| (d.file.clone(), d.message.as_str()))
            .collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(messages[0].0, tests.join("big.yaml"));
        assert_eq!(
            messages[0].1,
            "this file is larger than 1 MiB, the most a flow file may be"
        );
        assert_eq!(messages[1].0, tests.join("linked.yaml"));
        assert!(
            messages[1].1.contains("is a symbolic link to")
                && messages[1].1.contains("outside the bot folder"),
            "{messages:?}"
        );
    }

    const MENUS: &str = r#"
main:
  say: Welcome! Pick one
  options:
    - label: Name
      goto: ask_name
    - label: Price
      goto: price
ask_name:
  say: What's your name?
  save_as: name
  goto: greet
greet:
  say: ["Thanks {{ name }}", "Bye"]
"#;

    const PRICE: &str = r#"
fn start() {
    let r = http_get("https://api.example.com/price");
    say("Price: " + r.json.amount);
    vars.amount = r.json.amount;
    ask("Buy?", "buy");
}
fn buy(answer) { say("ok " + answer); }
"#;

    fn run(test_yaml: &str) -> Report {
        let (_dir, bot) = bot_with(&[
            ("menus.yaml", MENUS),
            ("price.rhai", PRICE),
            ("tests/t.yaml", test_yaml),
        ]);
        run_bot_tests(&bot, &ScriptEngine::new(Limits::default()))
    }

    fn failure(test_yaml: &str) -> String {
        let report = run(test_yaml);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.results.len(), 1);
        report.results[0]
            .failure
            .clone()
            .expect("the test should fail")
    }

    const GOOD: &str = r#"
name: name path
steps:
  - user: hi
    bot: Welcome
  - user: "1"
    bot: {exact: "What's your name?"}
    node: ask_name
  - user: Amina
    bot: ["Thanks Amina", {regex: "^By."}]
    vars: {name: Amina}
---
name: price path
steps:
  - user: hi
  - user: price
    bot: ["Price: 30", "Buy?"]
    vars: {amount: "30"}
    node: price
  - user: yes
    bot: ok yes
http:
  "GET https://api.example.com/price": {status: 200, json: {amount: 30}}
"#;

    #[test]
    fn good_transcripts_pass() {
        let report = run(GOOD);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.results.len(), 2);
        for r in &report.results {
            assert_eq!(r.failure, None, "{}", r.name);
        }
        assert!(report.is_success());
    }

    #[test]
    fn wrong_text_shows_expected_and_received() {
        let f = failure("name: x\nsteps:\n  - user: hi\n    bot: Goodbye\n");
        assert!(f.contains("t.yaml:3: step 1 (user: \"hi\")"), "{f}");
        assert!(f.contains("contains \"Goodbye\""), "{f}");
        assert!(
            f.contains("1. \"Welcome! Pick one\\n1. Name\\n2. Price\""),
            "{f}"
        );
    }

    #[test]
    fn reply_count_must_match() {
        let f = failure(
            "name: x\nsteps:\n  - user: hi\n  - user: \"1\"\n  - user: Zed\n    bot: Thanks\n",
        );
        assert!(f.contains("step 3"), "{f}");
        assert!(f.contains("expected 1 reply, got 2"), "{f}");
    }

    #[test]
    fn regex_exact_vars_and_node_failures() {
        let f = failure("name: x\nsteps:\n  - user: hi\n    bot: {regex: '^Pick'}\n");
        assert!(f.contains("matches regex \"^Pick\""), "{f}");
        let f = failure("name: x\nsteps:\n  - user: hi\n    bot: {exact: Welcome}\n");
        assert!(f.contains("is exactly \"Welcome\""), "{f}");
        let f = failure("name: x\nsteps:\n  - user: hi\n  - user: \"1\"\n  - user: Zed\n    vars: {name: Zoe}\n");
        assert!(
            f.contains("vars.name: expected \"Zoe\", got \"Zed\""),
            "{f}"
        );
        let f = failure("name: x\nsteps:\n  - user: hi\n    node: greet\n");
        assert!(
            f.contains("expected the conversation at node `greet`, it is at `main`"),
            "{f}"
        );
    }

    #[test]
    fn unstubbed_http_fails_naming_the_call() {
        let f = failure("name: x\nsteps:\n  - user: hi\n  - user: \"2\"\n");
        assert!(
            f.contains("GET https://api.example.com/price, which has no stub"),
            "{f}"
        );
    }

    #[test]
    fn loose_var_comparison() {
        assert!(same_value(&Value::from(30), &Value::from("30")));
        assert!(same_value(&Value::from("2.5"), &Value::from(2.5)));
        assert!(!same_value(&Value::from("31"), &Value::from(30)));
        assert!(same_value(
            &serde_json::json!({"a": [1, "x"]}),
            &serde_json::json!({"a": ["1", "x"]})
        ));
    }

    #[test]
    fn bad_test_files_are_located() {
        let cases = [
            (
                "name: x\nstep:\n  - user: hi\n",
                2,
                "unknown key `step` in a test",
            ),
            (
                "name: x\nsteps:\n  - user: hi\n    bott: x\n",
                4,
                "unknown key `bott` in a step",
            ),
            (
                "name: x\nsteps:\n  - user: hi\n---\nname: y\nsteps:\n  - usr: hi\n",
                7,
                "unknown key `usr` in a step",
            ),
            (
                "name: x\nsteps:\n  - user: hi\n    bot: {regex: '('}\n",
                4,
                "invalid regex",
            ),
            (
                "name: x\nsteps:\n  - user: [a, b]\n",
                3,
                "`user` must be a message text or a map",
            ),
            (
                "name: x\nsteps:\n  - user: hi\n    bot: x\n   oops: 1\n",
                5,
                "invalid YAML",
            ),
            ("steps:\n  - user: hi\n", 1, "this test has no `name`"),
        ];
        for (text, line, message) in cases {
            let errors = parse_tests(Path::new("t.yaml"), text).unwrap_err();
            assert!(
                errors
                    .iter()
                    .any(|d| d.line == line && d.message.contains(message)),
                "{text:?}: {errors:?}"
            );
        }
    }

    #[test]
    fn user_maps_become_messages() {
        let text = "name: x\nsteps:\n  - user: {button: Yes, media: [https://x/a.jpg], latitude: 1.5, longitude: -2}\n";
        let tests = parse_tests(Path::new("t.yaml"), text).unwrap();
        let user = &tests[0].steps[0].user;
        assert_eq!(user.button.as_deref(), Some("Yes"));
        assert_eq!(user.media, ["https://x/a.jpg"]);
        assert_eq!((user.latitude, user.longitude), (Some(1.5), Some(-2.0)));
    }
}
