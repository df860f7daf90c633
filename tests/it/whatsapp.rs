//! SPEC §8.1 (buttons and lists from Content resources), §8.2 (templates) and
//! §8.5 (inbound details, read receipts), end to end: signed webhooks into the
//! real server, the sender against the fake Twilio's Messages and Content APIs
//! and its typing indicator, on both stores.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard::domain::OutboxStatus;

use crate::both_stores;
use crate::support::app::{new_sid, Options, TestApp, ACCOUNT_SID, AUTH_TOKEN, FROM};
use crate::support::eventually;
use crate::support::fake_twilio::{FakeReply, ReceivedMessage};

const WA: &str = "wa";
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);
const REMINDER_SID: &str = "HXb5b62575e6e4ff6129ad7c8efe1f983e";

/// A bot whose menus go as buttons and a list, with a template and read
/// receipts, every Twilio API pointed at the fake.
fn write_wa_bot(flows: &Path, api_base: &str) {
    let dir = flows.join(WA);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bot.yaml"),
        format!(
            r#"name: WhatsApp features
read_receipts: true
keywords:
  remind: remind
templates:
  reminder:
    content_sid: {REMINDER_SID}
    variables: {{"1": "{{{{ name }}}}", "2": "Thursday"}}
twilio:
  account_sid: {ACCOUNT_SID}
  auth_token: {AUTH_TOKEN}
  from: "{FROM}"
  api_base: {api_base}
  content_api_base: {api_base}
  messaging_api_base: {api_base}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("nodes.yaml"),
        r#"main:
  say: What would you like?
  style: buttons
  options:
    - label: Browse cars
      id: browse
      say: Here are our cars.
    - label: Services
      goto: services
    - label: Your name
      goto: ask_name

services:
  say: Which service?
  style: list
  button: See services
  options:
    - label: Oil change
      description: 30 min, from £25
      say: "Oil change it is, payload {{ message.payload }}."
    - label: Tyres
      id: tyres
      say: Tyres it is.

ask_name:
  say: Your name?
  save_as: name
  goto: thanks

thanks:
  say: "Thanks {{ name }}."
  goto: main

remind:
  template: reminder
"#,
    )
    .unwrap();
}

async fn spawn(db: &crate::support::db::TestDb, options: Options) -> TestApp {
    TestApp::spawn_with_bots(db, options, write_wa_bot).await
}

/// Posts a signed message to the WhatsApp bot; `extra` beside `Body`.
async fn send(app: &TestApp, contact: &str, body: &str, extra: &[(&str, &str)]) -> String {
    let sid = new_sid();
    let mut params = vec![("Body", body)];
    params.extend_from_slice(extra);
    let response = app.post_signed(WA, contact, &sid, &params).await;
    assert_eq!(response.status(), 200, "webhook for {body:?}");
    sid
}

fn wa_contact() -> String {
    format!("whatsapp:+1666{:07}", rand::random::<u32>() % 10_000_000)
}

/// Waits for `n` messages the fake accepted for `contact`.
async fn sent(app: &TestApp, contact: &str, n: usize) -> Vec<ReceivedMessage> {
    eventually(WAIT, POLL, || async {
        let got: Vec<ReceivedMessage> = app
            .twilio
            .received()
            .into_iter()
            .filter(|m| m.to == contact && m.accepted())
            .collect();
        if got.len() >= n {
            return Ok(got);
        }
        Err(format!("expected {n} messages to {contact}, got {got:#?}"))
    })
    .await
}

fn variables(message: &ReceivedMessage) -> Value {
    serde_json::from_str(
        message
            .content_variables
            .as_deref()
            .expect("ContentVariables"),
    )
    .expect("ContentVariables is JSON")
}

both_stores!(
    buttons_and_lists_go_from_content_resources,
    |db| async move {
        let app = spawn(&db, Options::default()).await;
        let contact = wa_contact();
        send(&app, &contact, "hi", &[]).await;
        let got = sent(&app, &contact, 1).await;
        let buttons = &got[0];
        assert!(buttons.body.is_empty(), "no Body with a ContentSid");
        assert_eq!(variables(buttons), json!({"1": "What would you like?"}));
        let contents = app.twilio.contents();
        assert_eq!(contents.len(), 1);
        assert_eq!(buttons.content_sid, contents[0].sid);
        assert_eq!(
            contents[0].body["types"]["twilio/quick-reply"],
            json!({"body": "{{1}}", "actions": [
                {"title": "Browse cars", "id": "browse"},
                {"title": "Services", "id": "2"},
                {"title": "Your name", "id": "3"},
            ]})
        );
        assert_eq!(
            contents[0].body["types"]["twilio/text"]["body"],
            "{{1}}\n1. Browse cars\n2. Services\n3. Your name"
        );

        // A tap on "Services": its number is its payload.
        send(
            &app,
            &contact,
            "Services",
            &[("ButtonText", "Services"), ("ButtonPayload", "2")],
        )
        .await;
        let got = sent(&app, &contact, 2).await;
        assert_eq!(variables(&got[1]), json!({"1": "Which service?"}));
        let contents = app.twilio.contents();
        assert_eq!(contents.len(), 2);
        assert_eq!(
            contents[1].body["types"]["twilio/list-picker"],
            json!({"body": "{{1}}", "button": "See services", "items": [
                {"item": "Oil change", "id": "1", "description": "30 min, from £25"},
                {"item": "Tyres", "id": "tyres"},
            ]})
        );
        // The fake serves what it created.
        let sid = contents[1].sid.clone().unwrap();
        let fetched = app
            .http
            .get(format!("{}/v1/Content/{sid}", app.twilio.url()))
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(fetched.status(), 200);

        // A list item by its payload; the option's say shows `message.payload`.
        send(&app, &contact, "Oil change", &[("ButtonPayload", "1")]).await;
        let got = sent(&app, &contact, 3).await;
        assert_eq!(got[2].body, "Oil change it is, payload 1.");
        assert_eq!(got[2].content_sid, None);
    }
);

both_stores!(taps_by_payload_and_typed_answers, |db| async move {
    let app = spawn(&db, Options::default()).await;
    let by_payload = wa_contact();
    send(&app, &by_payload, "hi", &[]).await;
    // The text says something else: the payload decides.
    send(
        &app,
        &by_payload,
        "Your name",
        &[("ButtonPayload", "browse")],
    )
    .await;
    let got = sent(&app, &by_payload, 2).await;
    assert_eq!(got[1].body, "Here are our cars.");

    let typed = wa_contact();
    send(&app, &typed, "hi", &[]).await;
    send(&app, &typed, " your NAME ", &[]).await;
    let got = sent(&app, &typed, 2).await;
    assert_eq!(got[1].body, "Your name?");

    let by_number = wa_contact();
    send(&app, &by_number, "hi", &[]).await;
    send(&app, &by_number, "1", &[]).await;
    let got = sent(&app, &by_number, 2).await;
    assert_eq!(got[1].body, "Here are our cars.");

    // No match: the retry comes as buttons too, with the numbered text behind.
    let lost = wa_contact();
    send(&app, &lost, "hi", &[]).await;
    send(&app, &lost, "pizza", &[]).await;
    let got = sent(&app, &lost, 2).await;
    assert_eq!(
        variables(&got[1]),
        json!({"1": "Sorry, I didn't understand that. Please choose one of these:"})
    );
    let rows = app.store.outbox_for(WA, &lost).await.unwrap();
    assert_eq!(
        rows[1].body,
        "Sorry, I didn't understand that. Please reply with one of these:\n1. Browse cars\n2. Services\n3. Your name"
    );
});

both_stores!(
    one_resource_for_every_contact_restart_and_instance,
    |db| async move {
        let app = spawn(&db, Options::default()).await;
        let contacts: Vec<String> = (0..4).map(|_| wa_contact()).collect();
        for contact in &contacts {
            send(&app, contact, "hi", &[]).await;
        }
        let mut sids = Vec::new();
        for contact in &contacts {
            let got = sent(&app, contact, 1).await;
            sids.push(got[0].content_sid.clone().expect("sent as content"));
        }
        assert_eq!(
            app.twilio.contents().len(),
            1,
            "one resource for every contact"
        );
        assert!(sids.iter().all(|s| *s == sids[0]));

        // Restarted: the resource is found in the database.
        let app = app.restart(Options::default()).await;
        let after_restart = wa_contact();
        send(&app, &after_restart, "hi", &[]).await;
        let got = sent(&app, &after_restart, 1).await;
        assert_eq!(got[0].content_sid.as_ref(), Some(&sids[0]));
        assert_eq!(
            app.twilio.contents().len(),
            1,
            "not created again after a restart"
        );

        // A second instance, sending its own replies.
        let mut second = app.another(Options::default()).await;
        let other = wa_contact();
        send(&second, &other, "hi", &[]).await;
        let got = sent(&second, &other, 1).await;
        assert_eq!(got[0].content_sid.as_ref(), Some(&sids[0]));
        assert_eq!(
            app.twilio.contents().len(),
            1,
            "not created by another instance"
        );
        second.stop().await;
    }
);

both_stores!(
    a_refused_content_resource_sends_the_numbered_text,
    |db| async move {
        let app = spawn(&db, Options::default()).await;
        app.twilio
            .push_content(FakeReply::error(400, 20001, "Invalid types"));
        let contact = wa_contact();
        send(&app, &contact, "hi", &[]).await;
        let got = sent(&app, &contact, 1).await;
        assert_eq!(got[0].content_sid, None);
        assert_eq!(
            got[0].body,
            "What would you like?\n1. Browse cars\n2. Services\n3. Your name"
        );
        let rows = app.settled_for(WA, &contact).await;
        assert_eq!(rows.len(), 1);
        assert!(app
            .metrics()
            .await
            .contains("switchboard_interactive_fallbacks_total{bot=\"wa\"}"));
    }
);

both_stores!(
    a_content_api_answer_without_a_valid_sid_sends_text,
    |db| async move {
        let app = spawn(&db, Options::default()).await;
        app.twilio.push_content(FakeReply::raw(
            201,
            "application/json",
            r#"{"sid": "HX<script>alert(1)</script>"}"#,
        ));
        let contact = wa_contact();
        send(&app, &contact, "hi", &[]).await;
        let got = sent(&app, &contact, 1).await;
        assert_eq!(got[0].content_sid, None);
        assert!(got[0]
            .body
            .starts_with("What would you like?\n1. Browse cars"));
        // Nothing was remembered: a later process asks again.
        assert_eq!(app.twilio.contents().len(), 1);
    }
);

both_stores!(
    a_content_api_outage_is_retried_like_a_send,
    |db| async move {
        let app = spawn(&db, Options::default()).await;
        app.twilio.push_content(FakeReply::status(503));
        app.twilio
            .push_content(FakeReply::too_many(Duration::from_millis(0)));
        let contact = wa_contact();
        send(&app, &contact, "hi", &[]).await;
        let got = sent(&app, &contact, 1).await;
        assert!(got[0].content_sid.is_some(), "sent as buttons once created");
        let contents = app.twilio.contents();
        assert_eq!(
            contents
                .iter()
                .map(|c| c.answered_status)
                .collect::<Vec<_>>(),
            [503, 429, 201]
        );
    }
);

both_stores!(sms_contacts_get_the_numbered_text, |db| async move {
    let app = spawn(&db, Options::default()).await;
    let contact = format!("+1777{:07}", rand::random::<u32>() % 10_000_000);
    send(&app, &contact, "hi", &[]).await;
    let got = sent(&app, &contact, 1).await;
    assert_eq!(got[0].content_sid, None);
    assert_eq!(
        got[0].body,
        "What would you like?\n1. Browse cars\n2. Services\n3. Your name"
    );
    assert!(app.twilio.contents().is_empty());
    // No read receipt on SMS.
    assert!(app.twilio.typing().is_empty());
});

both_stores!(dry_run_creates_no_resource, |db| async move {
    let options = Options {
        dry_run: true,
        ..Options::default()
    };
    let app = spawn(&db, options).await;
    let contact = wa_contact();
    send(&app, &contact, "hi", &[]).await;
    let rows = app.settled_for(WA, &contact).await;
    assert_eq!(rows[0].status, OutboxStatus::Sent);
    assert!(rows[0].content.is_some(), "the row keeps its menu");
    assert!(app.twilio.contents().is_empty());
    assert!(app.twilio.received().is_empty());
    assert!(app.twilio.typing().is_empty());
});

both_stores!(templates_go_with_their_variables, |db| async move {
    let app = spawn(&db, Options::default()).await;
    let contact = wa_contact();
    send(&app, &contact, "hi", &[]).await;
    send(&app, &contact, "3", &[]).await;
    send(&app, &contact, "Amina", &[]).await;
    send(&app, &contact, "remind", &[]).await;
    let got = sent(&app, &contact, 5).await;
    let template = &got[4];
    assert_eq!(template.content_sid.as_deref(), Some(REMINDER_SID));
    assert!(template.body.is_empty());
    assert_eq!(variables(template), json!({"1": "Amina", "2": "Thursday"}));
    assert_eq!(app.twilio.contents().len(), 1, "templates are not created");
});

both_stores!(a_template_outside_the_window_is_sent, |db| async move {
    let app = spawn(
        &db,
        Options {
            run_sender: false,
            ..Options::default()
        },
    )
    .await;
    let contact = wa_contact();
    send(&app, &contact, "remind", &[]).await;
    // A day and more later, before anything was sent.
    app.clock.advance(Duration::from_secs(25 * 60 * 60));
    while app.sender.run_once().await.unwrap() > 0 {}
    let rows = app.settled_for(WA, &contact).await;
    assert_eq!(rows[0].status, OutboxStatus::Sent, "{rows:#?}");
    let got = sent(&app, &contact, 1).await;
    assert_eq!(got[0].content_sid.as_deref(), Some(REMINDER_SID));
    assert_eq!(variables(&got[0]), json!({"1": "", "2": "Thursday"}));
});

both_stores!(
    a_start_at_a_template_node_reaches_a_contact_outside_the_window,
    |db| async move {
        // SPEC §9.1 with §8.2: a conversation the business starts reaches a
        // WhatsApp contact who never wrote only with a template.
        let app = spawn(
            &db,
            Options {
                admin_token: Some("admin-secret".into()),
                ..Options::default()
            },
        )
        .await;
        let start = |node: &'static str, contact: String| {
            let app = &app;
            async move {
                let response = app
                    .http
                    .post(app.url(&format!("/api/bots/{WA}/conversations")))
                    .bearer_auth("admin-secret")
                    .json(&json!({"to": contact, "node": node, "vars": {"name": "Amina"}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                response.json::<Value>().await.unwrap()
            }
        };
        let contact = wa_contact();
        let answer = start("remind", contact.clone()).await;
        assert_eq!(answer["status"], "started", "{answer}");
        let got = sent(&app, &contact, 1).await;
        assert_eq!(got[0].content_sid.as_deref(), Some(REMINDER_SID));
        assert_eq!(variables(&got[0]), json!({"1": "Amina", "2": "Thursday"}));

        let answer = start("services", wa_contact()).await;
        assert_eq!(answer["status"], "skipped");
        assert_eq!(answer["reason"], "outside_window");
    }
);

both_stores!(read_receipts_follow_the_commit, |db| async move {
    let app = spawn(&db, Options::default()).await;
    let contact = wa_contact();
    let sid = send(&app, &contact, "hi", &[]).await;
    let typing = app.twilio.wait_for_typing(1, WAIT).await;
    assert_eq!(typing[0].channel, "whatsapp");
    assert_eq!(typing[0].message_id, sid);
    assert!(typing[0].basic_auth_ok);
    assert_eq!(app.store.inbound_count(WA).await.unwrap(), 1);
    sent(&app, &contact, 1).await;
});

both_stores!(
    a_hanging_or_failing_typing_indicator_delays_no_reply,
    |db| async move {
        let app = spawn(&db, Options::default()).await;
        app.twilio.push_typing(FakeReply::hang());
        app.twilio.push_typing(FakeReply::status(500));
        let contact = wa_contact();
        send(&app, &contact, "hi", &[]).await;
        send(&app, &contact, "1", &[]).await;
        let got = sent(&app, &contact, 2).await;
        assert_eq!(got[1].body, "Here are our cars.");
        // Each message was marked once, and a failure is not retried.
        let typing = app.twilio.wait_for_typing(2, WAIT).await;
        assert_eq!(typing.len(), 2);
        send(&app, &contact, "hi", &[]).await;
        sent(&app, &contact, 3).await;
        assert_eq!(app.twilio.wait_for_typing(3, WAIT).await.len(), 3);
    }
);

both_stores!(inbound_details_reach_scripts, |db| async move {
    let app = TestApp::spawn_with_bots(&db, Options::default(), |flows, api_base| {
        write_wa_bot(flows, api_base);
        let dir = flows.join("details");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("bot.yaml"),
            format!(
                "twilio:\n  account_sid: {ACCOUNT_SID}\n  auth_token: {AUTH_TOKEN}\n  from: \"{FROM}\"\n  api_base: {api_base}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("main.rhai"),
            "fn start() {\n    say(`${message.payload}|${message.media_types}|${message.address}|${message.label}`);\n}\n",
        )
        .unwrap();
    })
    .await;
    let contact = wa_contact();
    let sid = new_sid();
    let url = app.webhook_url("details");
    let response = app
        .post_form(
            &url,
            &[
                ("MessageSid", sid.as_str()),
                ("AccountSid", ACCOUNT_SID),
                ("From", contact.as_str()),
                ("To", FROM),
                ("Body", ""),
                ("ButtonPayload", "yes_1"),
                ("NumMedia", "1"),
                ("MediaUrl0", "https://api.twilio.com/m/0"),
                ("MediaContentType0", "image/jpeg"),
                ("Address", "1 Main St"),
                ("Label", "Kibo Auto"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let got = sent(&app, &contact, 1).await;
    assert_eq!(got[0].body, "yes_1|[\"image/jpeg\"]|1 Main St|Kibo Auto");
});
