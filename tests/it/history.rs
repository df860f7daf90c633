//! SPEC §10.1, conversation history, end to end on both stores: each reply's
//! status history (a retried send, status callbacks, a failure with its code
//! and meaning), the node each message led to and its media, button and
//! location; the contact and conversation-list APIs with paging, search,
//! auth and hostile parameters; and the console's timeline, broadcasts and
//! scheduled starts pages with their cancel actions (SPEC §10.3).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchboard::domain::Clock;

use crate::both_stores;
use crate::console::{ConsoleClient, TOKEN};
use crate::support::app::{new_contact, new_sid, TestApp, AUTH_TOKEN, BOT, WELCOME};
use crate::support::fake_twilio::FakeReply;
use crate::support::webhook::signed_form;

/// GETs `path` with the admin token; the status and the JSON answer.
async fn api(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let response = app.get(&app.url(path), Some(TOKEN)).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

/// The contact API's answer for `contact`, which must be found.
async fn contact_history(app: &TestApp, contact: &str, query: &str) -> Value {
    let (status, json) = api(app, &format!("/api/bots/{BOT}/contacts/{contact}{query}")).await;
    assert_eq!(status, 200, "{json}");
    json
}

/// Sends a signed status callback for the message Twilio knows as `sid`.
async fn callback(app: &TestApp, sid: &str, status: &str, code: Option<&str>) {
    let url = format!("{}/status", app.webhook_url(BOT));
    let mut params = vec![
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("AccountSid", "AC1"),
    ];
    if let Some(code) = code {
        params.push(("ErrorCode", code));
    }
    let (body, signature) = signed_form(AUTH_TOKEN, &url, &params);
    let response = app.post_body(&url, Some(&signature), body).await;
    assert_eq!(response.status(), 200);
}

fn statuses(reply: &Value) -> Vec<String> {
    reply["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

both_stores!(
    a_reply_keeps_each_attempt_and_every_status_it_moved_through,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        // The first attempt fails with a 503 and is retried; the second is sent.
        app.twilio.push(FakeReply::status(503));
        let contact = new_contact();
        app.say(&contact, "hi").await;
        let rows = app.settled(&contact).await;
        let sid = rows[0].twilio_sid.clone().unwrap();
        callback(&app, &sid, "delivered", None).await;
        callback(&app, &sid, "read", None).await;
        // Late and out of order: moves nothing, so adds nothing.
        callback(&app, &sid, "delivered", None).await;

        // "Bye" ends the conversation; Twilio then reports its reply undelivered.
        app.say(&contact, "4").await;
        let rows = app.settled(&contact).await;
        let bye_sid = rows[1].twilio_sid.clone().unwrap();
        callback(&app, &bye_sid, "undelivered", Some("30003")).await;

        let history = contact_history(&app, &contact, "").await;
        let timeline = history["timeline"].as_array().unwrap();
        assert_eq!(timeline.len(), 4, "{history:#}");
        // Newest first: the goodbye, "4", the welcome, "hi".
        let (bye, four, welcome, hi) = (&timeline[0], &timeline[1], &timeline[2], &timeline[3]);
        assert_eq!(hi["type"], "message");
        assert_eq!(hi["text"], "hi");
        assert_eq!(hi["node"], "main", "the message led to the menu: {hi}");
        assert_eq!(four["text"], "4");
        assert_eq!(
            four["node"],
            Value::Null,
            "Bye ends the conversation: {four}"
        );

        assert_eq!(welcome["type"], "reply");
        assert_eq!(welcome["text"], WELCOME);
        assert_eq!(welcome["status"], "read");
        assert_eq!(
            statuses(welcome),
            ["queued", "retry", "sent", "delivered", "read"],
            "{welcome:#}"
        );
        let events = welcome["history"].as_array().unwrap();
        assert_eq!(events[1]["attempt"], 1);
        assert_eq!(events[1]["code"], 20503);
        assert!(events[1]["meaning"].as_str().unwrap().contains("20503"));
        assert!(events[1]["next_attempt_at"].is_string(), "{}", events[1]);
        assert_eq!(events[2]["attempt"], 2);
        assert_eq!(events[2]["sid"], sid.as_str());
        assert!(events[3].get("attempt").is_none(), "{}", events[3]);

        assert_eq!(bye["text"], "Goodbye!");
        assert_eq!(bye["status"], "undelivered");
        assert_eq!(statuses(bye), ["queued", "sent", "undelivered"], "{bye:#}");
        let failure = &bye["history"][2];
        assert_eq!(failure["code"], 30003);
        assert_eq!(
            failure["meaning"],
            "the handset is unreachable (switched off or without signal)"
        );
        assert_eq!(bye["error"]["code"], 30003);
        assert_eq!(bye["error"]["meaning"], failure["meaning"]);

        // The conversation ended, and nothing waits.
        assert_eq!(history["conversation"]["node"], Value::Null);
        assert_eq!(history["conversation"]["timer"], Value::Null);
        assert_eq!(history["conversation"]["handoff"], Value::Null);
        assert_eq!(history["opted_out"], false);
        assert_eq!(history["next"], Value::Null);

        // The console's timeline shows the same: the history, the error's
        // meaning, each message's node.
        let console = ConsoleClient::signed_in(&app).await;
        let id = history["conversation"]["id"].as_i64().unwrap();
        let (status, html) = console.get(&format!("/console/conversations/{id}")).await;
        assert_eq!(status, 200);
        assert!(html.contains("Status history"), "{html}");
        assert!(html.contains("attempt 1"), "{html}");
        assert!(html.contains(&format!("as {sid}")), "{html}");
        assert!(html.contains("next try"), "{html}");
        assert!(
            html.contains("30003: the handset is unreachable (switched off or without signal)"),
            "{html}"
        );
        assert!(
            html.contains("led to <code class=\"node\">main</code>"),
            "{html}"
        );
        assert!(html.contains("the end</span>"), "{html}");
    }
);

both_stores!(
    a_retry_and_a_cancel_from_the_console_are_in_the_history,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        app.twilio
            .push(FakeReply::error(400, 21211, "Invalid 'To' Phone Number"));
        let contact = new_contact();
        app.say(&contact, "hi").await;
        let rows = app.settled(&contact).await;
        let console = ConsoleClient::signed_in(&app).await;
        let response = console
            .post(&format!("/console/outbox/{}/retry", rows[0].id), &[])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        app.settled(&contact).await;
        let history = contact_history(&app, &contact, "").await;
        let welcome = &history["timeline"][0];
        assert_eq!(
            statuses(welcome),
            ["queued", "failed", "queued", "sent"],
            "{welcome:#}"
        );
        let events = welcome["history"].as_array().unwrap();
        assert_eq!(events[1]["code"], 21211);
        assert_eq!(events[1]["meaning"], "invalid 'To' phone number");
        assert_eq!(events[2]["by"], "console");
        // Attempts count again from 1 after a retry.
        assert_eq!(events[3]["attempt"], 1);
    }
);

both_stores!(
    a_message_keeps_its_media_button_and_location,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let contact = new_contact();
        let sid = new_sid();
        let response = app
            .post_form(
                &app.webhook_url(BOT),
                &[
                    ("MessageSid", sid.as_str()),
                    ("AccountSid", crate::support::app::ACCOUNT_SID),
                    ("From", contact.as_str()),
                    ("To", crate::support::app::FROM),
                    ("Body", "look"),
                    ("NumMedia", "1"),
                    ("MediaUrl0", "https://api.twilio.com/m/0"),
                    ("MediaContentType0", "image/jpeg"),
                    ("ButtonText", "Browse"),
                    ("ButtonPayload", "browse-1"),
                    ("Latitude", "52.5"),
                    ("Longitude", "13.4"),
                    ("Address", "1 Main St"),
                    ("Label", "The shop"),
                ],
            )
            .await;
        assert_eq!(response.status(), 200);
        let history = contact_history(&app, &contact, "").await;
        let message = history["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "message")
            .unwrap()
            .clone();
        assert_eq!(
            message["media"],
            json!([{"url": "https://api.twilio.com/m/0", "content_type": "image/jpeg"}])
        );
        assert_eq!(
            message["button"],
            json!({"text": "Browse", "payload": "browse-1"})
        );
        assert_eq!(message["location"]["latitude"], 52.5);
        assert_eq!(message["location"]["label"], "The shop");
        assert_eq!(message["node"], "main");
        let console = ConsoleClient::signed_in(&app).await;
        let id = history["conversation"]["id"].as_i64().unwrap();
        let (_, html) = console.get(&format!("/console/conversations/{id}")).await;
        assert!(
            html.contains("[media image/jpeg] https://api.twilio.com/m/0"),
            "{html}"
        );
        assert!(
            html.contains("[button] Browse (payload browse-1)"),
            "{html}"
        );
        assert!(
            html.contains("[location] 52.5, 13.4 · The shop · 1 Main St"),
            "{html}"
        );
    }
);

both_stores!(
    the_apis_page_search_and_refuse_what_they_cannot_take,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let contacts: Vec<String> = (0..3).map(|_| new_contact()).collect();
        let mut sids = Vec::new();
        for contact in &contacts {
            let sid = new_sid();
            assert_eq!(app.message(contact, &sid, "hi").await.status(), 200);
            sids.push(sid);
            app.settled(contact).await;
            // Distinct activity times, newest last.
            app.clock.advance(Duration::from_secs(1));
        }
        let newest_first: Vec<&str> = contacts.iter().rev().map(String::as_str).collect();

        // Paged, newest activity first, every conversation once.
        let path = format!("/api/bots/{BOT}/conversations");
        let (status, first) = api(&app, &format!("{path}?limit=2")).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["bot_loaded"], true);
        let next = first["next"].as_str().expect("a second page").to_owned();
        let (_, second) = api(&app, &format!("{path}?limit=2&before={next}")).await;
        assert_eq!(second["next"], Value::Null);
        let listed: Vec<&str> = first["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .chain(second["conversations"].as_array().unwrap())
            .map(|c| c["contact"].as_str().unwrap())
            .collect();
        assert_eq!(listed, newest_first);
        assert_eq!(first["conversations"][0]["node"], "main");

        // Search by the contact (with or without `whatsapp:`), by the SID of
        // the message they sent, and by the SID of the reply sent to them.
        let bare = contacts[1].strip_prefix("whatsapp:").unwrap();
        let reply_sid = app.outbox(&contacts[1]).await[0]
            .twilio_sid
            .clone()
            .unwrap();
        for q in [
            contacts[1].as_str(),
            bare,
            sids[1].as_str(),
            reply_sid.as_str(),
        ] {
            let encoded: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
            let (status, found) = api(&app, &format!("{path}?q={encoded}")).await;
            assert_eq!(status, 200, "{q}: {found}");
            let found = found["conversations"].as_array().unwrap();
            assert_eq!(found.len(), 1, "{q}: {found:?}");
            assert_eq!(found[0]["contact"], contacts[1].as_str(), "{q}");
        }
        let (_, none) = api(&app, &format!("{path}?q=SMnothing")).await;
        assert_eq!(none["conversations"], json!([]));

        // The contact's timeline, a page at a time, never repeating an entry.
        let contact = &contacts[0];
        for text in ["3", "3"] {
            app.say(contact, text).await;
            app.clock.advance(Duration::from_millis(5));
        }
        app.settled(contact).await;
        let mut seen = Vec::new();
        let mut query = "?limit=2".to_owned();
        loop {
            let page = contact_history(&app, contact, &query).await;
            let entries = page["timeline"].as_array().unwrap();
            assert!(!entries.is_empty(), "{page}");
            seen.extend(entries.iter().map(|e| (e["type"].clone(), e["id"].clone())));
            match page["next"].as_str() {
                Some(next) => query = format!("?limit=2&before={next}"),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort_by_key(|e| format!("{}.{}", e.0, e.1));
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "an entry came twice: {seen:?}");
        // hi, welcome, and per "3": the message, "We open 9 to 5." and the menu.
        assert_eq!(seen.len(), 8, "{seen:?}");
        assert_eq!(
            seen.last().unwrap().0,
            "message",
            "the oldest is the first message"
        );

        // Without the admin token, or with a wrong one: 401.
        for token in [None, Some("wrong")] {
            for path in [
                format!("/api/bots/{BOT}/conversations"),
                format!("/api/bots/{BOT}/contacts/{contact}"),
            ] {
                let response = app.get(&app.url(&path), token).await;
                assert_eq!(response.status(), 401, "{path} with {token:?}");
            }
        }

        // Hostile and malformed parameters: 400 with a message; unknown: 404.
        let long = "x".repeat(300);
        for (path, says) in [
            (format!("{path}?before=x"), "not a page position"),
            (format!("{path}?before=1.2.3"), "not a page position"),
            (
                format!("{path}?before=99999999999999999999.1"),
                "not a page position",
            ),
            (format!("{path}?limit=0"), "from 1 to"),
            (format!("{path}?limit=100000"), "from 1 to"),
            (format!("{path}?q={long}"), "longer than"),
            (format!("{path}?q=%00"), "control characters"),
            (format!("{path}?q=x&before=1.1"), "drop `before`"),
            (format!("{path}?sort=asc"), "unknown query parameter `sort`"),
            (format!("{path}?limit=1&limit=2"), "given twice"),
            (
                "/api/bots/Not%20A%20Bot/conversations".to_owned(),
                "not a bot id",
            ),
            (
                format!("/api/bots/{BOT}/contacts/{contact}?before=yesterday"),
                "not a page position",
            ),
            (
                format!("/api/bots/{BOT}/contacts/{contact}?limit=-1"),
                "from 1 to",
            ),
            (
                format!("/api/bots/{BOT}/contacts/{long}"),
                "1 to 256 characters",
            ),
            (
                format!("/api/bots/{BOT}/contacts/a%0Ab"),
                "1 to 256 characters",
            ),
        ] {
            let (status, json) = api(&app, &path).await;
            assert_eq!(status, 400, "{path}: {json}");
            assert!(
                json.as_str().unwrap_or_default().contains(says),
                "{path}: {json}"
            );
        }
        let (status, json) = api(
            &app,
            &format!("/api/bots/{BOT}/contacts/whatsapp:+15550000000"),
        )
        .await;
        assert_eq!(status, 404, "{json}");
        assert!(
            json.as_str()
                .unwrap_or_default()
                .contains("no conversation"),
            "{json}"
        );
        let (status, json) = api(&app, "/api/bots/gone/contacts/whatsapp:+15550000000").await;
        assert_eq!(status, 404, "{json}");
        assert!(json
            .as_str()
            .unwrap_or_default()
            .contains("no bot of that name is loaded"));
        let (status, json) = api(&app, "/api/bots/gone/conversations").await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(json["bot_loaded"], false);
        assert_eq!(json["conversations"], json!([]));

        // STOP shows in the contact's opt-out state.
        app.say(contact, "STOP").await;
        let history = contact_history(&app, contact, "?limit=1").await;
        assert_eq!(history["opted_out"], true, "{history}");
        assert!(history["opted_out_at"].is_string());
    }
);

/// A fresh SMS contact: starts reach it without a 24-hour window.
fn sms_contact() -> String {
    format!("+1555{:07}", rand::random::<u32>() % 10_000_000)
}

/// POSTs a broadcast of `contacts` to the shop's `browse` node, due in an hour.
async fn later_broadcast(app: &TestApp, contacts: &[String]) -> Value {
    let at = (app.clock.now() + chrono::Duration::hours(1)).to_rfc3339();
    let contacts: Vec<Value> = contacts.iter().map(|to| json!({"to": to})).collect();
    let response = app
        .http
        .post(app.url(&format!("/api/bots/{BOT}/broadcasts")))
        .bearer_auth(TOKEN)
        .json(&json!({"node": "browse", "contacts": contacts, "at": at}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

both_stores!(
    the_console_lists_broadcasts_and_scheduled_starts_and_cancels_them,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let console = ConsoleClient::signed_in(&app).await;
        let (status, html) = console.get("/console/broadcasts").await;
        assert_eq!(status, 200, "{html}");
        assert!(
            html.contains("No broadcasts for <code>shop</code>"),
            "{html}"
        );
        assert!(
            html.contains("href=\"/console/broadcasts\""),
            "in the nav: {html}"
        );
        assert!(
            html.contains("href=\"/console/scheduled\""),
            "in the nav: {html}"
        );

        let contacts: Vec<String> = (0..3).map(|_| sms_contact()).collect();
        let first = later_broadcast(&app, &contacts).await;
        let second = later_broadcast(&app, &contacts[..1]).await;
        let (status, html) = console.get("/console/broadcasts?bot=shop").await;
        assert_eq!(status, 200);
        let newer = html
            .find(&format!("id=\"broadcast-{}\"", second["id"]))
            .unwrap();
        let older = html
            .find(&format!("id=\"broadcast-{}\"", first["id"]))
            .unwrap();
        assert!(newer < older, "newest first: {html}");
        assert!(html.contains("<code>browse</code>"), "{html}");
        assert!(
            html.contains("<td>3</td>\n  <td class=\"counts\"><div>3 waiting</div>"),
            "total and waiting: {html}"
        );

        // A form without the session's token is refused, and changes nothing.
        let cancel = format!("/console/broadcasts/{}/cancel", first["id"]);
        let forged = console
            .http
            .post(format!("{}{cancel}", console.base))
            .header("cookie", console.cookie.clone().unwrap())
            .form(&[("csrf", "forged")])
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        let (_, progress) = api(&app, &format!("/api/broadcasts/{}", first["id"])).await;
        assert_eq!(progress["status"], "running");

        let response = console
            .post(&cancel, &[("back", "/console/broadcasts?bot=shop")])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let to = response.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(to, "/console/broadcasts?bot=shop&note=broadcast-cancelled");
        let (_, progress) = api(&app, &format!("/api/broadcasts/{}", first["id"])).await;
        assert_eq!(progress["status"], "cancelled", "{progress}");
        assert_eq!(progress["cancelled"], 3);
        let (_, html) = console.get(&to).await;
        assert!(html.contains("The broadcast is cancelled"), "{html}");
        assert!(html.contains("badge bad\">cancelled"), "{html}");
        let (status, _) = console
            .get("/console/broadcasts?bot=shop&before=nonsense")
            .await;
        assert_eq!(status, 400);
        let missing = console.post("/console/broadcasts/999999/cancel", &[]).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);

        // Scheduled starts: the bot's own, due first; a broadcast's are not listed.
        let (early, late) = (sms_contact(), sms_contact());
        let mut ids = Vec::new();
        for (to, hours) in [(&late, 3), (&early, 2)] {
            let at = (app.clock.now() + chrono::Duration::hours(hours)).to_rfc3339();
            let response = app
                .http
                .post(app.url(&format!("/api/bots/{BOT}/conversations")))
                .bearer_auth(TOKEN)
                .json(&json!({"to": to, "node": "browse", "at": at, "vars": {"name": "Amina"}}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            let answer: Value = response.json().await.unwrap();
            ids.push(answer["id"].as_i64().unwrap());
        }
        let (status, html) = console.get("/console/scheduled?bot=shop").await;
        assert_eq!(status, 200, "{html}");
        let (at_early, at_late) = (
            html.find(early.as_str()).unwrap(),
            html.find(late.as_str()).unwrap(),
        );
        assert!(at_early < at_late, "due first: {html}");
        assert!(
            html.contains("{&quot;name&quot;:&quot;Amina&quot;}"),
            "{html}"
        );
        assert!(
            !html.contains(contacts[0].as_str()),
            "a broadcast's contact: {html}"
        );

        let cancel = format!("/console/scheduled/{}/cancel", ids[0]);
        let forged = console
            .http
            .post(format!("{}{cancel}", console.base))
            .header("cookie", console.cookie.clone().unwrap())
            .form(&[("csrf", "forged")])
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        let response = console
            .post(&cancel, &[("back", "/console/scheduled?bot=shop")])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let to = response.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(to, "/console/scheduled?bot=shop&note=start-cancelled");
        let (_, html) = console.get(&to).await;
        assert!(!html.contains(late.as_str()), "cancelled: {html}");
        assert!(html.contains(early.as_str()), "{html}");
        let (_, pending) = api(&app, "/api/scheduled?bot=shop").await;
        assert!(
            pending
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["id"] != ids[0]),
            "{pending}"
        );

        // A start that ran cannot be cancelled: the page says so.
        app.clock.advance(Duration::from_secs(2 * 3600 + 60));
        crate::support::eventually(
            Duration::from_secs(15),
            Duration::from_millis(50),
            || async {
                let (_, pending) = api(&app, "/api/scheduled?bot=shop").await;
                if pending
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["id"] == ids[1])
                {
                    Err(format!("{pending}"))
                } else {
                    Ok(())
                }
            },
        )
        .await;
        let response = console
            .post(&format!("/console/scheduled/{}/cancel", ids[1]), &[])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let to = response.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(to, "/console/scheduled?note=start-not-cancelled");
        let (_, html) = console.get(&to).await;
        assert!(html.contains("the start has run already"), "{html}");

        // Signed out, the pages send to sign-in and the actions answer 401.
        let anonymous = ConsoleClient::new(&app);
        let (status, _) = anonymous.get("/console/scheduled").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let response = anonymous.post(&cancel, &[]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
);

/// A bot whose first node waits 2 hours for a day, then nudges.
fn write_waiter(flows: &std::path::Path, api_base: &str) {
    let dir = flows.join("waiter");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bot.yaml"),
        format!(
            "session_timeout: 1d\ntwilio:\n  account_sid: AC00000000000000000000000000000000\n  \
             auth_token: test-token\n  from: \"whatsapp:+14155238886\"\n  api_base: {api_base}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("nodes.yaml"),
        "main:\n  say: Which day suits you?\n  save_as: day\n  timeout: 2h\n  on_timeout: nudge\n\
         nudge:\n  say: Still there?\n",
    )
    .unwrap();
}

both_stores!(
    the_contact_api_and_the_timeline_show_a_pending_timer,
    |db| async move {
        let app = TestApp::spawn_with_bots(&db, Default::default(), write_waiter).await;
        let contact = new_contact();
        let response = app
            .post_signed("waiter", &contact, &new_sid(), &[("Body", "hi")])
            .await;
        assert_eq!(response.status(), 200);
        let (status, history) = api(&app, &format!("/api/bots/waiter/contacts/{contact}")).await;
        assert_eq!(status, 200, "{history}");
        let conversation = &history["conversation"];
        assert_eq!(conversation["node"], "main");
        assert_eq!(conversation["timer"]["then"], "nudge", "{history}");
        let at =
            chrono::DateTime::parse_from_rfc3339(conversation["timer"]["at"].as_str().unwrap())
                .unwrap();
        let from_now = at.with_timezone(&chrono::Utc) - app.clock.now();
        assert!(
            from_now > chrono::Duration::minutes(119) && from_now <= chrono::Duration::hours(2),
            "{from_now}"
        );
        let console = ConsoleClient::signed_in(&app).await;
        let id = conversation["id"].as_i64().unwrap();
        let (_, html) = console.get(&format!("/console/conversations/{id}")).await;
        assert!(html.contains("Waiting until"), "{html}");
        assert!(html.contains("then <code>nudge</code>"), "{html}");
    }
);
