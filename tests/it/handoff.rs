//! SPEC §10.2, human handoff, end to end on both stores: a node's, an
//! option's and a script's handoff; the bot silent while a person has the
//! conversation (messages recorded and notified); a person's answer through
//! the API (refused outside the 24-hour window) and the hand-back; opt-out
//! words while handed off; `handoff_timeout` returning the conversation to
//! the bot (a person's answer restarts it); the signed notify delivered after
//! its receiver was down for a while; hostile input to the API; and the
//! console's inbox with its two forms.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use reqwest::StatusCode as Status;
use serde_json::Value;
use sha2::Sha256;

use crate::both_stores;
use crate::console::ConsoleClient;
use crate::support::app::{Options, TestApp};
use crate::support::db::TestDb;
use crate::support::eventually;

const TOKEN: &str = "admin-secret";
const BOT: &str = "desk";
const SECRET: &str = "notify-secret-for-tests";
const HOUR: Duration = Duration::from_secs(60 * 60);
const WELCOME: &str = "Hi! How can we help?\n1. Hours\n2. A person\n3. Support";
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// A loopback receiver of handoff notices: answers each with the next status
/// of its script (200 once the script is used up) and keeps what it got.
#[derive(Clone, Default)]
struct Receiver {
    shared: Arc<Mutex<ReceiverState>>,
}

#[derive(Default)]
struct ReceiverState {
    statuses: VecDeque<u16>,
    /// (signature header, body) of every request, answered or not.
    got: Vec<(String, Vec<u8>)>,
}

impl Receiver {
    /// Serves on 127.0.0.1; answers `statuses` in turn, then 200.
    async fn start(statuses: &[u16]) -> (Receiver, String) {
        let receiver = Receiver::default();
        receiver
            .shared
            .lock()
            .unwrap()
            .statuses
            .extend(statuses.iter().copied());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/notify", post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    /// The bodies answered 2xx so far, once there are `n`, each checked
    /// against its signature.
    async fn delivered(&self, n: usize) -> Vec<Value> {
        eventually(WAIT, POLL, || async {
            let got = self.shared.lock().unwrap().got.clone();
            let bodies: Vec<Value> = got
                .iter()
                .filter(|(signature, _)| !signature.is_empty())
                .map(|(signature, body)| {
                    assert_eq!(
                        *signature,
                        expected_signature(body),
                        "signature of {body:?}"
                    );
                    serde_json::from_slice(body).unwrap()
                })
                .collect();
            if bodies.len() >= n {
                Ok(bodies)
            } else {
                Err(format!(
                    "{} notices delivered, waiting for {n}",
                    bodies.len()
                ))
            }
        })
        .await
    }

    fn requests(&self) -> usize {
        self.shared.lock().unwrap().got.len()
    }
}

/// Records the request; the signature is blanked for requests answered with
/// an error, so only delivered ones count.
async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let signature = headers
        .get("x-switchboard-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing")
        .to_owned();
    let mut state = receiver.shared.lock().unwrap();
    let status = state.statuses.pop_front().unwrap_or(200);
    let kept = if status == 200 {
        signature
    } else {
        String::new()
    };
    state.got.push((kept, body.to_vec()));
    StatusCode::from_u16(status).unwrap()
}

/// The signature a receiver computes: hex HMAC-SHA256 of the body.
fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// The help desk bot: an option, a node and a script hand off; notices go to
/// `notify` (none when `None`).
fn write_desk(flows: &Path, api_base: &str, notify: Option<&str>) {
    let dir = flows.join(BOT);
    std::fs::create_dir_all(&dir).unwrap();
    let notify = notify
        .map(|url| format!("handoff_notify: {url}\nhandoff_secret: {SECRET}\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("bot.yaml"),
        format!(
            "session_timeout: 1h\nhandoff_timeout: 30h\n{notify}keywords:\n  menu: main\n  vip: agent\n\
             twilio:\n  account_sid: AC00000000000000000000000000000000\n  auth_token: test-token\n  \
             from: \"whatsapp:+14155238886\"\n  api_base: {api_base}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("nodes.yaml"),
        "main:\n  say: Hi! How can we help?\n  options:\n\
         \x20   - label: Hours\n      say: We open 9 to 5.\n\
         \x20   - label: A person\n      say: Connecting you to our team.\n      handoff: sales\n\
         \x20   - label: Support\n      goto: support\n\
         support:\n  say: Our support team will write to you here.\n  handoff: support\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("agent.rhai"),
        "fn start() {\n  say(\"One moment, a person will answer.\");\n  handoff(\"vip\");\n}\n",
    )
    .unwrap();
}

async fn spawn(db: &TestDb, notify: Option<String>) -> TestApp {
    TestApp::spawn_with_bots(db, Options::default(), move |flows, api_base| {
        write_desk(flows, api_base, notify.as_deref())
    })
    .await
}

/// A fresh WhatsApp contact.
fn contact() -> String {
    crate::support::app::new_contact()
}

/// Sends `text` from `contact` to the desk bot; the 200 means committed.
async fn say(app: &TestApp, contact: &str, text: &str) {
    let sid = crate::support::app::new_sid();
    let response = app.post_signed(BOT, contact, &sid, &[("Body", text)]).await;
    assert_eq!(response.status(), 200, "webhook for {text:?}");
}

/// The desk bot's outbox bodies for `contact`, now.
async fn bodies(app: &TestApp, contact: &str) -> Vec<String> {
    let rows = app.store.outbox_for(BOT, contact).await.unwrap();
    rows.into_iter().map(|r| r.body).collect()
}

/// The contact's path segment.
fn path(contact: &str) -> String {
    contact.replace(':', "%3A").replace('+', "%2B")
}

async fn api(app: &TestApp, contact: &str, what: &str, body: &str) -> (Status, String) {
    let response = app
        .http
        .post(app.url(&format!(
            "/api/bots/{BOT}/contacts/{}/{what}",
            path(contact)
        )))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

async fn queue_of(app: &TestApp, contact: &str) -> Option<String> {
    app.store
        .conversation(BOT, contact)
        .await
        .unwrap()
        .and_then(|s| s.handoff)
        .map(|h| h.queue)
}

both_stores!(a_handoff_goes_to_a_person_and_comes_back, |db| async move {
    let (receiver, url) = Receiver::start(&[]).await;
    let app = spawn(&db, Some(url)).await;
    let contact = contact();
    say(&app, &contact, "hi").await;
    say(&app, &contact, "2").await;
    assert_eq!(
        bodies(&app, &contact).await,
        [WELCOME, "Connecting you to our team."]
    );
    assert_eq!(queue_of(&app, &contact).await.as_deref(), Some("sales"));

    // The bot says nothing now, keywords included; the messages are recorded.
    say(&app, &contact, "hello? is anyone there").await;
    say(&app, &contact, "menu").await;
    assert_eq!(
        bodies(&app, &contact).await.len(),
        2,
        "the bot stays silent"
    );
    assert_eq!(queue_of(&app, &contact).await.as_deref(), Some("sales"));

    // The handoff and each message are notified, signed.
    let notices = receiver.delivered(3).await;
    assert_eq!(notices[0]["event"], "handoff");
    assert_eq!(notices[0]["queue"], "sales");
    assert_eq!(notices[0]["bot"], BOT);
    assert_eq!(notices[0]["contact"], contact.as_str());
    assert_eq!(notices[0]["text"], "2");
    assert_eq!(notices[1]["event"], "message");
    assert_eq!(notices[1]["text"], "hello? is anyone there");
    assert_eq!(notices[2]["text"], "menu");
    let link = notices[1]["console"].as_str().unwrap();
    assert_eq!(
        link,
        app.url(&format!("/console/inbox/{BOT}/{}", path(&contact)))
    );

    // A person answers: queued and sent like any reply.
    let (status, answer) = api(
        &app,
        &contact,
        "messages",
        r#"{"text": "Hi, this is Sam."}"#,
    )
    .await;
    assert_eq!(status, Status::ACCEPTED, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["replies"],
        1
    );
    let sent = app.twilio.wait_for_accepted(3, WAIT).await;
    assert!(
        sent.iter().any(|m| m.body == "Hi, this is Sam."),
        "{sent:?}"
    );

    // Handed back to `main`: the bot answers again.
    let (status, released) = api(&app, &contact, "release", r#"{"node": "main"}"#).await;
    assert_eq!(status, Status::OK, "{released}");
    assert_eq!(queue_of(&app, &contact).await, None);
    assert_eq!(bodies(&app, &contact).await.last().unwrap(), WELCOME);
    say(&app, &contact, "1").await;
    assert_eq!(
        bodies(&app, &contact).await.last().unwrap(),
        "We open 9 to 5."
    );
    // Nothing more is notified once the bot has the conversation.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.requests(), 3);
});

both_stores!(a_node_and_a_script_hand_off_too, |db| async move {
    let app = spawn(&db, None).await;
    let by_node = contact();
    say(&app, &by_node, "hi").await;
    say(&app, &by_node, "3").await;
    assert_eq!(
        bodies(&app, &by_node).await.last().unwrap(),
        "Our support team will write to you here."
    );
    assert_eq!(queue_of(&app, &by_node).await.as_deref(), Some("support"));

    let by_script = contact();
    say(&app, &by_script, "vip").await;
    assert_eq!(
        bodies(&app, &by_script).await,
        ["One moment, a person will answer."]
    );
    assert_eq!(queue_of(&app, &by_script).await.as_deref(), Some("vip"));
    say(&app, &by_script, "still there?").await;
    assert_eq!(bodies(&app, &by_script).await.len(), 1);

    // Released with no node: the conversation ends quietly and the next
    // message starts over.
    let (status, body) = api(&app, &by_script, "release", "{}").await;
    assert_eq!(status, Status::OK, "{body}");
    assert_eq!(bodies(&app, &by_script).await.len(), 1, "nothing sent");
    say(&app, &by_script, "hello").await;
    assert_eq!(bodies(&app, &by_script).await.last().unwrap(), WELCOME);
    // Without `handoff_notify` nothing is delivered: the notices are given up.
    let notices = eventually(WAIT, POLL, || async {
        let notices = app.store.notices_for(BOT, &by_node).await.unwrap();
        if notices.iter().all(|(_, status, _)| status == "failed") {
            Ok(notices)
        } else {
            Err(format!("{notices:?}"))
        }
    })
    .await;
    assert_eq!(notices.len(), 1);
});

both_stores!(opt_out_words_work_while_handed_off, |db| async move {
    let app = spawn(&db, None).await;
    let contact = contact();
    say(&app, &contact, "vip").await;
    say(&app, &contact, "STOP").await;
    assert_eq!(
        bodies(&app, &contact).await.last().unwrap(),
        "You won't get more messages from us. Send START to undo."
    );
    assert_eq!(
        queue_of(&app, &contact).await,
        None,
        "STOP ends the handoff"
    );
    let (status, body) = api(&app, &contact, "messages", r#"{"text": "Hello?"}"#).await;
    assert_eq!(status, Status::CONFLICT, "{body}");
    assert!(body.contains("opted out"), "{body}");
});

both_stores!(an_answer_outside_the_window_is_refused, |db| async move {
    let app = spawn(&db, None).await;
    let contact = contact();
    say(&app, &contact, "vip").await;
    app.clock.advance(25 * HOUR);
    let (status, body) = api(
        &app,
        &contact,
        "messages",
        r#"{"text": "Sorry for the wait!"}"#,
    )
    .await;
    assert_eq!(status, Status::CONFLICT, "{body}");
    assert!(body.contains("24-hour window"), "{body}");
    assert_eq!(bodies(&app, &contact).await.len(), 1, "nothing queued");
    // An SMS contact has no window.
    let sms = format!("+1555{:07}", rand::random::<u32>() % 10_000_000);
    say(&app, &sms, "vip").await;
    app.clock.advance(25 * HOUR);
    let (status, body) = api(&app, &sms, "messages", r#"{"text": "Sorry for the wait!"}"#).await;
    assert_eq!(status, Status::ACCEPTED, "{body}");
});

both_stores!(
    handoff_timeout_returns_the_conversation_to_the_bot,
    |db| async move {
        let app = spawn(&db, None).await;
        let contact = contact();
        say(&app, &contact, "vip").await;
        // A person answers 20 hours in: the 30-hour clock starts again.
        app.clock.advance(20 * HOUR);
        let (status, body) = api(&app, &contact, "messages", r#"{"text": "On it."}"#).await;
        assert_eq!(status, Status::ACCEPTED, "{body}");
        app.clock.advance(11 * HOUR);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            queue_of(&app, &contact).await.as_deref(),
            Some("vip"),
            "31 h in, 11 h after the answer"
        );
        // 30 hours after the answer, nobody answered again: back to the bot, quietly.
        app.clock.advance(20 * HOUR);
        eventually(WAIT, POLL, || async {
            match queue_of(&app, &contact).await {
                None => Ok(()),
                Some(queue) => Err(format!("still handed off to {queue}")),
            }
        })
        .await;
        assert_eq!(
            bodies(&app, &contact).await,
            ["One moment, a person will answer.", "On it."],
            "the return is quiet"
        );
        say(&app, &contact, "hi").await;
        assert_eq!(bodies(&app, &contact).await.last().unwrap(), WELCOME);
    }
);

both_stores!(
    a_notice_is_delivered_after_its_receiver_was_down,
    |db| async move {
        let (receiver, url) = Receiver::start(&[503, 503, 500]).await;
        let app = spawn(&db, Some(url)).await;
        let contact = contact();
        say(&app, &contact, "vip").await;
        let notices = receiver.delivered(1).await;
        assert_eq!(notices[0]["event"], "handoff");
        assert_eq!(notices[0]["queue"], "vip");
        assert_eq!(receiver.requests(), 4, "three failures, then delivered");
        let stored = app.store.notices_for(BOT, &contact).await.unwrap();
        assert_eq!(stored, [("handoff".to_owned(), "delivered".to_owned(), 4)]);
    }
);

both_stores!(the_api_refuses_hostile_input, |db| async move {
    let app = spawn(&db, None).await;
    let contact = contact();
    say(&app, &contact, "vip").await;
    let huge = format!(r#"{{"text": "{}"}}"#, "a".repeat(100 * 1024));
    for (what, body, status, says) in [
        ("messages", huge.as_str(), Status::PAYLOAD_TOO_LARGE, ""),
        (
            "messages",
            "{not json",
            Status::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "messages",
            r#"{"text": "a\u0000b"}"#,
            Status::BAD_REQUEST,
            "control character",
        ),
        ("messages", r#"{"text": ""}"#, Status::BAD_REQUEST, "empty"),
        (
            "messages",
            r#"{"text": "x", "media": ["javascript:alert(1)"]}"#,
            Status::BAD_REQUEST,
            "http(s)",
        ),
        (
            "release",
            r#"{"node": "nowhere"}"#,
            Status::NOT_FOUND,
            "no node `nowhere`",
        ),
        (
            "release",
            r#"{"node": 7}"#,
            Status::BAD_REQUEST,
            "node name",
        ),
    ] {
        let (got, text) = api(&app, &contact, what, body).await;
        assert_eq!(got, status, "{what} {body:.60}: {text}");
        assert!(text.contains(says), "{what} {body:.60}: {text}");
    }
    // Unknown bot, unknown contact, a contact that cannot be one, no token.
    let post = |url: String, token: Option<&'static str>| {
        let mut request = app.http.post(url).body(r#"{"text": "hi"}"#);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status() }
    };
    let other = path(&crate::support::app::new_contact());
    assert_eq!(
        post(
            app.url(&format!(
                "/api/bots/nobot/contacts/{}/messages",
                path(&contact)
            )),
            Some(TOKEN)
        )
        .await,
        Status::NOT_FOUND
    );
    assert_eq!(
        post(
            app.url(&format!("/api/bots/{BOT}/contacts/{other}/messages")),
            Some(TOKEN)
        )
        .await,
        Status::NOT_FOUND
    );
    assert_eq!(
        post(
            app.url(&format!("/api/bots/{BOT}/contacts/robert%00/messages")),
            Some(TOKEN)
        )
        .await,
        Status::BAD_REQUEST
    );
    assert_eq!(
        post(
            app.url(&format!(
                "/api/bots/{BOT}/contacts/{}/messages",
                path(&contact)
            )),
            None
        )
        .await,
        Status::UNAUTHORIZED
    );
    // Released, there is nobody to answer for.
    let (status, _) = api(&app, &contact, "release", "").await;
    assert_eq!(status, Status::OK);
    let (status, body) = api(&app, &contact, "messages", r#"{"text": "hi"}"#).await;
    assert_eq!(status, Status::CONFLICT, "{body}");
    assert!(body.contains("not handed off"), "{body}");
    assert_eq!(
        bodies(&app, &contact).await.len(),
        1,
        "nothing was queued by any of it"
    );
});

both_stores!(
    the_console_inbox_reads_answers_and_hands_back,
    |db| async move {
        let app = spawn(&db, None).await;
        let contact = contact();
        say(&app, &contact, "hi").await;
        say(&app, &contact, "2").await;
        say(&app, &contact, "my order is late").await;
        let client = ConsoleClient::signed_in(&app).await;
        let (status, inbox) = client.get("/console/inbox").await;
        assert_eq!(status, 200, "{inbox}");
        assert!(inbox.contains(&contact), "{inbox}");
        assert!(inbox.contains(">Inbox<"), "in the nav: {inbox}");
        let page = format!("/console/inbox/{BOT}/{}", path(&contact));
        let (status, html) = client.get(&page).await;
        assert_eq!(status, 200, "{html}");
        assert!(html.contains("my order is late"), "{html}");

        // A form without this session's token is refused, and does nothing.
        let forged = ConsoleClient {
            csrf: Some("forged".into()),
            ..ConsoleClient::signed_in(&app).await
        };
        let response = forged
            .post(&format!("{page}/answer"), &[("text", "forged")])
            .await;
        assert_eq!(response.status(), Status::FORBIDDEN);
        let response = forged
            .post(&format!("{page}/release"), &[("node", "main")])
            .await;
        assert_eq!(response.status(), Status::FORBIDDEN);
        assert_eq!(queue_of(&app, &contact).await.as_deref(), Some("sales"));

        let response = client
            .post(
                &format!("{page}/answer"),
                &[("text", "Sorry! It ships today.")],
            )
            .await;
        assert_eq!(response.status(), Status::SEE_OTHER);
        assert_eq!(
            bodies(&app, &contact).await.last().unwrap(),
            "Sorry! It ships today."
        );
        let (_, html) = client.get(&format!("{page}?done=sent")).await;
        assert!(html.contains("Message queued"), "{html}");
        assert!(html.contains("Sorry! It ships today."), "{html}");

        let response = client
            .post(&format!("{page}/release"), &[("node", "main")])
            .await;
        assert_eq!(response.status(), Status::SEE_OTHER);
        assert_eq!(bodies(&app, &contact).await.last().unwrap(), WELCOME);
        let (_, html) = client.get(&page).await;
        assert!(html.contains("not handed off"), "{html}");
        let (_, inbox) = client.get("/console/inbox").await;
        assert!(!inbox.contains(&contact), "{inbox}");
        // Signed out, the forms answer 401.
        let response = ConsoleClient::new(&app)
            .post(&format!("{page}/answer"), &[("text", "x"), ("csrf", "x")])
            .await;
        assert_eq!(response.status(), Status::UNAUTHORIZED);
    }
);
