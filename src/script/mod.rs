//! Rhai script nodes: the one place the Rhai engine is built and limited
//! (`engine.rs`), script compilation with load-time checks (`compile.rs`), one call
//! with its per-call state and error reporting (`call.rs`), and the author API
//! (`api.rs`: `say`, `ask`, `go_to`, `end`, `vars`, `user`, `message`, `http_get`,
//! `http_post`, `now`, `log`).
//!
//! Scripts do no I/O of their own: HTTP goes through [`ScriptHttp`] and time through
//! [`Clock`], both passed in by the host so tests and `switchboard test` can stub them.
//! This module never touches the database, Twilio or the conversation store.
//!
//! # Rules an author sees (the source for `docs/scripting.md`)
//!
//! - A script is a file of `fn` definitions. Code outside a function would never run,
//!   so it is a load error; so are `import`, `eval`, a missing `fn start()`, a `start`
//!   that takes parameters, and misspelt variable names (variables must be declared
//!   with `let` before use; `vars`, `user` and `message` are always there).
//! - `ask(question, "handler", #{ timeout: "2h", on_timeout: "no_answer" })` also
//!   waits at most `timeout`, then calls `fn no_answer()` (or ends quietly).
//! - `ask(question, "handler")` sends `question` at once; after the function returns
//!   the conversation waits and the contact's next message calls `fn handler(answer)`.
//!   A literal handler name must name a function of the same file taking exactly one
//!   parameter: checked at load, with a "did you mean" hint. A computed name is checked
//!   when `ask` runs.
//! - `go_to("node")` enters that node when the function returns; `end()` ends the
//!   conversation. A function that returns without `ask`, `go_to` or `end` also ends it.
//! - One decision per message: calling a second of `ask`, `go_to`, `end` in the same
//!   call is a script error naming both lines (it is almost always a missing `return`).
//! - `say(text)` / `say(text, media_url)` accept any value and send its text form;
//!   sending `()` (an unset variable) is an error.
//! - `vars` is the conversation's one map of variables, the same in every function; `vars.name = x` and `vars = #{}` both persist. Reading a missing
//!   key gives `()`. Values must be JSON-like (strings, numbers, booleans, `()`,
//!   arrays, maps); integers stay integers. More than 64 KiB as JSON is an error.
//! - `user` (`phone`, `name`, `channel`) and `message` (`text`, `media`, `button`,
//!   `button_payload`, `latitude`, `longitude`; `()` when absent) are read-only. A
//!   local variable or parameter of the same name hides them inside its function.
//! - `http_get(url)` / `http_post(url, body)` return `#{ status, body, json }` (`json`
//!   is the decoded body, or `()` when the body is not JSON). Any HTTP status is a
//!   normal result. Only `http` and `https` URLs to hosts listed in `http.allow` can be
//!   called; another host, a transport failure (refused, timed out) or a body over the
//!   string limit is a script error, which a `try { } catch { }` block may handle.
//!   Redirects are not followed (the 3xx is returned). At most 10 calls per message.
//! - At most 20 messages (`say` + `ask`) per call.
//! - `now()` is the current UTC time, ISO-8601 to the second: `2024-05-01T09:30:00Z`.
//! - `log(text)`, `print(x)` and `debug(x)` write to the server log with bot,
//!   contact and file; nothing is sent to the contact.
//! - Limits per call: 1,000,000 operations, 32 nested function calls, 64 nested
//!   expression levels, strings of 64 KiB (all the strings inside one array or map
//!   count together), arrays and maps of 10,000 items, 2 s of
//!   running time not counting time spent waiting for HTTP. A breached limit cannot be
//!   caught by `try`/`catch`.

mod api;
mod call;
mod compile;
mod engine;
mod host;
mod http;
mod known;
mod syntax;
mod written;

pub use host::{ErasedFnBox, FunctionError, ScriptFunction, ScriptFunctions, MAX_HOST_ARGS};
pub use http::{ReqwestScriptHttp, StubHttp};
pub use written::WrittenVars;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

#[cfg(test)]
use crate::domain::Severity;
use crate::domain::{Clock, Diagnostic, SideEffects};
use crate::message::{InboundMessage, Reply, UserInfo};

/// Limits every script call runs under.
///
/// Fields may be added: start from [`Limits::default`] and set the ones you need.
///
/// ```compile_fail,E0639
/// let limits = switchboard::Limits {
///     max_operations: 1_000,
///     ..switchboard::Limits::default()
/// };
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Wall-clock time a call may run, not counting time spent in HTTP calls.
    pub wall_time: Duration,
    /// Timeout of one `http_get`/`http_post`.
    pub http_timeout: Duration,
    /// Most `http_get`/`http_post` calls in one script call: with the time spent in
    /// HTTP not counted against `wall_time`, this bounds how long one message can
    /// hold a blocking thread (`max_http_calls * http_timeout + wall_time`).
    pub max_http_calls: usize,
    /// Most messages (`say` and `ask`) one script call may send: a runaway loop of
    /// `say` would otherwise queue thousands of paid messages to one contact.
    pub max_replies: usize,
    /// Largest `vars` map, serialized as JSON.
    pub max_vars_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_operations: 1_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            wall_time: Duration::from_secs(2),
            http_timeout: Duration::from_secs(5),
            max_http_calls: 10,
            max_replies: 20,
            max_vars_bytes: 64 * 1024,
        }
    }
}

/// The HTTP a script may do, provided by the host.
pub trait ScriptHttp: Send + Sync {
    /// One request. `body` is sent as JSON for POST. Blocking: scripts run on a
    /// blocking thread. An `Err` is a message for the script error ("connection refused").
    fn request(&self, req: &HttpRequest) -> Result<HttpResponse, String>;
}

/// One `http_get`/`http_post` call, after the allow-list check.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The URL as the script wrote it.
    pub url: String,
    pub body: Option<Value>,
    pub timeout: Duration,
    /// A longer response body is an error rather than a string the script could not
    /// hold anyway; implementations should stop reading past it.
    pub max_body_bytes: usize,
}

/// What a [`ScriptHttp`] answered.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    /// A response whose body is `value` as JSON (for stubs).
    pub fn json(status: u16, value: &Value) -> HttpResponse {
        HttpResponse {
            status,
            body: value.to_string(),
        }
    }
}

/// A name a script passes as a literal to `ask` or `go_to`, for load-time checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRef {
    pub name: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

/// One `.rhai` file compiled once per load; never recompiled per message.
pub struct CompiledScript {
    pub path: PathBuf,
    /// Names of the `fn`s the file defines.
    pub functions: Vec<String>,
    /// Literal first arguments of `go_to("...")` calls.
    pub node_refs: Vec<NameRef>,
    /// Literal handler arguments of `ask(..., "...")` (and `ask_buttons`,
    /// `ask_list`) calls.
    pub handler_refs: Vec<NameRef>,
    /// Literal first arguments of `say_template("...")` calls, checked by the
    /// flow loader against the bot's `templates:`.
    pub template_refs: Vec<NameRef>,
    /// Each function as (name, number of parameters); Rhai allows one name with
    /// several parameter counts.
    arities: Vec<(String, usize)>,
    /// The vars this script sets.
    pub written: WrittenVars,
    ast: Arc<rhai::AST>,
}

impl CompiledScript {
    /// Whether `name` is a function this file defines that can handle an answer
    /// (exactly one parameter): what a stored `ask` handler must still be after a reload.
    pub fn has_handler(&self, name: &str) -> bool {
        self.has_fn(name, 1)
    }

    fn has_fn(&self, name: &str, params: usize) -> bool {
        self.arities.iter().any(|(n, p)| n == name && *p == params)
    }
}

impl fmt::Debug for CompiledScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledScript")
            .field("path", &self.path)
            .field("functions", &self.functions)
            .finish_non_exhaustive()
    }
}

/// Everything one script call may see and use.
pub struct ScriptCall<'a> {
    pub bot: &'a str,
    pub contact: &'a str,
    /// `start`, or the handler named by the last `ask`.
    pub function: &'a str,
    /// The contact's answer, passed to handlers (not to `start`).
    pub answer: Option<&'a str>,
    pub vars: Map<String, Value>,
    pub user: &'a UserInfo,
    pub message: &'a InboundMessage,
    /// Owned (shared), like everything the call's state keeps: the state travels
    /// through Rhai as a `'static` value.
    pub http: Arc<dyn ScriptHttp>,
    /// Hosts `http_get`/`http_post` may reach (the bot's `http.allow`).
    pub http_allow: Arc<[String]>,
    pub clock: Arc<dyn Clock>,
    /// When the message must be answered (the webhook's deadline): past it the
    /// call stops like a breached limit, and HTTP calls wait at most until then.
    pub deadline: Option<Instant>,
    /// Whether HTTP, host functions and log lines may run, or stop the call
    /// asking for the contact's turn.
    pub side_effects: SideEffects,
}

/// The call's inputs; the HTTP client and the clock are left out.
impl fmt::Debug for ScriptCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptCall")
            .field("bot", &self.bot)
            .field("contact", &self.contact)
            .field("function", &self.function)
            .field("answer", &self.answer)
            .field("vars", &self.vars)
            .field("user", &self.user)
            .field("message", &self.message)
            .field("http_allow", &self.http_allow)
            .field("deadline", &self.deadline)
            .field("side_effects", &self.side_effects)
            .finish_non_exhaustive()
    }
}

/// What a script call decided.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptEffect {
    /// `say` and `ask` messages, in order.
    pub replies: Vec<Reply>,
    pub next: Next,
    pub vars: Map<String, Value>,
    /// `ask(question, "handler", #{ timeout: "2h", on_timeout: "no_answer" })`:
    /// how long the ask waits (SPEC §9.2); `None` for as long as the conversation lasts.
    pub timeout: Option<AskTimeout>,
}

/// The time limit of a script's `ask`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskTimeout {
    pub after: std::time::Duration,
    /// A function of the same script, called with no arguments when the time
    /// runs out; `None` ends the conversation quietly.
    pub on_timeout: Option<String>,
}

/// Where the conversation goes after a script call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Wait; the next message calls this function of the same file.
    Ask(String),
    /// Enter this node (YAML or script).
    GoTo(String),
    /// End the conversation (`end()`, or the function returned without `ask`/`go_to`).
    End,
    /// Hand the conversation to a person in this queue (`handoff("sales")`,
    /// SPEC §10.2); what the function said is sent first.
    Handoff(String),
}

/// A script failed: runtime error, breached limit, unknown handler, `vars` too big,
/// or an HTTP call to a host not allowed. For the log; the contact sees `error_reply`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}: {message}", file.display(), line.map(|l| l.to_string()).unwrap_or_else(|| "?".into()))]
pub struct ScriptError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
    /// The call reached an effect (HTTP, a host function, a log line) with
    /// effects refused ([`SideEffects::Refused`]): not the author's error, the
    /// caller steps again holding the contact's turn.
    pub needs_turn: bool,
}

/// The one Rhai engine of the process, with every limit set. Cheap to clone.
#[derive(Clone)]
pub struct ScriptEngine {
    limits: Arc<Limits>,
    engine: Arc<rhai::Engine>,
    functions: Arc<ScriptFunctions>,
    /// Every function the engine's scripts can call, for load-time checks.
    known: Arc<known::KnownFunctions>,
}

impl fmt::Debug for ScriptEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for ScriptEngine {
    fn default() -> ScriptEngine {
        ScriptEngine::new(Limits::default())
    }
}

impl ScriptEngine {
    pub fn new(limits: Limits) -> ScriptEngine {
        ScriptEngine::with_functions(limits, ScriptFunctions::default())
    }

    /// An engine whose scripts can also call the host's `functions`. Load the flows
    /// with this engine so that calls to them are checked, not reported.
    pub fn with_functions(limits: Limits, functions: ScriptFunctions) -> ScriptEngine {
        let engine = engine::build(&limits, &functions);
        ScriptEngine {
            known: Arc::new(known::KnownFunctions::of(&engine)),
            engine: Arc::new(engine),
            limits: Arc::new(limits),
            functions: Arc::new(functions),
        }
    }

    /// The host functions scripts can call.
    pub fn functions(&self) -> &ScriptFunctions {
        &self.functions
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles one `.rhai` file. Errors carry file, line, column and the source line.
    pub fn compile(&self, path: &Path, source: &str) -> Result<CompiledScript, Vec<Diagnostic>> {
        compile::compile(&self.engine, &self.functions, &self.known, path, source)
    }

    /// Runs `call.function` of `script`. Blocking: call it from a blocking thread.
    /// The call holds a reference to `script` while it runs, hence the `Arc`.
    pub fn call(
        &self,
        script: &Arc<CompiledScript>,
        call: ScriptCall<'_>,
    ) -> Result<ScriptEffect, ScriptError> {
        call::run(&self.engine, &self.limits, script, call)
    }
}

#[cfg(test)]
mod tests;
