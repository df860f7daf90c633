//! Running a [`TranscriptTest`]: the conversation driven step by step in memory,
//! each step's replies, vars and node compared with what the test expects, and a
//! failure described with the file, line, step and what differed.
//!
//! A flow that fails sends the bot's `error_reply` (SPEC §3). A step may expect
//! exactly that: its expectations are checked against what the contact got, as
//! for any step, and the flow's error becomes a note instead of a failure.

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use super::{
    test_user, Expect, Step, StepKind, TestResult, TranscriptTest, TEST_CONTACT, TEST_TIME,
};
use crate::conversation::{self, Runtime, Turn, TurnOutcome};
use crate::domain::{Clock, ConversationState};
use crate::flow::Bot;
use crate::message::Reply;
use crate::script::{ScriptEngine, StubHttp};

/// How long after the contact's last message a free-form WhatsApp message may
/// reach them (SPEC §8.2); the test contact is a WhatsApp one.
const WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Most waits that may run out one after another in one `wait:` step (a node
/// whose `on_timeout` waits again, and so on).
const MAX_TIMEOUTS_PER_WAIT: usize = 64;

/// The test's clock: the fixed test time plus what `wait:` steps have added.
struct StepClock(std::sync::Mutex<DateTime<Utc>>);

impl Clock for StepClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Replays one test against `bot`.
pub fn run_test(bot: &Bot, engine: &ScriptEngine, test: &TranscriptTest) -> TestResult {
    let http = Arc::new(StubHttp::from_stubs(&test.http));
    let start = test_time();
    let clock = Arc::new(StepClock(std::sync::Mutex::new(start)));
    let runtime = Runtime {
        scripts: engine.clone(),
        http: http.clone(),
        clock: clock.clone(),
    };
    let user = test_user();
    let mut state: Option<ConversationState> = None;
    let mut notes = Vec::new();
    let mut failure = None;
    let start_ms = start.timestamp_millis();
    // Time added by `wait:` steps so far.
    let mut waited_ms: i64 = 0;
    // The contact wrote just before the test began: their window is open
    // until a `wait:` takes them 24 hours past their last message.
    let mut last_message_ms = start_ms;
    for (i, step) in test.steps.iter().enumerate() {
        // A second per step keeps every test well inside any session timeout.
        let now_ms = start_ms + 1_000 * i as i64 + waited_ms;
        *clock.0.lock().unwrap_or_else(|e| e.into_inner()) =
            start + chrono::Duration::milliseconds(waited_ms);
        let mut skipped = None;
        let outcome = match &step.kind {
            StepKind::User => {
                last_message_ms = now_ms;
                conversation::handle(
                    Turn {
                        bot,
                        contact: TEST_CONTACT,
                        state: state.take(),
                        user: &user,
                        message: &step.user,
                        now_ms,
                        deadline: None,
                        side_effects: crate::domain::SideEffects::Allowed,
                    },
                    &runtime,
                )
            }
            StepKind::Wait(wait) => {
                let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 4);
                waited_ms = waited_ms.saturating_add(wait_ms);
                *clock.0.lock().unwrap_or_else(|e| e.into_inner()) =
                    start + chrono::Duration::milliseconds(waited_ms);
                run_out(bot, &runtime, state.take(), now_ms.saturating_add(wait_ms))
            }
            StepKind::Start { node, vars } => {
                if bot.node(node).is_none() {
                    let mut names: Vec<&str> = bot.nodes.keys().map(String::as_str).collect();
                    names.sort_unstable();
                    let hint = crate::source::did_you_mean(node, &names)
                        .map(|h| format!("; {h}"))
                        .unwrap_or_default();
                    failure = Some(describe_failure(
                        test,
                        i,
                        step,
                        &format!("this bot has no node `{node}` to start at{hint}"),
                    ));
                    break;
                }
                let before = state.clone().unwrap_or_default();
                let started = conversation::start(
                    conversation::Start {
                        bot,
                        contact: TEST_CONTACT,
                        state: state.take(),
                        node,
                        vars,
                        skip_if_active: false,
                        window_open: now_ms < last_message_ms.saturating_add(WINDOW_MS),
                        now_ms,
                        deadline: None,
                    },
                    &runtime,
                );
                match started {
                    conversation::StartOutcome::Entered(outcome) => outcome,
                    conversation::StartOutcome::Skipped(reason) => {
                        skipped = Some(reason);
                        TurnOutcome {
                            state: before,
                            replies: Vec::new(),
                            error: None,
                        }
                    }
                    conversation::StartOutcome::Failed(error) => TurnOutcome {
                        state: before,
                        replies: Vec::new(),
                        error: Some(error),
                    },
                }
            }
        };
        let problem = check_step(step, &outcome, &http.take_unanswered()).map(|what| {
            match skipped {
                Some(reason) => format!(
                    "the start was skipped ({reason}), so nothing was sent{}\n{what}",
                    if reason == "outside_window" {
                        ": the contact last wrote 24 hours ago or more, and the node does not begin with a template"
                    } else {
                        ""
                    }
                ),
                None => what,
            }
        });
        match (problem, &outcome.error) {
            (Some(what), _) => {
                failure = Some(describe_failure(test, i, step, &what));
                break;
            }
            (None, Some(error)) => notes.push(format!(
                "note: {}: the flow failed and the contact got the error reply, as this step expects\n  {error}",
                step_heading(test, i, step)
            )),
            (None, None) => {}
        }
        state = Some(outcome.state);
    }
    TestResult {
        file: test.file.clone(),
        name: test.name.clone(),
        failure,
        notes,
    }
}

/// A `wait:` until `until_ms`: each wait that runs out by then fires, at its
/// own time, in turn (its `on_timeout` node may wait again); what they sent,
/// together.
fn run_out(
    bot: &Bot,
    runtime: &Runtime,
    state: Option<ConversationState>,
    until_ms: i64,
) -> TurnOutcome {
    let mut state = state.unwrap_or_default();
    let mut replies = Vec::new();
    let mut error = None;
    for _ in 0..MAX_TIMEOUTS_PER_WAIT {
        let Some(at) = state.timeout_at_ms.filter(|at| *at <= until_ms) else {
            break;
        };
        let outcome = conversation::time_out(
            conversation::TimeOut {
                bot,
                contact: TEST_CONTACT,
                state,
                now_ms: at,
                deadline: None,
            },
            runtime,
        );
        replies.extend(outcome.replies);
        error = error.or(outcome.error);
        state = outcome.state;
    }
    TurnOutcome {
        state,
        replies,
        error,
    }
}

fn test_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(TEST_TIME)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc.timestamp_opt(0, 0).single().unwrap_or_default())
}

/// What did not hold after a step, or `None`. When the flow failed, the
/// problem starts with its error: the author needs it to see why.
fn check_step(step: &Step, outcome: &TurnOutcome, missing: &[String]) -> Option<String> {
    let problem = check_expectations(step, outcome, missing)?;
    Some(match &outcome.error {
        Some(error) => {
            format!("the flow failed, so the contact got the error reply:\n  {error}\n{problem}")
        }
        None => problem,
    })
}

fn check_expectations(step: &Step, outcome: &TurnOutcome, missing: &[String]) -> Option<String> {
    if !missing.is_empty() {
        let calls = missing.join(", ");
        return Some(format!(
            "the script called {calls}, which has no stub\n\
             add it under `http:` in this test, e.g.\n  http:\n    \"{}\": {{status: 200, json: {{}}}}",
            missing[0]
        ));
    }
    // Without reply expectations nothing says the error reply was meant.
    if let (Some(_), None) = (&outcome.error, &step.bot) {
        let reply = outcome.replies.first().map_or("", |r| r.body.as_str());
        return Some(format!(
            "to expect this, write what the contact got: `bot: {{exact: {reply:?}}}`"
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
    if let Some(queue) = &step.handoff {
        let at = outcome.state.handoff.as_ref().map(|h| h.queue.as_str());
        if at != Some(queue.as_str()) {
            return Some(match at {
                Some(other) => format!(
                    "expected the conversation handed off to `{queue}`, it is with `{other}`"
                ),
                None => format!(
                    "expected the conversation handed off to `{queue}`, but the bot still has it"
                ),
            });
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
            .all(|(want, got)| want.matches(got));
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
            Some(got) if want.matches(got) => "  ",
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
        if let Some(menu) = got.menu() {
            let labels: Vec<&str> = menu.choices.iter().map(|c| c.label.as_str()).collect();
            let _ = write!(text, " [{} {labels:?}]", menu.style.as_str());
        }
        if let Some(template) = got.template_send() {
            let _ = write!(
                text,
                " [template {} {:?}]",
                template.name, template.variables
            );
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
    let mut text = format!("{}\n", step_heading(test, index, step));
    for line in what.lines() {
        let _ = writeln!(text, "  {line}");
    }
    text.trim_end().to_owned()
}

/// `tests/a.yaml:9: step 2 (user: "1")`: where a step is and what it sent.
fn step_heading(test: &TranscriptTest, index: usize, step: &Step) -> String {
    let said = if !step.user.text.is_empty() {
        format!("{:?}", step.user.text)
    } else if let Some(button) = &step.user.button {
        format!("button {button:?}")
    } else if let Some(payload) = &step.user.button_payload {
        format!("payload {payload:?}")
    } else if !step.user.media.is_empty() {
        format!("media {}", step.user.media.join(", "))
    } else if step.user.latitude.is_some() {
        "a location".to_owned()
    } else {
        "\"\"".to_owned()
    };
    let what = match &step.kind {
        StepKind::User => format!("user: {said}"),
        StepKind::Wait(wait) => format!("wait: {}", crate::source::format_duration(*wait)),
        StepKind::Start { node, .. } => format!("start: {node}"),
    };
    format!(
        "{}:{}: step {} ({what})",
        test.file.display(),
        step.line,
        index + 1
    )
}

/// Whether an expected var value holds: equal JSON, or, for plain values, the same
/// written form (`30` and `"30"`), since authors rarely mind the difference.
pub(super) fn same_value(expected: &Value, actual: &Value) -> bool {
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
