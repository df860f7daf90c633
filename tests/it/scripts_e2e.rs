//! Rhai script nodes end to end through the real server, on both stores: multi-step
//! `ask` conversations, `vars` across messages and restarts, YAML <-> script jumps,
//! `http_get` against a loopback server, and every kind of script failure ending in
//! the bot's `error_reply` with the conversation reset and the server unharmed.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use switchboard::script::{ReqwestScriptHttp, ScriptHttp};

use crate::both_stores;
use crate::support::app::{new_contact, new_sid, Options, TestApp, ACCOUNT_SID, AUTH_TOKEN, FROM};
use crate::support::db::TestDb;

const LAB: &str = "lab";
const ERROR_REPLY: &str = "Oops, the script broke. Send menu.";
const WELCOME: &str = "Welcome to the lab!\n1. Survey\n2. Counter\n3. Lookup\n4. Forbidden\n5. Spin\n6. Recurse\n7. Huge\n8. Crash\n9. Vanish";

/// A loopback API on 127.0.0.1: `GET /slots`. Returns its port and a hit counter.
async fn spawn_api() -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/slots",
        get(move || async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Json(json!({"slots": ["09:00", "11:30"]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

/// The `lab` bot: a YAML menu whose options enter script nodes, one per case.
/// Scripts call the loopback API on `api_port`; only `127.0.0.1` is allowed.
fn write_lab_bot(flows: &Path, twilio_url: &str, api_port: u16) {
    let dir = flows.join(LAB);
    std::fs::create_dir_all(&dir).unwrap();
    let files = [
        (
            "bot.yaml",
            format!(
                r#"start: main
session_timeout: 30m
error_reply: "{ERROR_REPLY}"
keywords:
  menu: main
twilio:
  account_sid: {ACCOUNT_SID}
  auth_token: {AUTH_TOKEN}
  from: "{FROM}"
  api_base: {twilio_url}
http:
  allow: [127.0.0.1]
"#
            ),
        ),
        (
            "nodes.yaml",
            r#"main:
  say: Welcome to the lab!
  options:
    - label: Survey
      goto: survey
    - label: Counter
      goto: counter
    - label: Lookup
      goto: lookup
    - label: Forbidden
      goto: forbidden
    - label: Spin
      goto: spin
    - label: Recurse
      goto: recurse
    - label: Huge
      goto: huge
    - label: Crash
      goto: crash
    - label: Vanish
      goto: vanish
  invalid: Pick a number.

thanks:
  say: "Thanks {{ name }}, you are {{ age }}."
  goto: main
"#
            .to_owned(),
        ),
        (
            "survey.rhai",
            r#"fn start() { ask("Your name?", "got_name"); }
fn got_name(answer) {
    vars.name = answer;
    ask(`Hi ${answer}! Your age?`, "got_age");
}
fn got_age(answer) {
    vars.age = parse_int(answer);
    say("Noted.");
    go_to("thanks");
}
"#
            .to_owned(),
        ),
        (
            "counter.rhai",
            r#"fn start() {
    vars.count = 0;
    ask("Send anything to count.", "bump");
}
fn bump(answer) {
    vars.count += 1;
    if answer == "done" {
        say(`Counted ${vars.count}.`);
        go_to("main");
        return;
    }
    ask(`Count is ${vars.count}.`, "bump");
}
"#
            .to_owned(),
        ),
        (
            "lookup.rhai",
            format!(
                r#"fn start() {{
    let r = http_get("http://127.0.0.1:{api_port}/slots");
    say(`${{r.status}}: ${{r.json.slots[0]}} and ${{r.json.slots[1]}}`);
    go_to("main");
}}
"#
            ),
        ),
        (
            "forbidden.rhai",
            format!(
                r#"fn start() {{
    http_get("http://localhost:{api_port}/slots");
    say("not reached");
}}
"#
            ),
        ),
        (
            "spin.rhai",
            "fn start() {\n    say(\"spinning\");\n    loop { }\n}\n".to_owned(),
        ),
        (
            "recurse.rhai",
            "fn start() { down(0); }\nfn down(n) { down(n + 1) }\n".to_owned(),
        ),
        (
            "huge.rhai",
            "fn start() {\n    let s = \"x\";\n    loop { s += s; }\n}\n".to_owned(),
        ),
        (
            "crash.rhai",
            "fn start() {\n    let list = [1, 2];\n    say(list[5]);\n}\n".to_owned(),
        ),
        (
            "vanish.rhai",
            "fn start() {\n    let handler = \"got_\" + \"nothing\";\n    ask(\"Question?\", handler);\n}\n"
                .to_owned(),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Starts the server with the lab bot and the real script HTTP client.
async fn spawn_lab(db: &TestDb) -> (TestApp, Arc<AtomicUsize>) {
    let (port, hits) = spawn_api().await;
    let app = TestApp::spawn_with_bots(db, lab_options(), |flows, twilio| {
        write_lab_bot(flows, twilio, port)
    })
    .await;
    (app, hits)
}

fn lab_options() -> Options {
    let http: Arc<dyn ScriptHttp> = Arc::new(ReqwestScriptHttp::current());
    Options {
        script_http: Some(http),
        ..Options::default()
    }
}

/// Sends `text` from `contact` to the lab bot; the webhook must answer 200.
async fn send(app: &TestApp, contact: &str, text: &str) {
    let response = app
        .post_signed(LAB, contact, &new_sid(), &[("Body", text)])
        .await;
    assert_eq!(response.status(), 200, "webhook for {text:?}");
}

/// The lab conversation's stored state; it must exist.
async fn stored_state(app: &TestApp, contact: &str) -> switchboard::domain::ConversationState {
    let state = app.store.conversation(LAB, contact).await.unwrap();
    state.expect("the conversation has a stored state")
}

/// Asserts the conversation is back at `start`: the next message starts over.
async fn assert_reset(app: &TestApp, contact: &str) {
    let state = app.store.conversation(LAB, contact).await.unwrap();
    if let Some(state) = state {
        assert_eq!(state.node, None, "conversation not reset: {state:?}");
        assert_eq!(state.handler, None);
        assert!(state.vars.is_empty(), "vars kept: {:?}", state.vars);
    }
}

/// Enters menu option `option` of a fresh contact; expects the `error_reply`, a
/// reset conversation, both messages recorded, and a normal welcome afterwards.
async fn assert_script_fails_cleanly(db: TestDb, option: &str) {
    let (app, _) = spawn_lab(&db).await;
    let contact = new_contact();
    send(&app, &contact, "hi").await;
    send(&app, &contact, option).await;
    assert_eq!(app.replies(&contact, 2).await, [WELCOME, ERROR_REPLY]);
    assert_reset(&app, &contact).await;
    assert_eq!(app.store.inbound_count(LAB).await.unwrap(), 2);

    send(&app, &contact, "hi").await;
    assert_eq!(
        app.replies(&contact, 3).await,
        [WELCOME, ERROR_REPLY, WELCOME]
    );
    let state = stored_state(&app, &contact).await;
    assert_eq!(state.node.as_deref(), Some("main"));
    assert_eq!(app.store.inbound_count(LAB).await.unwrap(), 3);
}

both_stores!(
    multi_step_script_jumps_to_yaml_and_back_to_the_menu,
    |db| async move {
        let (app, _) = spawn_lab(&db).await;
        let contact = new_contact();
        send(&app, &contact, "hi").await;
        send(&app, &contact, "1").await; // YAML option goto -> script node
        let state = stored_state(&app, &contact).await;
        assert_eq!(state.node.as_deref(), Some("survey"));
        assert_eq!(state.handler.as_deref(), Some("got_name"));

        send(&app, &contact, "Zed").await;
        send(&app, &contact, "41").await; // handler: say + go_to a YAML node
        let replies = app.replies(&contact, 6).await;
        assert_eq!(
            replies,
            [
                WELCOME,
                "Your name?",
                "Hi Zed! Your age?",
                "Noted.",
                "Thanks Zed, you are 41.",
                WELCOME
            ]
        );
        let state = stored_state(&app, &contact).await;
        assert_eq!(state.node.as_deref(), Some("main"));
        assert_eq!(state.handler, None);
        assert_eq!(state.vars["name"], "Zed");
        assert_eq!(state.vars["age"], 41, "integers stay integers");
    }
);

both_stores!(
    vars_persist_across_messages_and_a_restart,
    |db| async move {
        let (app, _) = spawn_lab(&db).await;
        let contact = new_contact();
        send(&app, &contact, "hi").await;
        send(&app, &contact, "2").await;
        send(&app, &contact, "a").await;
        send(&app, &contact, "b").await;
        app.replies(&contact, 4).await;
        let state = stored_state(&app, &contact).await;
        assert_eq!(state.vars["count"], 2);

        let app = app.restart(lab_options()).await;
        send(&app, &contact, "c").await;
        // Not "stop": that opts the contact out before any script sees it.
        send(&app, &contact, "done").await;
        let replies = app.replies(&contact, 7).await;
        assert_eq!(
            replies,
            [
                WELCOME,
                "Send anything to count.",
                "Count is 1.",
                "Count is 2.",
                "Count is 3.",
                "Counted 4.",
                WELCOME
            ]
        );
        let state = stored_state(&app, &contact).await;
        assert_eq!(state.node.as_deref(), Some("main"));
        assert_eq!(state.vars["count"], 4);
    }
);

both_stores!(http_get_reaches_an_allowed_loopback_host, |db| async move {
    let (app, hits) = spawn_lab(&db).await;
    let contact = new_contact();
    send(&app, &contact, "hi").await;
    send(&app, &contact, "3").await;
    let replies = app.replies(&contact, 3).await;
    assert_eq!(replies, [WELCOME, "200: 09:00 and 11:30", WELCOME]);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
});

both_stores!(
    http_get_to_a_host_not_allowed_is_refused_without_a_request,
    |db| async move {
        let (app, hits) = spawn_lab(&db).await;
        let contact = new_contact();
        send(&app, &contact, "hi").await;
        send(&app, &contact, "4").await;
        assert_eq!(app.replies(&contact, 2).await, [WELCOME, ERROR_REPLY]);
        assert_reset(&app, &contact).await;
        assert_eq!(hits.load(Ordering::SeqCst), 0, "localhost is not 127.0.0.1");
        send(&app, &contact, "hi").await;
        assert_eq!(app.replies(&contact, 3).await[2], WELCOME);
    }
);

both_stores!(an_infinite_loop_is_stopped, |db| async move {
    assert_script_fails_cleanly(db, "5").await;
});

both_stores!(a_deep_recursion_is_stopped, |db| async move {
    assert_script_fails_cleanly(db, "6").await;
});

both_stores!(a_huge_string_is_stopped, |db| async move {
    assert_script_fails_cleanly(db, "7").await;
});

both_stores!(a_runtime_error_resets_the_conversation, |db| async move {
    assert_script_fails_cleanly(db, "8").await;
});

both_stores!(a_missing_handler_resets_the_conversation, |db| async move {
    assert_script_fails_cleanly(db, "9").await;
});

both_stores!(
    other_conversations_carry_on_while_a_script_spins,
    |db| async move {
        let (app, _) = spawn_lab(&db).await;
        let app = Arc::new(app);
        let (spinner, other) = (new_contact(), new_contact());
        send(&app, &spinner, "hi").await;
        app.replies(&spinner, 1).await;

        let spinning = {
            let app = app.clone();
            let spinner = spinner.clone();
            tokio::spawn(async move { send(&app, &spinner, "5").await })
        };
        send(&app, &other, "hi").await;
        send(&app, &other, "menu").await;
        assert_eq!(app.replies(&other, 2).await, [WELCOME, WELCOME]);
        spinning.await.unwrap();
        assert_eq!(app.replies(&spinner, 2).await, [WELCOME, ERROR_REPLY]);
        let state = app.store.conversation(LAB, &other).await.unwrap().unwrap();
        assert_eq!(state.node.as_deref(), Some("main"));
    }
);
