//! Script HTTP through the real client: `http_get`/`http_post` from a script running
//! on a blocking thread reach a loopback server on an allowed host; other hosts are
//! refused before any request is made.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use switchboard::domain::SystemClock;
use switchboard::message::{InboundMessage, UserInfo};
use switchboard::script::{
    CompiledScript, Limits, Next, ReqwestScriptHttp, ScriptCall, ScriptEffect, ScriptEngine,
    ScriptError,
};

/// A loopback API: `GET /slots` lists slots, `POST /echo` returns its JSON body.
/// Counts the requests it serves.
async fn spawn_api() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let (slots_hits, echo_hits) = (hits.clone(), hits.clone());
    let app = Router::new()
        .route(
            "/slots",
            get(move || async move {
                slots_hits.fetch_add(1, Ordering::SeqCst);
                Json(json!({"slots": ["09:00", "11:30"]}))
            }),
        )
        .route(
            "/echo",
            post(move |Json(body): Json<Value>| async move {
                echo_hits.fetch_add(1, Ordering::SeqCst);
                Json(json!({"received": body}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

fn compile(source: &str) -> (ScriptEngine, Arc<CompiledScript>) {
    let engine = ScriptEngine::new(Limits::default());
    let script = engine
        .compile(Path::new("flows/test/api.rhai"), source)
        .unwrap_or_else(|d| panic!("{d:#?}"));
    (engine, Arc::new(script))
}

/// Runs `fn start()` on a blocking thread, as the server does, with the real client.
async fn start(source: &str, allow: &[&str]) -> Result<ScriptEffect, ScriptError> {
    let (engine, script) = compile(source);
    let http = Arc::new(ReqwestScriptHttp::current());
    let allow: Arc<[String]> = allow.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        engine.call(
            &script,
            ScriptCall {
                bot: "test",
                contact: "whatsapp:+14155550100",
                function: "start",
                answer: None,
                vars: Map::new(),
                user: &UserInfo::default(),
                message: &InboundMessage::text("hi"),
                http,
                http_allow: allow,
                clock: Arc::new(SystemClock),
                deadline: None,
                side_effects: switchboard::domain::SideEffects::Allowed,
            },
        )
    })
    .await
    .expect("the script thread never panics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_get_reaches_an_allowed_loopback_server() {
    let (base, hits) = spawn_api().await;
    let effect = start(
        &format!(
            r#"fn start() {{
                let r = http_get("{base}/slots");
                vars.status = r.status;
                vars.first = r.json.slots[0];
                say(`Free at ${{r.json.slots[1]}}`);
                go_to("confirm");
            }}"#
        ),
        &["127.0.0.1"],
    )
    .await
    .unwrap();
    assert_eq!(effect.vars["status"], json!(200));
    assert_eq!(effect.vars["first"], json!("09:00"));
    assert_eq!(effect.replies[0].body, "Free at 11:30");
    assert_eq!(effect.next, Next::GoTo("confirm".into()));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_sends_json_to_an_allowed_loopback_server() {
    let (base, _) = spawn_api().await;
    let effect = start(
        &format!(
            r#"fn start() {{
                let r = http_post("{base}/echo", #{{ name: "Amina", seats: 2 }});
                vars.echo = r.json.received;
            }}"#
        ),
        &["127.0.0.1"],
    )
    .await
    .unwrap();
    assert_eq!(effect.vars["echo"], json!({"name": "Amina", "seats": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_not_allowed_is_refused_before_any_request() {
    let (base, hits) = spawn_api().await;
    let port = base.rsplit(':').next().unwrap();
    let err = start(
        &format!(r#"fn start() {{ http_get("http://localhost:{port}/slots"); }}"#),
        &["127.0.0.1"],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        "host `localhost` is not allowed: add it to http.allow in bot.yaml"
    );
    assert_eq!(err.file, Path::new("flows/test/api.rhai"));
    assert_eq!(err.line, Some(1));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_failure_is_a_script_error() {
    // Bind then drop: nothing listens on this port any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = start(
        &format!(r#"fn start() {{ http_get("http://{addr}/slots?key=secret"); }}"#),
        &["127.0.0.1"],
    )
    .await
    .unwrap_err();
    assert!(
        err.message.starts_with(&format!(
            "GET http://{addr}/slots failed: could not connect"
        )),
        "{}",
        err.message
    );
    assert!(!err.message.contains("secret"), "{}", err.message);
}
