//! The REST client: `POST {api_base}/2010-04-01/Accounts/{Sid}/Messages.json`.
//!
//! Owns the request Twilio expects and the classification of its answer into
//! accepted / retry / give up. It does not retry, wait or log bodies: the sender owns
//! the retry policy. The auth token goes into the Basic auth header and nowhere else.

use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::domain::{MessageSender, Secret};

/// Connection set-up is bounded on its own, so a dead edge fails fast even with a
/// generous total timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept per host. Senders run many requests in parallel against one
/// host (api.twilio.com); keeping enough warm connections avoids a TLS handshake per
/// message under load, and Twilio's default account concurrency is around 100.
const MAX_IDLE_PER_HOST: usize = 128;

/// Below Twilio's load balancers' idle cut-off, so we drop a connection before the
/// far side silently does.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// How much of an unexpected (non-Twilio) error body goes into a failure message.
const BODY_EXCERPT_CHARS: usize = 200;

/// Twilio codes that are answered with a 4xx but mean "slow down", not "never".
const RETRYABLE_CODES: [i64; 2] = [
    20429, // Too Many Requests: account concurrency; the request was not processed.
    63018, // Rate limit exceeded for the WhatsApp channel.
];

/// One message to send.
#[derive(Debug, Clone)]
pub struct OutgoingMessage<'a> {
    pub api_base: &'a str,
    pub account_sid: &'a str,
    pub auth_token: &'a Secret,
    pub sender: &'a MessageSender,
    pub to: &'a str,
    pub body: &'a str,
    pub media: &'a [String],
    pub status_callback: Option<&'a str>,
    /// Send a Content resource instead of `body` and `media`.
    pub content: Option<SendContent<'a>>,
}

/// A Content resource to send, and the values of its placeholders.
#[derive(Debug, Clone, Copy)]
pub struct SendContent<'a> {
    /// `HX...`.
    pub sid: &'a str,
    /// A JSON object as text (`{"1": "..."}`), when there are variables.
    pub variables: Option<&'a str>,
}

/// How Twilio answered.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// 2xx with a `sid`.
    Accepted { sid: String, status: String },
    /// Network error, timeout, 429, 5xx, or codes 20429/63018: try again.
    Retryable {
        retry_after: Option<Duration>,
        http_status: Option<u16>,
        code: Option<i64>,
        message: String,
    },
    /// Any other 4xx: fail the row with Twilio's code and message.
    Permanent {
        http_status: u16,
        code: Option<i64>,
        message: String,
    },
}

/// A reqwest client with Twilio's timeouts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TwilioClient {
    pub(super) http: reqwest::Client,
}

impl TwilioClient {
    /// A client whose requests each take at most `timeout` in total (connecting at
    /// most 5 s of it).
    pub fn new(timeout: Duration) -> TwilioClient {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            // A redirect would turn our POST into a GET and could carry the Basic
            // credentials elsewhere; Twilio never redirects Messages.json.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Building only fails when the TLS backend cannot start, which is a broken
            // build, not a runtime condition.
            .expect("the HTTP client (rustls) initialises");
        TwilioClient { http }
    }

    /// Sends one message and says how Twilio answered. Never fails: transport errors
    /// are a [`SendOutcome::Retryable`].
    pub async fn send(&self, msg: &OutgoingMessage<'_>) -> SendOutcome {
        let url = messages_url(msg.api_base, msg.account_sid);
        let request = self
            .http
            .post(url)
            .basic_auth(msg.account_sid, Some(msg.auth_token.expose()))
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_body(msg));
        execute(request).await
    }
}

/// Sends a request to Twilio's REST API and classifies the answer: the one way
/// every create call (messages, Content resources) is made.
pub(super) async fn execute(request: reqwest::RequestBuilder) -> SendOutcome {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return transport_failure(error),
    };
    let status = response.status();
    let headers = response.headers().clone();
    match response.bytes().await {
        Ok(body) => classify(status, &headers, &body),
        Err(error) => transport_failure(error),
    }
}

/// `{api_base}/2010-04-01/Accounts/{sid}/Messages.json`, tolerating a trailing `/`.
fn messages_url(api_base: &str, account_sid: &str) -> String {
    format!(
        "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
        api_base.trim_end_matches('/')
    )
}

fn form_body(msg: &OutgoingMessage<'_>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("To", msg.to);
    match msg.sender {
        MessageSender::From(from) => form.append_pair("From", from),
        MessageSender::MessagingService(sid) => form.append_pair("MessagingServiceSid", sid),
    };
    if let Some(content) = msg.content {
        // No `Body` or `MediaUrl` with a `ContentSid` (reference §9.1).
        form.append_pair("ContentSid", content.sid);
        if let Some(variables) = content.variables {
            form.append_pair("ContentVariables", variables);
        }
    } else {
        if !msg.body.is_empty() {
            form.append_pair("Body", msg.body);
        }
        for url in msg.media {
            form.append_pair("MediaUrl", url);
        }
    }
    if let Some(callback) = msg.status_callback {
        form.append_pair("StatusCallback", callback);
    }
    form.finish()
}

/// Twilio's message resource, the fields we keep.
#[derive(Deserialize)]
struct MessageResource {
    sid: Option<String>,
    status: Option<String>,
}

/// Twilio's error body: `{code, message, more_info, status}`.
#[derive(Deserialize)]
struct TwilioError {
    code: Option<i64>,
    message: Option<String>,
}

/// Maps an HTTP answer to an outcome (reference §4.3, §4.4, §5.2).
fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> SendOutcome {
    if status.is_success() {
        let resource = serde_json::from_slice::<MessageResource>(body).ok();
        return match resource {
            Some(MessageResource {
                sid: Some(sid),
                status: message_status,
            }) if !sid.is_empty() => SendOutcome::Accepted {
                sid,
                // Twilio always sends a status; `queued` is what a create starts as.
                status: message_status.unwrap_or_else(|| "queued".to_owned()),
            },
            // Not a message resource: a proxy or captive portal answered, or the API
            // changed. Without a SID we cannot record the message as sent, and failing
            // it for good would drop a reply that may never have reached Twilio. A
            // retry risks a duplicate but never loses the reply.
            _ => SendOutcome::Retryable {
                retry_after: None,
                http_status: Some(status.as_u16()),
                code: None,
                message: format!(
                    "Twilio answered {} without a message sid: {}",
                    status_line(status),
                    excerpt(body)
                ),
            },
        };
    }

    let error = serde_json::from_slice::<TwilioError>(body).ok();
    let code = error.as_ref().and_then(|e| e.code);
    let message = error
        .and_then(|e| e.message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| fallback_message(status, body));

    // Only a 4xx is Twilio saying "this request is wrong"; 429 and the rate-limit
    // codes mean "later". 5xx is retried, and so are 1xx/3xx: like a 2xx without a
    // sid, we retry rather than lose the reply over an answer we do not understand.
    let retryable = !status.is_client_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || code.is_some_and(|c| RETRYABLE_CODES.contains(&c));
    if retryable {
        SendOutcome::Retryable {
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
            http_status: Some(status.as_u16()),
            code,
            message,
        }
    } else {
        SendOutcome::Permanent {
            http_status: status.as_u16(),
            code,
            message,
        }
    }
}

/// A request that got no (complete) HTTP answer. The text is reqwest's description
/// and its causes, without the URL (noise here, and a misconfigured `api_base` could
/// carry userinfo); credentials travel in a header and never appear in it.
fn transport_failure(error: reqwest::Error) -> SendOutcome {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let error = error.without_url();
    let mut message = format!("Twilio request {kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    SendOutcome::Retryable {
        retry_after: None,
        http_status: None,
        code: None,
        message,
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date (a date in the past means now).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

fn fallback_message(status: StatusCode, body: &[u8]) -> String {
    let excerpt = excerpt(body);
    if excerpt.is_empty() {
        status_line(status)
    } else {
        format!("{}: {excerpt}", status_line(status))
    }
}

/// The start of a body as one line of text, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut words = text.split_whitespace();
    let mut excerpt = words.next().unwrap_or_default().to_owned();
    for word in words {
        excerpt.push(' ');
        excerpt.push_str(word);
        if excerpt.len() > BODY_EXCERPT_CHARS * 4 {
            break;
        }
    }
    if excerpt.chars().count() > BODY_EXCERPT_CHARS {
        excerpt = excerpt.chars().take(BODY_EXCERPT_CHARS).collect();
        excerpt.push('…');
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn answer(status: u16, retry_after: Option<&str>, body: &str) -> SendOutcome {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        }
        classify(
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body.as_bytes(),
        )
    }

    fn twilio_error(code: i64, message: &str, status: u16) -> String {
        serde_json::json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        })
        .to_string()
    }

    #[test]
    fn created_message_is_accepted() {
        let body = r#"{"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued",
                       "num_segments": "1", "error_code": null}"#;
        assert_eq!(
            answer(201, None, body),
            SendOutcome::Accepted {
                sid: "SM0123456789abcdef0123456789abcdef".into(),
                status: "queued".into(),
            }
        );
    }

    #[test]
    fn success_without_sid_is_retried() {
        for body in [
            "<html>Welcome to the hotel wifi</html>",
            "{}",
            r#"{"sid": ""}"#,
        ] {
            match answer(200, None, body) {
                SendOutcome::Retryable {
                    http_status: Some(200),
                    message,
                    ..
                } => assert!(message.contains("without a message sid"), "{message}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_number_is_permanent() {
        assert_eq!(
            answer(
                400,
                None,
                &twilio_error(21211, "Invalid 'To' Phone Number", 400)
            ),
            SendOutcome::Permanent {
                http_status: 400,
                code: Some(21211),
                message: "Invalid 'To' Phone Number".into(),
            }
        );
    }

    #[test]
    fn rate_limits_are_retried_with_retry_after() {
        assert_eq!(
            answer(
                429,
                Some("2"),
                &twilio_error(20429, "Too Many Requests", 429)
            ),
            SendOutcome::Retryable {
                retry_after: Some(Duration::from_secs(2)),
                http_status: Some(429),
                code: Some(20429),
                message: "Too Many Requests".into(),
            }
        );
        for code in [20429, 63018] {
            assert!(matches!(
                answer(400, None, &twilio_error(code, "Rate limit exceeded", 400)),
                SendOutcome::Retryable { code: Some(c), .. } if c == code
            ));
        }
    }

    #[test]
    fn server_errors_are_retried() {
        assert!(matches!(
            answer(503, None, &twilio_error(20503, "Service Unavailable", 503)),
            SendOutcome::Retryable {
                http_status: Some(503),
                code: Some(20503),
                ..
            }
        ));
        assert_eq!(
            answer(502, None, "<html>\n  <h1>Bad   Gateway</h1>\n</html>"),
            SendOutcome::Retryable {
                retry_after: None,
                http_status: Some(502),
                code: None,
                message: "HTTP 502 Bad Gateway: <html> <h1>Bad Gateway</h1> </html>".into(),
            }
        );
    }

    #[test]
    fn unexpected_statuses_are_retried() {
        assert!(matches!(
            answer(302, None, ""),
            SendOutcome::Retryable {
                http_status: Some(302),
                ..
            }
        ));
    }

    #[test]
    fn auth_failure_is_permanent() {
        assert_eq!(
            answer(401, None, &twilio_error(20003, "Authenticate", 401)),
            SendOutcome::Permanent {
                http_status: 401,
                code: Some(20003),
                message: "Authenticate".into(),
            }
        );
    }

    #[test]
    fn non_twilio_error_body_falls_back_to_status_and_excerpt() {
        let long = "x".repeat(1000);
        match answer(404, None, &long) {
            SendOutcome::Permanent {
                http_status: 404,
                code: None,
                message,
            } => {
                assert!(message.starts_with("HTTP 404 Not Found: xxx"), "{message}");
                assert!(message.ends_with('…'));
                assert!(message.chars().count() < 260);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            answer(400, None, ""),
            SendOutcome::Permanent {
                http_status: 400,
                code: None,
                message: "HTTP 400 Bad Request".into(),
            }
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(600))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let wait = parse_retry_after(&later).unwrap();
        assert!(wait > Duration::from_secs(500) && wait <= Duration::from_secs(600));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-5"), None);
    }

    #[test]
    fn form_fields() {
        let token = Secret::new("tok");
        let sender = MessageSender::MessagingService("MG00".into());
        let media = ["https://m/1".to_owned(), "https://m/2?a=b&c".to_owned()];
        let msg = OutgoingMessage {
            api_base: "https://api.twilio.com/",
            account_sid: "AC00",
            auth_token: &token,
            sender: &sender,
            to: "whatsapp:+14155550100",
            body: "Hi & bye",
            media: &media,
            status_callback: Some("https://bot.example/webhooks/twilio/kibo/status"),
            content: None,
        };
        let fields: Vec<(String, String)> = form_urlencoded::parse(form_body(&msg).as_bytes())
            .into_owned()
            .collect();
        let expected = [
            ("To", "whatsapp:+14155550100"),
            ("MessagingServiceSid", "MG00"),
            ("Body", "Hi & bye"),
            ("MediaUrl", "https://m/1"),
            ("MediaUrl", "https://m/2?a=b&c"),
            (
                "StatusCallback",
                "https://bot.example/webhooks/twilio/kibo/status",
            ),
        ];
        assert_eq!(fields, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert_eq!(
            messages_url(msg.api_base, msg.account_sid),
            "https://api.twilio.com/2010-04-01/Accounts/AC00/Messages.json"
        );
        assert!(!format!("{msg:?}").contains("tok\""));
    }
}
