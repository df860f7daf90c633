//! Hot reload: watches the flows folder and reloads the bots a change touches.
//!
//! notify's events (native, or a `PollWatcher` for file systems that send none) are
//! debounced by `notify-debouncer-full`, so bursts of saves and editors' write-temp-
//! then-rename arrive as one batch. A batch is mapped to the bot folders it touches
//! and only those are reloaded, off the async runtime; each result is swapped into
//! the [`Registry`] whole. A bot whose new files fail keeps serving its last good
//! version and shows the errors until a later save fixes them.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, PollWatcher, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    new_debouncer_opt, DebounceEventResult, Debouncer, NoCache, RecommendedCache,
};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::files::is_ignored;
use super::{load_bot, LoadOptions, Registry};
use crate::domain::{BotId, Diagnostic, Severity};
use crate::script::ScriptEngine;

/// How to watch: native events or polling, and the timings.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Poll the folder instead of asking the OS for events (`--watch-poll`).
    pub poll: bool,
    /// Quiet time after the last event before a batch is reloaded.
    pub debounce: Duration,
    /// How often the polling watcher looks at the files.
    pub poll_interval: Duration,
    /// Passed to [`load_bot`] for every reload.
    pub load: LoadOptions,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            poll: false,
            debounce: Duration::from_millis(150),
            poll_interval: Duration::from_millis(400),
            load: LoadOptions::default(),
        }
    }
}

/// Why the watcher could not start. Logged with `{}` (the engine then polls or
/// serves without reload), so the cause is printed, not returned as `source`.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch flows folder {path}: {error}")]
    Watch { path: PathBuf, error: notify::Error },
    #[error("flows folder {path} is not readable: {error}")]
    Flows {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// What one reload of one bot did.
#[derive(Debug, Clone)]
pub struct Reload {
    pub bot: BotId,
    pub outcome: ReloadOutcome,
    /// Time spent loading and swapping (not the debounce wait).
    pub took: Duration,
}

/// The result of reloading one bot folder.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    /// The new version is serving.
    Loaded,
    /// The new files failed; the last good version (if any) keeps serving.
    Failed(Vec<Diagnostic>),
    /// The folder is gone; so is the bot.
    Removed,
}

/// Which bots a batch of changed paths touches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Touched {
    /// Reload every bot: the flows folder itself changed, or events were lost.
    pub all: bool,
    pub bots: BTreeSet<BotId>,
}

impl Touched {
    /// Adds the bot `path` belongs to, unless the path is one to ignore.
    pub fn add(&mut self, flows: &Path, path: &Path) {
        let Ok(relative) = path.strip_prefix(flows) else {
            return;
        };
        let mut names = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(name) => names.push(name.to_string_lossy()),
                // `..` or an absolute path inside: not ours to interpret.
                _ => return,
            }
        }
        let Some(first) = names.first() else {
            self.all = true;
            return;
        };
        // A hidden folder anywhere in the path, or an editor's file.
        if names.iter().any(|name| name.starts_with('.'))
            || names.last().is_some_and(|name| is_ignored(name))
        {
            return;
        }
        match BotId::parse(first) {
            Some(id) => {
                self.bots.insert(id);
            }
            None => tracing::debug!(folder = %first, "change outside any bot folder ignored"),
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.bots.is_empty()
    }
}

/// Whether an event can mean changed contents. Opening and reading files is not a
/// change, and must not count: reloading a bot opens its files, which would
/// otherwise trigger the next reload, forever.
pub fn changes_files(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Other => false,
    }
}

/// The debouncer, kept only so that dropping it stops the OS watch and its thread.
enum Backend {
    Native {
        _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    },
    Poll {
        _debouncer: Debouncer<PollWatcher, NoCache>,
    },
}

/// A running watcher. Dropping it stops watching (a reload under way finishes);
/// [`Watcher::stop`] also waits for that reload.
pub struct Watcher {
    backend: Option<Backend>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    reloads: broadcast::Sender<Reload>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.backend {
            Some(Backend::Native { .. }) => "native",
            Some(Backend::Poll { .. }) => "poll",
            None => "stopped",
        };
        f.debug_struct("Watcher").field("mode", &mode).finish()
    }
}

impl Watcher {
    /// Every reload from now on, as it completes (`chat` says so; tests wait on it).
    pub fn subscribe(&self) -> broadcast::Receiver<Reload> {
        self.reloads.subscribe()
    }

    /// Stops watching and waits for a reload under way to finish.
    pub async fn stop(mut self) {
        self.backend.take();
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts watching `flows` (recursively) and reloading into `registry`. Must be
/// called inside a tokio runtime.
pub fn watch(
    flows: &Path,
    registry: Arc<Registry>,
    engine: ScriptEngine,
    options: WatchOptions,
) -> Result<Watcher, WatchError> {
    // Events carry the watched path as prefix; a canonical one maps them reliably.
    // Bots are still loaded through the path as given, so that diagnostics name
    // files the same way the first load did.
    let watched = flows.canonicalize().map_err(|error| WatchError::Flows {
        path: flows.to_path_buf(),
        error,
    })?;
    let (tx, rx) = mpsc::unbounded_channel::<DebounceEventResult>();
    let handler = move |result: DebounceEventResult| {
        let _ = tx.send(result);
    };
    let watch_error = |error| WatchError::Watch {
        path: flows.to_path_buf(),
        error,
    };
    let backend = if options.poll {
        let config = notify::Config::default()
            .with_poll_interval(options.poll_interval)
            // Poll mtimes have one-second resolution: compare contents too, or two
            // saves within a second look like one.
            .with_compare_contents(true);
        let mut debouncer = new_debouncer_opt::<_, PollWatcher, NoCache>(
            options.debounce,
            None,
            handler,
            NoCache,
            config,
        )
        .map_err(watch_error)?;
        debouncer
            .watch(&watched, RecursiveMode::Recursive)
            .map_err(watch_error)?;
        Backend::Poll {
            _debouncer: debouncer,
        }
    } else {
        let mut debouncer = new_debouncer_opt::<_, RecommendedWatcher, RecommendedCache>(
            options.debounce,
            None,
            handler,
            RecommendedCache::new(),
            notify::Config::default(),
        )
        .map_err(watch_error)?;
        debouncer
            .watch(&watched, RecursiveMode::Recursive)
            .map_err(watch_error)?;
        Backend::Native {
            _debouncer: debouncer,
        }
    };
    tracing::info!(flows = %watched.display(), poll = options.poll, "watching flows for changes");

    let (reloads, _) = broadcast::channel(256);
    let stop = CancellationToken::new();
    let reloader = Reloader {
        flows: flows.to_path_buf(),
        watched,
        registry,
        engine,
        load: options.load,
        reloads: reloads.clone(),
    };
    let task = tokio::spawn(reloader.run(rx, stop.clone()));
    Ok(Watcher {
        backend: Some(backend),
        stop,
        task: Some(task),
        reloads,
    })
}

/// Turns batches of events into reloads, one batch at a time so that two reloads
/// of the same bot never race.
#[derive(Clone)]
struct Reloader {
    /// The flows folder as configured: bots are loaded from here.
    flows: PathBuf,
    /// Its canonical path: events are mapped against this.
    watched: PathBuf,
    registry: Arc<Registry>,
    engine: ScriptEngine,
    load: LoadOptions,
    reloads: broadcast::Sender<Reload>,
}

impl Reloader {
    async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<DebounceEventResult>,
        stop: CancellationToken,
    ) {
        loop {
            let batch = tokio::select! {
                () = stop.cancelled() => return,
                batch = rx.recv() => match batch {
                    Some(batch) => batch,
                    None => return,
                },
            };
            let mut touched = Touched::default();
            self.collect(batch, &mut touched);
            // Batches that queued up while the last reload ran are merged into one.
            while let Ok(batch) = rx.try_recv() {
                self.collect(batch, &mut touched);
            }
            if touched.is_empty() {
                continue;
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload(touched)).await {
                Ok(done) => {
                    for reload in done {
                        let _ = self.reloads.send(reload);
                    }
                }
                Err(e) => tracing::error!("reload task failed: {e}"),
            }
        }
    }

    fn collect(&self, batch: DebounceEventResult, touched: &mut Touched) {
        match batch {
            Ok(events) => {
                for event in events {
                    if event.need_rescan() {
                        touched.all = true;
                    }
                    if !changes_files(&event.kind) {
                        continue;
                    }
                    for path in &event.paths {
                        touched.add(&self.watched, path);
                    }
                }
            }
            Err(errors) => {
                for error in errors {
                    tracing::warn!("file watcher error: {error}");
                }
                // An error may mean lost events: look at everything again.
                touched.all = true;
            }
        }
    }

    /// Synchronous file I/O and compiling: runs on a blocking thread.
    fn reload(&self, touched: Touched) -> Vec<Reload> {
        let mut ids = touched.bots;
        if touched.all {
            ids.extend(self.registry.status().into_iter().map(|s| s.id));
            ids.extend(super::bot_ids(&self.flows));
        }
        ids.into_iter()
            .filter_map(|id| self.reload_bot(id))
            .collect()
    }

    /// Reloads one bot folder and logs what happened: each problem found on a
    /// line of its own, then exactly one line for the outcome, whose words match
    /// it (`bot reloaded` only when the new version is serving).
    fn reload_bot(&self, id: BotId) -> Option<Reload> {
        let started = Instant::now();
        let dir = self.flows.join(id.as_str());
        // A folder named `tests` is a bot only with a bot.yaml (as at first load).
        let outcome = if !dir.is_dir() || super::load::is_tests_folder(&dir) {
            if !self.registry.knows(&id) {
                return None;
            }
            self.registry.remove(&id);
            ReloadOutcome::Removed
        } else {
            match load_bot(&dir, &self.engine, &self.load) {
                Ok(bot) => {
                    for warning in &bot.warnings {
                        tracing::warn!(bot = %id, "{warning}");
                    }
                    self.registry.set_bot(bot);
                    ReloadOutcome::Loaded
                }
                Err(diagnostics) => {
                    for diagnostic in &diagnostics {
                        match diagnostic.severity {
                            Severity::Error => tracing::error!(bot = %id, "{diagnostic}"),
                            Severity::Warning => tracing::warn!(bot = %id, "{diagnostic}"),
                        }
                    }
                    self.registry.set_errors(id.clone(), diagnostics.clone());
                    ReloadOutcome::Failed(diagnostics)
                }
            }
        };
        let took = started.elapsed();
        let label = match outcome {
            ReloadOutcome::Loaded => "ok",
            ReloadOutcome::Failed(_) => "error",
            ReloadOutcome::Removed => "removed",
        };
        metrics::counter!(
            "switchboard_reloads_total",
            "bot" => id.to_string(),
            "outcome" => label,
        )
        .increment(1);
        let took_ms = took.as_secs_f64() * 1e3;
        match &outcome {
            ReloadOutcome::Loaded => {
                tracing::info!(bot = %id, outcome = label, took_ms, "bot reloaded");
            }
            ReloadOutcome::Failed(diagnostics) => {
                let errors = diagnostics.iter().filter(|d| d.is_error()).count();
                if self.registry.get(id.as_str()).is_some() {
                    tracing::error!(bot = %id, outcome = label, errors, took_ms,
                        "reload failed, the last good version keeps serving");
                } else {
                    tracing::error!(bot = %id, outcome = label, errors, took_ms,
                        "bot failed to load, it is not serving until its errors are fixed");
                }
            }
            ReloadOutcome::Removed => {
                tracing::info!(bot = %id, outcome = label, "bot removed: its folder is gone");
            }
        }
        Some(Reload {
            bot: id,
            outcome,
            took,
        })
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RemoveKind};

    use super::*;

    fn touched(paths: &[&str]) -> Touched {
        let flows = Path::new("/srv/flows");
        let mut touched = Touched::default();
        for path in paths {
            touched.add(flows, &flows.join(path));
        }
        touched
    }

    fn ids(touched: &Touched) -> Vec<&str> {
        touched.bots.iter().map(BotId::as_str).collect()
    }

    #[test]
    fn paths_map_to_the_bot_folder_they_are_in() {
        let t = touched(&[
            "shop/nodes.yaml",
            "shop/bot.yaml",
            "kibo-auto/scripts/quote.rhai",
            "new_bot",
        ]);
        assert!(!t.all);
        assert_eq!(ids(&t), ["kibo-auto", "new_bot", "shop"]);
    }

    #[test]
    fn editor_junk_hidden_files_and_non_bot_names_are_ignored() {
        let t = touched(&[
            "shop/.nodes.yaml.swp",
            "shop/nodes.yaml~",
            "shop/nodes.yaml.swx",
            "shop/4913",
            "shop/#nodes.yaml#",
            "shop/nodes.yaml.tmp",
            "shop/nodes.yaml___jb_tmp___",
            "shop/.git/index",
            ".hidden/bot.yaml",
            "README.md",
            "Not A Bot/bot.yaml",
        ]);
        assert!(t.is_empty(), "{t:?}");
        assert!(touched(&[]).is_empty());
    }

    #[test]
    fn reading_files_is_not_a_change() {
        assert!(!changes_files(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_files(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!changes_files(&EventKind::Other));
        assert!(changes_files(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_files(&EventKind::Modify(ModifyKind::Any)));
        assert!(changes_files(&EventKind::Create(CreateKind::Folder)));
        assert!(changes_files(&EventKind::Remove(RemoveKind::Any)));
    }

    #[test]
    fn a_rename_over_counts_by_its_destination() {
        // Editors write `nodes.yaml.tmp` and rename it over `nodes.yaml`.
        let t = touched(&["shop/nodes.yaml.tmp", "shop/nodes.yaml"]);
        assert_eq!(ids(&t), ["shop"]);
    }

    fn reloader(flows: &Path) -> Reloader {
        Reloader {
            flows: flows.to_path_buf(),
            watched: flows.to_path_buf(),
            registry: Arc::new(Registry::new()),
            engine: ScriptEngine::default(),
            load: LoadOptions {
                allow_missing_credentials: true,
                ..LoadOptions::default()
            },
            reloads: broadcast::channel(4).0,
        }
    }

    /// The lines of `log` that state a reload's outcome.
    fn outcome_lines(log: &str) -> Vec<&str> {
        log.lines().filter(|l| l.contains("outcome=")).collect()
    }

    #[test]
    fn each_reload_logs_one_outcome_line_that_says_what_happened() {
        let flows = tempfile::tempdir().unwrap();
        let shop = flows.path().join("shop");
        std::fs::create_dir(&shop).unwrap();
        std::fs::write(shop.join("bot.yaml"), "name: Shop\n").unwrap();
        std::fs::write(shop.join("menus.yaml"), "main:\n  say: v1\n").unwrap();
        let reloader = reloader(flows.path());
        let id = |name: &str| BotId::parse(name).unwrap();

        let (reload, log) = crate::logging::capture(|| reloader.reload_bot(id("shop")));
        assert_eq!(reload.unwrap().outcome, ReloadOutcome::Loaded);
        let lines = outcome_lines(&log);
        assert_eq!(lines.len(), 1, "{log}");
        assert!(
            lines[0].contains("bot reloaded") && lines[0].contains("outcome=\"ok\""),
            "{log}"
        );

        // A broken save: the error on its line, then one line saying the old version serves.
        std::fs::write(shop.join("menus.yaml"), "main:\n  goto: nowhere\n").unwrap();
        let (reload, log) = crate::logging::capture(|| reloader.reload_bot(id("shop")));
        assert!(matches!(reload.unwrap().outcome, ReloadOutcome::Failed(_)));
        let lines = outcome_lines(&log);
        assert_eq!(lines.len(), 1, "{log}");
        assert!(
            lines[0].contains("reload failed, the last good version keeps serving")
                && lines[0].contains("outcome=\"error\"")
                && lines[0].contains("errors=1"),
            "{log}"
        );
        assert!(!log.contains("reloaded"), "{log}");
        assert!(
            log.lines()
                .any(|l| l.contains("ERROR") && l.contains("unknown node `nowhere`")),
            "{log}"
        );

        // A new bot that never loaded has no last good version to keep serving.
        let draft = flows.path().join("draft");
        std::fs::create_dir(&draft).unwrap();
        std::fs::write(draft.join("menus.yaml"), "main:\n  say: hi\n").unwrap();
        let (_, log) = crate::logging::capture(|| reloader.reload_bot(id("draft")));
        let lines = outcome_lines(&log);
        assert_eq!(lines.len(), 1, "{log}");
        assert!(
            lines[0].contains("bot failed to load, it is not serving"),
            "{log}"
        );
        assert!(
            !log.contains("last good version") && !log.contains("reloaded"),
            "{log}"
        );

        std::fs::remove_dir_all(&shop).unwrap();
        let (reload, log) = crate::logging::capture(|| reloader.reload_bot(id("shop")));
        assert_eq!(reload.unwrap().outcome, ReloadOutcome::Removed);
        let lines = outcome_lines(&log);
        assert_eq!(lines.len(), 1, "{log}");
        assert!(
            lines[0].contains("bot removed") && lines[0].contains("outcome=\"removed\""),
            "{log}"
        );
        assert!(!log.contains("reloaded"), "{log}");
    }

    #[test]
    fn a_tests_folder_without_bot_yaml_is_never_reloaded_as_a_bot() {
        let flows = tempfile::tempdir().unwrap();
        let tests = flows.path().join("tests");
        std::fs::create_dir(&tests).unwrap();
        std::fs::write(
            tests.join("a.yaml"),
            "name: a\nsteps:\n  - user: hi\n---\nname: b\n",
        )
        .unwrap();
        let reloader = reloader(flows.path());
        assert!(reloader
            .reload_bot(BotId::parse("tests").unwrap())
            .is_none());
        assert!(crate::flow::bot_ids(flows.path()).is_empty());
    }

    #[test]
    fn the_flows_folder_itself_means_everything_and_outside_paths_nothing() {
        let mut t = Touched::default();
        t.add(Path::new("/srv/flows"), Path::new("/srv/flows"));
        assert!(t.all);
        assert!(!t.is_empty());

        let mut t = Touched::default();
        t.add(
            Path::new("/srv/flows"),
            Path::new("/srv/other/shop/bot.yaml"),
        );
        t.add(
            Path::new("/srv/flows"),
            Path::new("/srv/flows/../x/bot.yaml"),
        );
        assert!(t.is_empty());
    }
}
