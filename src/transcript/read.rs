//! Reading transcript test files into [`TranscriptTest`]s, and `chat --stubs`
//! files into HTTP stubs, with the YAML reader flow files use: every problem is
//! a [`Diagnostic`] with file, line, column and a hint.

use std::path::{Path, PathBuf};

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::Node;
use regex::Regex;
use serde_json::{Map, Value};

use super::{Expect, Step, StepKind, TranscriptTest};
use crate::domain::Diagnostic;
use crate::flow::{is_ignored, read_author_file, read_bot_file};
use crate::message::InboundMessage;
use crate::message::InteractiveStyle;
use crate::script::HttpResponse;
use crate::source::yaml::{to_json, TopLevel, Walker};
use crate::source::{Pos, SourceFile};

/// What the top of each test must be.
const TEST: TopLevel = TopLevel {
    message: "a test must be a map with `name` and `steps`",
    hint: "start the test with `name: what it checks`, then a list of `steps:`",
};

/// What the top of a stubs file must be.
const STUBS: TopLevel = TopLevel {
    message: "a stubs file must be a map of `\"GET https://...\": {status: 200, json: ...}`",
    hint: "start each line with the method and the full URL, quoted",
};

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
        match read_bot_file(bot_dir, &file) {
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
    !is_ignored(&name) && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Parses one test file: several YAML documents separated by `---` lines, one
/// test each. Every problem is reported with its line and column.
pub fn parse_tests(file: &Path, text: &str) -> Result<Vec<TranscriptTest>, Vec<Diagnostic>> {
    let source = SourceFile {
        path: file.to_owned(),
        text: text.to_owned(),
    };
    let mut errors = Vec::new();
    let mut tests = Vec::new();
    for document in source.parse_documents(&TEST) {
        match document {
            Ok(root) => {
                let mut reader = Reader(Walker {
                    file: &source,
                    diagnostics: &mut errors,
                });
                if let Some(test) = reader.test(&root) {
                    tests.push(test);
                }
            }
            Err(d) => errors.push(d),
        }
    }
    if tests.is_empty() && errors.is_empty() {
        errors.push(
            Diagnostic::file_error(file, "this file has no tests").with_hint(
                "a test is a `name:` and a list of `steps:`; see docs/transcript-tests.md",
            ),
        );
    }
    if errors.is_empty() {
        Ok(tests)
    } else {
        Err(errors)
    }
}

/// Reads (within the flow file limit) and parses a stubs file for
/// `switchboard chat --stubs`.
pub fn read_stubs(file: &Path) -> Result<Vec<(String, HttpResponse)>, Vec<Diagnostic>> {
    let text = read_author_file(file).map_err(|d| vec![d])?;
    parse_stubs(file, &text)
}

/// Parses a stubs file for `switchboard chat --stubs`: the same map as a test's
/// `http:` (`"GET https://...": {status: 200, json: ...}`).
pub fn parse_stubs(
    file: &Path,
    text: &str,
) -> Result<Vec<(String, HttpResponse)>, Vec<Diagnostic>> {
    let source = SourceFile {
        path: file.to_owned(),
        text: text.to_owned(),
    };
    let map = source.parse(&STUBS).map_err(|d| vec![d])?;
    let mut errors = Vec::new();
    let stubs = Reader(Walker {
        file: &source,
        diagnostics: &mut errors,
    })
    .stubs(&map);
    if errors.is_empty() {
        Ok(stubs)
    } else {
        Err(errors)
    }
}

/// Reads the parts of a test, collecting every problem.
struct Reader<'a>(Walker<'a>);

impl Reader<'_> {
    fn error(&mut self, pos: Pos, message: impl Into<String>, hint: Option<&str>) {
        self.0.error(pos, message, hint.map(str::to_owned));
    }

    fn errors(&self) -> usize {
        self.0.diagnostics.len()
    }

    fn test(&mut self, root: &MarkedMappingNode) -> Option<TranscriptTest> {
        let first = root
            .keys()
            .next()
            .map(Pos::of_scalar)
            .unwrap_or(Pos { line: 1, column: 1 });
        let errors_before = self.errors();
        self.0
            .check_keys(root, &["name", "steps", "http"], "in a test");

        let name = match root.get_node("name") {
            Some(Node::Scalar(s)) if !s.as_str().trim().is_empty() => s.as_str().trim().to_owned(),
            Some(other) => {
                self.error(Pos::of(other), "`name` must be a text value", None);
                String::new()
            }
            None => {
                self.error(
                    first,
                    "this test has no `name`",
                    Some("add `name: what this test checks`"),
                );
                String::new()
            }
        };

        let mut steps = Vec::new();
        match root.get_node("steps") {
            Some(Node::Sequence(items)) if !items.is_empty() => {
                steps.extend(items.iter().filter_map(|item| self.step(item)));
            }
            Some(other) => self.error(
                Pos::of(other),
                "`steps` must be a list of steps",
                Some("each step starts with `- user: ...`"),
            ),
            None => self.error(
                first,
                "this test has no `steps`",
                Some("add `steps:` with a list of `- user: ...` lines"),
            ),
        }

        let http = match root.get_node("http") {
            Some(node) => self.http(node),
            None => Vec::new(),
        };

        (self.errors() == errors_before).then(|| TranscriptTest {
            file: self.0.file.path.clone(),
            line: first.line,
            name,
            steps,
            http,
        })
    }

    fn step(&mut self, node: &Node) -> Option<Step> {
        let at = Pos::of(node);
        let Node::Mapping(map) = node else {
            self.error(
                at,
                "a step must be a map with `user` (and `bot`, `vars`, `node`)",
                Some("write `- user: hi` then `bot: ...` on the next line, indented"),
            );
            return None;
        };
        self.0.check_keys(
            map,
            &["user", "wait", "start", "bot", "vars", "node", "handoff"],
            "in a step",
        );
        let actions = ["user", "wait", "start"]
            .into_iter()
            .filter(|key| map.get_node(key).is_some())
            .count();
        if actions > 1 {
            self.error(
                at,
                "a step does one thing: `user`, `wait` or `start`",
                Some("split it into one step each"),
            );
            return None;
        }
        let (user, kind) = if let Some(node) = map.get_node("wait") {
            (InboundMessage::default(), StepKind::Wait(self.wait(node)?))
        } else if let Some(node) = map.get_node("start") {
            (InboundMessage::default(), self.start(node)?)
        } else {
            match map.get_node("user") {
                Some(node) => (self.user(node)?, StepKind::User),
                None => {
                    self.error(
                        at,
                        "this step has no `user` message",
                        Some("a step is `- user: hi`, `- wait: 2h` or `- start: {node: reminder}`"),
                    );
                    return None;
                }
            }
        };
        let bot = match map.get_node("bot") {
            Some(Node::Sequence(items)) => Some(
                items
                    .iter()
                    .map(|item| self.expect(item))
                    .collect::<Option<Vec<_>>>()?,
            ),
            Some(node) => Some(vec![self.expect(node)?]),
            // After a wait, nothing expected means nothing sent.
            None if matches!(kind, StepKind::Wait(_)) => Some(Vec::new()),
            None => None,
        };
        let vars = match map.get_node("vars") {
            Some(node) => Some(self.vars(node, None)?),
            None => None,
        };
        let node_name = match map.get_node("node") {
            Some(Node::Scalar(s)) => Some(s.as_str().to_owned()),
            Some(other) => {
                self.error(Pos::of(other), "`node` must be a node name", None);
                return None;
            }
            None => None,
        };
        let handoff = match map.get_node("handoff") {
            Some(Node::Scalar(s)) => Some(s.as_str().trim().to_owned()),
            Some(other) => {
                self.error(
                    Pos::of(other),
                    "`handoff` must be a queue name",
                    Some("write `handoff: sales`: the conversation is with a person in that queue after this step"),
                );
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
            handoff,
            kind,
        })
    }

    /// `wait: 2h`.
    fn wait(&mut self, node: &Node) -> Option<std::time::Duration> {
        const HINT: &str = "write a whole number and a unit: `30s`, `30m`, `2h` or `1d`";
        let Node::Scalar(s) = node else {
            self.error(
                Pos::of(node),
                "`wait` must be a duration like `2h`",
                Some(HINT),
            );
            return None;
        };
        match crate::source::parse_duration(s.as_str()) {
            Ok(d) => Some(d),
            Err(problem) => {
                self.error(
                    Pos::of(node),
                    format!("invalid wait `{}`: {problem}", s.as_str()),
                    Some(HINT),
                );
                None
            }
        }
    }

    /// `start: {node: reminder, vars: {name: Amina}}`, or `start: reminder`.
    fn start(&mut self, node: &Node) -> Option<StepKind> {
        const HINT: &str = "write `start: {node: reminder, vars: {name: Amina}}`";
        let map = match node {
            Node::Scalar(s) if !s.as_str().trim().is_empty() => {
                return Some(StepKind::Start {
                    node: s.as_str().trim().to_owned(),
                    vars: Map::new(),
                })
            }
            Node::Mapping(map) => map,
            _ => {
                self.error(
                    Pos::of(node),
                    "`start` must name the node to start at",
                    Some(HINT),
                );
                return None;
            }
        };
        self.0.check_keys(map, &["node", "vars"], "in `start`");
        let name = match map.get_node("node") {
            Some(Node::Scalar(s)) if !s.as_str().trim().is_empty() => s.as_str().trim().to_owned(),
            Some(other) => {
                self.error(Pos::of(other), "`node` must be a node name", Some(HINT));
                return None;
            }
            None => {
                self.error(Pos::of(node), "`start` has no `node`", Some(HINT));
                return None;
            }
        };
        let vars = match map.get_node("vars") {
            Some(node) => self.vars(node, Some(HINT))?,
            None => Map::new(),
        };
        Some(StepKind::Start { node: name, vars })
    }

    /// `vars: {name: Amina}`, of a step or a `start`.
    fn vars(&mut self, node: &Node, hint: Option<&str>) -> Option<Map<String, Value>> {
        let Node::Mapping(vars) = node else {
            self.error(
                Pos::of(node),
                "`vars` must be a map like `{name: Amina}`",
                hint,
            );
            return None;
        };
        Some(
            vars.iter()
                .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                .collect(),
        )
    }

    fn user(&mut self, node: &Node) -> Option<InboundMessage> {
        let map = match node {
            Node::Scalar(s) => return Some(InboundMessage::text(s.as_str())),
            Node::Mapping(map) => map,
            Node::Sequence(_) => {
                self.error(
                    Pos::of(node),
                    "`user` must be a message text or a map (`text`, `button`, `payload`, `media`, `latitude`, `longitude`)",
                    Some("one step sends one message: use one step per message"),
                );
                return None;
            }
        };
        self.0.check_keys(
            map,
            &[
                "text",
                "button",
                "payload",
                "media",
                "latitude",
                "longitude",
            ],
            "in `user`",
        );
        let mut message = InboundMessage::default();
        for (key, value) in map.iter() {
            let at = Pos::of(value);
            match (key.as_str(), value) {
                ("text", Node::Scalar(s)) => message.text = s.as_str().to_owned(),
                ("button", Node::Scalar(s)) => message.button = Some(s.as_str().to_owned()),
                ("payload", Node::Scalar(s)) => {
                    message.button_payload = Some(s.as_str().to_owned())
                }
                ("media", Node::Scalar(s)) => message.media = vec![s.as_str().to_owned()],
                ("media", Node::Sequence(items)) => {
                    for item in items.iter() {
                        let Node::Scalar(s) = item else {
                            self.error(Pos::of(item), "each `media` entry must be a URL", None);
                            return None;
                        };
                        message.media.push(s.as_str().to_owned());
                    }
                }
                ("latitude" | "longitude", Node::Scalar(s)) => {
                    let Ok(number) = s.as_str().trim().parse::<f64>() else {
                        self.error(
                            at,
                            format!("`{}` must be a number", key.as_str()),
                            Some("for example `latitude: -1.2921`"),
                        );
                        return None;
                    };
                    if key.as_str() == "latitude" {
                        message.latitude = Some(number);
                    } else {
                        message.longitude = Some(number);
                    }
                }
                ("text" | "button" | "payload" | "media" | "latitude" | "longitude", _) => {
                    self.error(at, format!("`{}` must be a value", key.as_str()), None);
                    return None;
                }
                // Unknown keys were reported by `check_keys`.
                _ => return None,
            }
        }
        Some(message)
    }

    fn expect(&mut self, node: &Node) -> Option<Expect> {
        let at = Pos::of(node);
        match node {
            Node::Scalar(s) => Some(Expect::Contains(s.as_str().to_owned())),
            Node::Mapping(map) if map.len() == 1 => {
                let (key, value) = map.iter().next()?;
                let style = match key.as_str() {
                    "buttons" => Some(InteractiveStyle::Buttons),
                    "list" => Some(InteractiveStyle::List),
                    _ => None,
                };
                if let Some(style) = style {
                    let labels = match value {
                        Node::Sequence(items) => items
                            .iter()
                            .map(|item| match item {
                                Node::Scalar(s) => Some(s.as_str().to_owned()),
                                _ => None,
                            })
                            .collect::<Option<Vec<_>>>(),
                        _ => None,
                    };
                    let Some(labels) = labels else {
                        self.error(
                            Pos::of(value),
                            format!("`{}` must be a list of labels", key.as_str()),
                            Some(
                                "for example `{buttons: [\"Browse cars\", \"Book a test drive\"]}`",
                            ),
                        );
                        return None;
                    };
                    return Some(Expect::Menu(style, labels));
                }
                let Node::Scalar(text) = value else {
                    self.error(at, format!("`{}` must be a text value", key.as_str()), None);
                    return None;
                };
                match key.as_str() {
                    "exact" => Some(Expect::Exact(text.as_str().to_owned())),
                    "template" => Some(Expect::Template(text.as_str().trim().to_owned())),
                    "regex" => match Regex::new(text.as_str()) {
                        Ok(re) => Some(Expect::Regex(re)),
                        Err(e) => {
                            self.error(
                                Pos::of(value),
                                format!("invalid regex: {}", last_line(&e.to_string())),
                                Some("quote the pattern with single quotes, and escape `.`, `(`, `?` with `\\`"),
                            );
                            None
                        }
                    },
                    _ => {
                        self.0.check_keys(
                            map,
                            &["exact", "regex", "buttons", "list", "template"],
                            "in a reply expectation",
                        );
                        None
                    }
                }
            }
            _ => {
                self.error(
                    at,
                    "a reply expectation is a text (contained), `{exact: ...}`, `{regex: ...}`, `{buttons: [...]}`, `{list: [...]}` or `{template: name}`",
                    Some("for several replies, write a list: `bot: [\"first\", {regex: \"second\"}]`"),
                );
                None
            }
        }
    }

    /// A test's `http:`: a map of stubs.
    fn http(&mut self, node: &Node) -> Vec<(String, HttpResponse)> {
        let Node::Mapping(map) = node else {
            self.error(
                Pos::of(node),
                "`http` must be a map of `\"GET https://...\": {status: 200, json: ...}`",
                None,
            );
            return Vec::new();
        };
        self.stubs(map)
    }

    fn stubs(&mut self, map: &MarkedMappingNode) -> Vec<(String, HttpResponse)> {
        let mut stubs = Vec::new();
        for (key, value) in map.iter() {
            let request = key.as_str().trim();
            let well_formed = request
                .split_once(' ')
                .is_some_and(|(m, url)| matches!(m, "GET" | "POST") && url.trim().contains("://"));
            if !well_formed {
                self.error(
                    Pos::of_scalar(key),
                    format!("`{request}` is not a request"),
                    Some(
                        "write the method and the full URL: `\"GET https://api.example.com/cars\"`",
                    ),
                );
                continue;
            }
            if let Some(response) = self.response(value) {
                stubs.push((request.to_owned(), response));
            }
        }
        stubs
    }

    fn response(&mut self, node: &Node) -> Option<HttpResponse> {
        let at = Pos::of(node);
        let Node::Mapping(map) = node else {
            self.error(
                at,
                "a stub must be a map: `{status: 200, json: ...}` or `{status: 200, body: ...}`",
                None,
            );
            return None;
        };
        self.0
            .check_keys(map, &["status", "json", "body"], "in an HTTP stub");
        let status = match map.get_node("status") {
            None => 200,
            Some(node) => {
                let code = match node {
                    Node::Scalar(s) => s.as_str().trim().parse::<u16>().ok(),
                    _ => None,
                };
                match code {
                    Some(code) if (100..600).contains(&code) => code,
                    _ => {
                        self.error(
                            Pos::of(node),
                            "`status` must be an HTTP status code like 200",
                            None,
                        );
                        return None;
                    }
                }
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
                self.error(
                    Pos::of(other),
                    "`body` must be a text value",
                    Some("for structured data use `json:`"),
                );
                None
            }
            (None, None) => Some(HttpResponse {
                status,
                body: String::new(),
            }),
        }
    }
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or(text).trim()
}
