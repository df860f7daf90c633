//! Health, readiness, metrics and the admin API.

use crate::both_stores;
use crate::support::app::{copy_shop_bot, new_contact, new_sid, Options, TestApp};

both_stores!(health_and_readiness, |db| async move {
    let app = TestApp::spawn(&db).await;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(app.get(&app.url(path), None).await.status(), 200, "{path}");
    }
    assert_eq!(app.get_text("/readyz").await, "ready\n");
});

both_stores!(metrics_count_webhooks_and_sends, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.settled(&contact).await;
    let text = app.metrics().await;
    assert!(
        text.contains("switchboard_webhooks_total{bot=\"shop\",outcome=\"processed\"}"),
        "{text}"
    );
    assert!(text.contains("switchboard_send_attempts_total"), "{text}");
    assert!(
        text.contains("switchboard_outbox_rows{status=\"sent\"}"),
        "{text}"
    );
});

both_stores!(metrics_count_refused_webhooks, |db| async move {
    // A bot of this test's own, so no other test's webhooks count here.
    let bot = format!("refused{:08x}", rand::random::<u32>());
    let app = TestApp::spawn_with_bots(&db, Options::default(), |flows, _| {
        copy_shop_bot(flows, &bot)
    })
    .await;
    let response = app
        .post_body(
            &app.webhook_url(&bot),
            Some("garbage"),
            "MessageSid=SM1&From=whatsapp%3A%2B15550001",
        )
        .await;
    assert_eq!(response.status(), 403);
    let unknown = format!("nobody{:08x}", rand::random::<u32>());
    let response = app
        .post_signed(&unknown, &new_contact(), &new_sid(), &[])
        .await;
    assert_eq!(response.status(), 404);
    let text = app.metrics().await;
    let refused =
        format!("switchboard_webhooks_total{{bot=\"{bot}\",outcome=\"bad_signature\"}} 1");
    assert!(text.contains(&refused), "{text}");
    assert!(
        text.contains("switchboard_webhooks_total{bot=\"\",outcome=\"unknown_bot\"}"),
        "{text}"
    );
    // Anyone can invent bot names: they never become labels.
    assert!(!text.contains(&unknown), "{text}");
});

both_stores!(admin_api_needs_the_bearer_token, |db| async move {
    let app = TestApp::spawn(&db).await;
    let url = format!("{}/api/bots", app.base);
    let response = app.get(&url, None).await;
    assert_eq!(response.status(), 401);
    let response = app.get(&url, Some("wrong")).await;
    assert_eq!(response.status(), 401);
    let response = app.get(&url, Some("admin-secret")).await;
    assert_eq!(response.status(), 200);
    let bots: serde_json::Value = response.json().await.unwrap();
    assert_eq!(bots[0]["id"], "shop");
    assert_eq!(bots[0]["name"], "Test Shop");
    assert_eq!(bots[0]["nodes"], 4);
    assert_eq!(bots[0]["errors"], serde_json::json!([]));
    assert!(bots[0]["loaded_at"].is_string());
});

both_stores!(
    admin_api_without_a_token_configured_is_403,
    |db| async move {
        let app = spawn_without_admin_token(&db).await;
        let response = app.get(&app.url("/api/bots"), Some("anything")).await;
        assert_eq!(response.status(), 403);
        assert!(response.text().await.unwrap().contains("--admin-token"));
    }
);

// `/metrics` is for the operator: 401 without the admin token (or with a
// wrong one), 200 with it.
both_stores!(metrics_need_the_admin_token, |db| async move {
    let app = TestApp::spawn(&db).await;
    let url = format!("{}/metrics", app.base);
    let response = app.get(&url, None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = app.get(&url, Some("wrong")).await;
    assert_eq!(response.status(), 401);
    let text = app.metrics().await;
    assert!(text.contains("switchboard_outbox_rows"), "{text}");
});

// Without an admin token configured, `/metrics` says how to enable it.
both_stores!(metrics_without_a_token_configured_is_403, |db| async move {
    let app = spawn_without_admin_token(&db).await;
    let response = app.get(&app.url("/metrics"), Some("anything")).await;
    assert_eq!(response.status(), 403);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("--admin-token") && text.contains("--metrics-listen"),
        "{text}"
    );
});

// `--metrics-listen`: `/metrics` open on its own address, which serves
// nothing else; the main address still wants the token.
both_stores!(metrics_listen_serves_only_open_metrics, |db| async move {
    let app = TestApp::spawn_with(
        &db,
        Options {
            metrics_listen: true,
            ..Options::default()
        },
    )
    .await;
    let metrics_base = app.metrics_base.clone().expect("a metrics listener");
    let response = app.get(&format!("{metrics_base}/metrics"), None).await;
    assert_eq!(response.status(), 200);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("switchboard_outbox_rows"));
    for path in ["/readyz", "/healthz", "/api/bots", "/webhooks/twilio/shop"] {
        let response = app
            .get(&format!("{metrics_base}{path}"), Some("admin-secret"))
            .await;
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = app.get(&app.url("/metrics"), None).await;
    assert_eq!(response.status(), 401);
});

// `/readyz` checks the schema: a database emptied under a running server
// (or never migrated) is not ready, and says how to fix it; after
// `switchboard migrate` it is ready again.
both_stores!(readyz_wants_a_migrated_database, |db| async move {
    let app = TestApp::spawn_with(
        &db,
        Options {
            run_sender: false,
            ..Options::default()
        },
    )
    .await;
    let readyz = || async {
        let response = app.get(&app.url("/readyz"), None).await;
        (response.status(), response.text().await.unwrap())
    };
    assert_eq!(readyz().await.0, 200);

    empty_database(&db.url).await;
    let (status, text) = readyz().await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.starts_with("database not migrated (")
            && text.contains("migrations missing): run `switchboard migrate`"),
        "{text}"
    );

    let store = switchboard::store::Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    let (status, text) = readyz().await;
    assert_eq!(status, 200, "{text}");
});

/// Drops every table, `_sqlx_migrations` included: an empty database.
async fn empty_database(url: &str) {
    use sqlx::Connection;
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    } else {
        use std::str::FromStr;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .unwrap()
            .foreign_keys(false);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for table in tables {
            sqlx::query(&format!("DROP TABLE \"{table}\""))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    }
}

/// On SQLite, `/readyz` and `/metrics` read on the read connections: they
/// answer while the one write connection is taken (as by a long write), where
/// they used to queue behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_metrics_do_not_wait_for_the_sqlite_writer() {
    let db = crate::support::db::TestDb::sqlite().await;
    let app = TestApp::spawn(&db).await;
    let hold = app.store.hold_writer().await.expect("SQLite has a writer");
    // Generous: the answer comes in milliseconds, or never while the writer is held.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .expect("/readyz answers while the writer is held");
    assert_eq!(response.status(), 200);
    let response = client
        .get(format!("{}/metrics", app.base))
        .bearer_auth("admin-secret")
        .send()
        .await
        .expect("/metrics answers while the writer is held");
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("switchboard_outbox_rows{status=\"queued\"}"),
        "{text}"
    );
    drop(hold);
}

/// A server started without an admin token.
async fn spawn_without_admin_token(db: &crate::support::db::TestDb) -> TestApp {
    TestApp::spawn_with(
        db,
        Options {
            admin_token: None,
            ..Options::default()
        },
    )
    .await
}
