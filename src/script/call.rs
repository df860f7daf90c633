//! One script call: the per-call state the author API works on, how it reaches the
//! engine's callbacks, and turning Rhai's errors into [`ScriptError`]s an author can act on.
//!
//! The engine is shared by every conversation, so nothing per call lives in it. The
//! call's state is owned ([`Call`], an `Arc`) and rides in the call's tag (read by
//! `on_var` and the author functions, which get a context) and, for the few engine
//! callbacks that get no context (`on_progress`, `print`, `debug`), in a thread-local
//! that holds a clone only while the call runs. Nothing borrowed is handed to Rhai,
//! so a handle kept too long keeps the state alive rather than pointing at freed memory.

use std::cell::RefCell;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rhai::{CallFnOptions, Dynamic, DynamicReadLock, Engine, EvalAltResult, Position, Scope};
use serde_json::{Map, Value};

use super::{CompiledScript, Limits, Next, ScriptCall, ScriptEffect, ScriptError, ScriptHttp};
use crate::domain::{Clock, SideEffects};
use crate::message::{InboundMessage, Reply, UserInfo};

/// The `on_progress` token that means "over the wall-clock budget".
pub(super) const WALL_TIME_TOKEN: &str = "switchboard:wall-time";

/// The `on_progress` token that means "past the message's deadline".
pub(super) const DEADLINE_TOKEN: &str = "switchboard:deadline";

/// The token that stops a call which reached an effect with effects refused.
/// `ErrorTerminated` passes through `try`/`catch` and function boundaries, so
/// no script can carry on past the effect it was refused.
const NEEDS_TURN_TOKEN: &str = "switchboard:needs-turn";

/// Everything the author API needs during one call, owned: shared parts are `Arc`s
/// cloned from the caller's, so building one allocates only the `Arc` around it and
/// the two id strings.
pub(super) struct CallState {
    pub bot: String,
    pub contact: String,
    pub script: Arc<CompiledScript>,
    pub limits: Arc<Limits>,
    /// Shared, so that writes from any function land in the one map.
    pub vars: Dynamic,
    pub user: Dynamic,
    pub message: Dynamic,
    pub http: Arc<dyn ScriptHttp>,
    pub http_allow: Arc<[String]>,
    pub clock: Arc<dyn Clock>,
    /// See [`ScriptCall::deadline`].
    pub deadline: Option<Instant>,
    side_effects: SideEffects,
    started: Instant,
    effects: Mutex<Effects>,
}

/// What the author functions have done so far in this call.
#[derive(Default)]
pub(super) struct Effects {
    pub replies: Vec<Reply>,
    /// The decision (`ask`/`go_to`/`end`), the function that made it and where.
    pub next: Option<(Next, &'static str, Position)>,
    pub http_calls: usize,
    /// Time spent waiting for HTTP, which does not count against `wall_time`.
    pub http_time: Duration,
    /// The time limit of the call's `ask`, if it gave one.
    pub timeout: Option<super::AskTimeout>,
    /// An effect was reached with effects refused: whatever the call did
    /// after that, its result is thrown away.
    pub needs_turn: bool,
}

impl CallState {
    /// The script's file, for messages and the log.
    pub fn file(&self) -> &Path {
        &self.script.path
    }

    pub fn effects(&self) -> MutexGuard<'_, Effects> {
        // A poisoned lock means a host function panicked; the call fails anyway.
        self.effects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before an effect (HTTP, a host function): `Ok` when effects are
    /// allowed; otherwise notes that the call needs the contact's turn and
    /// stops it with an error no `try` catches.
    pub fn may_act(&self, position: Position) -> Result<(), Box<EvalAltResult>> {
        if self.side_effects == SideEffects::Allowed {
            return Ok(());
        }
        self.effects().needs_turn = true;
        Err(EvalAltResult::ErrorTerminated(NEEDS_TURN_TOKEN.into(), position).into())
    }

    /// Before a log line (`log`, `print`, `debug`), which cannot stop the call
    /// from where it is emitted: whether to write it. When effects are refused
    /// it is not written, and the call's result will not be used.
    pub fn may_log(&self) -> bool {
        if self.side_effects == SideEffects::Allowed {
            return true;
        }
        self.effects().needs_turn = true;
        false
    }

    /// Which time limit the call is over, if any, as its `on_progress` token.
    fn over_time(&self) -> Option<&'static str> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(DEADLINE_TOKEN);
        }
        let budget = self.limits.wall_time + self.effects().http_time;
        (self.started.elapsed() > budget).then_some(WALL_TIME_TOKEN)
    }

    /// How long the next HTTP call may take: its own timeout, cut short by the
    /// deadline; `None` once the deadline has passed.
    pub fn http_timeout(&self) -> Option<Duration> {
        match self.deadline {
            None => Some(self.limits.http_timeout),
            Some(deadline) => deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
                .map(|left| left.min(self.limits.http_timeout)),
        }
    }
}

/// A handle on one call's [`CallState`]: the value of the call's tag and of the
/// thread-local. Owned, so it is valid for as long as anyone holds it.
#[derive(Clone)]
pub(super) struct Call(Arc<CallState>);

impl Deref for Call {
    type Target = CallState;

    fn deref(&self) -> &CallState {
        &self.0
    }
}

impl Call {
    /// The call `tag` belongs to, when it is one of ours (outside a call, at compile
    /// time, the tag is `()`). Borrows the tag: no reference count is touched.
    pub fn from_tag(tag: Option<&Dynamic>) -> Option<DynamicReadLock<'_, Call>> {
        tag.and_then(Dynamic::read_lock::<Call>)
    }

    /// The call running on this thread, for callbacks that get no context.
    pub fn running() -> Option<Call> {
        RUNNING.with(|running| running.borrow().clone())
    }
}

thread_local! {
    static RUNNING: RefCell<Option<Call>> = const { RefCell::new(None) };
}

/// Marks a call as running on this thread; puts back what was there before when
/// dropped, even on panic, so the thread-local never holds a finished call.
struct Running(Option<Call>);

impl Running {
    fn enter(call: Call) -> Running {
        Running(RUNNING.with(|running| running.replace(Some(call))))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let previous = self.0.take();
        RUNNING.with(|running| *running.borrow_mut() = previous);
    }
}

/// The engine's progress callback: stops the running call once it is over its
/// wall-clock budget. Looks at the clock every 256 operations only.
pub(super) fn check_progress(operations: u64) -> Option<Dynamic> {
    if operations % 256 != 0 {
        return None;
    }
    Call::running()?.over_time().map(Dynamic::from)
}

/// Runs `call.function` of `script`; see [`super::ScriptEngine::call`].
pub(super) fn run(
    engine: &Engine,
    limits: &Arc<Limits>,
    script: &Arc<CompiledScript>,
    call: ScriptCall<'_>,
) -> Result<ScriptEffect, ScriptError> {
    let file = script.path.as_path();
    let fail = |line: Option<usize>, message: String| ScriptError {
        file: file.to_path_buf(),
        line,
        message,
        needs_turn: false,
    };

    let answer = call.answer;
    if !script.has_fn(call.function, usize::from(answer.is_some())) {
        let name = call.function;
        let message = if !script.functions.iter().any(|f| f == name) {
            let mut message = format!("this script has no `fn {name}`");
            if let Some(hint) = super::compile::did_you_mean(name, &script.functions) {
                message.push_str(&format!(": {hint}"));
            }
            message
        } else if answer.is_some() {
            format!("`fn {name}` cannot handle an answer: a handler takes one parameter, `fn {name}(answer)`")
        } else {
            format!("`fn {name}` needs an answer, but there is none")
        };
        return Err(fail(None, message));
    }

    let vars = rhai::serde::to_dynamic(&call.vars)
        .map_err(|e| fail(None, format!("vars could not be loaded: {e}")))?
        .into_shared();
    let this_call = Call(Arc::new(CallState {
        bot: call.bot.to_owned(),
        contact: call.contact.to_owned(),
        script: Arc::clone(script),
        limits: Arc::clone(limits),
        vars,
        user: user_map(call.user),
        message: message_map(call.message),
        http: call.http,
        http_allow: call.http_allow,
        clock: call.clock,
        deadline: call.deadline,
        side_effects: call.side_effects,
        started: Instant::now(),
        effects: Mutex::new(Effects::default()),
    }));

    let result = {
        let _running = Running::enter(this_call.clone());
        let options = CallFnOptions::new()
            .eval_ast(false)
            .with_tag(this_call.clone());
        let mut scope = Scope::new();
        catch_unwind(AssertUnwindSafe(|| match answer {
            None => engine.call_fn_with_options::<Dynamic>(
                options,
                &mut scope,
                &script.ast,
                call.function,
                (),
            ),
            Some(answer) => engine.call_fn_with_options::<Dynamic>(
                options,
                &mut scope,
                &script.ast,
                call.function,
                (answer.to_owned(),),
            ),
        }))
    };

    // Checked first: past a refused effect nothing the call did counts, not
    // even an error a `try` turned into something else.
    if this_call.effects().needs_turn {
        return Err(ScriptError {
            needs_turn: true,
            ..fail(
                None,
                "the script reached an HTTP call, host function or log line \
                 while effects were refused; it runs again holding the contact's turn"
                    .to_owned(),
            )
        });
    }
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            let (line, message) = describe(*err, limits);
            return Err(fail(line, message));
        }
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            return Err(fail(
                None,
                format!("internal error while running the script: {what}"),
            ));
        }
    }

    // The effects are taken out rather than the state unwrapped: a handle something
    // kept past the call stays valid, it just no longer reaches the result.
    let vars = vars_out(&this_call.vars, limits).map_err(|m| fail(None, m))?;
    let effects = std::mem::take(&mut *this_call.effects());
    Ok(ScriptEffect {
        replies: effects.replies,
        next: effects.next.map_or(Next::End, |(next, ..)| next),
        vars,
        timeout: effects.timeout,
    })
}

fn user_map(user: &UserInfo) -> Dynamic {
    let mut map = rhai::Map::new();
    map.insert("phone".into(), user.phone.clone().into());
    map.insert("name".into(), user.name.clone().into());
    map.insert("channel".into(), user.channel.clone().into());
    Dynamic::from_map(map)
}

fn message_map(message: &InboundMessage) -> Dynamic {
    fn opt<T: Into<Dynamic>>(value: Option<T>) -> Dynamic {
        value.map_or(Dynamic::UNIT, Into::into)
    }
    let media: rhai::Array = message.media.iter().map(|m| m.clone().into()).collect();
    let mut map = rhai::Map::new();
    map.insert("text".into(), message.text.clone().into());
    map.insert("media".into(), media.into());
    map.insert("button".into(), opt(message.button.clone()));
    map.insert("button_payload".into(), opt(message.button_payload.clone()));
    map.insert("latitude".into(), opt(message.latitude));
    map.insert("longitude".into(), opt(message.longitude));
    map.insert("payload".into(), opt(message.button_payload.clone()));
    let types: rhai::Array = message
        .media_types
        .iter()
        .map(|t| t.clone().into())
        .collect();
    map.insert("media_types".into(), types.into());
    map.insert("address".into(), opt(message.address.clone()));
    map.insert("label".into(), opt(message.label.clone()));
    Dynamic::from_map(map)
}

/// `vars` back to JSON, within the size limit.
fn vars_out(vars: &Dynamic, limits: &Limits) -> Result<Map<String, Value>, String> {
    let vars = vars.flatten_clone();
    if !vars.is_map() {
        return Err(format!(
            "vars must stay a map (`#{{...}}`), but the script made it {}",
            vars.type_name()
        ));
    }
    let value: Value = rhai::serde::from_dynamic(&vars)
        .map_err(|e| format!("vars cannot be stored as JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("vars must stay a map".to_owned());
    };
    let size = serde_json::to_vec(&map).map_or(usize::MAX, |json| json.len());
    if size > limits.max_vars_bytes {
        return Err(format!(
            "vars is {size} bytes as JSON, over the limit of {} bytes: store less in vars",
            limits.max_vars_bytes
        ));
    }
    Ok(map)
}

/// The line and an author-facing message for a Rhai error.
fn describe(err: EvalAltResult, limits: &Limits) -> (Option<usize>, String) {
    // Errors inside nested calls arrive wrapped once per call level; the innermost is
    // where the problem is.
    let mut inner = err;
    let mut in_fn = None;
    while let EvalAltResult::ErrorInFunctionCall(name, _, next, _) = inner {
        in_fn = Some(name);
        inner = *next;
    }
    let line = inner.position().line();
    let mut message = match &inner {
        EvalAltResult::ErrorTooManyOperations(..) => format!(
            "too many operations (limit {}): is there an endless loop?",
            limits.max_operations
        ),
        EvalAltResult::ErrorStackOverflow(..) => format!(
            "functions call each other too deeply (limit {} levels): is there an endless recursion?",
            limits.max_call_levels
        ),
        EvalAltResult::ErrorDataTooLarge(what, ..) => {
            if what.starts_with("Length of string") {
                format!("string too long (limit {} bytes)", limits.max_string_size)
            } else if what.starts_with("Size of array") {
                format!("array too large (limit {} items)", limits.max_array_size)
            } else if what.starts_with("Size of object map") {
                format!("map too large (limit {} entries)", limits.max_map_size)
            } else {
                format!("{what} too large")
            }
        }
        EvalAltResult::ErrorTerminated(token, ..)
            if token.clone().into_string().as_deref() == Ok(WALL_TIME_TOKEN) =>
        {
            format!(
                "script ran longer than {} (not counting time waiting for HTTP)",
                human_duration(limits.wall_time)
            )
        }
        EvalAltResult::ErrorTerminated(token, ..)
            if token.clone().into_string().as_deref() == Ok(DEADLINE_TOKEN) =>
        {
            DEADLINE_MESSAGE.to_owned()
        }
        EvalAltResult::ErrorAssignmentToConstant(name, ..)
            if name == "user" || name == "message" =>
        {
            format!("`{name}` is read-only; copy what you need into `vars`")
        }
        EvalAltResult::ErrorRuntime(value, ..) if value.is_string() => {
            value.clone().into_string().unwrap_or_default()
        }
        EvalAltResult::ErrorRuntime(value, ..) => format!("script threw {value}"),
        _ => {
            inner.clear_position();
            inner.to_string()
        }
    };
    if let Some(name) = in_fn {
        message.push_str(&format!(" (in fn {name})"));
    }
    (line, message)
}

/// Why a call was stopped at the message's deadline, and what to do about it.
pub(super) const DEADLINE_MESSAGE: &str =
    "the message was not handled within the webhook's deadline \
     (Twilio stops waiting after 15 s): make the script's HTTP calls fewer or faster";

fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The message a panic carried (`panic!("...")` payloads are `&str` or `String`).
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".to_owned())
}
