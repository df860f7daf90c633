//! An engine and its life: [`App::builder`] assembles one (connect and migrate the
//! store, load the bots, start the watcher), and [`App`]'s methods run the HTTP
//! server and the sender until told to stop, on their own (`switchboard serve`) or
//! inside a host program's Tokio and axum (the embedding API, `docs/embedding.md`).
//!
//! `builder.rs` holds [`AppBuilder`]: the plug points and the runtime defaults.

mod builder;

pub use builder::AppBuilder;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::console::Console;
use crate::conversation::Runtime;
use crate::domain::Severity;
use crate::flow::{self, LoadOptions, Registry, WatchOptions};
use crate::hooks::Events;
use crate::http::{self, AppState};
use crate::inbound::Inbound;
use crate::outbox_signal::{OutboxSignal, NOTIFY_WINDOW};
use crate::script::ScriptEngine;
use crate::sender::Sender;
use crate::store::{Store, StoreError};

/// Why an engine could not start. A variant with a cause returns it as `source`
/// rather than printing it: `main` prints the whole chain (`{:#}`).
///
/// Variants may be added: a `match` needs a `_` arm.
///
/// ```compile_fail,E0004
/// use switchboard::StartError;
/// fn describe(error: &StartError) -> &'static str {
///     match error {
///         StartError::Store(_) | StartError::NoFlows(_) | StartError::Io(_) => "setup",
///         StartError::MetricsListen { .. } | StartError::Function(_) => "setup",
///         StartError::NoPublicUrl | StartError::BadPublicUrl { .. } => "flags",
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("flows folder {0} does not exist: create it or pass --flows DIR")]
    NoFlows(String),
    #[error("could not serve HTTP")]
    Io(#[from] std::io::Error),
    #[error("could not listen on {addr} for metrics (--metrics-listen)")]
    MetricsListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// A function given to [`AppBuilder::script_function`] could not be registered.
    #[error(transparent)]
    Function(#[from] crate::script::FunctionError),
    /// `serve` outside `--dry-run` without `--public-url`.
    #[error("--public-url is required outside --dry-run: Twilio signs the public URL it calls, and a URL rebuilt from request headers would let a request signed for one address be replayed at another. Pass the scheme and host Twilio calls, e.g. --public-url https://bots.example.com (or set SWITCHBOARD_PUBLIC_URL), or add --dry-run to try the bots locally")]
    NoPublicUrl,
    #[error("--public-url `{url}` {reason}: give the scheme and host Twilio calls (and a path prefix if your proxy adds one), e.g. https://bots.example.com")]
    BadPublicUrl { url: String, reason: &'static str },
}

/// Checks the public base URL: `http` or `https`, a host, no query or fragment (the
/// request path and query are appended to it).
pub fn check_public_url(url: &str) -> Result<(), StartError> {
    let bad = |reason| StartError::BadPublicUrl {
        url: crate::config::redact_url(url),
        reason,
    };
    if url.trim() != url || url.contains(['?', '#']) {
        return Err(bad("has a query, a fragment or spaces"));
    }
    let parsed = url::Url::parse(url).map_err(|_| bad("is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("is not http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(())
}

/// A running engine's parts: store, bots, HTTP state and sender.
pub struct App {
    pub(crate) config: Config,
    pub(crate) state: AppState,
    pub(crate) store: Store,
    pub(crate) registry: Arc<Registry>,
    /// The engine the bots were loaded with.
    pub(crate) scripts: ScriptEngine,
    pub(crate) events: Events,
    /// Rung by accepted messages; the sender waits on it, and `serve` runs its
    /// `NOTIFY` task.
    pub(crate) outbox: OutboxSignal,
    pub(crate) sender: Sender,
    /// Hot reload, while `config.watch`; stopped when the app stops or is dropped.
    pub(crate) watcher: Option<flow::Watcher>,
    /// Bound at assembly from `config.metrics_listen`, served by [`App::serve`].
    pub(crate) metrics_listener: Option<TcpListener>,
}

impl App {
    /// Starts building an engine for `config` (see [`Config::new`]): the one way to
    /// make an `App`.
    pub fn builder(config: Config) -> AppBuilder {
        AppBuilder::new(config)
    }

    /// Connects, migrates and loads the flows with `runtime`: what
    /// [`AppBuilder::build`] does once it has settled the plug points.
    async fn assemble(
        config: Config,
        runtime: Runtime,
        extras: builder::Extras,
    ) -> Result<App, StartError> {
        if !config.flows.is_dir() {
            return Err(StartError::NoFlows(config.flows.display().to_string()));
        }
        if let Some(url) = &config.public_url {
            check_public_url(url)?;
        }
        let store = Store::connect(&config.database_url).await?;
        store.migrate().await?;

        let registry = Arc::new(Registry::new());
        let options = LoadOptions {
            allow_missing_credentials: config.dry_run,
            ..LoadOptions::default()
        };
        let loaded = flow::load_flows(&config.flows, &runtime.scripts, &options);
        for (bot, diagnostics) in &loaded.diagnostics {
            for diagnostic in diagnostics {
                match diagnostic.severity {
                    Severity::Error => tracing::error!(%bot, "bot did not load:\n{diagnostic}"),
                    Severity::Warning => tracing::warn!(%bot, "{diagnostic}"),
                }
            }
        }
        for bot in loaded.bots.keys() {
            tracing::info!(%bot, "bot loaded");
        }
        registry.replace_all(loaded);
        // Watching starts here, not in `serve`, so that no save between this load
        // and serving is missed, and an `App` that exists is already reloading.
        let watcher = config
            .watch
            .then(|| App::start_watcher(&config, &registry, &runtime.scripts, &options))
            .flatten();

        let outbox = OutboxSignal::default();
        let sender = Sender::new(
            store.clone(),
            registry.clone(),
            runtime.clock.clone(),
            config.sender.clone(),
            outbox.clone(),
            config.dry_run,
            extras.callback_base(config.public_url.as_deref()),
        )
        .with_events(extras.events.clone());
        let scripts = runtime.scripts.clone();
        let clock = runtime.clock.clone();
        let inbound = Inbound::new(
            store.clone(),
            runtime,
            extras.events.clone(),
            outbox.clone(),
            config.webhook_deadline,
        )
        .with_read_receipts(!config.dry_run);
        let console = Console::new(
            extras.mount_path.as_deref().unwrap_or(""),
            store.clone(),
            registry.clone(),
            scripts.clone(),
            clock.clone(),
            outbox.clone(),
        );
        let state = AppState::new(
            &config,
            store.clone(),
            registry.clone(),
            clock,
            Arc::new(inbound),
            metrics_handle(),
        )
        .with_console(Arc::new(console));
        // Bound here, not in `serve`: a taken address fails the start, and the
        // address is known (port 0) before serving.
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::MetricsListen { addr, source })?,
            ),
            None => None,
        };
        Ok(App {
            config,
            state,
            store,
            registry,
            scripts,
            events: extras.events,
            outbox,
            sender,
            watcher,
            metrics_listener,
        })
    }

    /// What serving webhooks requires of `config`, checked before anything starts:
    /// a well-formed public URL, which only `dry_run` may go without (SPEC §7: a URL
    /// rebuilt from request headers lets a request signed for one address be
    /// replayed at another).
    pub fn check_serve_config(config: &Config) -> Result<(), StartError> {
        match &config.public_url {
            Some(url) => check_public_url(url),
            None if config.dry_run => Ok(()),
            None => Err(StartError::NoPublicUrl),
        }
    }

    /// The routes, to serve or to nest into another axum application.
    pub fn router(&self) -> Router {
        http::router(self.state.clone())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The sender, to run on its own (`switchboard send`) or step in tests.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where `/metrics` is served without a token (`config.metrics_listen`).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves HTTP on `listener` (and runs the sender when `run_sender`) until
    /// `shutdown` is cancelled, with the limits of `config.server`; then stops
    /// accepting, lets requests and sends in flight finish for a bounded time
    /// (`server.shutdown_grace` and `sender.shutdown_drain`, side by side), closes
    /// what is left and returns, well within 10 s.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        run_sender: bool,
    ) -> Result<(), StartError> {
        let sender = run_sender.then(|| tokio::spawn(self.sender.clone().run(shutdown.clone())));
        // Scheduled conversation starts (SPEC §9.1), on every instance that
        // serves: each start is claimed by one.
        let scheduler = tokio::spawn(self.state.outbound().run(shutdown.clone()));
        // Handoff notices (SPEC §10.2), on every instance that serves: each
        // notice is claimed by one.
        let handoff_notices = tokio::spawn(self.state.notifier().run(shutdown.clone()));
        // The NOTIFY task outlives the HTTP server a little, so replies queued by
        // the last requests still wake the other instances.
        let notify_stop = CancellationToken::new();
        let notifier = tokio::spawn(
            self.outbox
                .clone()
                .notify_other_instances(self.store.clone(), notify_stop.clone()),
        );
        let stopping = async {
            shutdown.cancelled().await;
            tokio::time::Instant::now()
        };
        // `/metrics` on its own address (`--metrics-listen`), with the same limits.
        let router = self.router();
        let metrics_listener = self.metrics_listener;
        let metrics_router = http::metrics_router(self.state.clone());
        let metrics = async {
            if let Some(listener) = metrics_listener {
                http::serve(
                    listener,
                    metrics_router,
                    &self.config.server,
                    shutdown.clone(),
                )
                .await;
            }
        };
        let (_, _, stopping) = tokio::join!(
            http::serve(listener, router, &self.config.server, shutdown.clone()),
            metrics,
            stopping
        );
        tracing::info!("HTTP server stopped");
        if tokio::time::timeout(STOP_STEP, scheduler).await.is_err() {
            tracing::warn!("the start scheduler did not stop in time; its claims will lapse");
        }
        if tokio::time::timeout(STOP_STEP, handoff_notices)
            .await
            .is_err()
        {
            tracing::warn!("the handoff notifier did not stop in time; its claims will lapse");
        }
        self.outbox.queued();
        if let Some(watcher) = self.watcher {
            if tokio::time::timeout(STOP_STEP, watcher.stop())
                .await
                .is_err()
            {
                tracing::warn!("the flows watcher did not stop in time");
            }
        }
        if let Some(sender) = sender {
            // The sender bounds its own drain (it began with the HTTP drain);
            // this is a backstop.
            let deadline = stopping + self.sender.drain_bound() + STOP_STEP;
            if tokio::time::timeout_at(deadline, sender).await.is_err() {
                tracing::warn!("sender did not stop in time; its leases will expire");
            }
        }
        tokio::time::sleep(NOTIFY_WINDOW * 2).await;
        notify_stop.cancel();
        let _ = tokio::time::timeout(STOP_STEP, notifier).await;
        if tokio::time::timeout(STOP_STEP, self.store.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections still in use at exit");
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Starts hot reload of the flows folder (SPEC §6). If native file events are
    /// unavailable (e.g. the inotify watch limit), falls back to polling rather than
    /// serving without reload; if that fails too, serves without reload.
    fn start_watcher(
        config: &Config,
        registry: &Arc<Registry>,
        scripts: &ScriptEngine,
        load: &LoadOptions,
    ) -> Option<flow::Watcher> {
        let options = WatchOptions {
            poll: config.watch_poll,
            load: load.clone(),
            ..WatchOptions::default()
        };
        let start = |options: WatchOptions| {
            flow::watch(&config.flows, registry.clone(), scripts.clone(), options)
        };
        match start(options.clone()) {
            Ok(watcher) => Some(watcher),
            Err(e) if !options.poll => {
                tracing::warn!("{e}; polling the flows folder instead");
                start(WatchOptions {
                    poll: true,
                    ..options
                })
                .inspect_err(|e| tracing::error!("{e}; bots will not reload on change"))
                .ok()
            }
            Err(e) => {
                tracing::error!("{e}; bots will not reload on change");
                None
            }
        }
    }

    /// The script engine the bots were loaded with (host functions included), for
    /// [`flow::check_flows`] or [`flow::load_bot`] on other folders.
    pub fn script_engine(&self) -> &ScriptEngine {
        &self.scripts
    }

    /// Runs the sender on a task of its own until `stop` is cancelled; await the
    /// handle to let the sends in flight finish.
    pub fn spawn_sender(&self, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.sender.clone().run(stop))
    }

    /// Events dropped so far because the event sink fell behind.
    pub fn events_dropped(&self) -> u64 {
        self.events.dropped()
    }

    /// Closes the database pool. Call after the router and the sender have stopped
    /// (`serve` and `run_sender` do it themselves).
    pub async fn close(self) {
        self.store.close().await;
    }

    /// Runs only the sender until `shutdown` is cancelled (`switchboard send`).
    pub async fn run_sender(self, shutdown: CancellationToken) {
        self.sender.clone().run(shutdown).await;
        if let Some(watcher) = self.watcher {
            watcher.stop().await;
        }
        self.store.close().await;
    }
}

/// The config and the bots loaded; the store, the sender and the HTTP state are
/// parts, not settings.
impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .field("backend", &self.store.backend())
            .field("bots", &self.registry.ids())
            .finish_non_exhaustive()
    }
}

/// The longest any one step of shutdown after the HTTP drain may take (stopping
/// the watcher, releasing the sender's rows, closing the pool), so a stop stays
/// under 10 s: 5 s for the HTTP drain and the sender's drain side by side, then
/// at most 1 s each for the sender's release, the NOTIFY task and the pool.
const STOP_STEP: Duration = Duration::from_secs(1);

/// How often recorded histogram samples are folded into their buckets.
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The Prometheus recorder is process-wide by the `metrics` crate's design: install
/// it once and share its handle between engines (tests run several).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Histogram samples pile up in the recorder until they are folded into
            // the buckets, which only upkeep (or a scrape) does: without this
            // thread a server nobody scrapes grows by every sample it records
            // (docs/decisions.md, "Found by the soak"). A thread, not a task: the
            // recorder outlives any one runtime (tests and embedders start several).
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(METRICS_UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            // Another recorder may already be installed by an embedding program; then
            // our handle renders nothing, which is better than failing to start.
            let _ = metrics::set_global_recorder(recorder);
            // Descriptions go to the installed recorder: only after installing it.
            describe_metrics();
            handle
        })
        .clone()
}

/// `# HELP` text for every metric the engine emits, wherever it is recorded.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "switchboard_webhooks_total",
        "Inbound webhooks by bot and outcome (processed, duplicate, bad_signature, unavailable, ...)"
    );
    describe_histogram!(
        "switchboard_webhook_seconds",
        Unit::Seconds,
        "Time to answer an inbound webhook, conversation step and commit included"
    );
    describe_gauge!(
        "switchboard_outbox_rows",
        "Outbox rows by status, read from the database when scraped"
    );
    describe_counter!(
        "switchboard_send_attempts_total",
        "Send attempts by bot, outcome (sent, retry, failed) and Twilio error code"
    );
    describe_histogram!(
        "switchboard_send_seconds",
        Unit::Seconds,
        "Duration of one request to Twilio's Messages API"
    );
    describe_histogram!(
        "switchboard_send_completion_batch_size",
        "Send outcomes recorded per database transaction (batched under load)"
    );
    describe_counter!(
        "switchboard_script_errors_total",
        "Flow and script errors by bot (the user got the bot's error_reply)"
    );
    describe_counter!(
        "switchboard_reloads_total",
        "Bot reloads by bot and outcome (ok, error: the last good version kept running)"
    );
    describe_counter!(
        "switchboard_outbox_notifies_total",
        "Coalesced NOTIFYs sent to wake senders in other instances"
    );
    describe_gauge!(
        "switchboard_sender_database_up",
        "0 while this process's sender cannot reach the database, 1 after it recovers"
    );
    describe_counter!(
        "switchboard_message_failures_total",
        "Messages that failed for good, by bot and code: a Twilio error code (other: not in the engine's table; none: no code), whether Twilio refused the send or reported it in a status callback, or opted_out for rows not sent because the contact opted out"
    );
    describe_counter!(
        "switchboard_opt_outs_total",
        "Contacts who opted out, by bot and via (message: a stop word; twilio: a send refused with 21610)"
    );
    describe_counter!(
        "switchboard_opt_ins_total",
        "Contacts who opted back in with a start word, by bot"
    );
}
