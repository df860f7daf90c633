//! `switchboard chat`: a conversation with one bot in the terminal, for authors.
//!
//! Reads standard input line by line (so it can be piped), keeps the conversation in
//! memory (no database, no Twilio), and reloads the bot when its files change. The
//! change check runs before each line is handled: a look at the folder's file times,
//! cheap next to typing, and it needs no watcher thread.
//!
//! Piped input is echoed (`you> ...`) so the output reads as a conversation, and
//! the conversation since the last `/reset` is kept (messages, replies, script
//! HTTP answers) so that `/save FILE` can write it as a transcript test.

use std::fs::OpenOptions;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::Value;

use crate::conversation::{self, Runtime, Turn};
use crate::domain::{ConversationState, Diagnostic, SystemClock};
use crate::flow::{is_ignored, load_bot, Bot, LoadOptions};
use crate::message::{InboundMessage, Reply};
use crate::script::{HttpRequest, HttpResponse, ScriptEngine, ScriptHttp};
use crate::transcript::{test_user, write_test, RecordedCall, RecordedStep, TEST_CONTACT};

/// Longest line `chat` reads: the webhook's body limit. A longer line is skipped
/// (read to its end, not kept) with a note.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Most messages one conversation records for `/save`: a test longer than this
/// is better split, and piped input could otherwise grow the record without end.
pub const MAX_RECORDED_STEPS: usize = 1000;

/// Where the lines come from: a person typing sees their own lines already;
/// piped lines are echoed so the output reads as a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Terminal,
    Piped,
}

/// Whether `/save` may replace a file that exists (`/save!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overwrite {
    No,
    Yes,
}

/// What a chat session talks to.
#[derive(Debug)]
pub struct ChatSession {
    dir: PathBuf,
    id: String,
    engine: ScriptEngine,
    options: LoadOptions,
    runtime: Runtime,
    bot: Bot,
    stamp: Stamp,
    state: Option<ConversationState>,
    /// The conversation so far, for `/save`.
    steps: Vec<RecordedStep>,
    /// Over [`MAX_RECORDED_STEPS`] since the last reset: no longer recorded.
    too_long: bool,
    /// Script HTTP, passed on and recorded.
    http: Arc<RecordingHttp>,
}

/// Passes script HTTP on and remembers each call with its answer, so `/save`
/// can write them as the test's `http:` stubs.
struct RecordingHttp {
    inner: Arc<dyn ScriptHttp>,
    calls: Mutex<Vec<RecordedCall>>,
}

impl std::fmt::Debug for RecordingHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingHttp").finish_non_exhaustive()
    }
}

impl RecordingHttp {
    fn calls(&self) -> std::sync::MutexGuard<'_, Vec<RecordedCall>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ScriptHttp for RecordingHttp {
    fn request(&self, req: &HttpRequest) -> Result<HttpResponse, String> {
        let answer = self.inner.request(req);
        self.calls().push(RecordedCall {
            method: req.method.clone(),
            url: req.url.clone(),
            answer: answer.clone(),
        });
        answer
    }
}

/// The bot folder's newest file time and file count: a change in either means
/// something was saved, added or removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Stamp {
    newest: Option<SystemTime>,
    files: usize,
}

/// The bot's `tests/` folder is left out: tests are not part of the bot, and
/// `/save` writes there.
fn stamp(bot_dir: &Path) -> Stamp {
    let mut stamp = Stamp::default();
    let mut pending = vec![bot_dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if is_ignored(&name) || (dir == bot_dir && name == "tests") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                stamp.files += 1;
                if let Ok(modified) = meta.modified() {
                    stamp.newest = stamp.newest.max(Some(modified));
                }
            }
        }
    }
    stamp
}

impl ChatSession {
    /// Loads bot `id` from `flows`. `Err` holds the load errors.
    pub fn start(
        flows: &Path,
        id: &str,
        engine: ScriptEngine,
        http: Arc<dyn ScriptHttp>,
    ) -> Result<ChatSession, Vec<Diagnostic>> {
        let dir = flows.join(id);
        let options = LoadOptions {
            allow_missing_credentials: true,
            ..LoadOptions::default()
        };
        let stamp = stamp(&dir);
        let bot = load_bot(&dir, &engine, &options)?;
        let http = Arc::new(RecordingHttp {
            inner: http,
            calls: Mutex::new(Vec::new()),
        });
        Ok(ChatSession {
            dir,
            id: id.to_owned(),
            runtime: Runtime {
                scripts: engine.clone(),
                http: http.clone(),
                clock: Arc::new(SystemClock),
            },
            engine,
            options,
            bot,
            stamp,
            state: None,
            steps: Vec::new(),
            too_long: false,
            http,
        })
    }

    pub fn bot(&self) -> &Bot {
        &self.bot
    }

    /// Reloads the bot if its files changed. `Some(Ok(()))`: reloaded;
    /// `Some(Err(..))`: the new files fail (the old version stays); `None`: no change.
    pub fn reload_if_changed(&mut self) -> Option<Result<(), Vec<Diagnostic>>> {
        let now = stamp(&self.dir);
        if now == self.stamp {
            return None;
        }
        self.stamp = now;
        Some(load_bot(&self.dir, &self.engine, &self.options).map(|bot| {
            self.bot = bot;
        }))
    }

    /// Sends one message; returns the replies and the flow error, if any.
    pub fn send(&mut self, message: &InboundMessage) -> conversation::TurnOutcome {
        let now_ms = chrono::Utc::now().timestamp_millis();
        // After `session_timeout` idle the message starts a new conversation, as a
        // test's first message does: the record starts over with it.
        let timed_out = self.state.as_ref().is_some_and(|s| {
            let idle = u128::try_from(now_ms.saturating_sub(s.updated_at_ms)).unwrap_or(0);
            idle > self.bot.session_timeout.as_millis()
        });
        if timed_out {
            self.forget_record();
        }
        let calls_before = self.http.calls().len();
        let outcome = conversation::handle(
            Turn {
                bot: &self.bot,
                contact: TEST_CONTACT,
                state: self.state.take(),
                user: &test_user(),
                message,
                now_ms,
                deadline: None,
                side_effects: crate::domain::SideEffects::Allowed,
            },
            &self.runtime,
        );
        self.state = Some(outcome.state.clone());
        if self.steps.len() < MAX_RECORDED_STEPS && !self.too_long {
            self.steps.push(RecordedStep {
                user: message.text.clone(),
                replies: outcome.replies.iter().map(|r| r.body.clone()).collect(),
                error: outcome.error.as_ref().map(ToString::to_string),
            });
        } else {
            self.too_long = true;
            self.http.calls().truncate(calls_before);
        }
        outcome
    }

    /// Forgets the conversation: the next message starts over.
    pub fn reset(&mut self) {
        self.state = None;
        self.forget_record();
    }

    fn forget_record(&mut self) {
        self.steps.clear();
        self.too_long = false;
        self.http.calls().clear();
    }

    /// The conversation since the last reset as a transcript test named `name`.
    pub fn transcript(&self, name: &str) -> String {
        write_test(
            name,
            &format!("switchboard chat {}", self.id),
            &self.steps,
            &self.http.calls(),
        )
    }

    /// `/save FILE`: writes the conversation so far as a transcript test and
    /// says where, or why not. A bare name goes to the bot's `tests/` folder
    /// (`.yaml` added when it has no YAML extension); anything with a folder in
    /// it is a path from the current folder. An existing file is kept unless
    /// `overwrite`.
    fn save(&self, arg: &str, overwrite: Overwrite) -> String {
        let command = match overwrite {
            Overwrite::No => "/save",
            Overwrite::Yes => "/save!",
        };
        if arg.is_empty() {
            return format!(
                "(usage: {command} FILE, e.g. {command} booking: writes this conversation to {} as a transcript test)",
                self.dir.join("tests").join("booking.yaml").display()
            );
        }
        if self.steps.is_empty() {
            return "(nothing to save yet: send the bot a message first)".to_owned();
        }
        if self.too_long {
            return format!(
                "(not saved: this conversation has more than {MAX_RECORDED_STEPS} messages; /reset and record a shorter one)"
            );
        }
        let given = Path::new(arg);
        let bare = given.components().count() == 1
            && matches!(
                given.components().next(),
                Some(std::path::Component::Normal(_))
            );
        let path = if bare {
            let mut file = self.dir.join("tests").join(arg);
            if !matches!(
                file.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                file = self.dir.join("tests").join(format!("{arg}.yaml"));
            }
            file
        } else {
            given.to_path_buf()
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().replace(['-', '_'], " "))
            .unwrap_or_else(|| "recorded chat".to_owned());
        let text = self.transcript(&name);
        if let (true, Some(folder)) = (bare, path.parent()) {
            if let Err(e) = std::fs::create_dir_all(folder) {
                return format!("(not saved: cannot create {}: {e})", folder.display());
            }
        }
        let file = match overwrite {
            Overwrite::No => OpenOptions::new().write(true).create_new(true).open(&path),
            Overwrite::Yes => std::fs::File::create(&path),
        };
        let written = file.and_then(|mut f| f.write_all(text.as_bytes()));
        match written {
            Ok(()) => format!(
                "(saved {} {} to {}: run it with `switchboard test {}`)",
                self.steps.len(),
                if self.steps.len() == 1 {
                    "step"
                } else {
                    "steps"
                },
                path.display(),
                self.dir.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => format!(
                "(not saved: {} exists; `/save! {arg}` replaces it, or choose another name)",
                path.display()
            ),
            Err(e) => format!("(not saved: cannot write {}: {e})", path.display()),
        }
    }

    /// The node the conversation stands at; `None` before the first message and
    /// after the conversation ended.
    pub fn node(&self) -> Option<&str> {
        self.state.as_ref().and_then(|s| s.node.as_deref())
    }

    /// `/save NAME` for a caller that is not a terminal (the console): writes the
    /// conversation to the bot's `tests/NAME.yaml`, never replacing a file, and
    /// says where or why not. Only a bare file name is taken, never a path.
    pub fn save_to_tests(&self, name: &str) -> String {
        let bare = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !bare {
            return format!(
                "(not saved: `{name}` is not a file name; use letters, digits, `-` and `_`)"
            );
        }
        self.save(name, Overwrite::No)
    }

    /// The conversation's vars as JSON.
    pub fn vars(&self) -> Value {
        Value::Object(
            self.state
                .as_ref()
                .map(|s| s.vars.clone())
                .unwrap_or_default(),
        )
    }

    /// Reads lines from `input` until `/quit` or end of input, printing replies to
    /// `out` and errors to `err`; piped lines are echoed as `you> ...`.
    pub fn run(
        &mut self,
        mut input: impl BufRead,
        from: Input,
        out: &mut impl Write,
        err: &mut impl Write,
    ) -> io::Result<()> {
        writeln!(
            out,
            "chatting with {} ({}). Commands: /reset, /vars, /save FILE, /quit",
            self.id, self.bot.name
        )?;
        out.flush()?;
        while let Some(line) = read_line(&mut input)? {
            let Some(line) = line else {
                if from == Input::Piped {
                    writeln!(out, "you> (a line over 64 KiB)")?;
                }
                writeln!(
                    out,
                    "(not sent: a message may be at most {} KiB)",
                    MAX_LINE_BYTES / 1024
                )?;
                continue;
            };
            if from == Input::Piped {
                writeln!(out, "you> {line}")?;
            }
            match self.reload_if_changed() {
                Some(Ok(())) => writeln!(out, "(reloaded {})", self.id)?,
                Some(Err(diagnostics)) => {
                    for d in diagnostics.iter().filter(|d| d.is_error()) {
                        writeln!(err, "{d}\n")?;
                    }
                    writeln!(
                        out,
                        "({} has errors; still using the last good version)",
                        self.id
                    )?;
                }
                None => {}
            }
            let command = line.trim();
            let (word, arg) = command
                .split_once(char::is_whitespace)
                .map_or((command, ""), |(w, a)| (w, a.trim()));
            match (command, word) {
                ("/quit" | "/exit", _) => break,
                ("/reset", _) => {
                    self.reset();
                    writeln!(out, "(new conversation)")?;
                }
                ("/vars", _) => writeln!(out, "{}", self.vars())?,
                (_, "/save") => writeln!(out, "{}", self.save(arg, Overwrite::No))?,
                (_, "/save!") => writeln!(out, "{}", self.save(arg, Overwrite::Yes))?,
                (command, _) if command.starts_with('/') && !command.contains(' ') => {
                    writeln!(
                        out,
                        "(unknown command {command}: use /reset, /vars, /save FILE or /quit)"
                    )?;
                }
                _ => {
                    let outcome = self.send(&InboundMessage::text(line.as_str()));
                    print_replies(out, &outcome.replies)?;
                    if let Some(error) = &outcome.error {
                        writeln!(err, "flow error: {error}")?;
                    }
                }
            }
            out.flush()?;
        }
        Ok(())
    }
}

/// The next line of `input` without its line break, `Some(None)` for a line over
/// [`MAX_LINE_BYTES`] (read to its end and dropped), `None` at the end. Invalid
/// UTF-8 is replaced, not an error.
fn read_line(input: &mut impl BufRead) -> io::Result<Option<Option<String>>> {
    let mut line = Vec::new();
    let limit = MAX_LINE_BYTES as u64 + 1;
    if input.by_ref().take(limit).read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if line.len() > MAX_LINE_BYTES {
        loop {
            let buffer = input.fill_buf()?;
            if buffer.is_empty() {
                break;
            }
            match buffer.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    input.consume(at + 1);
                    break;
                }
                None => {
                    let n = buffer.len();
                    input.consume(n);
                }
            }
        }
        return Ok(Some(None));
    }
    Ok(Some(Some(String::from_utf8_lossy(&line).into_owned())))
}

/// `bot> ` before each reply, continuation lines indented under it, each media
/// URL on its own line.
fn print_replies(out: &mut impl Write, replies: &[Reply]) -> io::Result<()> {
    for reply in replies {
        if let Some(template) = reply.template_send() {
            writeln!(
                out,
                "bot> [template {} {:?}]",
                template.name, template.variables
            )?;
            continue;
        }
        let mut lines = reply.body.lines();
        writeln!(out, "bot> {}", lines.next().unwrap_or(""))?;
        for line in lines {
            writeln!(out, "     {line}")?;
        }
        for url in &reply.media {
            writeln!(out, "     [media] {url}")?;
        }
        if let Some(menu) = reply.menu() {
            writeln!(
                out,
                "     [{} on WhatsApp; tap by typing a number or label]",
                menu.style.as_str()
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{Limits, StubHttp};

    fn flows() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let bot = dir.path().join("b");
        std::fs::create_dir(&bot).unwrap();
        std::fs::write(bot.join("bot.yaml"), "name: B\n").unwrap();
        std::fs::write(
            bot.join("menus.yaml"),
            "main:\n  say: Name?\n  save_as: name\n  goto: hi\nhi:\n  say: \"Hi {{ name }}\"\n  media: https://x.example/a.jpg\n",
        )
        .unwrap();
        dir
    }

    fn session(dir: &Path) -> ChatSession {
        ChatSession::start(
            dir,
            "b",
            ScriptEngine::new(Limits::default()),
            Arc::new(StubHttp::new()),
        )
        .unwrap()
    }

    #[test]
    fn a_piped_conversation_with_commands() {
        let dir = flows();
        let mut chat = session(dir.path());
        let mut out = Vec::new();
        let mut err = Vec::new();
        chat.run(
            "hello\nZed\n/vars\n/reset\nagain\n/quit\nnever read\n".as_bytes(),
            Input::Terminal,
            &mut out,
            &mut err,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "chatting with b (B). Commands: /reset, /vars, /save FILE, /quit\n\
             bot> Name?\n\
             bot> Hi Zed\n     [media] https://x.example/a.jpg\n\
             {\"name\":\"Zed\"}\n\
             (new conversation)\n\
             bot> Name?\n"
        );
        assert!(err.is_empty());
    }

    #[test]
    fn reloads_when_a_file_changes_and_keeps_the_old_bot_on_errors() {
        let dir = flows();
        let mut chat = session(dir.path());
        assert!(chat.reload_if_changed().is_none());
        let menus = dir.path().join("b/menus.yaml");
        std::fs::write(&menus, "main:\n  say: Changed\n").unwrap();
        // Some file systems keep whole-second times: a new file count also counts.
        std::fs::write(dir.path().join("b/extra.yaml"), "other:\n  say: x\n").unwrap();
        assert!(matches!(chat.reload_if_changed(), Some(Ok(()))));
        assert_eq!(
            chat.send(&InboundMessage::text("x")).replies[0].body,
            "Changed"
        );

        std::fs::write(dir.path().join("b/broken.yaml"), "oops: [\n").unwrap();
        assert!(matches!(chat.reload_if_changed(), Some(Err(_))));
        chat.reset();
        assert_eq!(
            chat.send(&InboundMessage::text("x")).replies[0].body,
            "Changed"
        );
    }

    /// Runs `input` as piped lines; returns (stdout, stderr).
    fn piped(chat: &mut ChatSession, input: &[u8]) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        chat.run(input, Input::Piped, &mut out, &mut err).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn piped_lines_are_echoed_so_the_output_reads_as_a_conversation() {
        let dir = flows();
        let (out, err) = piped(&mut session(dir.path()), b"hello\r\nZed\n/vars\n");
        assert_eq!(
            out,
            "chatting with b (B). Commands: /reset, /vars, /save FILE, /quit\n\
             you> hello\n\
             bot> Name?\n\
             you> Zed\n\
             bot> Hi Zed\n     [media] https://x.example/a.jpg\n\
             you> /vars\n\
             {\"name\":\"Zed\"}\n"
        );
        assert!(err.is_empty());
    }

    #[test]
    fn a_line_over_the_limit_is_skipped_and_the_chat_goes_on() {
        let dir = flows();
        let mut input = b"hello\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 1));
        input.extend(b"\nZed\n");
        let (out, _) = piped(&mut session(dir.path()), &input);
        assert!(
            out.ends_with(
                "you> (a line over 64 KiB)\n(not sent: a message may be at most 64 KiB)\nyou> Zed\nbot> Hi Zed\n     [media] https://x.example/a.jpg\n"
            ),
            "{out}"
        );
        // Exactly at the limit is a line like any other; invalid UTF-8 is replaced.
        let mut input = vec![b'y'; MAX_LINE_BYTES];
        input.extend(b"\n\xff\n");
        let mut lines = input.as_slice();
        assert_eq!(
            read_line(&mut lines).unwrap(),
            Some(Some("y".repeat(MAX_LINE_BYTES)))
        );
        assert_eq!(
            read_line(&mut lines).unwrap(),
            Some(Some("\u{fffd}".to_owned()))
        );
        assert_eq!(read_line(&mut lines).unwrap(), None);
    }

    /// A bot whose script looks stock up over HTTP, with a stub for it.
    fn script_flows() -> (tempfile::TempDir, ChatSession) {
        let dir = tempfile::tempdir().unwrap();
        let bot = dir.path().join("shop");
        std::fs::create_dir(&bot).unwrap();
        std::fs::write(
            bot.join("bot.yaml"),
            "name: Shop\nstart: stock\nhttp:\n  allow: [api.shop.example]\n",
        )
        .unwrap();
        std::fs::write(
            bot.join("stock.rhai"),
            "fn start() {\n  let r = http_get(\"https://api.shop.example/stock\");\n  say(`We have ${r.json.len()} items: ${r.json[0].name}`);\n  ask(\"Want one?\\n(yes/no)\", \"answer\");\n}\n\
             fn answer(a) {\n  if a == \"boom\" { throw \"it broke\"; }\n  say(\"Great \\\"\" + a + \"\\\"!\");\n}\n",
        )
        .unwrap();
        let http = StubHttp::new().with(
            "GET https://api.shop.example/stock",
            HttpResponse::json(200, &serde_json::json!([{"name": "tea"}, {"name": "milk"}])),
        );
        let chat = ChatSession::start(
            dir.path(),
            "shop",
            ScriptEngine::new(Limits::default()),
            Arc::new(http),
        )
        .unwrap();
        (dir, chat)
    }

    /// Runs the bot's transcript tests: (passed, failures).
    fn run_saved(chat: &ChatSession) -> (usize, Vec<String>) {
        let report = crate::transcript::run_bot_tests(chat.bot(), &ScriptEngine::default());
        assert!(report.errors.is_empty(), "{:#?}", report.errors);
        let failures = report
            .results
            .iter()
            .filter_map(|r| r.failure.clone())
            .collect();
        (report.passed(), failures)
    }

    #[test]
    fn save_writes_a_test_that_passes_with_the_http_answers_seen() {
        let (dir, mut chat) = script_flows();
        let (out, err) = piped(&mut chat, b"hi\nyes \"please\"\n/save stock-check\n");
        let file = dir.path().join("shop/tests/stock-check.yaml");
        assert!(
            out.ends_with(&format!(
                "you> /save stock-check\n(saved 2 steps to {}: run it with `switchboard test {}`)\n",
                file.display(),
                dir.path().join("shop").display()
            )),
            "{out}"
        );
        assert!(err.is_empty(), "{err}");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("name: \"stock check\"\n"), "{text}");
        assert!(
            text.contains("  - user: \"hi\"\n    bot:\n      - {exact: \"We have 2 items: tea\"}\n      - {exact: \"Want one?\\n(yes/no)\"}\n"),
            "{text}"
        );
        assert!(
            text.contains("http:\n  \"GET https://api.shop.example/stock\": {status: 200, json: [{\"name\": \"tea\"}, {\"name\": \"milk\"}]}\n"),
            "{text}"
        );
        // Saving into tests/ is not a change to the bot: no reload.
        assert!(chat.reload_if_changed().is_none());
        assert_eq!(run_saved(&chat), (1, vec![]));
    }

    #[test]
    fn save_keeps_an_existing_file_unless_told_and_forgets_at_reset() {
        let (dir, mut chat) = script_flows();
        let tests = dir.path().join("shop/tests");
        let (out, _) = piped(
            &mut chat,
            b"/save early\nhi\n/save a.yml\n/save a.yml\nyes\n/save! a.yml\n",
        );
        let file = tests.join("a.yml");
        assert!(
            out.contains("(nothing to save yet: send the bot a message first)"),
            "{out}"
        );
        assert!(
            out.contains(&format!("(saved 1 step to {}", file.display())),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "(not saved: {} exists; `/save! a.yml` replaces it, or choose another name)",
                file.display()
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("(saved 2 steps to {}", file.display())),
            "{out}"
        );
        assert!(!tests.join("early.yaml").exists());
        assert_eq!(
            std::fs::read_to_string(&file)
                .unwrap()
                .matches("- user:")
                .count(),
            2
        );

        // After /reset the record starts again with the next message.
        let (out, _) = piped(&mut chat, b"/reset\n/save b\nhi\n/save b\n/save\n");
        assert!(out.contains("(nothing to save yet"), "{out}");
        assert!(out.contains("(saved 1 step to"), "{out}");
        assert!(
            out.contains("(usage: /save FILE, e.g. /save booking"),
            "{out}"
        );
        assert_eq!(run_saved(&chat), (2, vec![]));

        // A path with a folder is taken from the current folder, as given.
        let elsewhere = dir.path().join("elsewhere.yaml");
        let (out, _) = piped(
            &mut chat,
            format!("/save {}\n", elsewhere.display()).as_bytes(),
        );
        assert!(
            out.contains(&format!("(saved 1 step to {}:", elsewhere.display())),
            "{out}"
        );
        assert!(elsewhere.is_file());
    }

    #[test]
    fn a_failed_step_is_saved_with_a_note() {
        let (_dir, mut chat) = script_flows();
        let (_, err) = piped(&mut chat, b"hi\nboom\n");
        assert!(err.contains("it broke"), "{err}");
        let text = chat.transcript("boom");
        assert!(
            text.contains("  - user: \"boom\"\n    bot: {exact: \"Sorry, something went wrong. Please try again.\"}\n    # The flow failed on this message and the contact got the error reply:\n    #   script error in "),
            "{text}"
        );
    }
}
