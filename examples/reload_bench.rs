//! Hot-reload figures: save-to-live latency (native events and polling), and the
//! reload time of one bot when 1,000 bots are loaded.
//!
//! Drives the registry and watcher in-process: the clock starts just before a file
//! is written and stops when the registry serves the version with the new text.
//!
//! `cargo run --release --example reload_bench [SAVES] [POLL_SAVES]` (default 100 50).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::flow::{
    self, load_bot, LoadOptions, Node, Registry, ReloadOutcome, WatchOptions, Watcher,
};
use switchboard::script::{Limits, ScriptEngine};
use tokio::sync::broadcast::error::RecvError;

const BOT_YAML: &str =
    "name: Bench\ntwilio:\n  account_sid: AC1\n  auth_token: tok\n  from: \"whatsapp:+1\"\n";

/// A bot of a realistic size: ten menu nodes, the first greeting with `greeting`.
fn nodes_yaml(greeting: &str) -> String {
    let mut yaml = format!(
        "main:\n  say: {greeting}\n  options:\n    - label: Next\n      goto: n1\n    - label: Bye\n      say: Goodbye!\n"
    );
    for i in 1..10 {
        let next = if i == 9 {
            "main".to_owned()
        } else {
            format!("n{}", i + 1)
        };
        yaml.push_str(&format!(
            "n{i}:\n  say: \"Step {i}, {{{{ user.name }}}}\"\n  options:\n    - label: On\n      goto: {next}\n    - label: Back\n      goto: main\n"
        ));
    }
    yaml
}

fn write_bot(flows: &Path, id: &str, greeting: &str) {
    let dir = flows.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bot.yaml"), BOT_YAML).unwrap();
    std::fs::write(dir.join("nodes.yaml"), nodes_yaml(greeting)).unwrap();
}

fn options() -> LoadOptions {
    LoadOptions {
        allow_missing_credentials: true,
        env: Some(HashMap::new()),
    }
}

fn greeting(registry: &Registry, id: &str) -> Option<String> {
    match registry.get(id)?.node("main") {
        Some(Node::Menu(menu)) => Some(menu.say[0].source.clone()),
        _ => None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label}: n={} p50={:.1} ms p99={:.1} ms min={:.1} ms max={:.1} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
    );
}

/// Saves `id`'s nodes `saves` times; each time, waits until the new greeting is
/// served. Returns save-to-live latencies and the watcher's own reload times.
async fn save_to_live(
    flows: &Path,
    registry: &Registry,
    watcher: &Watcher,
    id: &str,
    saves: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut reloads = watcher.subscribe();
    let file = flows.join(id).join("nodes.yaml");
    let mut latencies = Vec::with_capacity(saves);
    let mut took = Vec::with_capacity(saves);
    for i in 0..saves {
        let text = format!("Welcome, version {i}!");
        let yaml = nodes_yaml(&text);
        let started = Instant::now();
        std::fs::write(&file, yaml).unwrap();
        loop {
            let reload = match tokio::time::timeout(Duration::from_secs(10), reloads.recv())
                .await
                .expect("a reload within 10 s")
            {
                Ok(reload) => reload,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => panic!("watcher stopped"),
            };
            if reload.bot.as_str() != id {
                continue;
            }
            assert_eq!(reload.outcome, ReloadOutcome::Loaded, "{reload:?}");
            if greeting(registry, id).as_deref() == Some(text.as_str()) {
                latencies.push(started.elapsed());
                took.push(reload.took);
                break;
            }
        }
        // People save seconds apart: let the events of this save settle before the
        // next, so one save's trailing events do not make the next look faster.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while reloads.try_recv().is_ok() {}
    }
    (latencies, took)
}

async fn latency(poll: bool, saves: usize) {
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), "shop", "Welcome!");
    let engine = ScriptEngine::new(Limits::default());
    let registry = Arc::new(Registry::new());
    registry.replace_all(flow::load_flows(dir.path(), &engine, &options()));
    let watch_options = WatchOptions {
        poll,
        load: options(),
        ..WatchOptions::default()
    };
    let watcher = flow::watch(dir.path(), registry.clone(), engine, watch_options.clone()).unwrap();
    let (latencies, _) = save_to_live(dir.path(), &registry, &watcher, "shop", saves).await;
    let mode = if poll {
        format!(
            "poll (interval {} ms, debounce {} ms)",
            watch_options.poll_interval.as_millis(),
            watch_options.debounce.as_millis()
        )
    } else {
        format!(
            "inotify (debounce {} ms)",
            watch_options.debounce.as_millis()
        )
    };
    summary(&format!("save-to-live, {mode}"), latencies);
    watcher.stop().await;
}

async fn thousand_bots(saves: usize) {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..1000 {
        write_bot(dir.path(), &format!("bot-{i:04}"), "Welcome!");
    }
    let engine = ScriptEngine::new(Limits::default());
    let registry = Arc::new(Registry::new());
    let started = Instant::now();
    let loaded = flow::load_flows(dir.path(), &engine, &options());
    assert_eq!(loaded.bots.len(), 1000);
    registry.replace_all(loaded);
    println!(
        "1,000 bots: full load at startup {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    // Load + atomic swap of one bot, without the watcher.
    let bot_dir = dir.path().join("bot-0500");
    let direct: Vec<Duration> = (0..saves)
        .map(|_| {
            let started = Instant::now();
            let bot = load_bot(&bot_dir, &engine, &options()).unwrap();
            registry.set_bot(bot);
            started.elapsed()
        })
        .collect();
    summary("1,000 bots: load_bot + swap of one bot", direct);

    let watcher = flow::watch(
        dir.path(),
        registry.clone(),
        engine,
        WatchOptions {
            load: options(),
            ..WatchOptions::default()
        },
    )
    .unwrap();
    let (latencies, took) = save_to_live(dir.path(), &registry, &watcher, "bot-0500", saves).await;
    summary("1,000 bots: watcher reload time of one bot", took);
    summary("1,000 bots: save-to-live, inotify", latencies);
    watcher.stop().await;
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a count"));
    let saves = args.next().unwrap_or(100);
    let poll_saves = args.next().unwrap_or(50);
    latency(false, saves).await;
    latency(true, poll_saves).await;
    thousand_bots(saves).await;
}
