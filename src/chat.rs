//! `switchboard chat`: a conversation with one bot in the terminal, for authors.
//!
//! Reads standard input line by line (so it can be piped), keeps the conversation in
//! memory (no database, no Twilio), and reloads the bot when its files change. The
//! change check runs before each line is handled: a look at the folder's file times,
//! cheap next to typing, and it needs no watcher thread.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use crate::conversation::{self, Runtime, Turn};
use crate::domain::{ConversationState, Diagnostic, SystemClock};
use crate::flow::{is_ignored, load_bot, Bot, LoadOptions};
use crate::message::{InboundMessage, Reply};
use crate::script::{ScriptEngine, ScriptHttp};
use crate::transcript::{test_user, TEST_CONTACT};

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
}

/// The bot folder's newest file time and file count: a change in either means
/// something was saved, added or removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Stamp {
    newest: Option<SystemTime>,
    files: usize,
}

fn stamp(dir: &Path) -> Stamp {
    let mut stamp = Stamp::default();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if is_ignored(&name) {
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
        Ok(ChatSession {
            dir,
            id: id.to_owned(),
            runtime: Runtime {
                scripts: engine.clone(),
                http,
                clock: Arc::new(SystemClock),
            },
            engine,
            options,
            bot,
            stamp,
            state: None,
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
        let outcome = conversation::handle(
            Turn {
                bot: &self.bot,
                contact: TEST_CONTACT,
                state: self.state.take(),
                user: &test_user(),
                message,
                now_ms: chrono::Utc::now().timestamp_millis(),
                deadline: None,
            },
            &self.runtime,
        );
        self.state = Some(outcome.state.clone());
        outcome
    }

    /// Forgets the conversation: the next message starts over.
    pub fn reset(&mut self) {
        self.state = None;
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
    /// `out` and errors to `err`.
    pub fn run(
        &mut self,
        input: impl BufRead,
        out: &mut impl Write,
        err: &mut impl Write,
    ) -> io::Result<()> {
        writeln!(
            out,
            "chatting with {} ({}). Commands: /reset, /vars, /quit",
            self.id, self.bot.name
        )?;
        out.flush()?;
        for line in input.lines() {
            let line = line?;
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
            match line.trim() {
                "/quit" | "/exit" => break,
                "/reset" => {
                    self.reset();
                    writeln!(out, "(new conversation)")?;
                }
                "/vars" => writeln!(out, "{}", self.vars())?,
                command if command.starts_with('/') && !command.contains(' ') => {
                    writeln!(
                        out,
                        "(unknown command {command}: use /reset, /vars or /quit)"
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

/// `bot> ` before each reply, continuation lines indented under it, each media
/// URL on its own line.
fn print_replies(out: &mut impl Write, replies: &[Reply]) -> io::Result<()> {
    for reply in replies {
        let mut lines = reply.body.lines();
        writeln!(out, "bot> {}", lines.next().unwrap_or(""))?;
        for line in lines {
            writeln!(out, "     {line}")?;
        }
        for url in &reply.media {
            writeln!(out, "     [media] {url}")?;
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
            &mut out,
            &mut err,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "chatting with b (B). Commands: /reset, /vars, /quit\n\
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
}
