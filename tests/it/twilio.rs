//! `TwilioClient` against `FakeTwilio` over real loopback HTTP: what is sent, and how
//! each kind of answer is classified.

use std::time::Duration;

use switchboard::domain::{MessageSender, Secret};
use switchboard::twilio::signature;
use switchboard::twilio::webhook::parse_form;
use switchboard::twilio::{OutgoingMessage, SendOutcome, TwilioClient};

use crate::support::fake_twilio::{
    FakeConfig, FakeReply, FakeTwilio, DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN,
};
use crate::support::webhook::signed_form;

const WAIT: Duration = Duration::from_secs(10);
const FROM: &str = "whatsapp:+14155238886";
const TO: &str = "whatsapp:+14155550100";
const CALLBACK: &str = "https://bot.example/webhooks/twilio/kibo/status";

/// The owned parts of an [`OutgoingMessage`], pointed at a fake.
struct Message {
    api_base: String,
    account_sid: String,
    token: Secret,
    sender: MessageSender,
    body: String,
    media: Vec<String>,
    status_callback: Option<String>,
}

impl Message {
    fn for_fake(twilio: &FakeTwilio) -> Message {
        Message {
            api_base: twilio.url(),
            account_sid: twilio.account_sid().to_owned(),
            token: Secret::new(twilio.auth_token()),
            sender: MessageSender::From(FROM.to_owned()),
            body: "Welcome to Kibo Auto!".to_owned(),
            media: Vec::new(),
            status_callback: None,
        }
    }

    fn outgoing(&self) -> OutgoingMessage<'_> {
        OutgoingMessage {
            api_base: &self.api_base,
            account_sid: &self.account_sid,
            auth_token: &self.token,
            sender: &self.sender,
            to: TO,
            body: &self.body,
            media: &self.media,
            status_callback: self.status_callback.as_deref(),
            content: None,
        }
    }
}

fn client() -> TwilioClient {
    TwilioClient::new(Duration::from_secs(10))
}

async fn send_one(twilio: &FakeTwilio) -> SendOutcome {
    client().send(&Message::for_fake(twilio).outgoing()).await
}

#[tokio::test]
async fn created_message_is_accepted_with_every_field_received() {
    let twilio = FakeTwilio::start().await;
    let mut msg = Message::for_fake(&twilio);
    msg.media = vec![
        "https://cdn.example/car.jpg".to_owned(),
        "https://cdn.example/brochure.pdf?v=2&lang=en".to_owned(),
    ];
    msg.status_callback = Some(CALLBACK.to_owned());

    let outcome = client().send(&msg.outgoing()).await;

    let received = twilio.wait_for_accepted(1, WAIT).await;
    let r = &received[0];
    let sid = r.sid.clone().expect("the fake issued a sid");
    assert_eq!(
        outcome,
        SendOutcome::Accepted {
            sid: sid.clone(),
            status: "queued".to_owned()
        }
    );
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(r.account_sid, DEFAULT_ACCOUNT_SID);
    assert!(r.basic_auth_ok);
    assert_eq!(r.answered_status, 201);
    assert_eq!(r.to, TO);
    assert_eq!(r.from.as_deref(), Some(FROM));
    assert_eq!(r.messaging_service_sid, None);
    assert_eq!(r.body, "Welcome to Kibo Auto!");
    assert_eq!(r.media, msg.media);
    assert_eq!(r.status_callback.as_deref(), Some(CALLBACK));
    assert_eq!(twilio.received().len(), 1);
}

#[tokio::test]
async fn messaging_service_replaces_from() {
    let twilio = FakeTwilio::start().await;
    let mut msg = Message::for_fake(&twilio);
    msg.sender = MessageSender::MessagingService("MG11111111111111111111111111111111".into());

    let outcome = client().send(&msg.outgoing()).await;

    let r = &twilio.wait_for_accepted(1, WAIT).await[0];
    assert_eq!(r.from, None);
    assert_eq!(
        r.messaging_service_sid.as_deref(),
        Some("MG11111111111111111111111111111111")
    );
    assert_eq!(r.status_callback, None);
    assert!(!r.params.iter().any(|(k, _)| k == "StatusCallback"));
    // Twilio's initial status with a Messaging Service is `accepted`.
    assert_eq!(
        outcome,
        SendOutcome::Accepted {
            sid: r.sid.clone().unwrap(),
            status: "accepted".to_owned()
        }
    );
}

#[tokio::test]
async fn invalid_number_is_permanent() {
    let twilio = FakeTwilio::start().await;
    twilio.push(FakeReply::error(400, 21211, "Invalid 'To' Phone Number"));
    assert_eq!(
        send_one(&twilio).await,
        SendOutcome::Permanent {
            http_status: 400,
            code: Some(21211),
            message: "Invalid 'To' Phone Number".to_owned(),
        }
    );
}

#[tokio::test]
async fn too_many_requests_is_retried_after_retry_after() {
    let twilio = FakeTwilio::start().await;
    twilio.push(FakeReply::too_many(Duration::from_secs(2)));
    assert_eq!(
        send_one(&twilio).await,
        SendOutcome::Retryable {
            retry_after: Some(Duration::from_secs(2)),
            http_status: Some(429),
            code: Some(20429),
            message: "Too Many Requests".to_owned(),
        }
    );
}

#[tokio::test]
async fn retry_after_as_http_date() {
    let twilio = FakeTwilio::start().await;
    let later = (chrono::Utc::now() + chrono::Duration::seconds(3600))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    twilio.push(FakeReply::status(503).with_header("Retry-After", &later));
    match send_one(&twilio).await {
        SendOutcome::Retryable {
            retry_after: Some(wait),
            http_status: Some(503),
            code: Some(20503),
            ..
        } => assert!(wait > Duration::from_secs(3000), "{wait:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_error_is_retried() {
    let twilio = FakeTwilio::start().await;
    twilio.push(FakeReply::status(500));
    assert_eq!(
        send_one(&twilio).await,
        SendOutcome::Retryable {
            retry_after: None,
            http_status: Some(500),
            code: Some(20500),
            message: "Internal Server Error".to_owned(),
        }
    );
}

#[tokio::test]
async fn whatsapp_rate_limit_code_is_retried() {
    let twilio = FakeTwilio::start().await;
    twilio.push(FakeReply::error(
        400,
        63018,
        "Rate limit exceeded for Channel",
    ));
    assert!(matches!(
        send_one(&twilio).await,
        SendOutcome::Retryable {
            http_status: Some(400),
            code: Some(63018),
            ..
        }
    ));
}

#[tokio::test]
async fn proxy_answers_are_retried() {
    let twilio = FakeTwilio::start().await;
    twilio.push(FakeReply::raw(
        502,
        "text/html",
        "<html><h1>502 Bad Gateway</h1></html>",
    ));
    twilio.push(FakeReply::raw(
        200,
        "text/html",
        "<html>Sign in to the wifi</html>",
    ));

    match send_one(&twilio).await {
        SendOutcome::Retryable {
            http_status: Some(502),
            code: None,
            message,
            ..
        } => assert!(
            message.starts_with("HTTP 502 Bad Gateway: <html>"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    match send_one(&twilio).await {
        SendOutcome::Retryable {
            http_status: Some(200),
            message,
            ..
        } => assert!(message.contains("without a message sid"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_token_is_permanent_and_does_not_consume_scripted_answers() {
    let twilio = FakeTwilio::start().await;
    twilio.push(FakeReply::status(500));
    let mut msg = Message::for_fake(&twilio);
    msg.token = Secret::new("not-the-token");

    assert_eq!(
        client().send(&msg.outgoing()).await,
        SendOutcome::Permanent {
            http_status: 401,
            code: Some(20003),
            message: "Authenticate".to_owned(),
        }
    );
    assert!(matches!(
        send_one(&twilio).await,
        SendOutcome::Retryable {
            http_status: Some(500),
            ..
        }
    ));

    let received = twilio.received();
    assert_eq!(received.len(), 2);
    assert!(!received[0].basic_auth_ok);
    assert_eq!(received[0].answered_status, 401);
    assert!(received[1].basic_auth_ok);
}

#[tokio::test]
async fn custom_credentials() {
    let twilio = FakeTwilio::start_with(FakeConfig {
        account_sid: "AC22222222222222222222222222222222".to_owned(),
        auth_token: "other-token".to_owned(),
    })
    .await;
    assert!(matches!(
        send_one(&twilio).await,
        SendOutcome::Accepted { .. }
    ));

    // The default credentials are not valid for this fake.
    let mut msg = Message::for_fake(&twilio);
    msg.account_sid = DEFAULT_ACCOUNT_SID.to_owned();
    msg.token = Secret::new(DEFAULT_AUTH_TOKEN);
    assert!(matches!(
        client().send(&msg.outgoing()).await,
        SendOutcome::Permanent {
            http_status: 401,
            code: Some(20003),
            ..
        }
    ));
    assert_eq!(
        twilio.received()[1].account_sid,
        DEFAULT_ACCOUNT_SID,
        "the path carries the account SID"
    );
}

#[tokio::test]
async fn message_without_content_is_refused_like_twilio() {
    let twilio = FakeTwilio::start().await;
    let mut msg = Message::for_fake(&twilio);
    msg.body = String::new();
    assert_eq!(
        client().send(&msg.outgoing()).await,
        SendOutcome::Permanent {
            http_status: 400,
            code: Some(21602),
            message: "Message body is required.".to_owned(),
        }
    );

    // Media alone is content.
    msg.media = vec!["https://cdn.example/car.jpg".to_owned()];
    assert!(matches!(
        client().send(&msg.outgoing()).await,
        SendOutcome::Accepted { .. }
    ));
    let received = twilio.received();
    assert!(!received[1].params.iter().any(|(k, _)| k == "Body"));
}

#[tokio::test]
async fn scripted_answers_are_used_in_order_then_accept_again() {
    let twilio = FakeTwilio::start().await;
    twilio.push(FakeReply::status(503));
    twilio.push(FakeReply::error(
        400,
        21610,
        "Attempt to send to unsubscribed recipient",
    ));
    twilio.push(FakeReply::accept());

    let outcomes = [
        send_one(&twilio).await,
        send_one(&twilio).await,
        send_one(&twilio).await,
        send_one(&twilio).await,
    ];
    assert!(matches!(
        outcomes[0],
        SendOutcome::Retryable {
            http_status: Some(503),
            ..
        }
    ));
    assert!(matches!(
        outcomes[1],
        SendOutcome::Permanent {
            code: Some(21610),
            ..
        }
    ));
    assert!(matches!(outcomes[2], SendOutcome::Accepted { .. }));
    assert!(matches!(outcomes[3], SendOutcome::Accepted { .. }));

    let accepted = twilio.wait_for_accepted(2, WAIT).await;
    assert_eq!(accepted.len(), 2);
    let statuses: Vec<u16> = twilio
        .received()
        .iter()
        .map(|r| r.answered_status)
        .collect();
    assert_eq!(statuses, [503, 400, 201, 201]);
    assert_ne!(accepted[0].sid, accepted[1].sid);
    assert!(accepted[0].at <= accepted[1].at);
}

#[tokio::test]
async fn hang_with_short_timeout_is_retried() {
    let twilio = FakeTwilio::start().await;
    twilio.push(FakeReply::hang());
    let client = TwilioClient::new(Duration::from_millis(300));

    match client.send(&Message::for_fake(&twilio).outgoing()).await {
        SendOutcome::Retryable {
            http_status: None,
            code: None,
            message,
            ..
        } => {
            assert!(message.contains("timed out"), "{message}");
            assert!(!message.contains(DEFAULT_AUTH_TOKEN), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let received = twilio.wait_for(1, WAIT).await;
    assert_eq!(received[0].answered_status, 0, "a hang is never answered");
    assert!(received[0].sid.is_none());
}

#[tokio::test]
async fn latency_longer_than_the_timeout_is_retried() {
    let twilio = FakeTwilio::start().await;
    twilio.set_latency(Duration::from_secs(30));
    let client = TwilioClient::new(Duration::from_millis(300));
    assert!(matches!(
        client.send(&Message::for_fake(&twilio).outgoing()).await,
        SendOutcome::Retryable {
            http_status: None,
            ..
        }
    ));

    twilio.set_latency(Duration::ZERO);
    assert!(matches!(
        client.send(&Message::for_fake(&twilio).outgoing()).await,
        SendOutcome::Accepted { .. }
    ));
}

#[tokio::test]
async fn connection_refused_is_retried() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api_base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);

    let token = Secret::new(DEFAULT_AUTH_TOKEN);
    let sender = MessageSender::From(FROM.to_owned());
    let msg = OutgoingMessage {
        api_base: &api_base,
        account_sid: DEFAULT_ACCOUNT_SID,
        auth_token: &token,
        sender: &sender,
        to: TO,
        body: "hi",
        media: &[],
        status_callback: None,
        content: None,
    };
    match client().send(&msg).await {
        SendOutcome::Retryable {
            http_status: None,
            message,
            ..
        } => {
            assert!(message.contains("could not connect"), "{message}");
            assert!(!message.contains(DEFAULT_AUTH_TOKEN), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn dropping_the_fake_closes_hung_connections() {
    let twilio = FakeTwilio::start().await;
    twilio.push(FakeReply::hang());
    let msg = Message::for_fake(&twilio);
    let client = TwilioClient::new(Duration::from_secs(120));
    let send = tokio::spawn(async move { client.send(&msg.outgoing()).await });
    twilio.wait_for(1, WAIT).await;
    drop(twilio);
    // Far sooner than the client's own timeout: the fake going away ends the request.
    let outcome = tokio::time::timeout(WAIT, send)
        .await
        .expect("the request ends when the fake is dropped")
        .unwrap();
    assert!(
        matches!(
            outcome,
            SendOutcome::Retryable {
                http_status: None,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
#[should_panic(expected = "FakeTwilio: no 1 accepted messages")]
async fn waiting_reports_what_arrived() {
    let twilio = FakeTwilio::start().await;
    twilio.push(FakeReply::status(500));
    send_one(&twilio).await;
    twilio
        .wait_for_accepted(1, Duration::from_millis(200))
        .await;
}

#[test]
fn signed_form_verifies_like_a_twilio_webhook() {
    let url = "https://bot.example/webhooks/twilio/kibo";
    let (body, sig) = signed_form(
        "tok",
        url,
        &[
            ("MessageSid", "SM1"),
            ("From", "whatsapp:+14155550100"),
            ("Body", "It's 50% off & free"),
        ],
    );
    let params = parse_form(body.as_bytes());
    assert_eq!(params[2].1, "It's 50% off & free");
    assert!(signature::verify("tok", url, &params, &sig));
    assert!(!signature::verify("other", url, &params, &sig));
}
