//! Hooks: write one line per processed message and per send outcome to a file.
//!
//! ```text
//! cargo run --example events            # serve on 127.0.0.1:3000 until Ctrl-C
//! cargo run --example events -- --once  # send two messages to itself, print the file, exit
//! ```
//!
//! Runs the `hello` bot of `examples/flows/` on a SQLite file in the temp folder, in
//! dry-run mode (replies are recorded, not sent to Twilio). The lines go to
//! `switchboard-events.log` in the temp folder.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use switchboard::{App, CancellationToken, Config, EventSink, MessageEvent, SendEvent};
use tokio::sync::watch;

/// Writes each event as one line; counts them so `--once` knows when it is done.
struct FileSink {
    file: Mutex<File>,
    seen: watch::Sender<usize>,
}

impl FileSink {
    fn line(&self, line: String) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk must not stop the bots: the hook only reports.
        if let Err(error) = writeln!(file, "{line}") {
            eprintln!("events: could not write: {error}");
        }
        self.seen.send_modify(|n| *n += 1);
    }
}

impl EventSink for FileSink {
    fn message_processed(&self, e: &MessageEvent) {
        self.line(format!(
            "message bot={} contact={} sid={} replies={} error={}",
            e.bot,
            e.contact,
            e.message_sid,
            e.replies,
            e.flow_error.as_deref().unwrap_or("-")
        ));
    }

    fn send_finished(&self, e: &SendEvent) {
        self.line(format!(
            "send bot={} contact={} outbox_id={} attempt={} outcome={:?}",
            e.bot, e.contact, e.outbox_id, e.attempt, e.outcome
        ));
    }
}

/// Serves the `flows` folder with the file hook. With `once`, posts two messages to
/// itself, waits for their events (2 messages + 4 sends), stops and returns the
/// file's lines; otherwise serves on 127.0.0.1:3000 until Ctrl-C.
pub async fn run(
    flows: &Path,
    database_url: &str,
    out: &Path,
    once: bool,
) -> anyhow::Result<Vec<String>> {
    let (seen, mut seen_rx) = watch::channel(0);
    let sink = Arc::new(FileSink {
        file: Mutex::new(File::create(out)?),
        seen,
    });
    let mut config = Config::new(flows, database_url);
    config.dry_run = true;
    let app = App::builder(config).events(sink).build().await?;

    let address = if once {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    };
    let listener = tokio::net::TcpListener::bind(address).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, stop.clone(), true));

    if once {
        let http = reqwest::Client::new();
        for (sid, text) in [
            ("SM000000000000000000000000000000e1", "menu"),
            ("SM000000000000000000000000000000e2", "1"),
        ] {
            http.post(format!("{base}/webhooks/twilio/hello"))
                .form(&[
                    ("MessageSid", sid),
                    ("From", "whatsapp:+15550001111"),
                    ("Body", text),
                ])
                .send()
                .await?
                .error_for_status()?;
        }
        // "menu": the menu (1 reply); "1": the hours and the menu again (2 replies),
        // plus one line per message: wait for all of them, however long it takes.
        seen_rx.wait_for(|n| *n >= 2 + 3).await?;
    } else {
        println!(
            "Serving the hello bot at {base}/webhooks/twilio/hello; events go to {}",
            out.display()
        );
        println!("Try: curl -d MessageSid=SM00000000000000000000000000000001 -d From=+15550001111 -d Body=hi {base}/webhooks/twilio/hello");
        tokio::signal::ctrl_c().await?;
    }
    stop.cancel();
    server.await??;
    Ok(std::fs::read_to_string(out)?
        .lines()
        .map(str::to_owned)
        .collect())
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[allow(dead_code)] // unused when the test suite includes this file
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let once = std::env::args().any(|a| a == "--once");
    // A fresh database each run, removed on exit.
    let temp = tempfile::tempdir()?;
    let database_url = format!(
        "sqlite://{}",
        temp.path().join("switchboard-events.db").display()
    );
    let out = std::env::temp_dir().join("switchboard-events.log");
    for line in run(&examples_dir().join("flows"), &database_url, &out, once).await? {
        println!("{line}");
    }
    Ok(())
}
