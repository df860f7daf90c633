//! Load generator: drives a Switchboard server with correctly signed webhooks from
//! many simulated contacts, runs a loopback fake Twilio sink, and reports
//! throughput, latency, commit → Twilio latency, send rate, errors and peak RSS,
//! beside two ceilings measured in the same run (a bare HTTP handler and the same
//! database work as raw SQL). Not a test: run it by hand, in release mode. See
//! `docs/performance.md` for the figures and the commands that produced them.
//!
//! ```text
//! cargo build --release --bin switchboard --example loadgen
//! target/release/examples/loadgen --db postgres --rate max --duration 20 --ceilings
//! target/release/examples/loadgen --db postgres --sender-only --messages 20000
//! target/release/examples/loadgen --idle-rss --bots 1000
//! target/release/examples/loadgen --db postgres --broadcast 100000 --rate 300 --duration 30
//! target/release/examples/loadgen --db postgres --timers 10000
//! ```
//!
//! Every contact's messages go in order: a contact sends its next webhook only once
//! the previous one was answered. A contact's first message opens the kibo-auto
//! menu and every later one is an invalid choice, so each webhook queues exactly
//! one reply; the k-th reply Twilio receives for a contact therefore belongs to
//! that contact's k-th webhook, which is how sends are matched to webhooks. With
//! `--script` a contact's second message books a test drive instead, and every
//! later one is an answer the test-drive script (Rhai) asks again for: one reply
//! per webhook still, each from a script handler.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use sqlx::Connection;
use switchboard::twilio::signature;
use switchboard::twilio::webhook::EMPTY_TWIML;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const AUTH_TOKEN: &str = "loadgen-token";
const OUR_NUMBER: &str = "whatsapp:+14155238886";
/// The admin API's token of the servers loadgen starts (`--broadcast`).
const ADMIN_TOKEN: &str = "loadgen-admin";
const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Parser)]
#[command(about = "Load generator for Switchboard (see docs/performance.md)")]
struct Args {
    /// Webhook base URL of a running server to load instead of starting one, e.g.
    /// http://127.0.0.1:8080 (its bots must be kibo-auto copies pointing at our sink).
    #[arg(long)]
    target: Option<String>,
    /// Auth token the target's bot signs with (--target only).
    #[arg(long, default_value = AUTH_TOKEN)]
    auth_token: String,
    /// Run the server as a child process (`switchboard serve`, own RSS) or in this process.
    #[arg(long, value_enum, default_value = "child")]
    server: ServerKind,
    /// The `switchboard` binary for --server child (default: next to this example).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "sqlite")]
    db: DbKind,
    /// Simulated contacts.
    #[arg(long, default_value_t = 1000)]
    contacts: usize,
    /// Loaded bots (copies of kibo-auto); contacts are spread over them.
    #[arg(long, default_value_t = 1)]
    bots: usize,
    /// Webhooks per second (`500`, `500/s`) or `max`.
    #[arg(long, default_value = "max")]
    rate: Rate,
    /// Requests in flight at once with --rate max.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to run (ignored with --messages).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many webhooks instead of after --duration.
    #[arg(long)]
    messages: Option<u64>,
    /// The fake Twilio's answer delay.
    #[arg(long, default_value_t = 1)]
    twilio_latency_ms: u64,
    /// Size of each inbound message body (after a contact's first).
    #[arg(long, default_value_t = 8)]
    body_bytes: usize,
    /// Drive kibo-auto's test-drive script: from a contact's third message on, every
    /// webhook runs a Rhai handler (which asks again: still one reply per webhook).
    #[arg(long)]
    script: bool,
    /// Load kibo-auto without its script (test drive goes back to the menu): a
    /// bot of menus only, whose steps take no turn on Postgres.
    #[arg(long, conflicts_with = "script")]
    menu_only: bool,
    /// Load kibo-auto with its menus as numbered text (its `style:` lines
    /// dropped), to compare against the list and buttons it sends by default.
    #[arg(long)]
    text_menus: bool,
    /// Also measure the HTTP and storage ceilings.
    #[arg(long)]
    ceilings: bool,
    /// Queue --messages replies with the sender stopped, then time the sender alone.
    #[arg(long)]
    sender_only: bool,
    /// Report idle RSS with 1 and with --bots bots, and the cost per bot.
    #[arg(long)]
    idle_rss: bool,
    /// Profile the child server during the run: `perf record -e cpu-clock -g` into FILE.
    #[arg(long)]
    perf_record: Option<PathBuf>,
    /// Soak: every S seconds print the server's RSS, the sends so far, the
    /// outbox rows by status and the outbox table's size on disk.
    #[arg(long)]
    sample_every: Option<f64>,
    /// `--retention-days` of a child server (fractions allowed; a soak uses a
    /// few minutes so pruning is exercised within the run).
    #[arg(long)]
    retention_days: Option<f64>,
    /// RUST_LOG of a child server (the production default is info).
    #[arg(long, default_value = "info,sqlx=warn")]
    server_log: String,
    /// Drop this index (repeatable) from the fresh database after migrating it,
    /// to measure what the index costs the webhook and send paths.
    #[arg(long)]
    drop_index: Vec<String>,
    /// Broadcast kibo-auto's reminder to this many new contacts as the run
    /// starts (SPEC §9.3), drive the webhooks while it drains, and report the
    /// time to accept, to start every contact and to send every message.
    #[arg(long)]
    broadcast: Option<usize>,
    /// With --broadcast: start the webhooks this many seconds after the
    /// broadcast was accepted (to tell the accept's aftermath from the drain).
    #[arg(long, default_value_t = 0.0)]
    broadcast_lead: f64,
    /// While the webhooks run, someone browses the console: signed in, this
    /// many page views a second (conversations list, a timeline, the outbox
    /// page in turn); reports the pages' latency (SPEC §10.3: browsing must not
    /// touch webhook p99).
    #[arg(long)]
    browse: Option<f64>,
    /// Instead of the usual run: this many contacts each write once to a bot
    /// whose question waits `--timer-secs`, and the timers' lateness is
    /// reported (SPEC §9.2).
    #[arg(long)]
    timers: Option<usize>,
    /// The wait of `--timers`' question.
    #[arg(long, default_value_t = 30)]
    timer_secs: u64,
    /// Internal: serve the bare HTTP ceiling on this address.
    #[arg(long, hide = true)]
    bare_server: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServerKind {
    Child,
    Inproc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy)]
enum Rate {
    Max,
    PerSecond(f64),
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        let n: f64 = s
            .trim_end_matches("/s")
            .parse()
            .map_err(|_| format!("`{s}`: use a number of webhooks per second or `max`"))?;
        if n <= 0.0 {
            return Err("the rate must be positive".into());
        }
        Ok(Rate::PerSecond(n))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(addr) = &args.bare_server {
        return serve_bare(addr);
    }
    // Bound before the runtime starts so the bots' env can name it; the kibo-auto
    // bot reads its credentials and API base from the environment.
    let sink_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    sink_listener.set_nonblocking(true)?;
    let sink_url = format!("http://{}", sink_listener.local_addr()?);
    std::env::set_var("KIBO_TWILIO_ACCOUNT_SID", ACCOUNT_SID);
    std::env::set_var("KIBO_TWILIO_AUTH_TOKEN", AUTH_TOKEN);
    std::env::set_var("KIBO_TWILIO_API_BASE", &sink_url);
    // kibo-auto's main menu is a list: its Content resource is created here too.
    std::env::set_var("KIBO_TWILIO_CONTENT_API_BASE", &sink_url);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args, sink_listener))
}

async fn run(args: Args, sink_listener: std::net::TcpListener) -> anyhow::Result<()> {
    println!(
        "# loadgen {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    println!("load average at start: {}", load_average());
    let sink = Sink::start(sink_listener, Duration::from_millis(args.twilio_latency_ms))?;
    if args.idle_rss {
        return idle_rss(&args).await;
    }
    if args.sender_only {
        return sender_only(&args, &sink).await;
    }
    if let Some(n) = args.timers {
        return timers(&args, &sink, n).await;
    }
    load(&args, &sink).await
}

// ---------------------------------------------------------------------------------
// The fake Twilio sink

/// A lean stand-in for Twilio's Messages API: answers 201 with a sid after the
/// configured latency and records who each message went to and when it arrived.
struct Sink {
    shared: Arc<SinkShared>,
}

struct SinkShared {
    latency: Duration,
    next_sid: AtomicU64,
    received: Mutex<Vec<(String, Instant)>>,
}

impl Sink {
    fn start(listener: std::net::TcpListener, latency: Duration) -> anyhow::Result<Sink> {
        let shared = Arc::new(SinkShared {
            latency,
            next_sid: AtomicU64::new(1),
            received: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(sink_message),
            )
            .route("/v1/Content", post(sink_content))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Sink { shared })
    }

    fn received(&self) -> Vec<(String, Instant)> {
        self.shared.received.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    fn clear(&self) {
        self.shared.received.lock().unwrap().clear();
    }

    /// Waits until `n` messages arrived, or nothing arrived for `idle`.
    async fn drain(&self, n: usize, idle: Duration) {
        let mut last = (self.count(), Instant::now());
        while last.0 < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.count();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > idle {
                break;
            }
        }
    }
}

async fn sink_message(State(sink): State<Arc<SinkShared>>, body: Bytes) -> impl IntoResponse {
    let at = Instant::now();
    let to = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "To")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    sink.received.lock().unwrap().push((to, at));
    let sid = sink.next_sid.fetch_add(1, Ordering::Relaxed);
    if !sink.latency.is_zero() {
        tokio::time::sleep(sink.latency).await;
    }
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"sid":"SM{sid:032x}","status":"queued"}}"#),
    )
}

/// The Content API's create: a resource SID for each menu shape (the engine
/// creates one per shape and remembers it).
async fn sink_content(State(sink): State<Arc<SinkShared>>) -> impl IntoResponse {
    let sid = sink.next_sid.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"sid":"HX{sid:032x}"}}"#),
    )
}

// ---------------------------------------------------------------------------------
// Databases, flows, servers

/// A fresh database; Postgres ones are dropped on [`FreshDb::drop_now`].
struct FreshDb {
    url: String,
    pg_name: Option<String>,
}

impl FreshDb {
    async fn create(kind: DbKind, dir: &Path, name: &str) -> anyhow::Result<FreshDb> {
        match kind {
            DbKind::Sqlite => Ok(FreshDb {
                url: format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
                pg_name: None,
            }),
            DbKind::Postgres => {
                let admin_url = admin_url();
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .context("connect to DATABASE_URL")?;
                let db = format!(
                    "sb_load_{}_{}_{}",
                    name,
                    std::process::id(),
                    rand::random::<u32>()
                );
                sqlx::query(&format!("CREATE DATABASE {db}"))
                    .execute(&mut admin)
                    .await?;
                let base = &admin_url[..admin_url.rfind('/').unwrap_or(admin_url.len())];
                Ok(FreshDb {
                    url: format!("{base}/{db}"),
                    pg_name: Some(db),
                })
            }
        }
    }

    /// Migrates the database and drops `indexes` from it (`--drop-index`); the
    /// server's own migration at start then finds nothing to do.
    async fn drop_indexes(&self, indexes: &[String]) -> anyhow::Result<()> {
        if indexes.is_empty() {
            return Ok(());
        }
        let store = switchboard::store::Store::connect(&self.url).await?;
        store.migrate().await?;
        drop(store);
        for index in indexes {
            anyhow::ensure!(
                index.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "--drop-index {index}: an index name is letters, digits and `_`"
            );
            let sql = format!("DROP INDEX {index}");
            if self.pg_name.is_some() {
                let mut conn = sqlx::PgConnection::connect(&self.url).await?;
                sqlx::query(&sql).execute(&mut conn).await.map(drop)
            } else {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
                sqlx::query(&sql).execute(&mut conn).await.map(drop)
            }
            .with_context(|| format!("--drop-index {index}"))?;
            println!("dropped index {index}");
        }
        Ok(())
    }

    async fn drop_now(self) {
        if let Some(db) = self.pg_name {
            if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        }
    }
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned())
}

/// Bot ids: `kibo-auto` alone, or `kibo-auto-0000`... for several.
fn bot_ids(n: usize) -> Vec<String> {
    if n <= 1 {
        vec!["kibo-auto".to_owned()]
    } else {
        (0..n).map(|i| format!("kibo-auto-{i:04}")).collect()
    }
}

/// (current, peak) resident set in KiB from a `/proc/PID/status` file.
fn rss_kib_of(path: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(path).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Outbox rows by status, the non-empty ones: `queued=3 sent=120`.
fn depth_line(depth: &switchboard::store::OutboxDepth) -> String {
    depth
        .counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{}={n}", s.as_str()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How `write_flows` changes kibo-auto for a run.
#[derive(Debug, Clone, Copy, Default)]
struct FlowVariant {
    /// Without its script (the test drive goes back to the menu).
    menu_only: bool,
    /// Every menu as numbered text.
    text_menus: bool,
}

/// A flows folder with `n` copies of `flows/kibo-auto`, changed as `variant` says.
fn write_flows(dir: &Path, n: usize, variant: FlowVariant) -> anyhow::Result<PathBuf> {
    let FlowVariant {
        menu_only,
        text_menus,
    } = variant;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/kibo-auto");
    let flows = dir.join("flows");
    for id in bot_ids(n) {
        let to = flows.join(id);
        std::fs::create_dir_all(&to)?;
        for entry in std::fs::read_dir(&source)? {
            let entry = entry?;
            let path = entry.path();
            // The bot's files; its `tests/` transcripts are not needed here.
            if entry.file_type()?.is_dir() {
                continue;
            }
            if menu_only && path.extension().is_some_and(|e| e == "rhai") {
                continue;
            }
            let mut text = std::fs::read_to_string(&path)?;
            if menu_only && path.file_name().is_some_and(|f| f == "menus.yaml") {
                anyhow::ensure!(
                    text.contains("goto: test_drive"),
                    "--menu-only: {} no longer has `goto: test_drive` to replace",
                    path.display()
                );
            }
            if menu_only && path.extension().is_some_and(|e| e == "yaml") {
                // Every link to the script's node, in whichever file (the reminder too).
                text = text.replace("goto: test_drive", "goto: main");
            }
            if text_menus && path.file_name().is_some_and(|f| f == "menus.yaml") {
                let styled = text
                    .lines()
                    .filter(|l| l.trim_start().starts_with("style:"));
                anyhow::ensure!(
                    styled.count() > 0,
                    "--text-menus: {} has no `style:` line to drop",
                    path.display()
                );
                text = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("style:"))
                    .map(|l| format!("{l}\n"))
                    .collect();
            }
            std::fs::write(to.join(entry.file_name()), text)?;
        }
    }
    Ok(flows)
}

impl Args {
    fn flow_variant(&self) -> FlowVariant {
        FlowVariant {
            menu_only: self.menu_only,
            text_menus: self.text_menus,
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn server_bin(args: &Args) -> PathBuf {
    args.server_bin.clone().unwrap_or_else(|| {
        // target/release/examples/loadgen -> target/release/switchboard
        let exe = std::env::current_exe().expect("own path");
        exe.parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("switchboard"))
            .expect("target dir")
    })
}

/// A server under load: a child process, a task in this process, or a target.
struct Server {
    base: String,
    child: Option<Child>,
    inproc: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `serve`, with or without the sender.
    Serve { sender: bool },
    /// `send`: the sender alone.
    Send,
}

impl Server {
    async fn start(
        args: &Args,
        flows: &Path,
        db_url: &str,
        role: Role,
        log: &Path,
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        match args.server {
            ServerKind::Child => {
                let mut command = Command::new(server_bin(args));
                match role {
                    Role::Serve { sender } => {
                        command.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
                        if !sender {
                            command.arg("--no-sender");
                        }
                    }
                    Role::Send => {
                        command.arg("send");
                    }
                }
                if let Some(days) = args.retention_days {
                    command.arg("--retention-days").arg(days.to_string());
                }
                command
                    .arg("--flows")
                    .arg(flows)
                    .args(["--database-url", db_url, "--public-url", &base])
                    .env("RUST_LOG", &args.server_log)
                    .env("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
                    .stdout(Stdio::null())
                    .stderr(File::create(log)?);
                let child = command
                    .spawn()
                    .with_context(|| format!("start {}", server_bin(args).display()))?;
                let server = Server {
                    base,
                    child: Some(child),
                    inproc: None,
                };
                if role != Role::Send {
                    server.wait_healthy().await?;
                }
                Ok(server)
            }
            ServerKind::Inproc => {
                let mut config = switchboard::Config::new(flows, db_url);
                config.public_url = Some(base.clone());
                config.watch = false;
                config.admin_token = Some(switchboard::domain::Secret::new(ADMIN_TOKEN));
                let app = switchboard::App::builder(config).build().await?;
                let stop = CancellationToken::new();
                let token = stop.clone();
                let handle = match role {
                    Role::Serve { sender } => {
                        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
                        tokio::spawn(async move {
                            if let Err(error) = app.serve(listener, token, sender).await {
                                eprintln!("server stopped: {error}");
                            }
                        })
                    }
                    Role::Send => tokio::spawn(app.run_sender(token)),
                };
                Ok(Server {
                    base,
                    child: None,
                    inproc: Some((stop, handle)),
                })
            }
        }
    }

    fn target(url: &str) -> Server {
        Server {
            base: url.trim_end_matches('/').to_owned(),
            child: None,
            inproc: None,
        }
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let ok = client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("server at {} did not become healthy", self.base);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// (current, peak) resident set in KiB: the child's own, or this whole process's.
    fn rss_kib(&self) -> Option<(u64, u64)> {
        let path = match &self.child {
            Some(child) => format!("/proc/{}/status", child.id()),
            None if self.inproc.is_some() => "/proc/self/status".to_owned(),
            None => return None,
        };
        rss_kib_of(&path)
    }

    fn rss_note(&self) -> &'static str {
        if self.child.is_some() {
            "server process alone"
        } else {
            "in-process: includes the load generator and sink"
        }
    }

    /// Stops gracefully (SIGTERM / cancel) and waits.
    async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if let Some((stop, handle)) = self.inproc.take() {
            stop.cancel();
            let _ = handle.await;
        }
    }
}

// ---------------------------------------------------------------------------------
// The webhook driver

/// One simulated contact; the mutex holds its next sequence number and is held
/// while one of its webhooks is in flight, so its messages go in order.
struct Contact {
    address: String,
    bot: usize,
    next_seq: tokio::sync::Mutex<u32>,
}

fn contacts(n: usize, bots: usize) -> Vec<Contact> {
    // A per-run prefix keeps contacts (and so conversations) new against a target
    // that already saw an earlier run.
    let run = rand::random::<u16>() % 1000;
    (0..n)
        .map(|i| Contact {
            address: format!("whatsapp:+1{run:03}{i:07}"),
            bot: i % bots.max(1),
            next_seq: tokio::sync::Mutex::new(0),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Ok,
    Status(u16),
    Transport,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    contact: u32,
    seq: u32,
    end: Instant,
    latency: Duration,
    outcome: Outcome,
}

/// What every webhook needs: where to post, how to sign, what to say.
struct Driver {
    client: reqwest::Client,
    /// Webhook URL per bot.
    urls: Vec<String>,
    auth_token: String,
    body: String,
    /// The message that enters the test-drive script, with `--script`.
    second: Option<&'static str>,
    run_id: u32,
    contacts: Vec<Contact>,
}

impl Driver {
    fn new(base: &str, args: &Args, bots: usize) -> anyhow::Result<Driver> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Driver {
            client,
            urls: bot_ids(bots)
                .into_iter()
                .map(|id| format!("{base}/webhooks/twilio/{id}"))
                .collect(),
            auth_token: args.auth_token.clone(),
            // Never a menu choice or keyword: every message after the first is
            // answered with the menu's one `invalid` reply.
            body: "x".repeat(args.body_bytes.max(1)),
            // Menu option 2, "Book a test drive"; its script asks for a name, and
            // then for a day, and asks again for anything that is not one.
            second: args.script.then_some("2"),
            run_id: rand::random(),
            contacts: contacts(args.contacts.max(1), bots),
        })
    }

    /// Posts the contact's next message, waiting for its previous one to finish.
    async fn send(&self, index: usize) -> Sample {
        let contact = &self.contacts[index];
        let mut next = contact.next_seq.lock().await;
        let seq = *next;
        *next += 1;
        let sid = format!("SM{:08x}{:08x}{:016x}", self.run_id, index, seq);
        let text = match (seq, self.second) {
            (0, _) => "hi",
            (1, Some(second)) => second,
            _ => self.body.as_str(),
        };
        let params: Vec<(String, String)> = [
            ("MessageSid", sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("From", contact.address.as_str()),
            ("To", OUR_NUMBER),
            ("Body", text),
            ("NumMedia", "0"),
            ("ProfileName", "Load"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let url = &self.urls[contact.bot];
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        let signature = signature::compute(&self.auth_token, url, &params);
        let start = Instant::now();
        let result = self
            .client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(form)
            .send()
            .await;
        let outcome = match result {
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(_) if status.is_success() => Outcome::Ok,
                    Ok(_) => Outcome::Status(status.as_u16()),
                    Err(_) => Outcome::Transport,
                }
            }
            Err(_) => Outcome::Transport,
        };
        let end = Instant::now();
        Sample {
            contact: index as u32,
            seq,
            end,
            latency: end - start,
            outcome,
        }
    }
}

/// How long or how much to drive.
#[derive(Clone, Copy)]
struct Plan {
    rate: Rate,
    concurrency: usize,
    duration: Duration,
    messages: Option<u64>,
}

impl Plan {
    fn of(args: &Args) -> Plan {
        Plan {
            rate: args.rate,
            concurrency: args.concurrency.max(1),
            duration: Duration::from_secs_f64(args.duration),
            messages: args.messages,
        }
    }
}

struct RunResult {
    samples: Vec<Sample>,
    started: Instant,
    elapsed: Duration,
}

async fn drive(driver: Arc<Driver>, plan: Plan) -> RunResult {
    let started = Instant::now();
    let deadline = started + plan.duration;
    let issued = Arc::new(AtomicU64::new(0));
    // Returns false once the run is over; counts the webhook otherwise.
    let take = {
        let issued = issued.clone();
        move || match plan.messages {
            Some(max) => issued.fetch_add(1, Ordering::Relaxed) < max,
            None => Instant::now() < deadline,
        }
    };
    let mut tasks = JoinSet::new();
    match plan.rate {
        Rate::Max => {
            // Each worker owns a slice of the contacts and cycles through it, so a
            // contact never has two webhooks in flight.
            let workers = plan.concurrency.min(driver.contacts.len());
            for w in 0..workers {
                let driver = driver.clone();
                let take = take.clone();
                tasks.spawn(async move {
                    let mine: Vec<usize> = (w..driver.contacts.len()).step_by(workers).collect();
                    let mut samples = Vec::new();
                    for index in mine.iter().cycle() {
                        if !take() {
                            break;
                        }
                        samples.push(driver.send(*index).await);
                    }
                    samples
                });
            }
        }
        Rate::PerSecond(rate) => {
            // Open loop: one webhook per tick whether or not earlier ones came
            // back; a contact whose previous webhook is still in flight waits for
            // it (its mutex is fair, so order holds).
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut next = 0usize;
            loop {
                ticker.tick().await;
                if !take() {
                    break;
                }
                let driver = driver.clone();
                let index = next;
                next = (next + 1) % driver.contacts.len();
                tasks.spawn(async move { vec![driver.send(index).await] });
            }
        }
    }
    let mut samples = Vec::new();
    while let Some(done) = tasks.join_next().await {
        samples.extend(done.unwrap_or_default());
    }
    RunResult {
        samples,
        started,
        elapsed: started.elapsed(),
    }
}

// ---------------------------------------------------------------------------------
// Reporting

/// p50, p99, p99.9 and max, in ms.
fn percentiles(mut values: Vec<f64>) -> Option<[f64; 4]> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() as f64 * q) as usize).min(values.len() - 1)];
    Some([at(0.50), at(0.99), at(0.999), values[values.len() - 1]])
}

fn fmt_pct(p: Option<[f64; 4]>) -> String {
    match p {
        Some([p50, p99, p999, max]) => {
            format!("p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms, max {max:.2} ms")
        }
        None => "no samples".to_owned(),
    }
}

struct Summary {
    ok: usize,
    per_second: f64,
    latency: Option<[f64; 4]>,
}

fn summarise(label: &str, run: &RunResult) -> Summary {
    let ok: Vec<&Sample> = run
        .samples
        .iter()
        .filter(|s| s.outcome == Outcome::Ok)
        .collect();
    let per_second = ok.len() as f64 / run.elapsed.as_secs_f64();
    let latency = percentiles(ok.iter().map(|s| ms(s.latency)).collect());
    let mut errors: HashMap<String, usize> = HashMap::new();
    for s in &run.samples {
        match s.outcome {
            Outcome::Ok => {}
            Outcome::Status(code) => *errors.entry(format!("HTTP {code}")).or_default() += 1,
            Outcome::Transport => *errors.entry("transport".to_owned()).or_default() += 1,
        }
    }
    println!(
        "{label}: {} ok in {:.1} s = {per_second:.0} webhooks/s; latency {}",
        ok.len(),
        run.elapsed.as_secs_f64(),
        fmt_pct(latency)
    );
    if !errors.is_empty() {
        let mut errors: Vec<_> = errors.into_iter().collect();
        errors.sort();
        println!("{label}: errors {errors:?}");
    }
    Summary {
        ok: ok.len(),
        per_second,
        latency,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Matches the k-th message the sink got for a contact to that contact's k-th
/// answered webhook, and reports receipt minus webhook answer (the commit lies
/// shortly before the answer, so this slightly understates; a reply may even
/// arrive before the answer does, counted as "early").
fn commit_to_twilio(driver: &Driver, run: &RunResult, received: &[(String, Instant)]) {
    let index: HashMap<&str, usize> = driver
        .contacts
        .iter()
        .enumerate()
        .map(|(i, c)| (c.address.as_str(), i))
        .collect();
    let mut answered: Vec<Vec<(u32, Instant)>> = vec![Vec::new(); driver.contacts.len()];
    for s in run.samples.iter().filter(|s| s.outcome == Outcome::Ok) {
        answered[s.contact as usize].push((s.seq, s.end));
    }
    for list in &mut answered {
        list.sort_by_key(|(seq, _)| *seq);
    }
    let mut next = vec![0usize; driver.contacts.len()];
    let mut latencies = Vec::new();
    let mut early = 0usize;
    let mut unmatched = 0usize;
    for (to, at) in received {
        let Some(&i) = index.get(to.as_str()) else {
            unmatched += 1;
            continue;
        };
        let k = next[i];
        next[i] += 1;
        match answered[i].get(k) {
            Some((_, end)) => match at.checked_duration_since(*end) {
                Some(d) => latencies.push(ms(d)),
                None => {
                    early += 1;
                    latencies.push(0.0);
                }
            },
            None => unmatched += 1,
        }
    }
    let ok = answered.iter().map(Vec::len).sum::<usize>();
    println!(
        "commit -> Twilio: {} ({} matched of {} sends for {ok} webhooks; {early} arrived before the webhook answer, counted as 0; {unmatched} unmatched)",
        fmt_pct(percentiles(latencies.clone())),
        latencies.len(),
        received.len()
    );
    let in_window = received
        .iter()
        .filter(|(_, at)| *at <= run.started + run.elapsed)
        .count();
    println!(
        "sends during the run: {in_window} = {:.0} sends/s",
        in_window as f64 / run.elapsed.as_secs_f64()
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn print_rss(server: &Server) {
    if let Some((rss, peak)) = server.rss_kib() {
        println!(
            "server RSS: {:.1} MiB now, {:.1} MiB peak ({})",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0,
            server.rss_note()
        );
    }
}

// ---------------------------------------------------------------------------------
// Modes

async fn load(args: &Args, sink: &Sink) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let plan = Plan::of(args);
    let (server, db) = match &args.target {
        Some(url) => (Server::target(url), None),
        None => {
            let flows = write_flows(dir.path(), args.bots, args.flow_variant())?;
            let db = FreshDb::create(args.db, dir.path(), "server").await?;
            db.drop_indexes(&args.drop_index).await?;
            let log = dir.path().join("server.log");
            let server =
                Server::start(args, &flows, &db.url, Role::Serve { sender: true }, &log).await?;
            (server, Some(db))
        }
    };
    let driver = Arc::new(Driver::new(&server.base, args, args.bots)?);
    let broadcast = match args.broadcast {
        Some(n) => {
            let broadcast = Broadcast::start(&server.base, n, sink).await?;
            tokio::time::sleep(Duration::from_secs_f64(args.broadcast_lead.max(0.0))).await;
            Some(broadcast)
        }
        None => None,
    };
    let profiler = match (&args.perf_record, &server.child) {
        (Some(file), Some(child)) => Some(
            Command::new("perf")
                .args(["record", "-e", "cpu-clock", "-F", "499", "-g", "-p"])
                .arg(child.id().to_string())
                .arg("-o")
                .arg(file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start perf")?,
        ),
        _ => None,
    };
    let sampler = match (args.sample_every, &db) {
        (Some(every), Some(db)) => Some(tokio::spawn(sample(
            Duration::from_secs_f64(every.max(0.5)),
            server.child.as_ref().map(|c| c.id()),
            db.url.clone(),
            sink.shared.clone(),
        ))),
        _ => None,
    };
    let browser = args.browse.map(|per_second| {
        let stop = CancellationToken::new();
        let task = tokio::spawn(browse(server.base.clone(), per_second, stop.clone()));
        (stop, task)
    });
    let run = drive(driver.clone(), plan).await;
    if let Some((stop, task)) = browser {
        stop.cancel();
        match task.await {
            Ok(Ok(pages)) => println!(
                "console pages while it ran: {} views, {}",
                pages.len(),
                fmt_pct(percentiles(pages))
            ),
            Ok(Err(error)) => println!("console browsing failed: {error:#}"),
            Err(error) => println!("console browsing failed: {error}"),
        }
    }
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    if let Some(mut perf) = profiler {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    let ours = summarise("switchboard", &run);
    match broadcast {
        None => {
            sink.drain(ours.ok, Duration::from_secs(10)).await;
            commit_to_twilio(&driver, &run, &sink.received());
        }
        Some(broadcast) => {
            // Replies only: the broadcast's messages are its own report. Wait
            // for the last replies as `drain` does (a reply to the last
            // webhooks may still be on its way), up to 10 s.
            let replies = || -> Vec<(String, Instant)> {
                sink.received()
                    .into_iter()
                    .filter(|(to, _)| !to.starts_with(BROADCAST_PREFIX))
                    .collect()
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while replies().len() < ours.ok && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            commit_to_twilio(&driver, &run, &replies());
            broadcast.finish(sink).await?;
        }
    }
    print_rss(&server);
    if let (Some(db), None) = (&db, &args.target) {
        print_table_sizes(&db.url).await;
    }
    println!("load average after the run: {}", load_average());
    server.stop().await;
    if let Some(db) = db {
        db.drop_now().await;
    }

    if args.ceilings {
        let http = http_ceiling(args, plan).await?;
        let storage = storage_ceiling(args, plan).await?;
        println!(
            "ratios: {:.2} of the HTTP ceiling, {:.2} of the storage ceiling (webhooks/s){}",
            ours.per_second / http.per_second,
            ours.per_second / storage,
            if matches!(args.rate, Rate::Max) {
                ""
            } else {
                " -- not meaningful: this run was rate-limited"
            }
        );
        if let (Some(o), Some(h)) = (ours.latency, http.latency) {
            println!(
                "latency over the HTTP ceiling: p50 +{:.2} ms, p99 +{:.2} ms",
                o[0] - h[0],
                o[1] - h[1]
            );
        }
        println!("load average at the end: {}", load_average());
    }
    Ok(())
}

/// The soak's periodic line: elapsed, server RSS, sends so far, outbox rows by
/// status, outbox size on disk (Postgres: the table with its indexes and TOAST;
/// SQLite: the database file plus its WAL).
async fn sample(every: Duration, pid: Option<u32>, url: String, sink: Arc<SinkShared>) {
    let started = Instant::now();
    let Ok(store) = switchboard::store::Store::connect(&url).await else {
        return;
    };
    let pg = if url.starts_with("postgres") {
        sqlx::PgPool::connect(&url).await.ok()
    } else {
        None
    };
    loop {
        tokio::time::sleep(every).await;
        let rss = pid
            .and_then(|pid| rss_kib_of(&format!("/proc/{pid}/status")))
            .map_or("?".to_owned(), |(kib, _)| {
                format!("{:.1} MiB", kib as f64 / 1024.0)
            });
        let rows = match store.outbox_depth().await {
            Ok(depth) => depth_line(&depth),
            Err(error) => format!("? ({error})"),
        };
        let bytes = match &pg {
            Some(pool) => sqlx::query_scalar::<_, i64>("SELECT pg_total_relation_size('outbox')")
                .fetch_one(pool)
                .await
                .ok()
                .and_then(|b| u64::try_from(b).ok()),
            None => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                Some(size(path.to_owned()) + size(format!("{path}-wal")))
            }
        };
        let bytes = bytes.map_or("?".to_owned(), |b| {
            format!("{:.1} MiB", b as f64 / 1048576.0)
        });
        let sent = sink.received.lock().unwrap().len();
        println!(
            "sample t={:>4.0}s rss={rss} sent={sent} outbox[{rows}] outbox_size={bytes}",
            started.elapsed().as_secs_f64()
        );
    }
}

async fn print_table_sizes(url: &str) {
    let store = match switchboard::store::Store::connect(url).await {
        Ok(store) => store,
        Err(_) => return,
    };
    if let Ok(depth) = store.outbox_depth().await {
        println!("outbox rows: {}", depth_line(&depth));
    }
    store.close().await;
}

/// The same client, plan and placement against a handler that does nothing.
async fn http_ceiling(args: &Args, plan: Plan) -> anyhow::Result<Summary> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut child = None;
    let mut task = None;
    match args.server {
        ServerKind::Child => {
            child = Some(
                Command::new(std::env::current_exe()?)
                    .args(["--bare-server", &addr])
                    .stdout(Stdio::null())
                    .spawn()?,
            );
        }
        ServerKind::Inproc => {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            task = Some(tokio::spawn(async move {
                axum::serve(listener, bare_router()).await
            }));
        }
    }
    let server = Server {
        base: format!("http://{addr}"),
        child,
        inproc: None,
    };
    server.wait_healthy().await?;
    let driver = Arc::new(Driver::new(&server.base, args, args.bots)?);
    let run = drive(
        driver,
        Plan {
            rate: Rate::Max,
            ..plan
        },
    )
    .await;
    let summary = summarise("HTTP ceiling (bare axum handler)", &run);
    server.stop().await;
    if let Some(task) = task {
        task.abort();
    }
    Ok(summary)
}

fn bare_router() -> Router {
    async fn answer(_body: Bytes) -> impl IntoResponse {
        ([(header::CONTENT_TYPE, "text/xml")], EMPTY_TWIML)
    }
    Router::new()
        .route("/webhooks/twilio/{bot}", post(answer))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
}

fn serve_bare(addr: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, bare_router()).await?;
        Ok::<(), anyhow::Error>(())
    })
}

/// The database work of one webhook as raw SQL on a fresh, migrated database:
/// insert the inbound row, upsert the conversation, insert the reply, commit;
/// from `concurrency` tasks for the plan's duration. Returns transactions/s.
async fn storage_ceiling(args: &Args, plan: Plan) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let db = FreshDb::create(args.db, dir.path(), "ceiling").await?;
    let store = switchboard::store::Store::connect(&db.url).await?;
    store.migrate().await?;
    store.close().await;
    // The same number of connections the store's pool has (SQLite 4, Postgres
    // 16), each held by one task for the whole run: the least a program can
    // spend on this work (no pool hand-offs, no pings), like pgbench's clients.
    let connections = match args.db {
        DbKind::Postgres => 16,
        DbKind::Sqlite => 4,
    };
    let tasks = plan.concurrency.min(args.contacts.max(1)).min(connections);
    let per_task = (args.contacts.max(1) / tasks).max(1);
    let deadline = Instant::now() + plan.duration;
    let started = Instant::now();
    let mut set = JoinSet::new();
    let body = "x".repeat(args.body_bytes.max(1));
    macro_rules! spawn_tasks {
        ($pool:expr, $begin:expr) => {
            for t in 0..tasks {
                let pool = $pool.clone();
                let body = body.clone();
                set.spawn(async move {
                    let mut conn = pool.acquire().await?;
                    let mut latencies = Vec::new();
                    let mut i = 0u64;
                    while Instant::now() < deadline {
                        let contact = format!("whatsapp:+1666{t:04}{:05}", i as usize % per_task);
                        let sid = format!("SM{t:08x}{i:024x}");
                        let now = chrono::Utc::now().timestamp_millis();
                        let start = Instant::now();
                        let mut tx = sqlx::Connection::begin_with(&mut *conn, $begin).await?;
                        sqlx::query(
                            "INSERT INTO inbound_messages \
                             (bot, message_sid, contact, body, payload, received_at) \
                             VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind("kibo-auto")
                        .bind(&sid)
                        .bind(&contact)
                        .bind(&body)
                        .bind(r#"{"text":"x"}"#)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        let id: i64 = sqlx::query_scalar(
                            "INSERT INTO conversations \
                             (bot, contact, node, handler, vars, version, updated_at) \
                             VALUES ($1, $2, 'main', NULL, '{}', 0, $3) \
                             ON CONFLICT (bot, contact) DO UPDATE SET node = excluded.node, \
                             vars = excluded.vars, version = conversations.version + 1, \
                             updated_at = excluded.updated_at RETURNING id",
                        )
                        .bind("kibo-auto")
                        .bind(&contact)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?;
                        sqlx::query(
                            "INSERT INTO outbox (conversation_id, bot, contact, body, media, \
                             status, attempts, next_attempt_at, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, '[]', 'queued', 0, $5, $5, $5)",
                        )
                        .bind(id)
                        .bind("kibo-auto")
                        .bind(&contact)
                        .bind("Please reply with a number from 1 to 4, or send *menu*.")
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        latencies.push(ms(start.elapsed()));
                        i += 1;
                    }
                    Ok::<_, sqlx::Error>(latencies)
                });
            }
        };
    }
    match args.db {
        DbKind::Postgres => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(16)
                .connect(&db.url)
                .await?;
            spawn_tasks!(pool, "BEGIN");
        }
        DbKind::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)?
                .busy_timeout(Duration::from_secs(5))
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await?;
            spawn_tasks!(pool, "BEGIN IMMEDIATE");
        }
    }
    let mut latencies = Vec::new();
    let mut errors = 0usize;
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(l)) => latencies.extend(l),
            _ => errors += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let per_second = latencies.len() as f64 / elapsed;
    println!(
        "storage ceiling (raw sqlx, {tasks} tasks, {:?}): {} commits in {elapsed:.1} s = {per_second:.0} tx/s; latency {}{}",
        args.db,
        latencies.len(),
        fmt_pct(percentiles(latencies)),
        if errors > 0 {
            format!("; {errors} tasks failed")
        } else {
            String::new()
        }
    );
    db.drop_now().await;
    Ok(per_second)
}

/// Queues `--messages` replies with the sender stopped, then starts the sender
/// alone and times how fast the sink receives them.
async fn sender_only(args: &Args, sink: &Sink) -> anyhow::Result<()> {
    if args.target.is_some() {
        bail!("--sender-only starts its own servers: drop --target");
    }
    let dir = tempfile::tempdir()?;
    let flows = write_flows(dir.path(), args.bots, args.flow_variant())?;
    let db = FreshDb::create(args.db, dir.path(), "sender").await?;
    db.drop_indexes(&args.drop_index).await?;
    let log = dir.path().join("server.log");
    let server = Server::start(args, &flows, &db.url, Role::Serve { sender: false }, &log).await?;
    let driver = Arc::new(Driver::new(&server.base, args, args.bots)?);
    let plan = Plan {
        rate: Rate::Max,
        messages: Some(args.messages.unwrap_or(20_000)),
        ..Plan::of(args)
    };
    let run = drive(driver, plan).await;
    let queued = summarise("queueing (sender stopped)", &run);
    server.stop().await;
    sink.clear();

    let started = Instant::now();
    let log = dir.path().join("sender.log");
    let sender = Server::start(args, &flows, &db.url, Role::Send, &log).await?;
    sink.drain(queued.ok, Duration::from_secs(10)).await;
    let received = sink.received();
    print_rss(&sender);
    sender.stop().await;
    if let (Some((_, first)), Some((_, last))) = (received.first(), received.last()) {
        let span = last.duration_since(*first).as_secs_f64();
        println!(
            "sender: {} of {} replies sent; {:.0} sends/s from first to last send ({span:.2} s), {:.0}/s including start-up ({:.2} s); fake Twilio latency {} ms; {} contacts",
            received.len(),
            queued.ok,
            received.len() as f64 / span,
            received.len() as f64 / last.duration_since(started).as_secs_f64(),
            last.duration_since(started).as_secs_f64(),
            args.twilio_latency_ms,
            args.contacts
        );
    } else {
        println!("sender: nothing sent");
    }
    println!("load average at the end: {}", load_average());
    db.drop_now().await;
    Ok(())
}

/// Idle RSS of a child server with one bot and with `--bots` bots.
async fn idle_rss(args: &Args) -> anyhow::Result<()> {
    if args.server != ServerKind::Child {
        bail!("--idle-rss measures a child process: use --server child");
    }
    let mut figures = Vec::new();
    for n in [1, args.bots.max(2)] {
        let dir = tempfile::tempdir()?;
        let flows = write_flows(dir.path(), n, FlowVariant::default())?;
        let db = FreshDb::create(args.db, dir.path(), "idle").await?;
        let log = dir.path().join("server.log");
        let started = Instant::now();
        let server =
            Server::start(args, &flows, &db.url, Role::Serve { sender: true }, &log).await?;
        let ready = started.elapsed();
        // Let start-up garbage (load buffers, the first sender poll) settle.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (rss, peak) = server.rss_kib().context("read the server's RSS")?;
        println!(
            "{n} bot(s): idle RSS {:.1} MiB (peak {:.1} MiB), ready in {:.2} s",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0,
            ready.as_secs_f64()
        );
        figures.push((n, rss));
        server.stop().await;
        db.drop_now().await;
    }
    let (n1, r1) = figures[0];
    let (n2, r2) = figures[1];
    println!(
        "per bot: {:.0} KiB ((RSS with {n2} - RSS with {n1}) / {})",
        (r2 as f64 - r1 as f64) / (n2 - n1) as f64,
        n2 - n1
    );
    println!("load average at the end: {}", load_average());
    Ok(())
}

// ---------------------------------------------------------------------------------
// Conversations the business starts: --broadcast and --timers

/// The broadcast's contacts: `whatsapp:+1999...`, apart from the driver's.
const BROADCAST_PREFIX: &str = "whatsapp:+1999";

/// A broadcast posted as the run starts, watched while it drains.
struct Broadcast {
    total: usize,
    posted: Instant,
    watcher: tokio::task::JoinHandle<anyhow::Result<Watched>>,
}

/// What watching a broadcast's progress saw.
struct Watched {
    /// When every contact had been run (started or skipped), when the last
    /// message reached the sink, and the contacts started.
    all_run: Duration,
    all_sent: Duration,
    started: usize,
    /// How long each progress request took.
    polls: Vec<Duration>,
}

impl Broadcast {
    /// Posts kibo-auto's reminder (a template: the contacts never wrote) to
    /// `total` new contacts and starts watching its progress.
    async fn start(base: &str, total: usize, sink: &Sink) -> anyhow::Result<Broadcast> {
        let contacts: Vec<serde_json::Value> = (0..total)
            .map(|i| {
                serde_json::json!({
                    "to": format!("{BROADCAST_PREFIX}{i:07}"),
                    "vars": {"name": format!("N{i}"), "day": "Tuesday", "time": "10:00"},
                })
            })
            .collect();
        let body = serde_json::json!({"node": "test_drive_reminder", "contacts": contacts});
        let client = reqwest::Client::new();
        let posted = Instant::now();
        let answer = client
            .post(format!("{base}/api/bots/{}/broadcasts", bot_ids(1)[0]))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await?;
        let status = answer.status();
        let accepted: serde_json::Value = answer.json().await?;
        anyhow::ensure!(
            status == StatusCode::ACCEPTED,
            "broadcast refused: {status} {accepted}"
        );
        println!(
            "broadcast: {total} contacts accepted in {:.2} s (id {})",
            posted.elapsed().as_secs_f64(),
            accepted["id"]
        );
        let url = format!("{base}/api/broadcasts/{}", accepted["id"]);
        let shared = sink.shared.clone();
        let watcher = tokio::spawn(async move {
            let mut all_run = None;
            let mut polls = Vec::new();
            loop {
                let asked = Instant::now();
                let progress: serde_json::Value = client
                    .get(&url)
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await?
                    .json()
                    .await?;
                polls.push(asked.elapsed());
                if all_run.is_none() && progress["pending"] == 0 {
                    all_run = Some(posted.elapsed());
                }
                let started = progress["started"].as_u64().unwrap_or(0) as usize;
                let sent = shared
                    .received
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(to, _)| to.starts_with(BROADCAST_PREFIX))
                    .count();
                if let Some(all_run) = all_run {
                    if sent >= started {
                        return Ok(Watched {
                            all_run,
                            all_sent: posted.elapsed(),
                            started,
                            polls,
                        });
                    }
                }
                anyhow::ensure!(
                    posted.elapsed() < Duration::from_secs(1800),
                    "the broadcast did not finish in 30 minutes: {progress}"
                );
                // As someone watching would. (Progress counted the messages
                // through a join of all the contacts until session 9: 0.3 s
                // at 36,000, which polled every 100 ms kept a core busy.)
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(Broadcast {
            total,
            posted,
            watcher,
        })
    }

    /// Waits for the broadcast to be sent and reports it.
    async fn finish(self, sink: &Sink) -> anyhow::Result<()> {
        let Watched {
            all_run,
            all_sent,
            started,
            mut polls,
        } = self.watcher.await??;
        let mut sends: Vec<Instant> = sink
            .received()
            .into_iter()
            .filter(|(to, _)| to.starts_with(BROADCAST_PREFIX))
            .map(|(_, at)| at)
            .collect();
        sends.sort_unstable();
        let first = sends.first().map(|at| at.duration_since(self.posted));
        let span = match (sends.first(), sends.last()) {
            (Some(first), Some(last)) => last.duration_since(*first).as_secs_f64(),
            _ => 0.0,
        };
        println!(
            "broadcast: {started} of {} started, every contact run after {:.1} s; \
             first message sent after {:.2} s, all {} sent after {:.1} s = {:.0} sends/s",
            self.total,
            all_run.as_secs_f64(),
            first.unwrap_or_default().as_secs_f64(),
            sends.len(),
            all_sent.as_secs_f64(),
            sends.len() as f64 / span.max(0.001),
        );
        polls.sort_unstable();
        let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        println!(
            "broadcast progress (GET /api/broadcasts/{{id}}, once a second): {} requests, \
             p50 {:.1} ms, max {:.1} ms",
            polls.len(),
            ms(polls.get(polls.len() / 2)),
            ms(polls.last()),
        );
        Ok(())
    }
}

/// A bot whose first node asks and waits `secs` seconds; then `nudge`.
fn write_timer_bot(flows: &Path, secs: u64) -> anyhow::Result<()> {
    let dir = flows.join("timers");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("bot.yaml"),
        "name: Timers\nstart: ask\nsession_timeout: 1d\ntwilio:\n  \
         account_sid: ${KIBO_TWILIO_ACCOUNT_SID}\n  auth_token: ${KIBO_TWILIO_AUTH_TOKEN}\n  \
         from: \"+14155238886\"\n  api_base: ${KIBO_TWILIO_API_BASE}\n",
    )?;
    std::fs::write(
        dir.join("nodes.yaml"),
        format!(
            "ask:\n  say: Are you there?\n  options:\n    - label: Yes\n      say: Good.\n  \
             timeout: {secs}s\n  on_timeout: nudge\n\nnudge:\n  say: Still there?\n"
        ),
    )?;
    Ok(())
}

/// `--timers N`: N contacts each write once to a bot whose question waits
/// `--timer-secs`; reports how late each wait's message reached the sink.
/// Lateness is measured from the webhook's answer plus the wait (the timer
/// was set by the step just before the commit, so this reads a little low).
async fn timers(args: &Args, sink: &Sink, n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let flows = write_flows(dir.path(), 1, args.flow_variant())?;
    write_timer_bot(&flows, args.timer_secs)?;
    let db = FreshDb::create(args.db, dir.path(), "timers").await?;
    let log = dir.path().join("server.log");
    let server = Server::start(args, &flows, &db.url, Role::Serve { sender: true }, &log).await?;
    let url = format!("{}/webhooks/twilio/timers", server.base);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let started = Instant::now();
    let answered: Vec<(String, Instant)> = futures::stream::iter(0..n)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let contact = format!("+1888{i:07}");
                let params: Vec<(String, String)> = [
                    ("MessageSid", format!("SM{:032x}", i)),
                    ("AccountSid", ACCOUNT_SID.to_owned()),
                    ("From", contact.clone()),
                    ("To", "+14155238886".to_owned()),
                    ("Body", "hi".to_owned()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                let signature = signature::compute(AUTH_TOKEN, &url, &params);
                let form = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&params)
                    .finish();
                let answer = client
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-twilio-signature", signature)
                    .body(form)
                    .send()
                    .await?;
                anyhow::ensure!(answer.status().is_success(), "webhook {}", answer.status());
                Ok((contact, Instant::now()))
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect::<Vec<anyhow::Result<_>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    println!(
        "timers: {n} waits of {} s set in {:.1} s",
        args.timer_secs,
        started.elapsed().as_secs_f64()
    );
    // The question and the nudge for each.
    let wait = Duration::from_secs(args.timer_secs);
    let deadline = Instant::now() + wait + Duration::from_secs(300);
    while sink.count() < 2 * n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut nudged: HashMap<String, Instant> = HashMap::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (to, at) in sink.received() {
        let k = seen.entry(to.clone()).or_default();
        *k += 1;
        if *k == 2 {
            nudged.insert(to, at);
        }
    }
    let late: Vec<f64> = answered
        .iter()
        .filter_map(|(contact, at)| {
            let fired = nudged.get(contact)?;
            Some(ms(fired.saturating_duration_since(*at + wait)))
        })
        .collect();
    println!(
        "timers: {} of {n} fired; lateness {}",
        late.len(),
        fmt_pct(percentiles(late.clone()))
    );
    server.stop().await;
    db.drop_now().await;
    Ok(())
}

/// `--browse`: signs in to the console and views pages at `per_second` until
/// `stop`; answers each view's time in ms.
async fn browse(
    base: String,
    per_second: f64,
    stop: CancellationToken,
) -> anyhow::Result<Vec<f64>> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let signed_in = client
        .post(format!("{base}/console/signin"))
        .form(&[("token", ADMIN_TOKEN), ("next", "")])
        .send()
        .await?;
    let cookie = signed_in
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .context("the console's sign-in set no cookie")?;
    let bot = bot_ids(1)[0].clone();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(0.1)));
    let mut views = Vec::new();
    let mut timeline: Option<String> = None;
    for n in 0usize.. {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let path = match (n % 3, &timeline) {
            (1, Some(path)) => path.clone(),
            (2, _) => format!("/console/outbox?bot={bot}"),
            _ => format!("/console/conversations?bot={bot}"),
        };
        let started = Instant::now();
        let page = client
            .get(format!("{base}{path}"))
            .header(header::COOKIE, &cookie)
            .send()
            .await?;
        anyhow::ensure!(page.status().is_success(), "{path}: {}", page.status());
        let html = page.text().await?;
        views.push(ms(started.elapsed()));
        if timeline.is_none() {
            // The first conversation listed is the timeline to view.
            timeline = html
                .split("href=\"/console/conversations/")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(|id| format!("/console/conversations/{id}"));
        }
    }
    Ok(views)
}
