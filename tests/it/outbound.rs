//! SPEC §9.1, conversations the business starts, end to end: the start API on
//! the real server (now, scheduled, cancelled, idempotent, interrupt or skip,
//! opted-out and malformed requests), scheduled starts across a restart, and
//! run once by two instances sharing a database.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard::domain::Clock;

use crate::both_stores;
use crate::support::app::{new_contact, Options, TestApp, BOT, WELCOME};
use crate::support::db::TestDb;
use crate::support::eventually;

const TOKEN: &str = "admin-secret";
const HOUR: Duration = Duration::from_secs(60 * 60);

/// A fresh SMS contact (no 24-hour window to think about).
fn sms_contact() -> String {
    format!("+1555{:07}", rand::random::<u32>() % 10_000_000)
}

/// A bot whose `outbound:` lets only `reminder` be started.
fn write_clinic(flows: &Path, api_base: &str) {
    let dir = flows.join("clinic");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bot.yaml"),
        format!(
            "twilio:\n  account_sid: AC00000000000000000000000000000000\n  auth_token: test-token\n  \
             from: \"+14155238886\"\n  api_base: {api_base}\noutbound: [reminder]\nvars: [name]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("nodes.yaml"),
        "main:\n  say: Hello from the clinic.\n\
         reminder:\n  say: \"Hi {{ name }}, see you tomorrow at 9.\"\n",
    )
    .unwrap();
}

/// POSTs a start for `bot` with the admin token and `key` as Idempotency-Key.
async fn post_start(
    app: &TestApp,
    bot: &str,
    body: &Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(&format!("/api/bots/{bot}/conversations")))
        .bearer_auth(TOKEN)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

/// A start that must be accepted: its 202 answer.
async fn start(app: &TestApp, body: Value) -> Value {
    let response = post_start(app, BOT, &body, None).await;
    assert_eq!(response.status(), 202, "{body}");
    response.json().await.unwrap()
}

/// The time `by` from the app's clock, as the API takes it.
fn at(app: &TestApp, by: Duration) -> String {
    (app.clock.now() + chrono::Duration::from_std(by).unwrap()).to_rfc3339()
}

async fn scheduled(app: &TestApp) -> Vec<Value> {
    let response = app
        .get(&app.url("/api/scheduled?bot=shop"), Some(TOKEN))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn cancel(app: &TestApp, id: &Value) -> reqwest::StatusCode {
    app.http
        .delete(app.url(&format!("/api/scheduled/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status()
}

both_stores!(
    a_start_now_enters_the_node_and_sends_its_replies,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let contact = sms_contact();
        let answer = start(
            &app,
            json!({"to": contact, "node": "greet", "vars": {"name": "Zed"}}),
        )
        .await;
        assert_eq!(answer["status"], "started", "{answer}");
        assert!(answer["id"].is_i64(), "{answer}");
        assert_eq!(answer["reason"], Value::Null);
        let replies = app.replies(&contact, 2).await;
        assert_eq!(
            replies,
            ["Nice to meet you, Zed! (WhatsApp says )", WELCOME]
        );
        // The conversation goes on from the node entered, as if the contact had written.
        app.say(&contact, "3").await;
        assert_eq!(app.replies(&contact, 4).await[2], "We open 9 to 5.");
    }
);

both_stores!(
    a_scheduled_start_runs_when_due_and_not_before,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let (early, later) = (sms_contact(), sms_contact());
        let first = start(
            &app,
            json!({"to": early, "node": "browse", "at": at(&app, HOUR)}),
        )
        .await;
        assert_eq!(first["status"], "scheduled", "{first}");
        let second = start(
            &app,
            json!({"to": later, "node": "browse", "at": at(&app, 3 * HOUR)}),
        )
        .await;
        let listed = scheduled(&app).await;
        assert_eq!(listed.len(), 2, "{listed:#?}");
        assert_eq!(listed[0]["id"], first["id"]);
        assert_eq!(listed[0]["to"], early);
        assert_eq!(listed[0]["node"], "browse");
        assert_eq!(listed[1]["id"], second["id"]);

        app.clock.advance(2 * HOUR);
        app.replies(&early, 3).await;
        eventually(
            Duration::from_secs(15),
            Duration::from_millis(20),
            || async {
                let left = scheduled(&app).await;
                if left.len() == 1 && left[0]["id"] == second["id"] {
                    Ok(())
                } else {
                    Err(format!("{left:#?}"))
                }
            },
        )
        .await;
        assert!(app.outbox(&later).await.is_empty(), "not due yet");
        // Too late to cancel the one that ran.
        assert_eq!(cancel(&app, &first["id"]).await, 409);
    }
);

both_stores!(a_cancelled_start_never_runs, |db| async move {
    let app = TestApp::spawn(&db).await;
    let (cancelled, kept) = (sms_contact(), sms_contact());
    let doomed = start(
        &app,
        json!({"to": cancelled, "node": "browse", "at": at(&app, HOUR)}),
    )
    .await;
    start(
        &app,
        json!({"to": kept, "node": "browse", "at": at(&app, 2 * HOUR)}),
    )
    .await;
    assert_eq!(cancel(&app, &doomed["id"]).await, 204);
    // Cancelling twice is no error; an id never given is.
    assert_eq!(cancel(&app, &doomed["id"]).await, 204);
    assert_eq!(cancel(&app, &json!(987_654_321)).await, 404);
    let response = app
        .http
        .delete(app.url("/api/scheduled/abc"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(scheduled(&app).await.len(), 1);

    app.clock.advance(3 * HOUR);
    // Starts run in due order: once the later one ran, the cancelled one would have.
    app.replies(&kept, 3).await;
    assert!(app.outbox(&cancelled).await.is_empty());
});

both_stores!(
    a_retried_request_gets_the_first_answer_and_starts_nothing,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let contact = sms_contact();
        let body = json!({"to": contact, "node": "browse"});
        let first = post_start(&app, BOT, &body, Some("order-42")).await;
        assert_eq!(first.status(), 202);
        let first: Value = first.json().await.unwrap();
        app.replies(&contact, 3).await;
        for _ in 0..2 {
            let again = post_start(&app, BOT, &body, Some("order-42")).await;
            assert_eq!(again.status(), 202);
            assert_eq!(again.json::<Value>().await.unwrap(), first);
        }
        // A scheduled one too: the retry is answered `scheduled` with the same id.
        let later = json!({"to": contact, "node": "browse", "at": at(&app, HOUR)});
        let scheduled_first: Value = post_start(&app, BOT, &later, Some("order-43"))
            .await
            .json()
            .await
            .unwrap();
        let scheduled_again: Value = post_start(&app, BOT, &later, Some("order-43"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(scheduled_first, scheduled_again);
        assert_eq!(scheduled(&app).await.len(), 1);
        // Another key is another start.
        let other: Value = post_start(&app, BOT, &body, Some("order-44"))
            .await
            .json()
            .await
            .unwrap();
        assert_ne!(other["id"], first["id"]);
        app.replies(&contact, 6).await;
        assert_eq!(
            app.outbox(&contact).await.len(),
            6,
            "two starts of three replies each"
        );
    }
);

both_stores!(
    if_active_skip_leaves_a_live_conversation_and_interrupt_moves_it,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let contact = new_contact();
        app.say(&contact, "hi").await;
        app.replies(&contact, 1).await;
        let skipped = start(
            &app,
            json!({"to": contact, "node": "ask_name", "if_active": "skip"}),
        )
        .await;
        assert_eq!(skipped["status"], "skipped");
        assert_eq!(skipped["reason"], "active");
        let state = app
            .store
            .conversation(BOT, &contact)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.node.as_deref(), Some("main"));

        let interrupted = start(
            &app,
            json!({"to": contact, "node": "ask_name", "vars": {"order": 7}}),
        )
        .await;
        assert_eq!(interrupted["status"], "started");
        assert_eq!(app.replies(&contact, 2).await[1], "What's your name?");
        let state = app
            .store
            .conversation(BOT, &contact)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.node.as_deref(), Some("ask_name"));
        assert_eq!(state.vars["order"], 7);
        // The answer goes to the node the start entered.
        app.say(&contact, "Ada").await;
        assert!(app.replies(&contact, 3).await[2].starts_with("Nice to meet you, Ada!"));
    }
);

both_stores!(
    whatsapp_contacts_outside_the_window_are_skipped,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        // Never wrote: no window at all.
        let stranger = new_contact();
        let answer = start(&app, json!({"to": stranger, "node": "browse"})).await;
        assert_eq!(answer["status"], "skipped");
        assert_eq!(answer["reason"], "outside_window");
        // Wrote 25 hours ago: the window closed.
        let contact = new_contact();
        app.say(&contact, "hi").await;
        app.replies(&contact, 1).await;
        app.clock.advance(25 * HOUR);
        let answer = start(&app, json!({"to": contact, "node": "browse"})).await;
        assert_eq!(answer["reason"], "outside_window");
        assert_eq!(
            app.outbox(&contact).await.len(),
            1,
            "only the first welcome"
        );
        assert!(app.outbox(&stranger).await.is_empty());
    }
);

both_stores!(an_opted_out_contact_is_refused_with_409, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "STOP").await;
    app.replies(&contact, 1).await;
    let response = post_start(&app, BOT, &json!({"to": contact, "node": "browse"}), None).await;
    assert_eq!(response.status(), 409);
    assert!(response.text().await.unwrap().contains("opted out"));
    assert!(scheduled(&app).await.is_empty());
});

both_stores!(
    bad_start_requests_are_refused_with_what_to_fix,
    |db| async move {
        let app = TestApp::spawn_with_bots(&db, Options::default(), write_clinic).await;
        let contact = sms_contact();
        let ok = json!({"to": contact, "node": "browse"});
        for (body, status, says) in [
            (json!({"to": contact}), 400, "`node` is missing"),
            (json!({"to": "Amina", "node": "browse"}), 400, "E.164"),
            (
                json!({"to": contact, "node": "browse", "at": "soon"}),
                400,
                "RFC 3339",
            ),
            (
                json!({"to": contact, "node": "browse", "vars": "x"}),
                400,
                "`vars` must be",
            ),
            (
                json!({"to": contact, "node": "brwose"}),
                404,
                "no node `brwose`",
            ),
        ] {
            let response = post_start(&app, BOT, &body, None).await;
            assert_eq!(response.status(), status, "{body}");
            let text = response.text().await.unwrap();
            assert!(text.contains(says), "{body}: {text}");
        }
        // Not JSON at all, a body over the limit, a bad key.
        for (body, status) in [
            ("to=+15550001&node=browse".to_owned(), 400),
            (format!("{{\"to\": \"{}\"}}", "9".repeat(70 * 1024)), 413),
        ] {
            let response = app
                .http
                .post(app.url("/api/bots/shop/conversations"))
                .bearer_auth(TOKEN)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), status);
        }
        assert_eq!(
            post_start(&app, BOT, &ok, Some("two words")).await.status(),
            400
        );
        // Unknown bot, no token, a node the bot does not let the API start.
        assert_eq!(post_start(&app, "nobot", &ok, None).await.status(), 404);
        let anonymous = app
            .http
            .post(app.url("/api/bots/shop/conversations"))
            .json(&ok)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);
        let main = json!({"to": contact, "node": "main"});
        let response = post_start(&app, "clinic", &main, None).await;
        assert_eq!(response.status(), 403);
        assert!(response.text().await.unwrap().contains("outbound"));
        // Nothing was recorded by any of them.
        assert!(app.outbox(&contact).await.is_empty());
        let reminder = json!({"to": contact, "node": "reminder", "vars": {"name": "Amina"}});
        let answer: Value = post_start(&app, "clinic", &reminder, None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "started");
    }
);

both_stores!(a_scheduled_start_survives_a_restart, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = sms_contact();
    let answer = start(
        &app,
        json!({"to": contact, "node": "browse", "at": at(&app, HOUR)}),
    )
    .await;
    assert_eq!(answer["status"], "scheduled");
    let app = app.restart(Options::default()).await;
    assert_eq!(scheduled(&app).await.len(), 1);
    app.clock.advance(2 * HOUR);
    app.replies(&contact, 3).await;
    assert_eq!(app.settled(&contact).await.len(), 3);
});

/// Two instances on one Postgres database, each with its scheduler: every
/// start runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_starts_run_once_across_two_instances() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let one = TestApp::spawn(&db).await;
    let two = TestApp::spawn(&db).await;
    let contacts: Vec<String> = (0..20).map(|_| sms_contact()).collect();
    for contact in &contacts {
        start(
            &one,
            json!({"to": contact, "node": "browse", "at": at(&one, HOUR)}),
        )
        .await;
    }
    one.clock.advance(2 * HOUR);
    two.clock.advance(2 * HOUR);
    for contact in &contacts {
        eventually(
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async {
                let rows = one.outbox(contact).await;
                if rows.len() >= 3 {
                    Ok(rows)
                } else {
                    Err(format!("{contact}: {rows:#?}"))
                }
            },
        )
        .await;
    }
    assert!(scheduled(&one).await.is_empty());
    for contact in &contacts {
        assert_eq!(one.outbox(contact).await.len(), 3, "{contact} started once");
    }
}
