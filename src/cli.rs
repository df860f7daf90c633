//! The `switchboard` command line: flags and environment variables (SPEC §1),
//! turned into a [`Config`] and a command to run.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::chat::{ChatSession, Input};
use crate::config::{redact_url, Config, SenderConfig, ServerLimits};
use crate::domain::{BotId, InvalidBotId, Secret, Severity};
use crate::flow::{self, Graph, GraphFormat, LoadOptions, LoadedFlows};
use crate::script::{Limits, ReqwestScriptHttp, ScriptEngine, ScriptHttp, StubHttp};
use crate::store::Store;
use crate::transcript;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A chatbot engine for WhatsApp and SMS over Twilio"
)]
pub struct Cli {
    /// Log format; verbosity comes from RUST_LOG (default: info).
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// How contacts appear in the log: `hash` (c: and 8 hex digits of the
    /// address's SHA-256) or `full` (the number).
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_LOG_CONTACTS",
        default_value = "hash"
    )]
    pub log_contacts: LogContacts,

    #[command(subcommand)]
    pub command: Command,
}

pub use crate::logging::{LogContacts, LogFormat};

/// `--format` of `switchboard graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormatArg {
    Mermaid,
    Dot,
}

impl From<GraphFormatArg> for GraphFormat {
    fn from(format: GraphFormatArg) -> GraphFormat {
        match format {
            GraphFormatArg::Mermaid => GraphFormat::Mermaid,
            GraphFormatArg::Dot => GraphFormat::Dot,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server and the sender task.
    Serve(ServeArgs),
    /// Run only the sender task (a scale-out role; `serve --no-sender` is the other half).
    Send(EngineArgs),
    /// Validate every bot in PATH (a flows folder, or one bot's folder); exit 1 if any has an error.
    Check {
        /// The flows folder (one folder per bot), or one bot's folder (it holds bot.yaml).
        #[arg(
            env = "SWITCHBOARD_FLOWS",
            default_value = "./flows",
            value_name = "PATH"
        )]
        flows: PathBuf,
    },
    /// Run the transcript tests in each bot's tests/ folder, offline; exit 1 if any fails.
    Test {
        /// The flows folder (one folder per bot), or one bot's folder (it holds bot.yaml).
        #[arg(
            env = "SWITCHBOARD_FLOWS",
            default_value = "./flows",
            value_name = "PATH"
        )]
        flows: PathBuf,
        /// Only the tests of this bot.
        #[arg(long, value_name = "ID")]
        bot: Option<String>,
    },
    /// Print a bot's nodes and links as a Mermaid flowchart (default) or Graphviz DOT.
    Graph {
        /// The bot's id (its folder name), or the path of its folder.
        bot: String,
        /// The flows folder.
        #[arg(long, env = "SWITCHBOARD_FLOWS", default_value = "./flows")]
        flows: PathBuf,
        /// `mermaid` (paste into Markdown or mermaid.live) or `dot` (`dot -Tsvg`).
        #[arg(long, value_enum, default_value = "mermaid")]
        format: GraphFormatArg,
    },
    /// Talk to a bot in the terminal: no Twilio, no database; reloads on file change.
    Chat {
        /// The bot's id (its folder name).
        bot: String,
        /// The flows folder.
        #[arg(long, env = "SWITCHBOARD_FLOWS", default_value = "./flows")]
        flows: PathBuf,
        /// Answer script HTTP calls from this YAML file (the format of a test's
        /// `http:`) instead of calling the real hosts.
        #[arg(long, value_name = "FILE")]
        stubs: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// sqlite://PATH (created if missing) or postgres://...
        #[arg(
            long,
            env = "DATABASE_URL",
            hide_env_values = true,
            default_value = "sqlite://switchboard.db"
        )]
        database_url: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Address to listen on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Bearer token of the admin API (/api/*); without it the admin API answers 403.
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Also serve /metrics, without a token, on this address (keep it private);
    /// otherwise /metrics needs the admin token.
    #[arg(long, env = "SWITCHBOARD_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Do not run the sender in this process (run `switchboard send` elsewhere).
    #[arg(long)]
    pub no_sender: bool,
    /// Connections open at once; more wait in the listen backlog until one closes.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Poll the flows folder instead of using file-system events.
    #[arg(long, env = "SWITCHBOARD_WATCH_POLL", value_parser = parse_bool_flag, default_value = "0", num_args = 0, default_missing_value = "1")]
    pub watch_poll: bool,
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// The flows folder: one sub-folder per bot.
    #[arg(long, env = "SWITCHBOARD_FLOWS", default_value = "./flows")]
    pub flows: PathBuf,
    /// sqlite://PATH (created if missing) or postgres://...
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://switchboard.db"
    )]
    pub database_url: String,
    /// The public base URL Twilio calls, e.g. https://bots.example.com: signatures are
    /// checked over it and StatusCallback URLs built from it. Required by `serve`
    /// unless --dry-run (which then rebuilds it from X-Forwarded-Proto/X-Forwarded-Host/Host).
    #[arg(long, env = "SWITCHBOARD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Record and log outgoing messages without calling Twilio; bots may lack credentials.
    #[arg(long, env = "SWITCHBOARD_DRY_RUN", value_parser = parse_bool_flag, default_value = "0", num_args = 0, default_missing_value = "1")]
    pub dry_run: bool,
    /// Send attempts before a reply is marked failed.
    #[arg(long, env = "SWITCHBOARD_MAX_ATTEMPTS", default_value_t = 10)]
    pub max_attempts: u32,
    /// Seconds a sender's claim on a reply lasts unless renewed (renewed every third
    /// of it while the send runs): after a crash, another sender takes it then.
    #[arg(long, env = "SWITCHBOARD_LEASE_SECS", default_value_t = crate::config::DEFAULT_LEASE_SECS)]
    pub lease_secs: u64,
    /// Days sent and failed replies (and inbound messages) are kept; fractions
    /// allowed (0.5 = 12 hours).
    #[arg(long, env = "SWITCHBOARD_RETENTION_DAYS", default_value_t = 30.0, value_parser = parse_retention_days)]
    pub retention_days: f64,
}

/// A positive number of days, at most a century.
fn parse_retention_days(value: &str) -> Result<f64, String> {
    let days: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a number of days: use e.g. 30 or 0.5"))?;
    if !(days > 0.0 && days <= 36_500.0) {
        return Err(format!(
            "`{value}`: the retention must be more than 0 and at most 36500 days"
        ));
    }
    Ok(days)
}

/// Accepts 1/0, true/false, yes/no, on/off for boolean env variables.
fn parse_bool_flag(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("`{other}` is not a boolean: use 1 or 0")),
    }
}

impl EngineArgs {
    fn config(&self) -> Config {
        Config {
            flows: self.flows.clone(),
            database_url: self.database_url.clone(),
            public_url: self
                .public_url
                .clone()
                .map(|u| u.trim_end_matches('/').to_owned()),
            dry_run: self.dry_run,
            admin_token: None,
            watch_poll: false,
            watch: true,
            webhook_deadline: crate::config::DEFAULT_WEBHOOK_DEADLINE,
            metrics_listen: None,
            sender: SenderConfig {
                max_attempts: self.max_attempts.max(1),
                lease: Duration::from_secs(self.lease_secs.max(1)),
                retention: Duration::from_secs_f64(self.retention_days * 24.0 * 3600.0),
                ..SenderConfig::default()
            },
            server: ServerLimits::default(),
        }
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let mut config = args.engine.config();
            config.admin_token = args.admin_token.filter(|t| !t.is_empty()).map(Secret::new);
            config.watch_poll = args.watch_poll;
            config.metrics_listen = args.metrics_listen;
            config.server.max_connections = args.max_connections as usize;
            if config.dry_run {
                tracing::warn!(
                    "--dry-run: replies are recorded and marked sent, Twilio is never called"
                );
            }
            App::check_serve_config(&config)?;
            let app = App::builder(config).build().await?;
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("could not listen on {}", args.listen))?;
            tracing::info!(address = %listener.local_addr()?, "listening");
            if let Some(address) = app.metrics_addr() {
                tracing::info!(%address, "serving /metrics without a token");
            }
            app.serve(listener, shutdown_signal(), !args.no_sender)
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Send(args) => {
            let config = args.config();
            if config.public_url.is_none() && !config.dry_run {
                tracing::warn!("no --public-url: replies are sent without a StatusCallback, so their delivered/read/failed statuses are not recorded; pass the URL `serve` uses");
            }
            let app = App::builder(config).build().await?;
            tracing::info!("sender running");
            app.run_sender(shutdown_signal()).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { flows } => Ok(check(&flows)),
        // Scripts block (and `chat` reads stdin): both run off the async workers.
        Command::Test { flows, bot } => {
            Ok(tokio::task::spawn_blocking(move || test(&flows, bot.as_deref())).await?)
        }
        Command::Chat { bot, flows, stubs } => {
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || chat(&flows, &bot, stubs.as_deref(), runtime))
                .await?
        }
        Command::Graph { bot, flows, format } => Ok(graph(&flows, &bot, format.into())),
        Command::Migrate { database_url } => {
            let store = Store::connect(&database_url).await?;
            store.migrate().await?;
            store.close().await;
            println!("migrations applied to {}", redact_url(&database_url));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How `check`, `test` and `chat` load bots: unset `${VAR}`s in `twilio:` are
/// warnings (SPEC §3).
fn authoring_options() -> LoadOptions {
    LoadOptions {
        allow_missing_credentials: true,
        ..LoadOptions::default()
    }
}

/// `switchboard check`: every diagnostic, then a summary; exit 1 on errors.
fn check(path: &Path) -> ExitCode {
    let engine = ScriptEngine::new(Limits::default());
    let loaded = flow::load_path(path, &engine, &authoring_options());
    if let Some(problem) = no_bots(path, &loaded) {
        println!("{problem}");
        return ExitCode::FAILURE;
    }
    let diagnostics = loaded.all_diagnostics();
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    for diagnostic in &diagnostics {
        println!("{diagnostic}\n");
    }
    if errors > 0 {
        println!("{errors} error(s), {warnings} warning(s)");
        ExitCode::FAILURE
    } else {
        println!("ok: no errors, {warnings} warning(s)");
        ExitCode::SUCCESS
    }
}

/// The message when `path` held no bot at all and nothing else was wrong (a
/// folder that exists but is neither a bot nor a folder of bots).
fn no_bots(path: &Path, loaded: &LoadedFlows) -> Option<String> {
    let empty = loaded.bots.is_empty()
        && loaded.diagnostics.is_empty()
        && !loaded.other.iter().any(|d| d.is_error());
    empty.then(|| {
        format!(
            "error: no bots in {}\n  = hint: give a flows folder (one folder per bot, each with a bot.yaml) or one bot's folder; a bot folder needs a bot.yaml",
            path.display()
        )
    })
}

/// `switchboard test`: one line per test, the failures in detail, a summary; exit 1
/// when a test fails, a bot or test file does not load, or there are no tests at all.
fn test(flows: &Path, only: Option<&str>) -> ExitCode {
    let engine = ScriptEngine::new(Limits::default());
    let loaded = flow::load_path(flows, &engine, &authoring_options());
    if let Some(problem) = no_bots(flows, &loaded) {
        println!("{problem}");
        return ExitCode::FAILURE;
    }
    let mut broken = 0;
    for d in loaded.other.iter().filter(|d| d.is_error()) {
        println!("{d}\n");
        broken += 1;
    }
    let mut ids: Vec<BotId> = loaded
        .bots
        .keys()
        .chain(loaded.diagnostics.keys())
        .cloned()
        .collect();
    ids.sort();
    ids.dedup();
    if let Some(only) = only {
        ids.retain(|id| id.as_str() == only);
        if ids.is_empty() {
            println!(
                "error: no bot `{only}` in {} (bots: {})",
                flows.display(),
                loaded
                    .bots
                    .keys()
                    .map(BotId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return ExitCode::FAILURE;
        }
    }
    let (mut passed, mut failed) = (0, 0);
    for id in &ids {
        let Some(bot) = loaded.bots.get(id) else {
            for d in loaded.diagnostics.get(id).into_iter().flatten() {
                if d.is_error() {
                    println!("{d}\n");
                }
            }
            println!("error: bot `{id}` does not load; its tests were not run\n");
            broken += 1;
            continue;
        };
        let report = transcript::run_bot_tests(bot, &engine);
        for d in &report.errors {
            println!("{d}\n");
        }
        broken += report.errors.len();
        if report.results.is_empty() && report.errors.is_empty() {
            println!(
                "{id}: no transcript tests (add some in {})",
                bot.dir.join("tests").display()
            );
        }
        for result in &report.results {
            match &result.failure {
                None => println!("ok      {id}: {}", result.name),
                Some(_) => println!("FAILED  {id}: {}", result.name),
            }
            for line in result
                .notes
                .iter()
                .chain(&result.failure)
                .flat_map(|t| t.lines())
            {
                println!("    {line}");
            }
        }
        passed += report.passed();
        failed += report.failed();
    }
    println!();
    if broken > 0 {
        println!("{passed} passed, {failed} failed, {broken} file(s) with errors");
        return ExitCode::FAILURE;
    }
    if passed + failed == 0 {
        println!("error: no transcript tests found in {}", flows.display());
        println!("  = hint: write them in <bot>/tests/*.yaml; see docs/transcript-tests.md");
        return ExitCode::FAILURE;
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `switchboard chat`: stdin to the bot, replies to stdout.
fn chat(
    flows: &Path,
    bot: &str,
    stubs: Option<&Path>,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<ExitCode> {
    let id = BotId::parse(bot).ok_or_else(|| InvalidBotId(bot.to_owned()))?;
    let http: Arc<dyn ScriptHttp> = match stubs {
        Some(file) => match transcript::read_stubs(file) {
            Ok(stubs) => Arc::new(StubHttp::from_stubs(&stubs)),
            Err(errors) => {
                for d in &errors {
                    eprintln!("{d}\n");
                }
                return Ok(ExitCode::FAILURE);
            }
        },
        None => Arc::new(ReqwestScriptHttp::new(runtime)),
    };
    let engine = ScriptEngine::new(Limits::default());
    let mut session = match ChatSession::start(flows, id.as_str(), engine, http) {
        Ok(session) => session,
        Err(diagnostics) => {
            for d in diagnostics.iter().filter(|d| d.is_error()) {
                eprintln!("{d}\n");
            }
            eprintln!("error: bot `{id}` does not load");
            return Ok(ExitCode::FAILURE);
        }
    };
    let stdin = std::io::stdin();
    let from = if stdin.is_terminal() {
        Input::Terminal
    } else {
        Input::Piped
    };
    session.run(
        stdin.lock(),
        from,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `switchboard graph`: the bot's graph on stdout; exit 1 when it is unknown or
/// does not load. `bot` is an id under `flows`, or the path of a bot folder.
fn graph(flows: &Path, bot: &str, format: GraphFormat) -> ExitCode {
    let as_path = Path::new(bot);
    let dir = if BotId::parse(bot).is_none() && as_path.join("bot.yaml").is_file() {
        as_path.to_path_buf()
    } else {
        flows.join(bot)
    };
    if !dir.join("bot.yaml").is_file() {
        eprintln!("{}", flow::unknown_bot(flows, bot));
        return ExitCode::FAILURE;
    }
    let engine = ScriptEngine::new(Limits::default());
    match flow::load_bot(&dir, &engine, &authoring_options()) {
        Ok(bot) => {
            print!("{}", Graph::of(&bot).render(format));
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            for d in diagnostics.iter().filter(|d| d.is_error()) {
                eprintln!("{d}\n");
            }
            eprintln!(
                "error: bot `{bot}` does not load, so it has no graph: fix the errors above (`switchboard check {}`)",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Cancelled on SIGINT or SIGTERM.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: no new webhooks, finishing what is in flight");
        cancel.cancel();
    });
    token
}

/// Installs the process's log subscriber on standard error (see [`crate::logging`]).
pub fn init_logging(format: LogFormat, contacts: LogContacts) {
    crate::logging::init(format, contacts);
}

#[cfg(test)]
mod tests {
    use super::parse_retention_days;

    #[test]
    fn retention_days_accepts_fractions_and_refuses_nonsense() {
        assert_eq!(parse_retention_days("30"), Ok(30.0));
        assert_eq!(parse_retention_days("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "100000", "thirty"] {
            let error = parse_retention_days(bad).unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
    }
}
