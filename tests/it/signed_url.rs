//! The signed URL (SPEC §7): outside `--dry-run` it is `--public-url` + path; under
//! `--dry-run` it may be rebuilt from `X-Forwarded-Proto`/`X-Forwarded-Host`/`Host`,
//! and then only a `host[:port]` and an `http`/`https` proto are accepted.

use std::time::Duration;

use switchboard::domain::OutboxStatus;

use crate::both_stores;
use crate::support::app::{new_contact, new_sid, Options, TestApp, AUTH_TOKEN, BOT};
use crate::support::webhook::signed_form;

/// Another endpoint of the same Twilio account: a request Twilio signed for it
/// carries a signature valid under our bot's auth token too.
const OTHER_ENDPOINT: &str = "vendor.example.net/twilio/incoming";

/// Rebuilding the URL from headers is only allowed under `--dry-run`; bots with an
/// auth token still check signatures there.
fn dry_run_without_public_url() -> Options {
    Options {
        dry_run: true,
        public_url: false,
        ..Options::default()
    }
}

/// The three ways a client names the URL it called, each set to a value that used to
/// rebuild `{signed_for}#...`: the rebuilt URL was cut at `#` and matched.
fn replays() -> [(&'static str, String, String); 3] {
    [
        (
            "x-forwarded-host",
            format!("{OTHER_ENDPOINT}#"),
            format!("http://{OTHER_ENDPOINT}"),
        ),
        (
            "host",
            format!("{OTHER_ENDPOINT}#"),
            format!("http://{OTHER_ENDPOINT}"),
        ),
        (
            "x-forwarded-proto",
            format!("https://{OTHER_ENDPOINT}#"),
            format!("https://{OTHER_ENDPOINT}"),
        ),
    ]
}

/// POSTs `params` to `url`, signed for `signed_for`, with one extra header.
async fn post_with_header(
    app: &TestApp,
    url: &str,
    signed_for: &str,
    header: (&str, &str),
    params: &[(&str, &str)],
) -> reqwest::StatusCode {
    let (body, signature) = signed_form(AUTH_TOKEN, signed_for, params);
    app.post_body_with(url, Some(&signature), &[header], body)
        .await
        .status()
}

both_stores!(
    a_request_signed_for_another_endpoint_is_refused,
    |db| async move {
        let app = TestApp::spawn_with(&db, dry_run_without_public_url()).await;
        let contact = new_contact();
        for (header, value, signed_for) in replays() {
            let sid = new_sid();
            let params = [
                ("MessageSid", sid.as_str()),
                ("From", contact.as_str()),
                ("Body", "hi"),
            ];
            let status = post_with_header(
                &app,
                &app.webhook_url(BOT),
                &signed_for,
                (header, &value),
                &params,
            )
            .await;
            assert_eq!(status, 403, "{header}: {value}");
        }
        assert_eq!(app.store.inbound_count(BOT).await.unwrap(), 0);
        assert!(app.outbox(&contact).await.is_empty());
        assert_eq!(app.store.conversation(BOT, &contact).await.unwrap(), None);
    }
);

both_stores!(
    a_status_callback_signed_for_another_endpoint_moves_nothing,
    |db| async move {
        let app = TestApp::spawn_with(&db, dry_run_without_public_url()).await;
        let contact = new_contact();
        // A reply sent (recorded under --dry-run), with the SID the callback names.
        let sid = new_sid();
        let url = app.webhook_url(BOT);
        let signed = [
            ("MessageSid", sid.as_str()),
            ("From", contact.as_str()),
            ("Body", "hi"),
        ];
        let (body, signature) = signed_form(AUTH_TOKEN, &url, &signed);
        let response = app.post_body(&url, Some(&signature), body).await;
        assert_eq!(response.status(), 200);
        let row = sent_row(&app, &contact).await;
        let twilio_sid = row.twilio_sid.clone().expect("a sent row has a SID");

        for (header, value, signed_for) in replays() {
            let params = [
                ("MessageSid", twilio_sid.as_str()),
                ("MessageStatus", "delivered"),
            ];
            let status = post_with_header(
                &app,
                &format!("{url}/status"),
                &signed_for,
                (header, &value),
                &params,
            )
            .await;
            assert_eq!(status, 403, "{header}: {value}");
        }
        let after = app.outbox(&contact).await;
        assert_eq!(after[0].status, OutboxStatus::Sent);
        assert_eq!(after[0].updated_at_ms, row.updated_at_ms);
    }
);

both_stores!(rebuilt_host_and_proto_must_be_plain, |db| async move {
    let app = TestApp::spawn_with(&db, dry_run_without_public_url()).await;
    let contact = new_contact();
    let path = "/webhooks/twilio/shop";
    // Accepted: a host with a port, an IPv6 literal, an upper-case proto.
    let accepted: [(&[(&str, &str)], &str); 3] = [
        (
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "bots.example.com:8443"),
            ],
            "https://bots.example.com:8443",
        ),
        (&[("x-forwarded-host", "[::1]:9000")], "http://[::1]:9000"),
        (
            &[
                ("x-forwarded-proto", "HTTPS"),
                ("x-forwarded-host", "bots.example.com"),
            ],
            "https://bots.example.com",
        ),
    ];
    for (headers, base) in accepted {
        let status = post_signed_for(&app, &contact, &format!("{base}{path}"), headers).await;
        assert_eq!(status, 200, "{headers:?}");
    }
    // Refused, each signed for the URL the headers used to rebuild (the leftmost
    // value of a list, the first of repeated lines, any characters).
    let refused: [(&[(&str, &str)], &str); 8] = [
        (&[("x-forwarded-proto", "ftp")], "ftp://127.0.0.1"),
        (&[("x-forwarded-proto", "https, http")], "https://127.0.0.1"),
        (
            &[("x-forwarded-host", "bots.example.com, evil.example")],
            "http://bots.example.com",
        ),
        (
            &[
                ("x-forwarded-host", "bots.example.com"),
                ("x-forwarded-host", "evil.example"),
            ],
            "http://bots.example.com",
        ),
        (
            &[("x-forwarded-host", "user@bots.example.com")],
            "http://user@bots.example.com",
        ),
        (
            &[("x-forwarded-host", "bots.example.com?x=")],
            "http://bots.example.com?x=",
        ),
        (
            &[("x-forwarded-host", "bots.example.com:99999")],
            "http://bots.example.com:99999",
        ),
        (
            &[("x-forwarded-host", "bots example.com")],
            "http://bots example.com",
        ),
    ];
    for (headers, base) in refused {
        // The proto cases keep the real Host, whose port the URL then carries.
        let base = base.replace("127.0.0.1", &app.base["http://".len()..]);
        let status = post_signed_for(&app, &contact, &format!("{base}{path}"), headers).await;
        assert_eq!(status, 403, "{headers:?}");
    }
    assert_eq!(app.store.inbound_count(BOT).await.unwrap(), 3);
});

/// POSTs a new message from `contact` to the shop bot, signed for `signed_for`, with
/// `headers` added.
async fn post_signed_for(
    app: &TestApp,
    contact: &str,
    signed_for: &str,
    headers: &[(&str, &str)],
) -> reqwest::StatusCode {
    let sid = new_sid();
    let params = [
        ("MessageSid", sid.as_str()),
        ("From", contact),
        ("Body", "hi"),
    ];
    let (body, signature) = signed_form(AUTH_TOKEN, signed_for, &params);
    app.post_body_with(&app.webhook_url(BOT), Some(&signature), headers, body)
        .await
        .status()
}

both_stores!(
    without_a_public_url_outside_dry_run_nothing_is_accepted,
    |db| async move {
        // The CLI refuses to start so; an embedder that builds such an engine gets
        // 403s, never a URL rebuilt from headers.
        let app = TestApp::spawn_with(
            &db,
            Options {
                public_url: false,
                ..Options::default()
            },
        )
        .await;
        let contact = new_contact();
        let response = app.message(&contact, &new_sid(), "hi").await;
        assert_eq!(response.status(), 403);
        assert_eq!(app.store.inbound_count(BOT).await.unwrap(), 0);
    }
);

/// Waits until `contact`'s first reply is recorded as sent (dry run).
async fn sent_row(app: &TestApp, contact: &str) -> switchboard::store::OutboxRow {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = app.outbox(contact).await;
        if let Some(row) = rows.first().filter(|r| r.status == OutboxStatus::Sent) {
            return row.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "not sent: {rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
