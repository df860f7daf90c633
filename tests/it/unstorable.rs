//! Input that can never be stored is not an outage (SPEC §7): it answers 400 and
//! stores nothing, and a store error that retrying cannot fix answers 500, never 503.

use crate::both_stores;
use crate::support::app::{new_contact, new_sid, TestApp, BOT, WELCOME};

both_stores!(
    unstorable_fields_are_400_and_store_nothing,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let contact = new_contact();
        let long_sid = format!("SM{}", "a".repeat(8 * 1024));
        let long_from = format!("whatsapp:+{}", "1".repeat(300));
        let nul_from = format!("{contact}\0");
        // Each: a name, the `From` to send, the parameters beside From/MessageSid.
        let cases = vec![
            ("NUL in Body", contact.clone(), vec![("Body", "hi\0there")]),
            (
                "NUL in ProfileName",
                contact.clone(),
                vec![("Body", "hi"), ("ProfileName", "Ami\0na")],
            ),
            ("NUL in From", nul_from, vec![("Body", "hi")]),
            (
                "NUL in a media URL",
                contact.clone(),
                vec![("NumMedia", "1"), ("MediaUrl0", "https://m/\0")],
            ),
            (
                "NUL in ButtonPayload",
                contact.clone(),
                vec![("ButtonText", "Yes"), ("ButtonPayload", "y\0")],
            ),
            ("From over 256 bytes", long_from, vec![("Body", "hi")]),
        ];
        for (name, from, extra) in &cases {
            let response = app.post_signed(BOT, from, &new_sid(), extra).await;
            assert_eq!(response.status(), 400, "{name}");
        }
        for (name, sid) in [
            ("8 KB MessageSid", long_sid.as_str()),
            ("short MessageSid", "SM1"),
            ("MessageSid not hex", "SMzz000000000000000000000000000000"),
            ("MessageSid with NUL", "SM0000000000000000000000000000000\0"),
        ] {
            let response = app.post_signed(BOT, &contact, sid, &[("Body", "hi")]).await;
            assert_eq!(response.status(), 400, "{name}");
            let text = response.text().await.unwrap();
            assert!(text.contains("MessageSid"), "{name}: {text}");
        }
        assert_eq!(app.store.inbound_count(BOT).await.unwrap(), 0);
        assert!(app.outbox(&contact).await.is_empty());

        // The same contact with a good message still works.
        app.say(&contact, "hi").await;
        assert_eq!(app.replies(&contact, 1).await, vec![WELCOME]);
        assert_eq!(app.store.inbound_count(BOT).await.unwrap(), 1);
    }
);

both_stores!(unstorable_status_callbacks_are_400, |db| async move {
    let app = TestApp::spawn(&db).await;
    let url = format!("{}/status", app.webhook_url(BOT));
    let long_sid = format!("SM{}", "a".repeat(8 * 1024));
    for sid in [
        long_sid.as_str(),
        "SM1",
        "SM0000000000000000000000000000000\0",
    ] {
        let response = app
            .post_form(&url, &[("MessageSid", sid), ("MessageStatus", "delivered")])
            .await;
        assert_eq!(response.status(), 400, "a {}-byte MessageSid", sid.len());
    }
    let response = app
        .post_form(
            &url,
            &[("MessageSid", &new_sid()), ("MessageStatus", "deli\0vered")],
        )
        .await;
    assert_eq!(response.status(), 400);
});

both_stores!(a_store_error_retrying_cannot_fix_is_500, |db| async move {
    let app = TestApp::spawn(&db).await;
    // The schema lost a table under the running server: every write fails the same
    // way however often Twilio retries.
    rename_inbound_table(&app.database_url).await;
    let contact = new_contact();
    let response = app.message(&contact, &new_sid(), "hi").await;
    assert_eq!(response.status(), 500);
    let body = response.text().await.unwrap();
    assert!(!body.contains("inbound_messages"), "{body}");
});

async fn rename_inbound_table(database_url: &str) {
    use sqlx::Connection;
    let sql = "ALTER TABLE inbound_messages RENAME TO inbound_messages_gone";
    if database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}
