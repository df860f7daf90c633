//! A Rust function for flow authors: `crm_lookup(phone)`, backed by the host's own
//! customer records, called from `examples/flows/crm-demo/greet.rhai`.
//!
//! ```text
//! cargo run --example custom_functions            # serve on 127.0.0.1:3000 until Ctrl-C
//! cargo run --example custom_functions -- --once  # a scripted conversation, then exit
//! ```
//!
//! Dry-run on a SQLite file in the temp folder: replies are printed, not sent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use switchboard::{App, CancellationToken, Config};

/// The host's customer records (a database or an API client in a real service).
#[derive(Clone, Serialize)]
struct Customer {
    name: String,
    tier: String,
}

/// Contacts the demo plays: a known customer, a stranger, and one whose lookup
/// fails (the CRM is "down"), which gives the contact the bot's `error_reply`.
const KNOWN: &str = "+15550001111";
const STRANGER: &str = "+15550002222";
const CRM_DOWN: &str = "+15550009999";

fn crm() -> Arc<HashMap<String, Customer>> {
    let mut customers = HashMap::new();
    customers.insert(
        KNOWN.to_owned(),
        Customer {
            name: "Ada".to_owned(),
            tier: "gold".to_owned(),
        },
    );
    Arc::new(customers)
}

/// Serves `flows` with `crm_lookup` registered for the `crm-demo` bot. With `once`,
/// plays a few messages and returns the replies each contact got, in order.
pub async fn run(
    flows: &Path,
    database_url: &str,
    once: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    let customers = crm();
    let mut config = Config::new(flows, database_url);
    config.dry_run = true;
    let app = App::builder(config)
        // Only this bot's authors get the function; another bot's script calling it
        // fails to load (and `check` says so).
        .bot_script_function("crm-demo", "crm_lookup", move |phone: String| {
            if phone == CRM_DOWN {
                return Err("CRM timed out".to_owned());
            }
            // `None` is `()` in the script.
            Ok(customers.get(&phone).cloned())
        })
        .build()
        .await?;

    let address = if once {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    };
    let listener = tokio::net::TcpListener::bind(address).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let store = app.store().clone();
    let sender = app.sender();
    let stop = CancellationToken::new();
    // The sender is stepped by hand below in `--once`, so replies come out in order.
    let server = tokio::spawn(app.serve(listener, stop.clone(), !once));

    let mut replies = Vec::new();
    if once {
        let http = reqwest::Client::new();
        let script = [
            (KNOWN, "hi"),
            (STRANGER, "hi"),
            (STRANGER, "Grace"),
            (CRM_DOWN, "hi"),
        ];
        for (n, (from, text)) in script.into_iter().enumerate() {
            http.post(format!("{base}/webhooks/twilio/crm-demo"))
                .form(&[
                    ("MessageSid", format!("SM{n:032x}").as_str()),
                    ("From", from),
                    ("Body", text),
                ])
                .send()
                .await?
                .error_for_status()?;
        }
        while sender.run_once().await? > 0 {}
        for contact in [KNOWN, STRANGER, CRM_DOWN] {
            for row in store.outbox_for("crm-demo", contact).await? {
                replies.push((contact.to_owned(), row.body));
            }
        }
    } else {
        println!("Serving the crm-demo bot at {base}/webhooks/twilio/crm-demo");
        println!("Try: curl -d MessageSid=SM00000000000000000000000000000001 -d From={KNOWN} -d Body=hi {base}/webhooks/twilio/crm-demo");
        tokio::signal::ctrl_c().await?;
    }
    stop.cancel();
    server.await??;
    Ok(replies)
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
        temp.path().join("switchboard-crm-demo.db").display()
    );
    for (contact, reply) in run(&examples_dir().join("flows"), &database_url, once).await? {
        println!("to {contact}: {reply}");
    }
    Ok(())
}
