//! SPEC §8.2 (the window), §8.3 (opt-out) and §8.4 (failures reported later),
//! end to end: signed webhooks into the real server, the sender against the fake
//! Twilio, status callbacks, state across a restart, and `/metrics`.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use switchboard::domain::{Clock, ConversationState, OutboxStatus};
use switchboard::message::{Reply, ReplyKind};
use switchboard::store::{NewInbound, OutboxRow, StepOutput};

use crate::both_stores;
use crate::support::app::{
    new_contact, new_sid, Options, TestApp, ACCOUNT_SID, AUTH_TOKEN, BOT, FROM, WELCOME,
};
use crate::support::fake_twilio::FakeReply;

const STOP_REPLY: &str = "You won't get more messages from us. Send START to undo.";
const START_REPLY: &str = "Welcome back! Send hi to begin.";
const HELP_REPLY: &str = "Send STOP to opt out, or hi to talk to us.";
const WINDOW_REFUSAL: &str = "outside the 24-hour window: start with a template";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A test whose sender runs only when the test says, so the clock can jump with
/// no send in flight.
fn manual_sender() -> Options {
    Options {
        run_sender: false,
        ..Options::default()
    }
}

/// Runs the sender until nothing is due; a conversation's rows go one per round.
async fn drain(app: &TestApp) {
    for _ in 0..50 {
        if app.sender.run_once().await.unwrap() == 0 {
            return;
        }
    }
    panic!("the sender kept finding rows");
}

/// Bodies sent to `contact` that the fake accepted, in order.
fn sent_to(app: &TestApp, contact: &str) -> Vec<String> {
    app.twilio
        .received()
        .into_iter()
        .filter(|m| m.to == contact && m.accepted())
        .map(|m| m.body)
        .collect()
}

/// Posts a signed status callback for `sid`.
async fn callback(app: &TestApp, sid: &str, status: &str, error_code: Option<&str>) {
    let url = format!("{}/status", app.webhook_url(BOT));
    let mut params = vec![
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("AccountSid", ACCOUNT_SID),
    ];
    if let Some(code) = error_code {
        params.push(("ErrorCode", code));
    }
    let response = app.post_form(&url, &params).await;
    assert_eq!(response.status(), 200, "callback {status} {error_code:?}");
}

fn opted_out(row: &OutboxRow) -> bool {
    row.status == OutboxStatus::Failed
        && row.error_code.is_none()
        && row
            .error_message
            .as_deref()
            .is_some_and(|m| m.starts_with("opted_out: "))
}

/// Asserts that `/metrics` has each of `series` (name and labels as Prometheus
/// prints them). Counters are per process, shared by the tests running in it, so
/// values are not compared.
async fn assert_metrics(app: &TestApp, series: &[&str]) {
    let text = app.metrics().await;
    for one in series {
        assert!(text.contains(one), "no {one} in:\n{text}");
    }
}

async fn is_opted_out(app: &TestApp, bot: &str, contact: &str) -> bool {
    let status = app.store.contact_status(bot, contact).await.unwrap();
    status.is_some_and(|s| s.opted_out_at_ms.is_some())
}

/// When a 63016 closed the shop contact's window (`None`: it is open).
async fn window_closed_at(app: &TestApp, contact: &str) -> Option<i64> {
    let status = app.store.contact_status(BOT, contact).await.unwrap();
    status
        .expect("the contact has a conversation")
        .window_closed_at_ms
}

both_stores!(stop_help_start_cycle, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    // Sent before STOP: a reply still queued at STOP is never sent (SPEC §8.3).
    app.replies(&contact, 1).await;
    app.say(&contact, "  StOp ").await;
    assert!(is_opted_out(&app, BOT, &contact).await);
    let rows_before = app.outbox(&contact).await.len();
    for text in ["hi", "1", "menu", "start please"] {
        app.say(&contact, text).await;
    }
    assert_eq!(
        app.outbox(&contact).await.len(),
        rows_before,
        "nothing is queued for an opted-out contact, keywords included"
    );
    assert_eq!(
        app.store.inbound_count(BOT).await.unwrap(),
        6,
        "but every message is recorded"
    );
    app.say(&contact, "help").await;
    app.say(&contact, "START").await;
    assert!(!is_opted_out(&app, BOT, &contact).await);
    app.say(&contact, "hi").await;
    let replies = app.replies(&contact, 5).await;
    assert_eq!(
        replies,
        [WELCOME, STOP_REPLY, HELP_REPLY, START_REPLY, WELCOME]
    );
    let rows = app.settled(&contact).await;
    assert_eq!(rows[1].kind, ReplyKind::OptOutReply);
    assert_eq!(rows[4].kind, ReplyKind::FreeForm);
    assert_metrics(
        &app,
        &[
            "switchboard_opt_outs_total{bot=\"shop\",via=\"message\"}",
            "switchboard_opt_ins_total{bot=\"shop\"}",
        ],
    )
    .await;
});

/// Beside the shop bot, bot `keyed`: the same nodes, and keywords named like the
/// opt-out words.
fn write_keyed_bot(flows: &Path, api_base: &str) {
    let dir = flows.join("keyed");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(flows.join(BOT).join("nodes.yaml"), dir.join("nodes.yaml")).unwrap();
    std::fs::write(
        dir.join("bot.yaml"),
        format!(
            "keywords:\n  stop: ask_name\n  help: ask_name\ntwilio:\n  account_sid: {ACCOUNT_SID}\n  \
             auth_token: {AUTH_TOKEN}\n  from: \"{FROM}\"\n  api_base: {api_base}\n"
        ),
    )
    .unwrap();
}

both_stores!(the_stop_word_beats_a_keyword_named_stop, |db| async move {
    let app = TestApp::spawn_with_bots(&db, Options::default(), write_keyed_bot).await;
    let contact = new_contact();
    let say = |text: &'static str| {
        let contact = contact.clone();
        let app = &app;
        async move {
            let response = app
                .post_signed("keyed", &contact, &new_sid(), &[("Body", text)])
                .await;
            assert_eq!(response.status(), 200);
        }
    };
    say("help").await;
    // Sent before STOP: a reply still queued at STOP is never sent (SPEC §8.3).
    app.replies(&contact, 1).await;
    say("STOP").await;
    assert!(is_opted_out(&app, "keyed", &contact).await);
    say("help").await;
    let replies = app.replies(&contact, 3).await;
    assert_eq!(
        replies,
        ["What's your name?", STOP_REPLY, HELP_REPLY],
        "the help keyword wins over the help word, but not while opted out"
    );
});

both_stores!(
    queued_rows_of_an_opted_out_contact_never_reach_twilio,
    |db| async move {
        let app = TestApp::spawn_with(&db, manual_sender()).await;
        let contact = new_contact();
        app.say(&contact, "hi").await;
        app.say(&contact, "1").await; // three more rows: two says and the menu again
        app.say(&contact, "STOP").await;
        drain(&app).await;
        let rows = app.settled(&contact).await;
        assert_eq!(rows.len(), 5, "{rows:#?}");
        assert!(rows[..4].iter().all(opted_out), "{rows:#?}");
        assert_eq!(rows[4].status, OutboxStatus::Sent);
        assert_eq!(
            sent_to(&app, &contact),
            [STOP_REPLY],
            "only the stop reply went out"
        );
        assert_metrics(
            &app,
            &["switchboard_message_failures_total{bot=\"shop\",code=\"opted_out\"}"],
        )
        .await;
    }
);

both_stores!(twilio_21610_opts_the_contact_out, |db| async move {
    let app = TestApp::spawn(&db).await;
    app.twilio.push(FakeReply::error(
        400,
        21610,
        "Attempt to send to unsubscribed recipient",
    ));
    let contact = new_contact();
    app.say(&contact, "hi").await;
    let rows = app.settled(&contact).await;
    assert_eq!(rows[0].status, OutboxStatus::Failed);
    assert_eq!(rows[0].error_code, Some(21610));
    assert!(is_opted_out(&app, BOT, &contact).await);
    app.say(&contact, "hi").await;
    assert_eq!(
        app.outbox(&contact).await.len(),
        1,
        "no flow once opted out"
    );
    app.say(&contact, "start").await;
    assert_eq!(app.replies(&contact, 1).await, [START_REPLY]);
    assert_metrics(
        &app,
        &[
            "switchboard_opt_outs_total{bot=\"shop\",via=\"twilio\"}",
            "switchboard_message_failures_total{bot=\"shop\",code=\"21610\"}",
        ],
    )
    .await;
});

both_stores!(an_opt_out_survives_a_restart, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "stop").await;
    app.replies(&contact, 1).await;
    app.settled(&contact).await;
    let app = app.restart(Options::default()).await;
    app.say(&contact, "hi").await;
    assert_eq!(app.outbox(&contact).await.len(), 1, "still opted out");
    app.say(&contact, "start").await;
    app.say(&contact, "hi").await;
    assert_eq!(
        app.replies(&contact, 3).await,
        [STOP_REPLY, START_REPLY, WELCOME]
    );
});

both_stores!(
    the_window_refuses_free_form_whatsapp_without_calling_twilio,
    |db| async move {
        let app = TestApp::spawn_with(&db, manual_sender()).await;
        let whatsapp = new_contact();
        let sms = format!("+1555{:07}", rand::random::<u32>() % 10_000_000);
        app.say(&whatsapp, "hi").await;
        app.say(&sms, "hi").await;
        app.clock.advance(DAY + Duration::from_secs(1));
        drain(&app).await;
        let rows = app.settled(&whatsapp).await;
        assert_eq!(rows[0].status, OutboxStatus::Failed);
        assert_eq!(rows[0].error_code, Some(63016));
        assert_eq!(rows[0].error_message.as_deref(), Some(WINDOW_REFUSAL));
        assert!(sent_to(&app, &whatsapp).is_empty(), "Twilio was not called");
        assert_eq!(sent_to(&app, &sms), [WELCOME], "SMS has no window");
        // Writing again opens a new window.
        app.say(&whatsapp, "hi").await;
        drain(&app).await;
        assert_eq!(sent_to(&app, &whatsapp), [WELCOME]);
        assert_metrics(
            &app,
            &["switchboard_message_failures_total{bot=\"shop\",code=\"63016\"}"],
        )
        .await;
    }
);

both_stores!(a_reply_just_inside_the_window_is_sent, |db| async move {
    let app = TestApp::spawn_with(&db, manual_sender()).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.clock.advance(DAY - Duration::from_secs(60));
    drain(&app).await;
    assert_eq!(sent_to(&app, &contact), [WELCOME]);
});

both_stores!(a_template_is_sent_outside_the_window, |db| async move {
    let app = TestApp::spawn_with(&db, manual_sender()).await;
    let contact = new_contact();
    // A message received 25 hours ago whose replies are still queued: one
    // free-form, one a template (nothing makes templates yet; the store takes them).
    let long_ago = app.clock.now().timestamp_millis() - 25 * 60 * 60 * 1000;
    let message = NewInbound {
        bot: BOT.into(),
        contact: contact.clone(),
        message_sid: new_sid(),
        body: "hi".into(),
        payload: json!({}),
        received_at_ms: long_ago,
    };
    let template = Reply {
        kind: ReplyKind::Template,
        ..Reply::text("Your appointment is tomorrow.")
    };
    app.store
        .process_inbound(&message, |_| {
            let replies = vec![Reply::text("free-form"), template.clone()];
            async move {
                StepOutput {
                    state: ConversationState {
                        updated_at_ms: long_ago,
                        ..ConversationState::default()
                    },
                    replies,
                }
            }
        })
        .await
        .unwrap();
    drain(&app).await;
    let rows = app.settled(&contact).await;
    assert_eq!(rows[0].error_code, Some(63016));
    assert_eq!(rows[1].kind, ReplyKind::Template);
    assert_eq!(rows[1].status, OutboxStatus::Sent);
    assert_eq!(sent_to(&app, &contact), ["Your appointment is tomorrow."]);
});

both_stores!(
    status_callback_63016_closes_the_window_until_the_contact_writes,
    |db| async move {
        let app = TestApp::spawn_with(&db, manual_sender()).await;
        let contact = new_contact();
        app.say(&contact, "hi").await;
        drain(&app).await;
        app.say(&contact, "1").await; // three rows, each waiting for the one before
        assert_eq!(app.sender.run_once().await.unwrap(), 1);
        let sid = app.outbox(&contact).await[1].twilio_sid.clone().unwrap();
        callback(&app, &sid, "undelivered", Some("63016")).await;
        let first = &app.outbox(&contact).await[1];
        assert_eq!(first.status, OutboxStatus::Undelivered);
        assert_eq!(first.error_code, Some(63016));
        assert_eq!(first.error_message.as_deref(), Some(WINDOW_REFUSAL));
        assert!(window_closed_at(&app, &contact).await.is_some());
        drain(&app).await;
        let rows = app.settled(&contact).await;
        assert!(
            rows[2..].iter().all(|r| r.error_code == Some(63016)),
            "{rows:#?}"
        );
        assert_eq!(
            sent_to(&app, &contact).len(),
            2,
            "the rest never went to Twilio"
        );
        app.say(&contact, "hi").await;
        drain(&app).await;
        assert_eq!(
            sent_to(&app, &contact).len(),
            3,
            "a new message reopens the window"
        );
        assert_eq!(window_closed_at(&app, &contact).await, None);
    }
);

both_stores!(
    a_late_63016_does_not_close_a_window_the_contact_reopened,
    |db| async move {
        let app = TestApp::spawn_with(&db, manual_sender()).await;
        let contact = new_contact();
        app.say(&contact, "hi").await;
        drain(&app).await;
        let sid = app.outbox(&contact).await[0].twilio_sid.clone().unwrap();
        app.clock.advance(Duration::from_secs(5));
        app.say(&contact, "4").await; // after the failed message was queued
        callback(&app, &sid, "failed", Some("63016")).await;
        assert_eq!(window_closed_at(&app, &contact).await, None);
        drain(&app).await;
        assert_eq!(sent_to(&app, &contact), [WELCOME, "Goodbye!"]);
    }
);

both_stores!(
    status_callback_21610_opts_the_contact_out,
    |db| async move {
        let app = TestApp::spawn_with(&db, manual_sender()).await;
        let contact = new_contact();
        app.say(&contact, "hi").await;
        app.say(&contact, "3").await; // "We open 9 to 5." and the menu again
        assert_eq!(app.sender.run_once().await.unwrap(), 1);
        let sid = app.outbox(&contact).await[0].twilio_sid.clone().unwrap();
        callback(&app, &sid, "failed", Some("21610")).await;
        assert!(is_opted_out(&app, BOT, &contact).await);
        drain(&app).await;
        let rows = app.settled(&contact).await;
        assert_eq!(rows[0].error_code, Some(21610));
        assert!(rows[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("opted out"));
        assert!(rows[1..].iter().all(opted_out), "{rows:#?}");
        assert_eq!(sent_to(&app, &contact).len(), 1);
    }
);

both_stores!(
    other_failure_codes_are_recorded_with_their_meaning,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let hostile = "9".repeat(5_000);
        let cases: [(&str, &str, Option<i64>, &str); 5] = [
            (
                "failed",
                "30008",
                Some(30008),
                "unknown error reported by the carrier",
            ),
            (
                "undelivered",
                "12345",
                Some(12345),
                "Twilio error 12345: not explained here",
            ),
            (
                "failed",
                " 30007 ",
                Some(30007),
                "the carrier filtered the message",
            ),
            ("failed", "-63016", None, ""),
            ("undelivered", hostile.as_str(), None, ""),
        ];
        for (status, code, recorded, meaning) in cases {
            let contact = new_contact();
            app.say(&contact, "hi").await;
            let sid = app.settled(&contact).await[0].twilio_sid.clone().unwrap();
            callback(&app, &sid, status, Some(code)).await;
            let row = &app.outbox(&contact).await[0];
            assert_eq!(row.status.as_str(), status);
            assert_eq!(row.error_code, recorded, "{code:.20}");
            if recorded.is_some() {
                let message = row.error_message.as_deref().unwrap();
                assert!(message.starts_with(meaning), "{message}");
            }
            // Nothing else changes: the contact is still answered.
            assert!(!is_opted_out(&app, BOT, &contact).await);
            app.say(&contact, "4").await;
            assert_eq!(app.replies(&contact, 2).await[1], "Goodbye!");
        }
        assert_metrics(
            &app,
            &[
                "switchboard_message_failures_total{bot=\"shop\",code=\"30008\"}",
                "switchboard_message_failures_total{bot=\"shop\",code=\"30007\"}",
                "switchboard_message_failures_total{bot=\"shop\",code=\"other\"}",
                "switchboard_message_failures_total{bot=\"shop\",code=\"none\"}",
            ],
        )
        .await;
        let text = app.metrics().await;
        assert!(
            text.contains("# HELP switchboard_message_failures_total "),
            "{text}"
        );
    }
);
