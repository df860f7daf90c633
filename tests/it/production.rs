//! Production behaviour in-process: wake-ups across instances through
//! LISTEN/NOTIFY, a rate limit shared by several senders, database outages,
//! secrets kept out of Debug output, metric descriptions and the admin token.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use switchboard::store::Store;
use switchboard::{App, Config, SenderConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::both_stores;
use crate::support::app::{
    fast_sender, new_contact, new_sid, write_shop_bot, Options, TestApp, ACCOUNT_SID, AUTH_TOKEN,
    BOT, FROM, WELCOME,
};
use crate::support::db::TestDb;
use crate::support::fake_twilio::FakeTwilio;
use crate::support::webhook::{busiest_second, post_signed};

/// One engine on a loopback port, started from a flows folder and database URL.
struct Instance {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Instance {
    async fn serve(
        flows: &Path,
        database_url: &str,
        sender: SenderConfig,
        run_sender: bool,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut config = Config::new(flows, database_url);
        config.public_url = Some(base.clone());
        config.watch = false;
        config.sender = sender;
        let app = App::builder(config).build().await.expect("app starts");
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            app.serve(listener, token, run_sender).await.expect("serve");
        });
        Instance {
            base,
            http: reqwest::Client::new(),
            stop,
            task,
        }
    }

    /// A `switchboard send` role: only the sender.
    async fn send_only(flows: &Path, database_url: &str, sender: SenderConfig) -> Self {
        let mut config = Config::new(flows, database_url);
        config.watch = false;
        config.sender = sender;
        let app = App::builder(config).build().await.expect("app starts");
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move { app.run_sender(token).await });
        Instance {
            base: String::new(),
            http: reqwest::Client::new(),
            stop,
            task,
        }
    }

    async fn say(&self, contact: &str, text: &str) -> reqwest::StatusCode {
        let url = format!("{}/webhooks/twilio/{BOT}", self.base);
        let sid = new_sid();
        let params = [
            ("MessageSid", sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("From", contact),
            ("To", FROM),
            ("Body", text),
        ];
        post_signed(&self.http, AUTH_TOKEN, &url, &params)
            .await
            .status()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// A flows folder with the shop bot sending to `twilio`, plus extra `twilio:` keys.
fn flows_for(twilio: &FakeTwilio, extra_twilio_yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_shop_bot(dir.path(), &twilio.url());
    let path = dir.path().join(BOT).join("bot.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap() + extra_twilio_yaml;
    std::fs::write(path, yaml).unwrap();
    dir
}

/// Connections of the database named in `url` that are waiting in `LISTEN`.
async fn listeners(admin: &PgPool, database: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(database)
    .fetch_one(admin)
    .await
    .unwrap()
}

fn database_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

async fn admin_pool() -> PgPool {
    PgPool::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_a_sender_in_another_instance() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let twilio = FakeTwilio::start().await;
    let flows = flows_for(&twilio, "");
    let mut slow_poll = fast_sender();
    slow_poll.poll_interval = Duration::from_secs(30);
    let web = Instance::serve(flows.path(), &db.url, slow_poll.clone(), false).await;
    let sender = Instance::send_only(flows.path(), &db.url, slow_poll).await;
    // Wait until the sender's LISTEN is in place, so only a NOTIFY can wake it.
    let admin = admin_pool().await;
    let name = database_name(&db.url);
    let deadline = Instant::now() + Duration::from_secs(10);
    while listeners(&admin, &name).await == 0 {
        assert!(Instant::now() < deadline, "the sender never LISTENed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the wake-up the listener gives on connecting pass: the sender is idle
    // for the 30 s poll interval after it.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let contact = new_contact();
    assert_eq!(web.say(&contact, "hi").await, 200);
    let sent = twilio.wait_for_accepted(1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].body, WELCOME);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "only a NOTIFY explains a reply before the 30 s poll"
    );
    web.stop().await;
    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_second_holds_across_two_senders() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let twilio = FakeTwilio::start().await;
    let flows = flows_for(&twilio, "  max_per_second: 20\n");
    // Queue the backlog with no sender running.
    let web = Instance::serve(flows.path(), &db.url, fast_sender(), false).await;
    let contacts: Vec<String> = (0..60).map(|_| new_contact()).collect();
    let posts = contacts.iter().map(|c| web.say(c, "hi"));
    for status in futures::future::join_all(posts).await {
        assert_eq!(status, 200);
    }
    let a = Instance::send_only(flows.path(), &db.url, fast_sender()).await;
    let b = Instance::send_only(flows.path(), &db.url, fast_sender()).await;
    let sent = twilio.wait_for_accepted(60, Duration::from_secs(30)).await;
    let times: Vec<Instant> = sent.iter().map(|m| m.at).collect();
    let worst = busiest_second(&times);
    assert!(worst <= 20, "{worst} sends in one second, limit 20");
    a.stop().await;
    b.stop().await;
    web.stop().await;
}

#[test]
fn busiest_second_counts_a_sliding_window() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    assert_eq!(busiest_second(&[at(0), at(500), at(899), at(900)]), 3);
    assert_eq!(busiest_second(&[at(0), at(1500), at(1600), at(2399)]), 3);
}

/// Refuses new connections to `database` and ends the current ones: an outage of
/// one database without touching the server other tests share.
pub async fn take_down(admin: &PgPool, database: &str) {
    sqlx::query(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    ))
    .execute(admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(database)
        .execute(admin)
        .await
        .unwrap();
}

pub async fn bring_back(admin: &PgPool, database: &str) {
    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .execute(admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_and_recovers() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let app = TestApp::spawn_with(
        &db,
        Options {
            sender: fast_sender(),
            ..Options::default()
        },
    )
    .await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.replies(&contact, 1).await;
    let before = db.store.inbound_count(BOT).await.unwrap();
    db.store.close().await;

    let admin = admin_pool().await;
    let name = database_name(&db.url);
    take_down(&admin, &name).await;
    let response = app.message(&contact, &new_sid(), "1").await;
    assert_eq!(response.status(), 503, "webhook during the outage");
    let ready = app.get(&app.url("/readyz"), None).await;
    assert_eq!(ready.status(), 503, "/readyz during the outage");
    bring_back(&admin, &name).await;
    let back = Instant::now();

    // Both sides recover on their own: the webhook is accepted, the reply sent.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = app.message(&contact, &new_sid(), "3").await.status();
        if status == 200 {
            eprintln!(
                "webhooks accepted again {:?} after the database came back",
                back.elapsed()
            );
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "webhooks never recovered");
    }
    let replies = app.replies(&contact, 2).await;
    assert_eq!(replies[1], "We open 9 to 5.");
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(
        store.inbound_count(BOT).await.unwrap(),
        before + 1,
        "the message answered 503 was not stored"
    );
}

both_stores!(admin_token_of_another_length_is_refused, |db| async move {
    let app = TestApp::spawn(&db).await;
    let url = format!("{}/api/bots", app.base);
    for token in ["admin-secre", "admin-secret-", "", "x"] {
        let response = app.get(&url, Some(token)).await;
        assert_eq!(response.status(), 401, "token {token:?}");
    }
    let ok = app.get(&url, Some("admin-secret")).await;
    assert_eq!(ok.status(), 200);
});

both_stores!(metrics_are_described, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.settled(&contact).await;
    let text = app.metrics().await;
    for name in [
        "switchboard_webhooks_total",
        "switchboard_webhook_seconds",
        "switchboard_outbox_rows",
        "switchboard_send_attempts_total",
        "switchboard_send_seconds",
        "switchboard_send_completion_batch_size",
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
    }
});

#[test]
fn debug_output_hides_secrets() {
    let mut config = Config::new("flows", "postgres://app:hunter2@db.example.com/switchboard");
    config.admin_token = Some(switchboard::domain::Secret::new("admin-secret"));
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("admin-secret"), "{shown}");
    assert!(shown.contains("db.example.com"), "{shown}");
}

/// The webhook and send paths look a contact up by its key, never by walking
/// one of the console's indexes. On a new database Postgres's cached generic
/// plans had no statistics to tell `(bot, contact)` from the console's
/// `(bot, updated_at, id)` and took the console's with `contact` as a filter:
/// every message read all of its bot's conversations until the first
/// auto-analyze (a minute after start), 515 webhooks/s instead of 1,000 with
/// 10,000 new contacts (docs/performance.md, session 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_never_walk_the_consoles_indexes() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let mut app = TestApp::spawn(&db).await;
    // More than five of each statement on each connection: Postgres plans
    // the first five for their values, then caches a generic plan.
    let contacts: Vec<String> = (0..40).map(|_| new_contact()).collect();
    for round in ["hi", "1", "menu"] {
        for contact in &contacts {
            app.say(contact, round).await;
        }
    }
    for contact in &contacts {
        app.replies(contact, 1).await;
    }
    app.stop().await;
    // Closed connections report their statistics as they end.
    app.store.close().await;
    let admin = PgPool::connect(&db.url).await.unwrap();
    let console = [
        "conversations_bot_updated",
        "inbound_messages_contact",
        "outbox_conversation_created",
    ];
    let keys = ["conversations_bot_contact", "inbound_messages_bot_sid"];
    let deadline = Instant::now() + Duration::from_secs(10);
    let scans: Vec<(String, i64)> = loop {
        let scans: Vec<(String, i64)> = sqlx::query_as(
            "SELECT indexrelname::TEXT, idx_scan FROM pg_stat_user_indexes ORDER BY 1",
        )
        .fetch_all(&admin)
        .await
        .unwrap();
        let keyed = scans
            .iter()
            .any(|(name, n)| keys.contains(&name.as_str()) && *n > 0);
        if keyed || Instant::now() > deadline {
            break scans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let walked: Vec<_> = scans
        .iter()
        .filter(|(name, n)| console.contains(&name.as_str()) && *n > 0)
        .collect();
    assert!(walked.is_empty(), "{walked:?} (all: {scans:?})");
    assert!(
        scans
            .iter()
            .any(|(name, n)| keys.contains(&name.as_str()) && *n > 0),
        "no statistics came: {scans:?}"
    );
}
