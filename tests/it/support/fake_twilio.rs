//! A real HTTP server on loopback standing in for Twilio's Messages API
//! (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`), its Content API
//! (`POST /v1/Content`, `GET /v1/Content/{Sid}`) and the typing indicator
//! (`POST /v2/Indicators/Typing.json`). Point a bot's `api_base`,
//! `content_api_base` and `messaging_api_base` all at [`FakeTwilio::url`].
//!
//! It checks what real Twilio checks (Basic auth, the path's AccountSid, a recipient,
//! a sender, some content), answers with Twilio's JSON shapes, and records every
//! request so tests can assert on what the bot sent. Tests script its answers with
//! [`FakeTwilio::push`] and [`FakeTwilio::set_latency`].
//!
//! ```ignore
//! let twilio = FakeTwilio::start().await;
//! twilio.push(FakeReply::too_many(Duration::from_secs(2)));
//! // ... point a bot's `api_base` at `twilio.url()` ...
//! let sent = twilio.wait_for_accepted(1, Duration::from_secs(10)).await;
//! assert_eq!(sent[0].body, "Welcome!");
//! ```
//!
//! The server runs on its own small Tokio runtime, so that dropping the fake closes
//! every connection (a [`FakeReply::hang`] included) and so that its latency and
//! deadlines run on real time even when a test pauses its own clock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::watch;

/// The account the fake expects by default.
pub const DEFAULT_ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
/// The auth token the fake expects by default.
pub const DEFAULT_AUTH_TOKEN: &str = "test-token";

/// Twilio's `Body` limit (characters).
const MAX_BODY_CHARS: usize = 1600;

/// The credentials the fake accepts.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub account_sid: String,
    pub auth_token: String,
}

impl Default for FakeConfig {
    fn default() -> FakeConfig {
        FakeConfig {
            account_sid: DEFAULT_ACCOUNT_SID.to_owned(),
            auth_token: DEFAULT_AUTH_TOKEN.to_owned(),
        }
    }
}

/// One scripted answer, used for the next well-formed, authenticated request.
#[derive(Debug, Clone)]
pub struct FakeReply {
    kind: ReplyKind,
    headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug, Clone)]
enum ReplyKind {
    /// Create the message: a message resource with a fresh sid.
    Accept { status: StatusCode },
    /// Answer with this status and body.
    Answer {
        status: StatusCode,
        content_type: &'static str,
        body: String,
    },
    /// Never answer.
    Hang,
}

impl FakeReply {
    fn new(kind: ReplyKind) -> FakeReply {
        FakeReply {
            kind,
            headers: Vec::new(),
        }
    }

    /// What the fake does by default: 201 and a message resource with a fresh sid.
    pub fn accept() -> FakeReply {
        FakeReply::new(ReplyKind::Accept {
            status: StatusCode::CREATED,
        })
    }

    /// Answer with `status`: a 2xx creates the message (answered with that status),
    /// anything else is Twilio's error JSON with the generic code for that status
    /// (500 → 20500, 503 → 20503, 404 → 20404...).
    pub fn status(status: u16) -> FakeReply {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status");
        if status.is_success() {
            return FakeReply::new(ReplyKind::Accept { status });
        }
        let code = match status.as_u16() {
            400 => 20001,
            401 => 20003,
            other => 20000 + i64::from(other),
        };
        let message = status.canonical_reason().unwrap_or("Error");
        FakeReply::error(status.as_u16(), code, message)
    }

    /// 429, `Retry-After: <secs>`, Twilio error 20429 (account concurrency exceeded).
    pub fn too_many(retry_after: Duration) -> FakeReply {
        FakeReply::error(429, 20429, "Too Many Requests")
            .with_header("retry-after", &retry_after.as_secs().to_string())
    }

    /// Twilio's error JSON: `{"code", "message", "more_info", "status"}`.
    pub fn error(status: u16, code: i64, message: &str) -> FakeReply {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status");
        FakeReply::new(ReplyKind::Answer {
            status,
            content_type: "application/json",
            body: error_json(status, code, message).to_string(),
        })
    }

    /// Any answer at all, for what Twilio itself would not say (a proxy's HTML page, a
    /// 2xx without a sid...).
    pub fn raw(status: u16, content_type: &'static str, body: &str) -> FakeReply {
        FakeReply::new(ReplyKind::Answer {
            status: StatusCode::from_u16(status).expect("a valid HTTP status"),
            content_type,
            body: body.to_owned(),
        })
    }

    /// Never answer (until the fake is dropped, which closes the connection).
    pub fn hang() -> FakeReply {
        FakeReply::new(ReplyKind::Hang)
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: &str) -> FakeReply {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            HeaderValue::from_str(value).expect("a valid header value"),
        ));
        self
    }
}

/// One request the fake received, in arrival order.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The AccountSid in the request path.
    pub account_sid: String,
    /// `To` (empty when absent).
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    /// `Body` (empty when absent).
    pub body: String,
    /// Every `MediaUrl`, in order.
    pub media: Vec<String>,
    pub status_callback: Option<String>,
    /// Whether Basic auth carried the expected account SID and token.
    pub basic_auth_ok: bool,
    /// When the request arrived.
    pub at: Instant,
    /// The status the request is answered with (after any latency); `0` for a
    /// [`FakeReply::hang`], which is never answered.
    pub answered_status: u16,
    /// The message sid issued, for a 2xx answer.
    pub sid: Option<String>,
    /// All form fields, as received.
    pub params: Vec<(String, String)>,
    /// `ContentSid` and `ContentVariables`, when sent.
    pub content_sid: Option<String>,
    pub content_variables: Option<String>,
}

/// One `POST /v1/Content` the fake received.
#[derive(Debug, Clone)]
pub struct ReceivedContent {
    /// The JSON body (`Value::Null` when it was not JSON).
    pub body: Value,
    pub basic_auth_ok: bool,
    /// The status answered; `0` for a hang.
    pub answered_status: u16,
    /// The `HX...` SID issued, for a 2xx answer.
    pub sid: Option<String>,
}

/// One typing indicator (`POST /v2/Indicators/Typing.json`) the fake received.
#[derive(Debug, Clone)]
pub struct ReceivedTyping {
    pub channel: String,
    pub message_id: String,
    pub basic_auth_ok: bool,
}

impl ReceivedMessage {
    /// Whether the fake answered 2xx (the message was "created").
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.answered_status)
    }
}

/// The running fake. Dropping it stops the server and closes its connections.
pub struct FakeTwilio {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    config: FakeConfig,
    script: Mutex<Script>,
    /// The number of requests received, for waiters.
    count: watch::Sender<usize>,
}

#[derive(Default)]
struct Script {
    queue: VecDeque<FakeReply>,
    latency: Duration,
    received: Vec<ReceivedMessage>,
    content_queue: VecDeque<FakeReply>,
    contents: Vec<ReceivedContent>,
    typing_queue: VecDeque<FakeReply>,
    typing: Vec<ReceivedTyping>,
}

impl FakeTwilio {
    /// Starts a fake expecting [`DEFAULT_ACCOUNT_SID`] / [`DEFAULT_AUTH_TOKEN`].
    pub async fn start() -> FakeTwilio {
        FakeTwilio::start_with(FakeConfig::default()).await
    }

    /// Starts a fake expecting `config`'s credentials.
    pub async fn start_with(config: FakeConfig) -> FakeTwilio {
        // Bound before serving, so the port accepts connections as soon as we return.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("listener address");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-twilio")
            .enable_all()
            .build()
            .expect("the fake's runtime");
        let shared = Arc::new(Shared {
            config,
            script: Mutex::new(Script::default()),
            count: watch::Sender::new(0),
        });
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account_sid}/Messages.json",
                post(create_message),
            )
            .route("/v1/Content", post(create_content))
            .route("/v1/Content/{sid}", axum::routing::get(fetch_content))
            .route("/v2/Indicators/Typing.json", post(typing_indicator))
            .fallback(not_found)
            .with_state(shared.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            axum::serve(listener, app)
                .await
                .expect("fake Twilio serves");
        });
        FakeTwilio {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`: the bot's `api_base`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The account SID the fake accepts.
    pub fn account_sid(&self) -> &str {
        &self.shared.config.account_sid
    }

    /// The auth token the fake accepts.
    pub fn auth_token(&self) -> &str {
        &self.shared.config.auth_token
    }

    /// Queues a one-shot answer. Queued answers are used in order by the next
    /// authenticated, well-formed requests; then the fake accepts again. Requests
    /// the fake rejects itself (bad auth, no `To`...) do not consume them.
    pub fn push(&self, reply: FakeReply) {
        self.script().queue.push_back(reply);
    }

    /// Queues a one-shot answer for the next `POST /v1/Content` (then it creates
    /// again).
    pub fn push_content(&self, reply: FakeReply) {
        self.script().content_queue.push_back(reply);
    }

    /// Queues a one-shot answer for the next typing indicator (then it answers
    /// `{"success": true}` again).
    pub fn push_typing(&self, reply: FakeReply) {
        self.script().typing_queue.push_back(reply);
    }

    /// Every `POST /v1/Content` so far, in arrival order.
    pub fn contents(&self) -> Vec<ReceivedContent> {
        self.script().contents.clone()
    }

    /// Every typing indicator so far, in arrival order.
    pub fn typing(&self) -> Vec<ReceivedTyping> {
        self.script().typing.clone()
    }

    /// Waits until at least `n` typing indicators have arrived. Panics after
    /// `timeout`.
    pub async fn wait_for_typing(&self, n: usize, timeout: Duration) -> Vec<ReceivedTyping> {
        let deadline = Instant::now() + timeout;
        loop {
            let typing = self.typing();
            if typing.len() >= n {
                return typing;
            }
            assert!(
                Instant::now() < deadline,
                "FakeTwilio: no {n} typing indicators after {timeout:?}; received {}",
                typing.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Delays every answer (including rejections) by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.script().latency = latency;
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedMessage> {
        self.script().received.clone()
    }

    /// Waits until at least `n` requests have arrived, whatever their answer, and
    /// returns all received. Panics, listing what did arrive, after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        self.wait_until(timeout, &format!("{n} requests"), |all| all.len() >= n)
            .await
    }

    /// Waits until at least `n` requests have been answered 2xx and returns those
    /// (in arrival order). Panics, listing what did arrive, after `timeout`.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let all = self
            .wait_until(timeout, &format!("{n} accepted messages"), |all| {
                all.iter().filter(|r| r.accepted()).count() >= n
            })
            .await;
        all.into_iter().filter(ReceivedMessage::accepted).collect()
    }

    async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[ReceivedMessage]) -> bool,
    ) -> Vec<ReceivedMessage> {
        // Subscribed before the first look, so no arrival between look and wait is missed.
        let mut arrivals = self.shared.count.subscribe();
        // The deadline runs on the fake's runtime: real time, even if the test paused
        // its own clock.
        let runtime = self.runtime.as_ref().expect("running");
        let mut deadline = runtime.spawn(tokio::time::sleep(timeout));
        loop {
            let all = self.received();
            if done(&all) {
                deadline.abort();
                return all;
            }
            tokio::select! {
                _ = arrivals.changed() => {}
                _ = &mut deadline => {
                    let summary: Vec<String> = all.iter().map(summarise).collect();
                    panic!(
                        "FakeTwilio: no {what} after {timeout:?}; received {}:\n{}",
                        all.len(),
                        summary.join("\n")
                    );
                }
            }
        }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.shared.script.lock().expect("fake Twilio state")
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        // Not waiting: a test's async context must not block. The runtime drops its
        // tasks, which closes the listener and every open connection.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn summarise(r: &ReceivedMessage) -> String {
    format!(
        "  answered {} to={} from={:?} service={:?} media={} auth_ok={} sid={:?}",
        r.answered_status,
        r.to,
        r.from,
        r.messaging_service_sid,
        r.media.len(),
        r.basic_auth_ok,
        r.sid
    )
}

/// What the handler sends back, decided under the lock and delivered after it.
enum Answer {
    Respond {
        status: StatusCode,
        content_type: &'static str,
        body: String,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    Hang,
}

async fn create_message(
    State(shared): State<Arc<Shared>>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let first = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let mut received = ReceivedMessage {
        account_sid,
        to: first("To").unwrap_or_default(),
        from: first("From"),
        messaging_service_sid: first("MessagingServiceSid"),
        body: first("Body").unwrap_or_default(),
        media: params
            .iter()
            .filter(|(k, _)| k == "MediaUrl")
            .map(|(_, v)| v.clone())
            .collect(),
        status_callback: first("StatusCallback"),
        basic_auth_ok: basic_auth_ok(&headers, &shared.config),
        at,
        answered_status: 0,
        sid: None,
        params: Vec::new(),
        content_sid: first("ContentSid"),
        content_variables: first("ContentVariables"),
    };
    received.params = params;

    let (answer, latency) = {
        let mut script = shared.script.lock().expect("fake Twilio state");
        let reply = rejection(&received, &shared.config)
            .unwrap_or_else(|| script.queue.pop_front().unwrap_or_else(FakeReply::accept));
        let answer = answer_of(reply, || {
            let sid = format!("SM{:032x}", rand::random::<u128>());
            let resource = message_resource(&received, &sid);
            received.sid = Some(sid);
            resource.to_string()
        });
        if let Answer::Respond { status, .. } = &answer {
            received.answered_status = status.as_u16();
        }
        script.received.push(received);
        (answer, script.latency)
    };
    shared.count.send_modify(|n| *n += 1);
    respond(answer, latency).await
}

/// What real Twilio would refuse before looking at the message, in its order.
fn rejection(r: &ReceivedMessage, config: &FakeConfig) -> Option<FakeReply> {
    if !r.basic_auth_ok {
        return Some(FakeReply::error(401, 20003, "Authenticate"));
    }
    if r.account_sid != config.account_sid {
        return Some(FakeReply::error(
            404,
            20404,
            &format!(
                "The requested resource /2010-04-01/Accounts/{}/Messages.json was not found",
                r.account_sid
            ),
        ));
    }
    if r.to.is_empty() {
        return Some(FakeReply::error(
            400,
            21604,
            "A 'To' phone number is required.",
        ));
    }
    if r.from.as_deref().unwrap_or_default().is_empty()
        && r.messaging_service_sid
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    {
        return Some(FakeReply::error(
            400,
            21603,
            "A 'From' phone number is required.",
        ));
    }
    if r.content_sid.is_some() && (!r.body.is_empty() || !r.media.is_empty()) {
        return Some(FakeReply::error(
            400,
            21619,
            "A ContentSid cannot be sent with a Body or MediaUrl.",
        ));
    }
    if let Some(sid) = &r.content_sid {
        if !sid.starts_with("HX") || sid.len() != 34 {
            return Some(FakeReply::error(400, 21655, "The ContentSid is invalid."));
        }
        if let Some(variables) = &r.content_variables {
            if serde_json::from_str::<serde_json::Map<String, Value>>(variables).is_err() {
                return Some(FakeReply::error(
                    400,
                    21656,
                    "The ContentVariables parameter is invalid.",
                ));
            }
        }
        return None;
    }
    if r.body.is_empty() && r.media.is_empty() {
        return Some(FakeReply::error(400, 21602, "Message body is required."));
    }
    if r.body.chars().count() > MAX_BODY_CHARS {
        return Some(FakeReply::error(
            400,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        ));
    }
    None
}

/// `POST /v1/Content`: records the request and creates a resource (or answers
/// as scripted with [`FakeTwilio::push_content`]).
async fn create_content(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut received = ReceivedContent {
        body: json.clone(),
        basic_auth_ok: basic_auth_ok(&headers, &shared.config),
        answered_status: 0,
        sid: None,
    };
    let (answer, latency) = {
        let mut script = shared.script.lock().expect("fake Twilio state");
        let reply = if !received.basic_auth_ok {
            FakeReply::error(401, 20003, "Authenticate")
        } else if json.get("types").and_then(Value::as_object).is_none()
            || json.get("language").and_then(Value::as_str).is_none()
        {
            FakeReply::error(400, 20001, "Missing required parameter types or language")
        } else {
            script
                .content_queue
                .pop_front()
                .unwrap_or_else(FakeReply::accept)
        };
        let answer = answer_of(reply, || {
            let sid = format!("HX{:032x}", rand::random::<u128>());
            received.sid = Some(sid.clone());
            let mut resource = json.clone();
            resource["sid"] = json!(sid);
            resource["account_sid"] = json!(shared.config.account_sid);
            resource["links"] = json!({
                "approval_create": format!("/v1/Content/{sid}/ApprovalRequests/whatsapp"),
                "approval_fetch": format!("/v1/Content/{sid}/ApprovalRequests"),
            });
            resource.to_string()
        });
        if let Answer::Respond { status, .. } = &answer {
            received.answered_status = status.as_u16();
        }
        script.contents.push(received);
        (answer, script.latency)
    };
    shared.count.send_modify(|n| *n += 1);
    respond(answer, latency).await
}

/// `GET /v1/Content/{sid}`: a resource this fake created, or 404.
async fn fetch_content(
    State(shared): State<Arc<Shared>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !basic_auth_ok(&headers, &shared.config) {
        return respond(
            answer_of(FakeReply::error(401, 20003, "Authenticate"), String::new),
            Duration::ZERO,
        )
        .await;
    }
    let found = shared
        .script
        .lock()
        .expect("fake Twilio state")
        .contents
        .iter()
        .find(|c| c.sid.as_deref() == Some(sid.as_str()))
        .map(|c| {
            let mut resource = c.body.clone();
            resource["sid"] = json!(sid);
            resource
        });
    match found {
        Some(resource) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            resource.to_string(),
        )
            .into_response(),
        None => {
            respond(
                answer_of(
                    FakeReply::error(
                        404,
                        20404,
                        &format!("The requested resource /v1/Content/{sid} was not found"),
                    ),
                    String::new,
                ),
                Duration::ZERO,
            )
            .await
        }
    }
}

/// `POST /v2/Indicators/Typing.json`: records it and answers
/// `{"success": true}` (or as scripted with [`FakeTwilio::push_typing`]).
async fn typing_indicator(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let first = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let received = ReceivedTyping {
        channel: first("channel"),
        message_id: first("messageId"),
        basic_auth_ok: basic_auth_ok(&headers, &shared.config),
    };
    let reply = {
        let mut script = shared.script.lock().expect("fake Twilio state");
        let reply = if !received.basic_auth_ok {
            FakeReply::error(401, 20003, "Authenticate")
        } else if received.channel != "whatsapp" || received.message_id.is_empty() {
            FakeReply::error(400, 20001, "channel and messageId are required")
        } else {
            script
                .typing_queue
                .pop_front()
                .unwrap_or_else(|| FakeReply::raw(200, "application/json", r#"{"success": true}"#))
        };
        script.typing.push(received);
        reply
    };
    respond(answer_of(reply, || "{}".to_owned()), Duration::ZERO).await
}

/// A scripted reply as an answer; an `accept` answers with what `created`
/// makes (the created resource).
fn answer_of(reply: FakeReply, created: impl FnOnce() -> String) -> Answer {
    match reply.kind {
        ReplyKind::Accept { status } => Answer::Respond {
            status,
            content_type: "application/json",
            body: created(),
            headers: reply.headers,
        },
        ReplyKind::Answer {
            status,
            content_type,
            body,
        } => Answer::Respond {
            status,
            content_type,
            body,
            headers: reply.headers,
        },
        ReplyKind::Hang => Answer::Hang,
    }
}

async fn respond(answer: Answer, latency: Duration) -> Response {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match answer {
        Answer::Respond {
            status,
            content_type,
            body,
            headers,
        } => {
            let mut response =
                (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
            response.headers_mut().extend(headers);
            response
        }
        Answer::Hang => std::future::pending().await,
    }
}

fn basic_auth_ok(headers: &HeaderMap, config: &FakeConfig) -> bool {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{}:{}", config.account_sid, config.auth_token);
    decoded == expected.as_bytes()
}

/// Twilio's message resource for a just-created message (reference §4.3): counts are
/// strings, dates RFC 2822, `queued` without a Messaging Service and `accepted` with one.
fn message_resource(r: &ReceivedMessage, sid: &str) -> Value {
    let now = chrono::Utc::now().to_rfc2822();
    let status = if r.messaging_service_sid.is_some() {
        "accepted"
    } else {
        "queued"
    };
    let base = format!("/2010-04-01/Accounts/{}/Messages/{sid}", r.account_sid);
    json!({
        "account_sid": r.account_sid,
        "api_version": "2010-04-01",
        "body": r.body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": r.from,
        "messaging_service_sid": r.messaging_service_sid,
        "num_media": r.media.len().to_string(),
        "num_segments": "1",
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": { "media": format!("{base}/Media.json") },
        "to": r.to,
        "uri": format!("{base}.json"),
    })
}

fn error_json(status: StatusCode, code: i64, message: &str) -> Value {
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    })
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let status = StatusCode::NOT_FOUND;
    let message = format!("The requested resource {} was not found", uri.path());
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        error_json(status, 20404, &message).to_string(),
    )
        .into_response()
}
