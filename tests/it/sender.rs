//! The sender against a fake Twilio: retries, Retry-After, permanent failures,
//! status callbacks, and lease expiry after a crash.

use std::time::Duration;

use switchboard::domain::OutboxStatus;
use tokio_util::sync::CancellationToken;

use crate::both_stores;
use crate::support::app::{new_contact, Options, TestApp, AUTH_TOKEN, BOT, WELCOME};
use crate::support::fake_twilio::FakeReply;
use crate::support::webhook::signed_form;

both_stores!(
    twilio_500_then_201_is_sent_once_after_retry,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        app.twilio.push(FakeReply::status(500));
        let contact = new_contact();
        app.say(&contact, "hi").await;
        let rows = app.settled(&contact).await;
        assert_eq!(rows[0].status, OutboxStatus::Sent);
        assert_eq!(rows[0].attempts, 2);
        let received = app.twilio.received();
        assert_eq!(received.len(), 2);
        assert_eq!(received[0].answered_status, 500);
        assert_eq!(received[1].answered_status, 201);
        assert_eq!(app.replies(&contact, 1).await, vec![WELCOME]);
        assert!(rows[0].twilio_sid.as_deref().unwrap().starts_with("SM"));
    }
);

both_stores!(retry_after_of_a_429_is_honoured, |db| async move {
    let app = TestApp::spawn(&db).await;
    app.twilio.push(FakeReply::too_many(Duration::from_secs(1)));
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.settled(&contact).await;
    let received = app.twilio.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].answered_status, 429);
    // The retry base in tests is 50 ms: only Retry-After explains a 1 s gap.
    let gap = received[1].at.duration_since(received[0].at);
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
});

both_stores!(a_retry_is_not_sent_before_its_time, |db| async move {
    let mut options = Options {
        run_sender: false,
        ..Options::default()
    };
    // The first retry waits 30 to 60 s (by the test clock, which the test moves).
    options.sender.retry_base = Duration::from_secs(60);
    options.sender.retry_max = Duration::from_secs(60);
    let app = TestApp::spawn_with(&db, options).await;
    app.twilio.push(FakeReply::status(500));
    let contact = new_contact();
    app.say(&contact, "hi").await;
    assert_eq!(app.sender.run_once().await.unwrap(), 1);
    assert_eq!(app.outbox(&contact).await[0].status, OutboxStatus::Queued);

    assert_eq!(app.sender.run_once().await.unwrap(), 0, "retried at once");
    app.clock.advance(Duration::from_secs(29));
    assert_eq!(
        app.sender.run_once().await.unwrap(),
        0,
        "retried before 30 s"
    );
    assert_eq!(app.twilio.received().len(), 1);

    app.clock.advance(Duration::from_secs(32));
    assert_eq!(
        app.sender.run_once().await.unwrap(),
        1,
        "not retried after 61 s"
    );
    let rows = app.outbox(&contact).await;
    assert_eq!(rows[0].status, OutboxStatus::Sent);
    assert_eq!(rows[0].attempts, 2);
    assert_eq!(app.twilio.received().len(), 2);
});

both_stores!(permanent_400_fails_at_once_with_the_code, |db| async move {
    let app = TestApp::spawn(&db).await;
    app.twilio
        .push(FakeReply::error(400, 21211, "Invalid 'To' Phone Number"));
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.say(&contact, "3").await;
    let rows = app.settled(&contact).await;
    assert_eq!(rows[0].status, OutboxStatus::Failed);
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(rows[0].error_code, Some(21211));
    assert!(rows[0]
        .error_message
        .as_deref()
        .unwrap()
        .contains("Invalid 'To' Phone Number"));
    // Failing for good unblocks the conversation's next replies.
    assert!(rows[1..].iter().all(|r| r.status == OutboxStatus::Sent));
});

both_stores!(gives_up_after_max_attempts, |db| async move {
    let mut options = Options::default();
    options.sender.max_attempts = 3;
    options.sender.retry_base = Duration::from_millis(10);
    let app = TestApp::spawn_with(&db, options).await;
    for _ in 0..5 {
        app.twilio.push(FakeReply::status(503));
    }
    let contact = new_contact();
    app.say(&contact, "hi").await;
    let rows = app.settled(&contact).await;
    assert_eq!(rows[0].status, OutboxStatus::Failed);
    assert_eq!(rows[0].attempts, 3);
    assert_eq!(app.twilio.received().len(), 3);
});

both_stores!(status_callbacks_only_move_forward, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    let rows = app.settled(&contact).await;
    let sid = rows[0].twilio_sid.clone().unwrap();
    let url = format!("{}/status", app.webhook_url(BOT));
    let callback = |status: &'static str| {
        let (body, signature) = signed_form(
            AUTH_TOKEN,
            &url,
            &[
                ("MessageSid", sid.as_str()),
                ("MessageStatus", status),
                ("AccountSid", "AC1"),
            ],
        );
        let (app, url) = (&app, &url);
        async move { app.post_body(url, Some(&signature), body).await }
    };
    assert_eq!(callback("delivered").await.status(), 200);
    assert_eq!(
        app.outbox(&contact).await[0].status,
        OutboxStatus::Delivered
    );
    assert_eq!(callback("read").await.status(), 200);
    assert_eq!(callback("sent").await.status(), 200);
    assert_eq!(callback("delivered").await.status(), 200);
    assert_eq!(app.outbox(&contact).await[0].status, OutboxStatus::Read);
    // Unsigned callbacks are refused.
    let response = app
        .http
        .post(&url)
        .form(&[("MessageSid", sid.as_str()), ("MessageStatus", "failed")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(app.outbox(&contact).await[0].status, OutboxStatus::Read);
});

both_stores!(failed_callback_records_the_error_code, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    let rows = app.settled(&contact).await;
    let sid = rows[0].twilio_sid.clone().unwrap();
    let url = format!("{}/status", app.webhook_url(BOT));
    let params = [
        ("MessageSid", sid.as_str()),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    let response = app.post_form(&url, &params).await;
    assert_eq!(response.status(), 200);
    let row = &app.outbox(&contact).await[0];
    assert_eq!(row.status, OutboxStatus::Undelivered);
    assert_eq!(row.error_code, Some(30003));
});

both_stores!(
    a_crashed_senders_rows_are_sent_after_the_lease_not_before,
    |db| async move {
        let mut options = Options {
            run_sender: false,
            ..Options::default()
        };
        options.sender.lease = Duration::from_secs(60);
        let app = TestApp::spawn_with(&db, options).await;
        app.twilio
            .push(crate::support::fake_twilio::FakeReply::hang());
        let contact = new_contact();
        app.say(&contact, "hi").await;

        // The first sender claims the row and hangs inside Twilio's call; then it dies.
        let first = tokio::spawn(app.sender.clone().run(CancellationToken::new()));
        app.twilio.wait_for(1, Duration::from_secs(10)).await;
        first.abort();
        let _ = first.await;
        assert_eq!(app.outbox(&contact).await[0].status, OutboxStatus::Sending);

        // While the dead sender's lease lasts, nobody takes the row over (a
        // minute: the test's own run time cannot end it).
        assert_eq!(app.sender.run_once().await.unwrap(), 0, "lease still held");
        assert_eq!(app.twilio.received().len(), 1);

        // Once it has expired, the next sender does; and nothing of the dead
        // sender renews it any more (its renewal would follow the clock too).
        app.clock.advance(Duration::from_secs(61));
        assert_eq!(app.sender.run_once().await.unwrap(), 1);
        let rows = app.outbox(&contact).await;
        assert_eq!(rows[0].status, OutboxStatus::Sent);
        assert_eq!(rows[0].attempts, 2);
        let received = app.twilio.received();
        assert_eq!(received.len(), 2);
        assert_eq!(received[1].body, WELCOME);
    }
);

both_stores!(
    a_send_slower_than_the_lease_keeps_its_claim_and_goes_out_once,
    |db| async move {
        let mut options = Options {
            run_sender: false,
            ..Options::default()
        };
        options.sender.lease = Duration::from_secs(1);
        let app = TestApp::spawn_with(&db, options).await;
        // Twilio takes well over two leases to answer.
        app.twilio.set_latency(Duration::from_millis(2_500));
        let stop = CancellationToken::new();
        let first = tokio::spawn(app.sender.clone().run(stop.clone()));
        let contact = new_contact();
        app.say(&contact, "hi").await;
        app.twilio.wait_for(1, Duration::from_secs(10)).await;
        // A second sender (another instance) polls all along, looking for
        // expired leases.
        let second = tokio::spawn(app.sender.clone().run(stop.clone()));
        let rows = app.settled(&contact).await;
        stop.cancel();
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(rows[0].status, OutboxStatus::Sent);
        assert_eq!(rows[0].attempts, 1, "claimed once");
        assert_eq!(app.twilio.received().len(), 1, "sent once");
    }
);
