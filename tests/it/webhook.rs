//! The inbound webhook's contract (SPEC §2): signatures, status codes, dedupe,
//! per-contact order, and the 200 meaning "committed".

use std::time::Duration;

use crate::both_stores;
use crate::support::app::{new_contact, new_sid, Options, TestApp, AUTH_TOKEN, BOT, WELCOME};
use crate::support::webhook::signed_form;

both_stores!(duplicate_message_sid_is_processed_once, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    let sid = new_sid();
    for _ in 0..3 {
        let response = app.message(&contact, &sid, "hi").await;
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("<Response/>"));
    }
    assert_eq!(app.store.inbound_count(BOT).await.unwrap(), 1);
    assert_eq!(app.outbox(&contact).await.len(), 1);
    app.settled(&contact).await;
    assert_eq!(app.replies(&contact, 1).await, vec![WELCOME]);
});

both_stores!(
    bad_or_missing_signature_is_403_and_stores_nothing,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let contact = new_contact();
        let url = app.webhook_url(BOT);
        let params = [
            ("MessageSid", "SM1"),
            ("From", contact.as_str()),
            ("Body", "hi"),
        ];
        let (body, good) = signed_form(AUTH_TOKEN, &url, &params);
        let (_, wrong_token) = signed_form("not-the-token", &url, &params);
        let (_, wrong_url) = signed_form(AUTH_TOKEN, &format!("{url}?x=1"), &params);
        for signature in [
            None,
            Some(wrong_token),
            Some(wrong_url),
            Some("garbage".into()),
        ] {
            let response = app
                .post_body(&url, signature.as_deref(), body.clone())
                .await;
            assert_eq!(response.status(), 403);
        }
        // A tampered body with the original signature fails too.
        let tampered = body.replace("hi", "ho");
        let response = app.post_body(&url, Some(&good), tampered).await;
        assert_eq!(response.status(), 403);
        assert_eq!(app.store.inbound_count(BOT).await.unwrap(), 0);
        assert!(app.outbox(&contact).await.is_empty());
    }
);

both_stores!(unknown_bot_is_404, |db| async move {
    let app = TestApp::spawn(&db).await;
    let response = app
        .post_signed("nobody", &new_contact(), &new_sid(), &[])
        .await;
    assert_eq!(response.status(), 404);
});

both_stores!(oversized_body_is_413, |db| async move {
    let app = TestApp::spawn(&db).await;
    let big = "x".repeat(70 * 1024);
    let response = app
        .post_signed(BOT, &new_contact(), &new_sid(), &[("Body", &big)])
        .await;
    assert_eq!(response.status(), 413);
    assert_eq!(app.store.inbound_count(BOT).await.unwrap(), 0);
});

both_stores!(
    status_callbacks_are_checked_in_the_webhooks_order,
    |db| async move {
        // Body size (413), bot (404), signature (403), fields (400): the order
        // docs/decisions.md gives for both webhooks.
        let app = TestApp::spawn(&db).await;
        let url = format!("{}/status", app.webhook_url(BOT));
        let nobody = format!("{}/status", app.webhook_url("nobody"));
        let big = "x".repeat(70 * 1024);
        let response = app
            .post_body(&nobody, None, format!("MessageSid=SM1&Body={big}"))
            .await;
        assert_eq!(response.status(), 413);
        let response = app
            .post_body(&nobody, Some("garbage"), "MessageSid=SM1")
            .await;
        assert_eq!(response.status(), 404);
        assert_eq!(
            response.text().await.unwrap(),
            "no bot named `nobody` is loaded\n"
        );
        let response = app
            .post_body(&url, Some("garbage"), "MessageStatus=delivered")
            .await;
        assert_eq!(response.status(), 403);
        let response = app.post_form(&url, &[("MessageStatus", "delivered")]).await;
        assert_eq!(response.status(), 400);
    }
);

both_stores!(missing_from_or_message_sid_is_400, |db| async move {
    let app = TestApp::spawn(&db).await;
    let url = app.webhook_url(BOT);
    for params in [
        vec![("From", "whatsapp:+15550001"), ("Body", "hi")],
        vec![("MessageSid", "SM2"), ("Body", "hi")],
    ] {
        let response = app.post_form(&url, &params).await;
        assert_eq!(response.status(), 400);
    }
    assert_eq!(app.store.inbound_count(BOT).await.unwrap(), 0);
});

both_stores!(signed_url_rebuilt_from_forwarded_headers, |db| async move {
    // Only under --dry-run; the shop bot has a token, so signatures are still checked.
    let app = TestApp::spawn_with(
        &db,
        Options {
            public_url: false,
            dry_run: true,
            ..Options::default()
        },
    )
    .await;
    let contact = new_contact();
    let public = "https://bots.example.com/webhooks/twilio/shop";
    let sid = new_sid();
    let params = [
        ("MessageSid", sid.as_str()),
        ("From", contact.as_str()),
        ("Body", "hi"),
    ];
    let (body, signature) = signed_form(AUTH_TOKEN, public, &params);
    let forwarded = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "bots.example.com"),
    ];
    let response = app
        .post_body_with(&app.webhook_url(BOT), Some(&signature), &forwarded, body)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.store.inbound_count(BOT).await.unwrap(), 1);
    assert_eq!(app.outbox(&contact).await.len(), 1);
});

both_stores!(ten_quick_messages_keep_their_order, |db| async move {
    let app = TestApp::spawn(&db).await;
    app.twilio.set_latency(Duration::from_millis(15));
    let contact = new_contact();
    app.say(&contact, "hi").await;
    let names = ["Ann A", "Ann B", "Ann C", "Ann D", "Ann E"];
    for name in names {
        app.say(&contact, "2").await;
        app.say(&contact, name).await;
    }
    let replies = app.replies(&contact, 16).await;
    let mut expected = vec![WELCOME.to_owned()];
    for name in names {
        expected.push("What's your name?".into());
        expected.push(format!("Nice to meet you, {name}! (WhatsApp says Amina)"));
        expected.push(WELCOME.into());
    }
    assert_eq!(replies, expected);
});

both_stores!(
    concurrent_messages_of_one_contact_are_serialized,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let contact = new_contact();
        app.say(&contact, "hi").await;
        app.replies(&contact, 1).await;
        // Fired at once: whatever order they arrive in, each one's replies are committed
        // together and sent in order, so "hours" and the menu must alternate.
        let posts = (0..10).map(|_| app.say(&contact, "3"));
        futures::future::join_all(posts).await;
        let replies = app.replies(&contact, 21).await;
        for pair in replies[1..].chunks(2) {
            assert_eq!(pair, ["We open 9 to 5.", WELCOME]);
        }
    }
);

both_stores!(replies_survive_a_restart, |db| async move {
    let app = TestApp::spawn_with(
        &db,
        Options {
            run_sender: false,
            ..Options::default()
        },
    )
    .await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.say(&contact, "1").await;
    assert_eq!(app.outbox(&contact).await.len(), 4);
    assert!(app.twilio.received().is_empty());
    let app = app.restart(Options::default()).await;
    let replies = app.replies(&contact, 4).await;
    assert_eq!(replies, [WELCOME, "We sell hats.", "And scarves.", WELCOME]);
});

both_stores!(
    dry_run_accepts_unsigned_for_bots_without_token,
    |db| async move {
        // A bot without credentials loads only under --dry-run, and then takes unsigned
        // webhooks and records replies as sent without calling Twilio.
        let app = TestApp::spawn_with(
            &db,
            Options {
                dry_run: true,
                ..Options::default()
            },
        )
        .await;
        let dir = app.flows.join("demo");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bot.yaml"), "name: Demo\n").unwrap();
        std::fs::write(dir.join("nodes.yaml"), "main:\n  say: Hello from demo\n").unwrap();
        let app = app
            .restart(Options {
                dry_run: true,
                ..Options::default()
            })
            .await;
        let contact = new_contact();
        let response = app
            .http
            .post(app.webhook_url("demo"))
            .form(&[
                ("MessageSid", new_sid().as_str()),
                ("From", contact.as_str()),
                ("Body", "hi"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let rows = loop {
            let rows = app.store.outbox_for("demo", &contact).await.unwrap();
            assert!(tokio::time::Instant::now() < deadline, "not sent: {rows:?}");
            if rows
                .iter()
                .all(|r| r.status == switchboard::domain::OutboxStatus::Sent)
                && !rows.is_empty()
            {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(rows[0].body, "Hello from demo");
        assert!(app.twilio.received().is_empty());
    }
);
