//! The embedding API through the public surface only, as an outside crate uses it:
//! the nested router, Rust functions for scripts (per bot too), event hooks, and the
//! replaceable clock and script HTTP client. Every test runs on SQLite, and on
//! Postgres too when `DATABASE_URL` is set.

#[path = "it/support/db.rs"]
#[allow(dead_code)]
mod db;

/// Where `both_stores!` finds [`db::TestDb`], as in the `it` binary.
mod support {
    pub(crate) use super::db;
}

#[path = "../examples/events.rs"]
#[allow(dead_code)]
mod events_example;

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use switchboard::domain::FixedClock;
use switchboard::{
    App, AppBuilder, CancellationToken, Config, EventSink, HttpRequest, HttpResponse, MessageEvent,
    ScriptHttp, SendEvent, SendEventOutcome,
};
use tokio::sync::mpsc;

use db::TestDb;

const TOKEN: &str = "embedding-test-token";
const ERROR_REPLY: &str = "Sorry, something broke.";
const ADA: &str = "+15550001111";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Two bots: `shop` (signed webhooks, scripts calling host functions) and `other`,
/// whose script calls a function registered for `shop` only.
fn write_flows(flows: &Path) {
    write(
        &flows.join("shop/bot.yaml"),
        &format!(
            r#"name: Shop
start: main
error_reply: "{ERROR_REPLY}"
keywords:
  hi: greet
  err: failing
  panic: panicking
  time: clock
  fetch: fetch
  mine: mine
twilio:
  account_sid: AC0123456789abcdef0123456789abcdef
  auth_token: {TOKEN}
  from: "+15550000000"
http:
  allow: [crm.example]
"#
        ),
    );
    write(&flows.join("shop/nodes.yaml"), "main:\n  say: Main menu\n");
    write(
        &flows.join("shop/greet.rhai"),
        r#"fn start() {
    let customer = crm_lookup(user.phone);
    if customer == () {
        say("Who are you?");
    } else {
        say(`Welcome back, ${customer.name} (${customer.tier})`);
    }
}
"#,
    );
    write(
        &flows.join("shop/failing.rhai"),
        "fn start() {\n    say(\"before\");\n    let x = fails();\n    say(\"after\");\n}\n",
    );
    write(
        &flows.join("shop/panicking.rhai"),
        "fn start() {\n    let x = explodes(1, 2);\n    say(\"after\");\n}\n",
    );
    write(
        &flows.join("shop/clock.rhai"),
        "fn start() {\n    say(now());\n}\n",
    );
    write(
        &flows.join("shop/fetch.rhai"),
        r#"fn start() {
    let r = http_get("http://crm.example/status");
    say(`${r.status} ${r.json.state}`);
}
"#,
    );
    write(
        &flows.join("shop/mine.rhai"),
        "fn start() {\n    say(shop_only());\n}\n",
    );
    write(
        &flows.join("other/bot.yaml"),
        "name: Other\nstart: steal\nerror_reply: nope\n",
    );
    write(
        &flows.join("other/steal.rhai"),
        "fn start() {\n    say(shop_only());\n}\n",
    );
}

fn builder(flows: &Path, database_url: &str) -> AppBuilder {
    let mut config = Config::new(flows, database_url);
    // Signatures are still checked (the bot has a token); sends are only recorded.
    config.dry_run = true;
    config.watch = false;
    App::builder(config)
        .script_function("crm_lookup", |phone: String| {
            Ok::<_, String>((phone == ADA).then(|| json!({"name": "Ada", "tier": "gold"})))
        })
        .script_function("fails", || Err::<Value, _>("CRM is down"))
        .script_function("explodes", |_a: i64, _b: i64| -> Result<Value, String> {
            panic!("host function bug")
        })
        .bot_script_function("shop", "shop_only", || Ok::<_, String>("shop secret"))
}

/// A host application with the engine nested under `/bots`, served on a free port.
struct Host {
    base: String,
    app: App,
    http: reqwest::Client,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    _flows: tempfile::TempDir,
}

impl Host {
    async fn start(database_url: &str, customize: impl FnOnce(AppBuilder) -> AppBuilder) -> Host {
        let flows = tempfile::tempdir().unwrap();
        write_flows(flows.path());
        let app = customize(builder(flows.path(), database_url).mount_path("/bots"))
            .build()
            .await
            .expect("engine builds");
        let router = Router::new()
            .route("/", axum::routing::get(|| async { "host home" }))
            .nest("/bots", app.router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .unwrap();
        });
        Host {
            base,
            app,
            http: reqwest::Client::new(),
            stop,
            server,
            _flows: flows,
        }
    }

    /// Posts a webhook signed over the full public URL, `/bots` prefix included.
    /// Sends `text` from `from`, signed for the shop bot, and asserts the 200.
    async fn message(&self, from: &str, sid: &str, text: &str) {
        let status = self
            .message_signed_for(from, sid, text, "/bots/webhooks/twilio/shop")
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "webhook for {text:?}");
    }

    async fn message_signed_for(
        &self,
        from: &str,
        sid: &str,
        text: &str,
        signed_path: &str,
    ) -> reqwest::StatusCode {
        let params = [("MessageSid", sid), ("From", from), ("Body", text)];
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let signature = switchboard::twilio::signature::compute(
            TOKEN,
            &format!("{}{signed_path}", self.base),
            &owned,
        );
        self.http
            .post(format!("{}/bots/webhooks/twilio/shop", self.base))
            .header("X-Twilio-Signature", signature)
            .form(&params)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Sends what is due (dry run) and returns every reply body `contact` got.
    async fn replies(&self, contact: &str) -> Vec<String> {
        while self.app.sender().run_once().await.unwrap() > 0 {}
        self.app
            .store()
            .outbox_for("shop", contact)
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.body)
            .collect()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.server.await.unwrap();
        self.app.close().await;
    }
}

both_stores!(nested_router_checks_the_full_signed_url, |db| async move {
    let host = Host::start(&db.url, |b| b).await;
    let home = host
        .http
        .get(format!("{}/", host.base))
        .send()
        .await
        .unwrap();
    assert_eq!(home.text().await.unwrap(), "host home");

    // Signed over the URL without the prefix: what a nest-unaware check would accept.
    let status = host
        .message_signed_for(
            ADA,
            "SM0000000000000000000000000000010a",
            "hi",
            "/webhooks/twilio/shop",
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);

    host.message(ADA, "SM0000000000000000000000000000010b", "hi")
        .await;
    assert_eq!(host.replies(ADA).await, vec!["Welcome back, Ada (gold)"]);
    host.stop().await;
});

both_stores!(registered_function_serves_scripts, |db| async move {
    let host = Host::start(&db.url, |b| b).await;
    host.message(ADA, "SM00000000000000000000000000000106", "hi")
        .await;
    host.message("+15550002222", "SM00000000000000000000000000000107", "hi")
        .await;
    assert_eq!(host.replies(ADA).await, vec!["Welcome back, Ada (gold)"]);
    assert_eq!(host.replies("+15550002222").await, vec!["Who are you?"]);
    host.stop().await;
});

both_stores!(
    failing_functions_give_error_reply_and_the_server_carries_on,
    |db| async move {
        let host = Host::start(&db.url, |b| b).await;
        let contact = "+15550003333";
        // An Err: "before" is dropped with the failed turn, the contact gets error_reply.
        host.message(contact, "SM00000000000000000000000000000101", "err")
            .await;
        // A panic inside the host function: the same, and the process is fine.
        host.message(contact, "SM00000000000000000000000000000102", "panic")
            .await;
        host.message(contact, "SM00000000000000000000000000000103", "hi")
            .await;
        assert_eq!(
            host.replies(contact).await,
            vec![ERROR_REPLY, ERROR_REPLY, "Who are you?"]
        );
        host.stop().await;
    }
);

both_stores!(
    per_bot_function_is_a_load_error_elsewhere,
    |db| async move {
        let flows = tempfile::tempdir().unwrap();
        write_flows(flows.path());
        let builder = builder(flows.path(), &db.url);
        let diagnostics: Vec<_> = builder
            .check()
            .unwrap()
            .into_iter()
            .filter(|d| d.severity == switchboard::domain::Severity::Error)
            .collect();
        // Only `other` is reported: `shop` calls its own function and the shared ones.
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        let d = &diagnostics[0];
        assert!(d.file.ends_with("other/steal.rhai"), "{d}");
        assert!(
            d.message
                .contains("shop_only() is not available to this bot"),
            "{d}"
        );
        let app = builder.build().await.unwrap();
        assert!(app.registry().get("shop").is_some());
        assert!(app.registry().get("other").is_none());
        app.close().await;

        // The owning bot can call it.
        let host = Host::start(&db.url, |b| b).await;
        host.message(ADA, "SM00000000000000000000000000000109", "mine")
            .await;
        assert_eq!(host.replies(ADA).await, vec!["shop secret"]);
        host.stop().await;
    }
);

#[tokio::test]
async fn bad_function_names_fail_the_build() {
    let flows = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite().await;
    let built = App::builder(Config::new(flows.path(), &db.url))
        .script_function("say", || Ok::<_, String>(1))
        .build()
        .await;
    let error = built.expect_err("`say` is the author API's").to_string();
    assert!(error.contains("`say`"), "{error}");
}

/// Forwards events to the test, after checking, on the sink's own thread, that what
/// a message event describes is already committed.
struct Forward {
    store: switchboard::store::Store,
    runtime: tokio::runtime::Handle,
    events: mpsc::UnboundedSender<(String, bool)>,
    panic_first: Mutex<bool>,
}

impl EventSink for Forward {
    fn message_processed(&self, e: &MessageEvent) {
        let rows = self
            .runtime
            .block_on(self.store.outbox_for(&e.bot, &e.contact))
            .unwrap();
        let committed = rows.len() >= e.replies;
        self.events
            .send((
                format!("message {} replies={}", e.message_sid, e.replies),
                committed,
            ))
            .unwrap();
        let mut first = self.panic_first.lock().unwrap();
        if *first {
            *first = false;
            drop(first);
            panic!("a buggy hook");
        }
    }

    fn send_finished(&self, e: &SendEvent) {
        let outcome = match &e.outcome {
            SendEventOutcome::Sent { .. } => "sent",
            _ => "not sent",
        };
        self.events
            .send((format!("send {} {outcome}", e.contact), true))
            .unwrap();
    }
}

both_stores!(
    hooks_see_commits_and_a_panicking_hook_breaks_nothing,
    |db| async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let store = switchboard::store::Store::connect(&db.url).await.unwrap();
        let sink = Arc::new(Forward {
            store,
            runtime: tokio::runtime::Handle::current(),
            events: tx,
            panic_first: Mutex::new(true),
        });
        let host = Host::start(&db.url, |b| b.events(sink)).await;
        let contact = "+15550004444";
        // The hook panics on the first event: delivery and later events go on.
        host.message(contact, "SM00000000000000000000000000000104", "hi")
            .await;
        host.message(contact, "SM00000000000000000000000000000105", "hi")
            .await;
        assert_eq!(
            host.replies(contact).await,
            vec!["Who are you?", "Who are you?"]
        );
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let (event, committed) = rx.recv().await.unwrap();
            assert!(committed, "event before commit: {event}");
            seen.push(event);
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                "message SM00000000000000000000000000000104 replies=1",
                "message SM00000000000000000000000000000105 replies=1",
                &format!("send {contact} sent"),
                &format!("send {contact} sent"),
            ]
        );
        assert_eq!(host.app.events_dropped(), 0);
        host.stop().await;
    }
);

#[derive(Default)]
struct StubCrm(Mutex<Vec<String>>);

impl ScriptHttp for StubCrm {
    fn request(&self, req: &HttpRequest) -> Result<HttpResponse, String> {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", req.method, req.url));
        Ok(HttpResponse::json(200, &json!({"state": "open"})))
    }
}

both_stores!(replaced_clock_and_script_http_are_used, |db| async move {
    let http = Arc::new(StubCrm::default());
    let at = Utc.with_ymd_and_hms(2031, 2, 3, 4, 5, 6).unwrap();
    let host = Host::start(&db.url, |b| {
        b.clock(Arc::new(FixedClock(at))).script_http(http.clone())
    })
    .await;
    host.message(ADA, "SM00000000000000000000000000000100", "time")
        .await;
    host.message(ADA, "SM00000000000000000000000000000108", "fetch")
        .await;
    assert_eq!(
        host.replies(ADA).await,
        vec!["2031-02-03T04:05:06Z", "200 open"]
    );
    assert_eq!(
        *http.0.lock().unwrap(),
        vec!["GET http://crm.example/status"]
    );
    host.stop().await;
});

/// The `events` example, run end to end as `cargo run --example events -- --once`
/// would, on the example bots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_example_runs() {
    let temp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", temp.path().join("events.db").display());
    let flows = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flows");
    let lines = events_example::run(&flows, &url, &temp.path().join("events.log"), true)
        .await
        .unwrap();
    let messages = lines
        .iter()
        .filter(|l| l.starts_with("message bot=hello"))
        .count();
    let sends = lines
        .iter()
        .filter(|l| l.starts_with("send bot=hello") && l.contains("Sent"))
        .count();
    assert_eq!((messages, sends), (2, 3), "{lines:#?}");
}
