//! Mount Switchboard under `/bots` in an existing axum application that has its own
//! routes, with one graceful shutdown for both.
//!
//! ```text
//! cargo run --example embed_in_axum            # serve on 127.0.0.1:3000 until Ctrl-C
//! cargo run --example embed_in_axum -- --once  # call both parts once, print, exit
//! ```
//!
//! Dry-run on a SQLite file in the temp folder, with the `hello` bot of
//! `examples/flows/`: Twilio posts to `https://your.host/bots/webhooks/twilio/hello`.

use std::path::{Path, PathBuf};

use axum::routing::get;
use axum::Router;
use switchboard::{App, CancellationToken, Config};

/// The host application's routes with Switchboard nested under `/bots`.
pub async fn build(flows: &Path, database_url: &str) -> anyhow::Result<(Router, App)> {
    let mut config = Config::new(flows, database_url);
    config.dry_run = true;
    let app = App::builder(config).mount_path("/bots").build().await?;
    let router = Router::new()
        .route(
            "/",
            get(|| async { "Welcome to Example Corp's own service." }),
        )
        .nest("/bots", app.router());
    Ok((router, app))
}

/// Serves the combined app; with `once`, calls the host's `/`, Switchboard's
/// `/bots/healthz` and the hello bot's webhook, and returns what they answered.
pub async fn run(flows: &Path, database_url: &str, once: bool) -> anyhow::Result<Vec<String>> {
    let (router, app) = build(flows, database_url).await?;
    let address = if once {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    };
    let listener = tokio::net::TcpListener::bind(address).await?;
    let base = format!("http://{}", listener.local_addr()?);

    let stop = CancellationToken::new();
    let sender = app.spawn_sender(stop.clone());
    let shutdown = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });

    let mut answers = Vec::new();
    if once {
        let http = reqwest::Client::new();
        let home = http.get(format!("{base}/")).send().await?.text().await?;
        answers.push(format!("GET / -> {home}"));
        let health = http.get(format!("{base}/bots/healthz")).send().await?;
        answers.push(format!("GET /bots/healthz -> {}", health.status()));
        let webhook = http
            .post(format!("{base}/bots/webhooks/twilio/hello"))
            .form(&[
                ("MessageSid", "SM000000000000000000000000000000e0"),
                ("From", "+15550001111"),
                ("Body", "hi"),
            ])
            .send()
            .await?;
        answers.push(format!(
            "POST /bots/webhooks/twilio/hello -> {}",
            webhook.status()
        ));
    } else {
        println!("Host app at {base}/, Switchboard under {base}/bots (try {base}/bots/healthz)");
        tokio::signal::ctrl_c().await?;
    }
    // Stop accepting, finish requests in flight, let sends in flight finish, close.
    stop.cancel();
    server.await??;
    sender.await?;
    app.close().await;
    Ok(answers)
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[allow(dead_code)] // unused when the test suite includes this file
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("switchboard=info")
        .init();
    let once = std::env::args().any(|a| a == "--once");
    // A fresh database each run, removed on exit.
    let temp = tempfile::tempdir()?;
    let database_url = format!(
        "sqlite://{}",
        temp.path().join("switchboard-embed.db").display()
    );
    for line in run(&examples_dir().join("flows"), &database_url, once).await? {
        println!("{line}");
    }
    Ok(())
}
