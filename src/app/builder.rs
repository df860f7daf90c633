//! [`AppBuilder`]: an engine's plug points (Rust functions for scripts, an event
//! sink, the script HTTP client, the clock, the mount path), and the defaults used
//! for those a host leaves out (reqwest for script HTTP, the system clock).
//!
//! See `docs/embedding.md` for the tour and the stability promise.

use std::sync::Arc;

use super::{App, StartError};
use crate::config::Config;
use crate::conversation::Runtime;
use crate::domain::{Clock, Diagnostic, SystemClock};
use crate::flow::{self, LoadOptions};
use crate::hooks::{EventSink, Events, DEFAULT_EVENT_QUEUE};
use crate::script::{
    FunctionError, Limits, ReqwestScriptHttp, ScriptEngine, ScriptFunction, ScriptFunctions,
    ScriptHttp,
};

/// Builds an [`App`]: `App::builder(config)`, plug points, then [`AppBuilder::build`].
#[must_use = "an AppBuilder does nothing until build() is awaited"]
pub struct AppBuilder {
    config: Config,
    limits: Limits,
    functions: ScriptFunctions,
    function_error: Option<FunctionError>,
    http: Option<Arc<dyn ScriptHttp>>,
    clock: Option<Arc<dyn Clock>>,
    sink: Option<Arc<dyn EventSink>>,
    event_queue: usize,
    mount_path: Option<String>,
}

/// Plug points show whether they are set; functions by name and arity.
impl std::fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBuilder")
            .field("config", &self.config)
            .field("limits", &self.limits)
            .field("functions", &self.functions)
            .field("function_error", &self.function_error)
            .field("script_http", &self.http.is_some())
            .field("clock", &self.clock.is_some())
            .field("events", &self.sink.is_some())
            .field("event_queue", &self.event_queue)
            .field("mount_path", &self.mount_path)
            .finish()
    }
}

/// What [`AppBuilder`] sets beyond [`Config`] and [`Runtime`].
pub(super) struct Extras {
    pub events: Events,
    pub mount_path: Option<String>,
}

impl Extras {
    /// The base of the `StatusCallback` URLs the sender gives Twilio: the public URL
    /// plus the prefix the host mounted the routes under.
    pub fn callback_base(&self, public_url: Option<&str>) -> Option<String> {
        let base = public_url?.trim_end_matches('/');
        Some(format!(
            "{base}{}",
            self.mount_path.as_deref().unwrap_or("")
        ))
    }
}

impl AppBuilder {
    pub(super) fn new(config: Config) -> AppBuilder {
        AppBuilder {
            config,
            limits: Limits::default(),
            functions: ScriptFunctions::default(),
            function_error: None,
            http: None,
            clock: None,
            sink: None,
            event_queue: DEFAULT_EVENT_QUEUE,
            mount_path: None,
        }
    }

    /// Replaces the script limits (operations, time, sizes, HTTP calls).
    pub fn script_limits(mut self, limits: Limits) -> AppBuilder {
        self.limits = limits;
        self
    }

    /// Lets every bot's scripts call `f` as `name`. `f` takes 0 to 3 `Deserialize`
    /// arguments and returns `Result<impl Serialize, impl Display>`:
    ///
    /// ```
    /// # let builder = switchboard::App::builder(switchboard::Config::new("flows", "sqlite://x.db"));
    /// let builder = builder.script_function("crm_lookup", |phone: String| {
    ///     Ok::<_, String>(serde_json::json!({ "phone": phone, "tier": "gold" }))
    /// });
    /// ```
    ///
    /// An `Err` or a panic in `f` is a script error: the contact gets the bot's
    /// `error_reply`. `f` runs on the script's blocking thread, inside its time budget.
    /// An invalid or duplicate name makes [`AppBuilder::build`] fail.
    pub fn script_function<Args>(mut self, name: &str, f: impl ScriptFunction<Args>) -> AppBuilder {
        if let Err(error) = self.functions.register(name, f) {
            self.function_error.get_or_insert(error);
        }
        self
    }

    /// Like [`AppBuilder::script_function`], for the scripts of `bot` only. Scripts of
    /// other bots that call it fail to load (a `check` error), so a bot never finds
    /// out at run time. A bot's own function wins over a shared one of the same name.
    pub fn bot_script_function<Args>(
        mut self,
        bot: &str,
        name: &str,
        f: impl ScriptFunction<Args>,
    ) -> AppBuilder {
        if let Err(error) = self.functions.register_for_bot(bot, name, f) {
            self.function_error.get_or_insert(error);
        }
        self
    }

    /// Replaces the HTTP client behind `http_get`/`http_post` (default: reqwest).
    pub fn script_http(mut self, http: Arc<dyn ScriptHttp>) -> AppBuilder {
        self.http = Some(http);
        self
    }

    /// Replaces the clock of scripts (`now()`), session timeouts and the sender.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> AppBuilder {
        self.clock = Some(clock);
        self
    }

    /// Hands every processed message and every send outcome to `sink`, after commit
    /// (see [`crate::hooks`]).
    pub fn events(mut self, sink: Arc<dyn EventSink>) -> AppBuilder {
        self.sink = Some(sink);
        self
    }

    /// Room for events waiting for the sink; more are dropped (default 1024).
    pub fn event_queue(mut self, capacity: usize) -> AppBuilder {
        self.event_queue = capacity;
        self
    }

    /// The path the host nests [`App::router`] under (`"/bots"`), so the
    /// `StatusCallback` URLs given to Twilio include it. Signature checks need
    /// nothing: they use the URL as received. Only matters with `public_url` set.
    pub fn mount_path(mut self, prefix: &str) -> AppBuilder {
        let trimmed = prefix.trim_matches('/');
        self.mount_path = (!trimmed.is_empty()).then(|| format!("/{trimmed}"));
        self
    }

    /// The script engine with the registered functions, as [`AppBuilder::build`]
    /// would make it.
    pub fn script_engine(&self) -> Result<ScriptEngine, StartError> {
        if let Some(error) = &self.function_error {
            return Err(StartError::Function(error.clone()));
        }
        Ok(ScriptEngine::with_functions(
            self.limits.clone(),
            self.functions.clone(),
        ))
    }

    /// Checks the flows folder as `switchboard check` does, knowing the registered
    /// functions; no database needed. Empty when every bot loads cleanly.
    pub fn check(&self) -> Result<Vec<Diagnostic>, StartError> {
        let engine = self.script_engine()?;
        let options = LoadOptions {
            allow_missing_credentials: self.config.dry_run,
            ..LoadOptions::default()
        };
        Ok(flow::check_flows(&self.config.flows, &engine, &options))
    }

    /// Connects and migrates the database, loads the bots and starts the event task.
    /// Must be awaited inside a Tokio runtime.
    pub async fn build(self) -> Result<App, StartError> {
        let scripts = self.script_engine()?;
        let runtime = Runtime {
            scripts,
            http: self.http.unwrap_or_else(|| {
                Arc::new(ReqwestScriptHttp::new(tokio::runtime::Handle::current()))
            }),
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
        };
        let events = match self.sink {
            Some(sink) => Events::spawn(sink, self.event_queue),
            None => Events::none(),
        };
        let extras = Extras {
            events,
            mount_path: self.mount_path,
        };
        App::assemble(self.config, runtime, extras).await
    }
}
