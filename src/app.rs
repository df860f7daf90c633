//! Assembling an engine: connect and migrate the store, load the bots, and run the
//! HTTP server and the sender until told to stop.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::conversation::Runtime;
use crate::flow::{self, LoadOptions, Registry, Severity, WatchOptions};
use crate::http::{self, AppState};
use crate::inbound::ContactLocks;
use crate::script::{Limits, ReqwestScriptHttp, ScriptEngine, SystemClock};
use crate::sender::Sender;
use crate::store::{Store, StoreError};

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("flows folder {0} does not exist: create it or pass --flows DIR")]
    NoFlows(String),
    #[error("could not serve HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// A running engine's parts: store, bots, HTTP state and sender.
pub struct App {
    config: Config,
    state: AppState,
    sender: Sender,
    /// Hot reload, while `config.watch`; stopped when the app stops or is dropped.
    watcher: Option<flow::Watcher>,
}

impl App {
    /// Connects, migrates and loads the flows, with the real HTTP client and clock.
    pub async fn new(config: Config) -> Result<App, StartError> {
        let scripts = ScriptEngine::new(Limits::default());
        let runtime = Runtime {
            http: Arc::new(ReqwestScriptHttp::new(tokio::runtime::Handle::current())),
            scripts,
            clock: Arc::new(SystemClock),
        };
        App::with_runtime(config, runtime).await
    }

    /// Like [`App::new`], with the script engine, script HTTP client and clock given.
    pub async fn with_runtime(config: Config, runtime: Runtime) -> Result<App, StartError> {
        if !config.flows.is_dir() {
            return Err(StartError::NoFlows(config.flows.display().to_string()));
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

        let wake = Arc::new(Notify::new());
        let sender = Sender::new(
            store.clone(),
            registry.clone(),
            runtime.clock.clone(),
            config.sender.clone(),
            wake.clone(),
            config.dry_run,
            config.public_url.clone(),
        );
        let state = AppState {
            store,
            registry,
            runtime,
            locks: Arc::new(ContactLocks::default()),
            wake,
            public_url: config.public_url.clone(),
            dry_run: config.dry_run,
            admin_token: config.admin_token.clone(),
            metrics: metrics_handle(),
        };
        Ok(App {
            config,
            state,
            sender,
            watcher,
        })
    }

    /// The routes, to serve or to nest into another axum application.
    pub fn router(&self) -> Router {
        http::router(self.state.clone())
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.state.registry
    }

    /// The sender, to run on its own (`switchboard send`) or step in tests.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves HTTP on `listener` (and runs the sender when `run_sender`) until
    /// `shutdown` is cancelled; then stops accepting, finishes requests in flight and
    /// lets sends in flight finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        run_sender: bool,
    ) -> Result<(), StartError> {
        let sender = run_sender.then(|| tokio::spawn(self.sender.clone().run(shutdown.clone())));
        let router = self.router();
        let stop = shutdown.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await?;
        if let Some(watcher) = self.watcher {
            watcher.stop().await;
        }
        if let Some(sender) = sender {
            let bound = self.config.sender.request_timeout + Duration::from_secs(5);
            if tokio::time::timeout(bound, sender).await.is_err() {
                tracing::warn!("sender did not stop in time; its leases will expire");
            }
        }
        self.state.store.close().await;
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

    /// Runs only the sender until `shutdown` is cancelled (`switchboard send`).
    pub async fn run_sender(self, shutdown: CancellationToken) {
        self.sender.clone().run(shutdown).await;
        if let Some(watcher) = self.watcher {
            watcher.stop().await;
        }
        self.state.store.close().await;
    }
}

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
            // Another recorder may already be installed by an embedding program; then
            // our handle renders nothing, which is better than failing to start.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
