//! SPEC §9.3, broadcasts, end to end: thousands of contacts each started once
//! and in their own name, CSV with its errors by line, progress with skipped
//! reasons, and cancelling what has not started.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard::domain::Clock;

use crate::both_stores;
use crate::support::app::{copy_shop_bot, new_contact, Options, TestApp, BOT};
use crate::support::eventually;

const TOKEN: &str = "admin-secret";

async fn post(app: &TestApp, content_type: &str, query: &str, body: String) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/api/bots/{BOT}/broadcasts{query}")))
        .bearer_auth(TOKEN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn progress(app: &TestApp, id: &Value) -> Value {
    let response = app
        .get(&app.url(&format!("/api/broadcasts/{id}")), Some(TOKEN))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Waits until the broadcast has no contact left to run.
async fn finished(app: &TestApp, id: &Value) -> Value {
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let now = progress(app, id).await;
            if now["pending"] == 0 {
                Ok(now)
            } else {
                Err(format!("{now}"))
            }
        },
    )
    .await
}

both_stores!(
    a_broadcast_starts_every_contact_once_in_their_own_name,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let contacts: Vec<String> = (0..2_000)
            .map(|i| format!("+1555{:07}", 1_000_000 + i))
            .collect();
        let mut listed: Vec<Value> = contacts
            .iter()
            .enumerate()
            .map(|(i, to)| json!({"to": to, "vars": {"name": format!("N{i}")}}))
            .collect();
        // Listed twice: started once.
        listed.push(json!({"to": contacts[0], "vars": {"name": "again"}}));
        let response = post(
            &app,
            "application/json",
            "",
            json!({"node": "greet", "contacts": listed}).to_string(),
        )
        .await;
        assert_eq!(response.status(), 202);
        let accepted: Value = response.json().await.unwrap();
        let done = finished(&app, &accepted["id"]).await;
        assert_eq!(done["started"], 2_000, "{done}");
        assert_eq!(done["status"], "done");
        for (i, to) in contacts.iter().enumerate().step_by(97) {
            let rows = app.outbox(to).await;
            assert_eq!(rows.len(), 2, "{to}: greet and the menu, once");
            assert!(
                rows[0]
                    .body
                    .starts_with(&format!("Nice to meet you, N{i}!")),
                "{}",
                rows[0].body
            );
        }
    }
);

both_stores!(
    a_csv_broadcast_reports_skips_and_bad_lines,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let opted_out = new_contact();
        app.say(&opted_out, "STOP").await;
        app.replies(&opted_out, 1).await;
        let fresh = "+15559000001";
        let csv =
            format!("to,name\r\n{fresh},Ada\r\n{opted_out},Bo\r\nwhatsapp:+15559000002,Cy\r\n");
        let response = post(&app, "text/csv", "?node=greet", csv).await;
        assert_eq!(response.status(), 202);
        let accepted: Value = response.json().await.unwrap();
        assert_eq!(accepted["total"], 3);
        let done = finished(&app, &accepted["id"]).await;
        assert_eq!(done["started"], 1, "{done}");
        assert_eq!(done["skipped"]["opted_out"], 1, "{done}");
        assert_eq!(done["skipped"]["outside_window"], 1, "{done}");

        for (body, query, says) in [
            (
                "to,name\n+15559000003,A\nnot-a-number,B\n",
                "?node=greet",
                "line 3: `to`",
            ),
            ("name\nA\n", "?node=greet", "no `to` column"),
            ("to\n+15559000003\n", "", "`node` is missing"),
            ("to\n+15559000003\n", "?node=gone", "no node `gone`"),
        ] {
            let response = post(&app, "text/csv", query, body.to_owned()).await;
            assert!(matches!(response.status().as_u16(), 400 | 404), "{body}");
            let text = response.text().await.unwrap();
            assert!(text.contains(says), "{body}: {text}");
        }
        assert!(
            app.outbox("+15559000003").await.is_empty(),
            "nothing half-created"
        );
    }
);

both_stores!(
    cancelling_a_broadcast_stops_what_has_not_started,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let later = (app.clock.now() + chrono::Duration::hours(1)).to_rfc3339();
        let contacts: Vec<Value> = (0..50)
            .map(|i| json!({"to": format!("+1555800{i:04}")}))
            .collect();
        let response = post(
            &app,
            "application/json",
            "",
            json!({"node": "browse", "contacts": contacts, "at": later}).to_string(),
        )
        .await;
        let accepted: Value = response.json().await.unwrap();
        let id = &accepted["id"];
        assert_eq!(progress(&app, id).await["pending"], 50);
        let response = app
            .http
            .delete(app.url(&format!("/api/broadcasts/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let now = progress(&app, id).await;
        assert_eq!(now["cancelled"], 50, "{now}");
        assert_eq!(now["status"], "cancelled");
    }
);

/// Broadcasts `node` to `n` new SMS contacts now and waits until every one
/// has been started; answers the contacts.
async fn broadcast_started(app: &TestApp, node: &str, n: usize, prefix: &str) -> Vec<String> {
    let contacts: Vec<String> = (0..n).map(|i| format!("{prefix}{i:04}")).collect();
    let listed: Vec<Value> = contacts.iter().map(|to| json!({ "to": to })).collect();
    let response = post(
        app,
        "application/json",
        "",
        json!({"node": node, "contacts": listed}).to_string(),
    )
    .await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let done = finished(app, &accepted["id"]).await;
    assert_eq!(done["started"], n, "{done}");
    contacts
}

both_stores!(
    replies_are_claimed_before_waiting_broadcast_messages,
    |db| async move {
        let app = TestApp::spawn_with(
            &db,
            Options {
                run_sender: false,
                ..Options::default()
            },
        )
        .await;
        let contacts = broadcast_started(&app, "browse", 30, "+1555700").await;
        let waiting = app.outbox(&contacts[0]).await;
        assert!(!waiting.is_empty());
        assert!(waiting.iter().all(|row| row.bulk), "{waiting:?}");

        // Somebody new writes, and so does a contact whose broadcast message
        // still waits.
        let writer = new_contact();
        app.say(&writer, "hi").await;
        assert!(app.outbox(&writer).await.iter().all(|row| !row.bulk));
        app.say(&contacts[5], "hours").await;

        // With no room for broadcast messages, a claim takes only replies: the
        // writer's, and the contact's own waiting broadcast message, which is
        // theirs to get first (their reply queues behind it).
        let claim = |limit, bulk_limit| switchboard::store::ClaimRequest {
            now_ms: app.clock.now().timestamp_millis(),
            lease: Duration::from_secs(30),
            limit,
            bulk_limit,
        };
        let claimed = app.store.claim_due(claim(10, 0)).await.unwrap();
        let mut who: Vec<&str> = claimed.iter().map(|r| r.contact.as_str()).collect();
        who.sort_unstable();
        let mut want = vec![writer.as_str(), contacts[5].as_str()];
        want.sort_unstable();
        assert_eq!(who, want, "{claimed:?}");
        let promoted = claimed.iter().find(|r| r.contact == contacts[5]).unwrap();
        assert_eq!(
            promoted.body, waiting[0].body,
            "their broadcast message first"
        );
        assert!(!promoted.bulk);

        // Replies first within one claim too: room for one row takes the
        // reply due last over the broadcast messages due before it.
        let late = new_contact();
        app.say(&late, "hi").await;
        let claimed = app.store.claim_due(claim(1, 1)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].contact, late);
        // Then the broadcast's messages, at most the room given them.
        let claimed = app.store.claim_due(claim(10, 3)).await.unwrap();
        assert_eq!(claimed.len(), 3, "{claimed:?}");
        assert!(claimed.iter().all(|r| r.bulk && r.contact != contacts[5]));
    }
);

both_stores!(
    a_reply_is_sent_before_a_rate_limited_broadcast_drains,
    |db| async move {
        // Few sends in flight, so a reply could only be claimed once one of
        // the broadcast's sends finished, were none kept for replies.
        let mut sender = crate::support::app::fast_sender();
        sender.concurrency = 4;
        let options = Options {
            sender,
            ..Options::default()
        };
        let app = TestApp::spawn_with_bots(&db, options, |flows, _| limit_rate(flows, 5)).await;
        // 30 contacts, three messages each: 18 seconds at 5 a second.
        let contacts = broadcast_started(&app, "browse", 30, "+1555710").await;
        app.twilio.wait_for(5, Duration::from_secs(10)).await;
        let writer = new_contact();
        app.say(&writer, "hi").await;
        let received = eventually(
            Duration::from_secs(15),
            Duration::from_millis(20),
            || async {
                let received = app.twilio.received();
                match received.iter().position(|m| m.to == writer) {
                    Some(at) => Ok(received[..at].to_vec()),
                    None => Err(format!("{} sent, none to the writer", received.len())),
                }
            },
        )
        .await;
        let broadcast_before = received.iter().filter(|m| contacts.contains(&m.to)).count();
        assert!(
            broadcast_before < 15,
            "the reply waited for {broadcast_before} of the broadcast's 90 messages"
        );
    }
);

both_stores!(
    a_bots_waiting_broadcast_holds_back_no_other_bots,
    |db| async move {
        // Two bots; the sender stopped, so what is queued stays queued.
        let other = "shop2";
        let app = TestApp::spawn_with_bots(
            &db,
            Options {
                run_sender: false,
                ..Options::default()
            },
            |flows, _| copy_shop_bot(flows, other),
        )
        .await;
        // The shop bot has the high-water mark of broadcast messages waiting
        // (a low `max_per_second` would leave it so for hours).
        let writer = new_contact();
        app.say(&writer, "hi").await;
        let high_water = switchboard::outbound::BULK_HIGH_WATER;
        fill_bulk(&app.database_url, BOT, high_water).await;
        assert_eq!(
            app.store.bulk_waiting(BOT, high_water).await.unwrap(),
            high_water
        );
        assert_eq!(app.store.bulk_waiting(other, high_water).await.unwrap(), 0);

        // Its next broadcast is held back...
        let held = post(
            &app,
            "application/json",
            "",
            json!({"node": "browse", "contacts": [{"to": "+15556000001"}]}).to_string(),
        )
        .await;
        assert_eq!(held.status(), 202);
        let held: Value = held.json().await.unwrap();
        // ...but not the other bot's.
        let response = app
            .http
            .post(app.url(&format!("/api/bots/{other}/broadcasts")))
            .bearer_auth(TOKEN)
            .json(&json!({"node": "browse", "contacts": [{"to": "+15556000002"}, {"to": "+15556000003"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let accepted: Value = response.json().await.unwrap();
        let done = finished(&app, &accepted["id"]).await;
        assert_eq!(done["started"], 2, "{done}");
        let now = progress(&app, &held["id"]).await;
        assert_eq!(
            now["pending"], 1,
            "held back while its messages wait: {now}"
        );
    }
);

/// Queues `n` broadcast messages of `bot` to one of its conversations, as a
/// broadcast's contacts' would be while its sender is slow.
async fn fill_bulk(database_url: &str, bot: &str, n: usize) {
    use sqlx::Connection;
    let sql = format!(
        "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
         INSERT INTO outbox (conversation_id, bot, contact, body, status, attempts, \
             next_attempt_at, created_at, updated_at, bulk) \
         SELECT c.id, c.bot, c.contact, 'promo', 'queued', 0, 0, 0, 0, 1 \
         FROM n, (SELECT id, bot, contact FROM conversations WHERE bot = '{bot}' LIMIT 1) AS c"
    );
    if database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query(&sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query(&sql).execute(&mut conn).await.unwrap();
    }
}

both_stores!(
    a_rate_limited_bots_broadcast_holds_back_no_other_bots_sends,
    |db| async move {
        // Few sends in flight (four for broadcast messages), so the slow
        // bot's messages would fill them all, were it not kept to a second's
        // worth.
        let mut sender = crate::support::app::fast_sender();
        sender.concurrency = 8;
        let other = "shop2";
        let options = Options {
            sender,
            ..Options::default()
        };
        let app = TestApp::spawn_with_bots(&db, options, |flows, _| {
            copy_shop_bot(flows, other);
            limit_rate(flows, 1);
        })
        .await;
        // 30 messages at one a second, queued first.
        let slow = broadcast_started(&app, "browse", 10, "+1555720").await;
        let fast: Vec<String> = (0..5).map(|i| format!("+1555730{i:04}")).collect();
        let listed: Vec<Value> = fast.iter().map(|to| json!({ "to": to })).collect();
        let response = app
            .http
            .post(app.url(&format!("/api/bots/{other}/broadcasts")))
            .bearer_auth(TOKEN)
            .json(&json!({"node": "browse", "contacts": listed}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let received = eventually(
            Duration::from_secs(20),
            Duration::from_millis(20),
            || async {
                let received = app.twilio.received();
                let sent = received.iter().filter(|m| fast.contains(&m.to)).count();
                if sent >= 15 {
                    Ok(received)
                } else {
                    Err(format!("{sent} of the other bot's 15 messages sent"))
                }
            },
        )
        .await;
        let slow_sent = received.iter().filter(|m| slow.contains(&m.to)).count();
        assert!(
            slow_sent < 15,
            "the other bot's broadcast waited for {slow_sent} of the slow bot's 30 messages"
        );
    }
);

/// Gives the shop bot `max_per_second: max`.
fn limit_rate(flows: &std::path::Path, max: u32) {
    let settings = flows.join(BOT).join("bot.yaml");
    let mut yaml = std::fs::read_to_string(&settings).unwrap();
    yaml.push_str(&format!("  max_per_second: {max}\n"));
    std::fs::write(settings, yaml).unwrap();
}
