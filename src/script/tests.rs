//! Unit tests of the script engine through its public API: compile a source, call a
//! function with stubbed HTTP and a fixed clock, look at the effect or the error.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::*;
use crate::domain::FixedClock;
use crate::message::{InboundMessage, Reply, UserInfo};

/// What a test call sees; tweak fields before [`Harness::call`].
struct Harness {
    engine: ScriptEngine,
    user: UserInfo,
    message: InboundMessage,
    http: Arc<StubHttp>,
    allow: Arc<[String]>,
    clock: Arc<FixedClock>,
    side_effects: SideEffects,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Harness {
        Harness {
            engine: ScriptEngine::new(limits),
            user: UserInfo {
                phone: "+14155550100".into(),
                name: "Amina".into(),
                channel: "whatsapp".into(),
            },
            message: InboundMessage::text("hi"),
            http: Arc::new(StubHttp::new()),
            allow: Arc::new(["api.example.com".into()]),
            clock: Arc::new(FixedClock(
                Utc.with_ymd_and_hms(2024, 5, 1, 9, 30, 0).unwrap(),
            )),
            side_effects: SideEffects::Allowed,
        }
    }

    fn compile(&self, source: &str) -> Arc<CompiledScript> {
        self.engine
            .compile(Path::new("flows/bot/test.rhai"), source)
            .map(Arc::new)
            .unwrap_or_else(|d| panic!("compile failed: {d:#?}"))
    }

    fn compile_err(&self, source: &str) -> Vec<Diagnostic> {
        self.engine
            .compile(Path::new("flows/bot/test.rhai"), source)
            .expect_err("compile should fail")
    }

    fn call_with(
        &self,
        http: Arc<dyn ScriptHttp>,
        script: &Arc<CompiledScript>,
        function: &str,
        answer: Option<&str>,
        vars: Map<String, Value>,
    ) -> Result<ScriptEffect, ScriptError> {
        self.engine.call(
            script,
            ScriptCall {
                bot: "kibo",
                contact: "whatsapp:+14155550100",
                function,
                answer,
                vars,
                user: &self.user,
                message: &self.message,
                http,
                http_allow: Arc::clone(&self.allow),
                clock: self.clock.clone(),
                deadline: None,
                side_effects: self.side_effects,
            },
        )
    }

    fn call(
        &self,
        script: &Arc<CompiledScript>,
        function: &str,
        answer: Option<&str>,
        vars: Map<String, Value>,
    ) -> Result<ScriptEffect, ScriptError> {
        self.call_with(self.http.clone(), script, function, answer, vars)
    }

    /// Compiles `source` and runs `fn start()` with no vars.
    fn start(&self, source: &str) -> Result<ScriptEffect, ScriptError> {
        self.call(&self.compile(source), "start", None, Map::new())
    }
}

fn vars(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn texts(effect: &ScriptEffect) -> Vec<&str> {
    effect.replies.iter().map(|r| r.body.as_str()).collect()
}

// --- the author API ---------------------------------------------------------------

#[test]
fn say_sends_text() {
    let effect = Harness::new()
        .start(r#"fn start() { say("Hello"); say("Bye"); }"#)
        .unwrap();
    assert_eq!(
        effect.replies,
        vec![Reply::text("Hello"), Reply::text("Bye")]
    );
}

#[test]
fn say_with_media_sends_the_url_with_the_text() {
    let effect = Harness::new()
        .start(r#"fn start() { say("Our RAV4", "https://cdn.example.com/rav4.jpg"); }"#)
        .unwrap();
    assert_eq!(
        effect.replies,
        vec![Reply {
            media: vec!["https://cdn.example.com/rav4.jpg".into()],
            ..Reply::text("Our RAV4")
        }]
    );
}

#[test]
fn say_prints_non_strings_and_refuses_unit() {
    let effect = Harness::new()
        .start(r#"fn start() { say(42); say(1 == 1); }"#)
        .unwrap();
    assert_eq!(texts(&effect), ["42", "true"]);

    let err = Harness::new()
        .start("fn start() {\n  say(vars.missing);\n}")
        .unwrap_err();
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("is the variable set?"), "{err}");
}

#[test]
fn ask_sends_the_question_and_waits_for_the_handler() {
    let h = Harness::new();
    let script = h.compile(
        r#"
        fn start() { ask("What's your name?", "got_name"); }
        fn got_name(answer) {
            vars.name = answer;
            say(`Thanks ${answer}`);
            go_to("main");
        }
        "#,
    );
    let first = h.call(&script, "start", None, Map::new()).unwrap();
    assert_eq!(texts(&first), ["What's your name?"]);
    assert_eq!(first.next, Next::Ask("got_name".into()));

    let second = h
        .call(&script, "got_name", Some("Amina"), first.vars)
        .unwrap();
    assert_eq!(texts(&second), ["Thanks Amina"]);
    assert_eq!(second.next, Next::GoTo("main".into()));
    assert_eq!(second.vars, vars(json!({"name": "Amina"})));
}

#[test]
fn go_to_moves_on_after_the_function_returns() {
    let effect = Harness::new()
        .start(r#"fn start() { go_to("main"); say("still runs"); vars.after = true; }"#)
        .unwrap();
    assert_eq!(effect.next, Next::GoTo("main".into()));
    assert_eq!(texts(&effect), ["still runs"]);
    assert_eq!(effect.vars, vars(json!({"after": true})));
}

#[test]
fn end_and_plain_return_both_end_the_conversation() {
    let h = Harness::new();
    assert_eq!(h.start("fn start() { end(); }").unwrap().next, Next::End);
    assert_eq!(
        h.start(r#"fn start() { say("x"); }"#).unwrap().next,
        Next::End
    );
    assert_eq!(h.start("fn start() { return; }").unwrap().next, Next::End);
}

#[test]
fn a_second_decision_is_an_error_naming_both() {
    let err = Harness::new()
        .start("fn start() {\n  ask(\"Name?\", \"got\");\n  go_to(\"main\");\n}\nfn got(a) {}")
        .unwrap_err();
    assert_eq!(err.line, Some(3));
    assert!(
        err.message.contains("go_to() called after ask() (line 2)"),
        "{}",
        err.message
    );
}

#[test]
fn vars_are_shared_by_every_function_and_returned() {
    let h = Harness::new();
    let script = h.compile(
        r#"
        fn start() { count_visit(); vars.greeting = "hi"; }
        fn count_visit() { vars.visits = vars.visits + 1; vars.list.push(vars.visits); }
        fn reset(answer) { vars = #{ answer: answer }; }
        "#,
    );
    let effect = h
        .call(
            &script,
            "start",
            None,
            vars(json!({"visits": 1, "list": [1], "keep": {"a": 1.5}})),
        )
        .unwrap();
    assert_eq!(
        effect.vars,
        vars(json!({"visits": 2, "list": [1, 2], "keep": {"a": 1.5}, "greeting": "hi"}))
    );
    assert!(effect.vars["visits"].is_i64(), "integers stay integers");

    let effect = h.call(&script, "reset", Some("x"), effect.vars).unwrap();
    assert_eq!(effect.vars, vars(json!({"answer": "x"})));
}

#[test]
fn vars_must_stay_a_map() {
    let err = Harness::new()
        .start("fn start() { vars = 5; }")
        .unwrap_err();
    assert!(
        err.message.contains("vars must stay a map"),
        "{}",
        err.message
    );
}

#[test]
fn user_and_message_fields_are_readable() {
    let mut h = Harness::new();
    h.message = InboundMessage {
        text: "here".into(),
        media: vec!["https://media.example.com/1.jpg".into()],
        button: Some("Yes".into()),
        button_payload: Some("YES_1".into()),
        latitude: Some(52.5),
        longitude: Some(13.4),
        media_types: vec!["image/jpeg".into()],
        address: Some("1 Main St".into()),
        label: Some("Kibo Auto".into()),
    };
    let effect = h
        .start(
            r#"fn start() {
                say(`${user.phone}|${user.name}|${user.channel}`);
                say(`${message.text}|${message.media[0]}|${message.button}|${message.button_payload}`);
                say(`${message.latitude},${message.longitude}`);
                say(`${message.payload}|${message.media_types[0]}|${message.address}|${message.label}`);
            }"#,
        )
        .unwrap();
    assert_eq!(
        texts(&effect),
        [
            "+14155550100|Amina|whatsapp",
            "here|https://media.example.com/1.jpg|Yes|YES_1",
            "52.5,13.4",
            "YES_1|image/jpeg|1 Main St|Kibo Auto"
        ]
    );

    h.message = InboundMessage::text("plain");
    let effect = h
        .start(
            r#"fn start() {
                say(`${message.button == ()} ${message.latitude == ()} ${message.media.len()}`);
            }"#,
        )
        .unwrap();
    assert_eq!(texts(&effect), ["true true 0"]);
}

#[test]
fn user_is_read_only() {
    let err = Harness::new()
        .start("fn start() {\n  user.name = \"Bob\";\n}")
        .unwrap_err();
    assert_eq!(err.line, Some(2));
    assert!(
        err.message.contains("`user` is read-only"),
        "{}",
        err.message
    );
}

#[test]
fn a_parameter_named_like_a_builtin_hides_it() {
    let h = Harness::new();
    let script = h.compile(
        r#"fn start() {} fn on_message(message) { say(message); let user = "local"; say(user); }"#,
    );
    let effect = h
        .call(&script, "on_message", Some("the answer"), Map::new())
        .unwrap();
    assert_eq!(texts(&effect), ["the answer", "local"]);
}

// --- effects refused (a step that may run again) -----------------------------------

/// A harness whose calls refuse effects, as a Postgres message's first step does.
fn refusing() -> Harness {
    Harness {
        side_effects: SideEffects::Refused,
        ..Harness::new()
    }
}

#[test]
fn refused_effects_leave_a_script_without_effects_alone() {
    let source = r#"fn start() { vars.n = 1; say(`at ${now()}`); ask_buttons("Sure?", ["Yes", "No"], "sure"); }
                    fn sure(answer) {}"#;
    let allowed = Harness::new().start(source).unwrap();
    let refused = refusing().start(source).unwrap();
    assert_eq!(allowed, refused);
}

#[test]
fn refused_effects_stop_at_http_even_inside_try() {
    for source in [
        r#"fn start() { say("a"); http_get("https://api.example.com/"); say("b"); }"#,
        r#"fn start() { try { http_get("https://api.example.com/"); } catch (e) { say(`caught ${e}`); } }"#,
        r#"fn slots() { try { http_post("https://api.example.com/", #{}) } catch { "" } }
           fn start() { let s = ""; try { s = slots(); } catch { s = "none"; } say(s); }"#,
    ] {
        let h = refusing();
        let error = h.start(source).expect_err(source);
        assert!(error.needs_turn, "{source}: {error}");
        assert!(h.http.requests().is_empty(), "{source}: no request is made");
    }
}

#[test]
fn refused_effects_stop_at_log_lines() {
    for source in [
        r#"fn start() { log("hello"); say("a"); }"#,
        r#"fn start() { print("hello"); say("a"); }"#,
        r#"fn start() { debug("hello"); say("a"); }"#,
    ] {
        let error = refusing().start(source).expect_err(source);
        assert!(error.needs_turn, "{source}: {error}");
    }
    // Allowed, the same scripts run.
    let effect = Harness::new()
        .start(r#"fn start() { print("hello"); say("a"); }"#)
        .unwrap();
    assert_eq!(texts(&effect), ["a"]);
}

#[test]
fn http_get_calls_an_allowed_host_and_decodes_json() {
    let mut h = Harness::new();
    h.http = Arc::new(StubHttp::new().with(
        "GET https://api.example.com/slots?day=mon",
        HttpResponse::json(200, &json!({"slots": ["9:00", "11:00"]})),
    ));
    let effect = h
        .start(
            r#"fn start() {
                let r = http_get("https://api.example.com/slots?day=mon");
                say(`${r.status} ${r.json.slots.len()} ${r.json.slots[1]}`);
                vars.raw = r.body;
            }"#,
        )
        .unwrap();
    assert_eq!(texts(&effect), ["200 2 11:00"]);
    assert_eq!(effect.vars["raw"], json!(r#"{"slots":["9:00","11:00"]}"#));
    let requests = h.http.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].timeout, Duration::from_secs(5));
    assert_eq!(requests[0].body, None);
}

#[test]
fn http_json_is_unit_when_the_body_is_not_json() {
    let mut h = Harness::new();
    h.http = Arc::new(StubHttp::new().with(
        "GET https://api.example.com/",
        HttpResponse {
            status: 503,
            body: "down".into(),
        },
    ));
    let effect = h
        .start(r#"fn start() { let r = http_get("https://api.example.com"); say(`${r.status} ${r.json == ()} ${r.body}`); }"#)
        .unwrap();
    assert_eq!(texts(&effect), ["503 true down"]);
}

#[test]
fn http_to_a_host_not_allowed_is_an_error_naming_it() {
    let h = Harness::new();
    let err = h
        .start("fn start() {\n\n  http_get(\"https://evil.example.org:8443/x\");\n}")
        .unwrap_err();
    assert_eq!(
        err.message,
        "host `evil.example.org` is not allowed: add it to http.allow in bot.yaml"
    );
    assert_eq!(err.line, Some(3));
    assert!(h.http.requests().is_empty(), "the request was never made");
}

#[test]
fn http_post_sends_the_map_as_json() {
    let mut h = Harness::new();
    h.http = Arc::new(StubHttp::new().with(
        "POST https://api.example.com/bookings",
        HttpResponse::json(201, &json!({"id": 7})),
    ));
    let effect = h
        .start(
            r#"fn start() {
                let r = http_post("https://api.example.com/bookings", #{ name: "Amina", seats: 2, ok: true });
                vars.booking = r.json.id;
            }"#,
        )
        .unwrap();
    assert_eq!(effect.vars, vars(json!({"booking": 7})));
    let requests = h.http.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        requests[0].body,
        Some(json!({"name": "Amina", "seats": 2, "ok": true}))
    );
}

#[test]
fn an_unstubbed_call_fails_the_script() {
    let err = Harness::new()
        .start(r#"fn start() { http_get("https://api.example.com/cars"); }"#)
        .unwrap_err();
    assert_eq!(
        err.message,
        "GET https://api.example.com/cars failed: no stub for GET https://api.example.com/cars"
    );
}

#[test]
fn http_errors_can_be_caught_by_the_script() {
    let effect = Harness::new()
        .start(
            r#"fn start() {
                try { http_get("https://other.example.org/"); } catch (e) { say(`caught: ${e}`); }
            }"#,
        )
        .unwrap();
    assert_eq!(
        texts(&effect),
        ["caught: host `other.example.org` is not allowed: add it to http.allow in bot.yaml"]
    );
}

#[test]
fn only_http_urls_are_allowed() {
    let err = Harness::new()
        .start(r#"fn start() { http_get("file:///etc/passwd"); }"#)
        .unwrap_err();
    assert!(
        err.message.contains("only http and https"),
        "{}",
        err.message
    );
}

#[test]
fn now_uses_the_injected_clock() {
    let effect = Harness::new().start("fn start() { say(now()); }").unwrap();
    assert_eq!(texts(&effect), ["2024-05-01T09:30:00Z"]);
}

#[test]
fn log_print_and_debug_write_to_the_log_and_do_not_reply() {
    let (effect, log) = crate::logging::capture(|| {
        Harness::new()
            .start("fn start() {\n  log(\"checked stock\");\n  log(42);\n  print(\"p\");\n  debug(\"d\");\n}")
    });
    assert!(effect.unwrap().replies.is_empty());
    let line = |text: &str| {
        let found: Vec<&str> = log.lines().filter(|l| l.contains(text)).collect();
        assert_eq!(found.len(), 1, "one line with {text:?} in:\n{log}");
        found[0]
    };
    let context = [
        "bot=\"kibo\"",
        "contact=whatsapp:+14155550100",
        "file=flows/bot/test.rhai",
    ];
    for (text, at) in [
        ("script log: checked stock", Some(2)),
        ("script log: 42", Some(3)),
        ("script print: p", None),
        ("script debug: \"d\"", Some(5)),
    ] {
        let line = line(text);
        for field in context {
            assert!(line.contains(field), "{field} in {line}");
        }
        if let Some(at) = at {
            assert!(line.contains(&format!("line={at}")), "line {at} in {line}");
        }
    }
}

// --- failures ---------------------------------------------------------------------

#[test]
fn an_endless_loop_is_stopped_by_the_operation_limit() {
    let err = Harness::new()
        .start("fn start() {\n  loop { }\n}")
        .unwrap_err();
    assert_eq!(
        err.message,
        "too many operations (limit 1000000): is there an endless loop?"
    );
}

#[test]
fn an_endless_loop_is_stopped_by_the_wall_clock_when_operations_allow_it() {
    let h = Harness::with_limits(Limits {
        max_operations: 0, // unlimited: only the deadline can stop it
        wall_time: Duration::from_millis(50),
        ..Limits::default()
    });
    let err = h.start("fn start() { loop { } }").unwrap_err();
    assert_eq!(
        err.message,
        "script ran longer than 50ms (not counting time waiting for HTTP)"
    );
}

/// Answers after a pause longer than the script's whole wall-clock budget.
struct SlowHttp;

impl ScriptHttp for SlowHttp {
    fn request(&self, _: &HttpRequest) -> Result<HttpResponse, String> {
        std::thread::sleep(Duration::from_millis(300));
        Ok(HttpResponse {
            status: 200,
            body: "{}".into(),
        })
    }
}

#[test]
fn time_waiting_for_http_does_not_count_against_the_wall_clock() {
    let h = Harness::with_limits(Limits {
        wall_time: Duration::from_millis(200),
        ..Limits::default()
    });
    let script = h.compile(
        r#"fn start() {
            http_get("https://api.example.com/");
            let i = 0;
            while i < 2000 { i += 1; }
            say("done");
        }"#,
    );
    let effect = h
        .call_with(Arc::new(SlowHttp), &script, "start", None, Map::new())
        .unwrap();
    assert_eq!(texts(&effect), ["done"]);
}

#[test]
fn limits_cannot_be_caught() {
    let err = Harness::new()
        .start("fn start() { try { loop { } } catch { say(\"caught\"); } }")
        .unwrap_err();
    assert!(
        err.message.starts_with("too many operations"),
        "{}",
        err.message
    );
}

#[test]
fn deep_recursion_is_stopped() {
    let err = Harness::new()
        .start("fn start() { down(0); }\nfn down(n) { down(n + 1) }")
        .unwrap_err();
    assert!(
        err.message
            .starts_with("functions call each other too deeply"),
        "{}",
        err.message
    );
}

#[test]
fn a_huge_string_is_stopped() {
    let err = Harness::new()
        .start("fn start() { let s = \"x\"; loop { s += s; } }")
        .unwrap_err();
    assert!(
        err.message.starts_with("string too long"),
        "{}",
        err.message
    );
}

#[test]
fn a_huge_array_is_stopped() {
    let err = Harness::new()
        .start("fn start() { let a = []; loop { a.push(1); } }")
        .unwrap_err();
    assert!(
        err.message.starts_with("array too large"),
        "{}",
        err.message
    );
}

#[test]
fn too_many_messages_are_stopped() {
    let err = Harness::new()
        .start("fn start() { loop { say(\"spam\"); } }")
        .unwrap_err();
    assert!(
        err.message.starts_with("too many messages"),
        "{}",
        err.message
    );
}

#[test]
fn too_many_http_calls_are_stopped() {
    let mut h = Harness::new();
    h.http = Arc::new(StubHttp::new().with(
        "GET https://api.example.com/",
        HttpResponse::json(200, &json!({})),
    ));
    let err = h
        .start("fn start() { loop { http_get(\"https://api.example.com/\"); } }")
        .unwrap_err();
    assert!(
        err.message.starts_with("too many HTTP calls"),
        "{}",
        err.message
    );
    assert_eq!(h.http.requests().len(), 10);
}

#[test]
fn a_runtime_error_names_its_line_and_function() {
    let err = Harness::new()
        .start("fn start() {\n  say(\"ok\");\n  helper();\n}\nfn helper() {\n  let cars = [1];\n  cars[5]\n}")
        .unwrap_err();
    assert_eq!(err.file, Path::new("flows/bot/test.rhai"));
    assert_eq!(err.line, Some(7));
    assert!(err.message.contains("out of bounds"), "{}", err.message);
    assert!(err.message.ends_with("(in fn helper)"), "{}", err.message);
}

#[test]
fn throw_is_a_script_error_with_its_message() {
    let err = Harness::new()
        .start("fn start() {\n  throw \"no cars left\";\n}")
        .unwrap_err();
    assert_eq!((err.line, err.message.as_str()), (Some(2), "no cars left"));
}

#[test]
fn a_missing_handler_at_call_time_is_an_error() {
    let h = Harness::new();
    let script = h.compile("fn start() {}\nfn got_name(a) {}");
    let err = h
        .call(&script, "got_nme", Some("x"), Map::new())
        .unwrap_err();
    assert_eq!(
        err.message,
        "this script has no `fn got_nme`: did you mean `got_name`?"
    );
    let err = h.call(&script, "start", Some("x"), Map::new()).unwrap_err();
    assert!(
        err.message.contains("cannot handle an answer"),
        "{}",
        err.message
    );
}

#[test]
fn a_computed_handler_name_is_checked_when_ask_runs() {
    let err = Harness::new()
        .start("fn start() {\n  let h = \"got_nam\";\n  ask(\"Name?\", h);\n}\nfn got_name(a) {}")
        .unwrap_err();
    assert_eq!(err.line, Some(3));
    assert_eq!(
        err.message,
        "ask(): there is no `fn got_nam` in this script; did you mean `got_name`?"
    );
}

#[test]
fn vars_over_the_size_limit_are_an_error() {
    let err = Harness::new()
        .start("fn start() { for i in 0..5000 { vars[`key${i}`] = \"0123456789\"; } }")
        .unwrap_err();
    assert!(err.message.starts_with("vars is "), "{}", err.message);
    assert!(
        err.message.contains("over the limit of 65536 bytes"),
        "{}",
        err.message
    );
}

#[test]
fn vars_that_are_not_json_are_an_error() {
    let err = Harness::new()
        .start("fn start() { vars.f = timestamp(); }")
        .unwrap_err();
    assert!(
        err.message.starts_with("vars cannot be stored as JSON"),
        "{}",
        err.message
    );
}

/// A host HTTP implementation with a bug.
struct PanickyHttp;

impl ScriptHttp for PanickyHttp {
    fn request(&self, _: &HttpRequest) -> Result<HttpResponse, String> {
        panic!("bug in the host")
    }
}

#[test]
fn a_panic_in_a_host_function_is_a_script_error_and_the_engine_carries_on() {
    let h = Harness::new();
    let script = h.compile(r#"fn start() { http_get("https://api.example.com/"); }"#);
    let err = h
        .call_with(Arc::new(PanickyHttp), &script, "start", None, Map::new())
        .unwrap_err();
    assert!(err.message.contains("bug in the host"), "{}", err.message);

    let effect = h.start(r#"fn start() { say("fine"); }"#).unwrap();
    assert_eq!(texts(&effect), ["fine"]);
}

#[test]
fn a_call_holds_nothing_of_its_state_once_it_returns() {
    // The state is owned and shared with Rhai's tag and the thread-local; both must
    // let go when the call ends, however it ends, or the HTTP client, the script and
    // the thread's next call would see a finished call.
    fn released<H: ScriptHttp + 'static>(h: &Harness, http: Arc<H>, source: &str) {
        let script = h.compile(source);
        let _ = h.call_with(http.clone(), &script, "start", None, Map::new());
        assert_eq!(
            Arc::strong_count(&http),
            1,
            "HTTP client still held: {source}"
        );
        assert_eq!(Arc::strong_count(&script), 1, "script still held: {source}");
        assert!(call::Call::running().is_none(), "still running: {source}");
    }
    let h = Harness::new();
    let http = r#"fn start() { http_get("https://api.example.com/"); }"#;
    released(
        &h,
        Arc::new(StubHttp::new()),
        r#"fn start() { say("hi"); }"#,
    );
    released(&h, Arc::new(StubHttp::new()), http);
    released(&h, Arc::new(StubHttp::new()), "fn start() { loop { } }");
    released(&h, Arc::new(PanickyHttp), http);
}

// --- compile-time checks ----------------------------------------------------------

fn one(diagnostics: Vec<Diagnostic>) -> Diagnostic {
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    diagnostics.into_iter().next().unwrap()
}

#[test]
fn a_syntax_error_has_line_column_and_source_line() {
    let d = one(Harness::new().compile_err("fn start() {\n  let x = 1 +;\n}"));
    assert_eq!(d.file, Path::new("flows/bot/test.rhai"));
    assert_eq!((d.line, d.column), (2, 14));
    assert_eq!(d.source_line.as_deref(), Some("  let x = 1 +;"));
    assert_eq!(d.severity, Severity::Error);
}

#[test]
fn eval_is_a_compile_error() {
    let d = one(Harness::new().compile_err("fn start() {\n  eval(\"say(1)\");\n}"));
    assert_eq!((d.line, d.column), (2, 3));
    assert_eq!(d.message, "`eval` is not available in Switchboard scripts");
}

#[test]
fn import_is_a_compile_error() {
    let d = one(Harness::new().compile_err("import \"shared\" as s;\nfn start() {}"));
    assert_eq!(
        d.message,
        "`import` is not available in Switchboard scripts"
    );
}

#[test]
fn goto_suggests_go_to() {
    let d = one(Harness::new().compile_err("fn start() {\n  goto(\"main\");\n}"));
    assert_eq!((d.line, d.column), (2, 3));
    assert_eq!(
        d.hint.as_deref(),
        Some("to move to another node write go_to(\"node\")")
    );
}

#[test]
fn an_undeclared_variable_suggests_let() {
    let d = one(Harness::new().compile_err("fn start() {\n  total = 1;\n}"));
    assert_eq!(d.message, "unknown variable `total`");
    assert_eq!(
        d.hint.as_deref(),
        Some(
            "declare it first with `let total = ...;`, or keep it across messages in `vars.total`"
        )
    );
}

#[test]
fn a_missing_start_is_a_compile_error() {
    let d = one(Harness::new().compile_err("fn begin() {\n  say(\"hi\");\n}"));
    assert_eq!((d.line, d.column), (1, 1));
    assert_eq!(d.message, "script has no `fn start()`");
    assert_eq!(
        d.hint.as_deref(),
        Some("add one; it runs when the conversation enters this node")
    );
}

#[test]
fn start_with_parameters_is_a_compile_error() {
    let d = one(Harness::new().compile_err("// hi\n  fn start(x) {}"));
    assert_eq!((d.line, d.column), (2, 3));
    assert_eq!(d.message, "`fn start()` must take no parameters");
}

#[test]
fn code_outside_functions_is_a_compile_error() {
    let d = one(Harness::new().compile_err("fn start() {}\nsay(\"hi\");"));
    assert_eq!(d.line, 2);
    assert_eq!(d.message, "code outside a function never runs");
}

#[test]
fn a_misspelt_variable_is_a_compile_error() {
    let d = one(Harness::new().compile_err("fn start() {\n  say(vras.name);\n}"));
    assert_eq!((d.line, d.column), (2, 7));
    assert_eq!(d.message, "unknown variable `vras`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `vars`?"));
}

#[test]
fn an_unknown_handler_is_a_compile_error_with_a_hint() {
    let d = one(Harness::new().compile_err(
        "fn start() {\n  ask(\"Which day?\", \"got_dya\");\n}\nfn got_day(answer) {}",
    ));
    assert_eq!((d.line, d.column), (2, 21));
    assert_eq!(
        d.message,
        "ask() names handler `got_dya`, but there is no such function in this script"
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean `got_day`?"));
    assert_eq!(
        d.source_line.as_deref(),
        Some("  ask(\"Which day?\", \"got_dya\");")
    );
}

#[test]
fn literal_ask_options_are_checked_at_load() {
    // SPEC §9.2: a bad duration and an unknown `on_timeout` function are found by
    // `check`, where they were written, as the call would find them at run time.
    let errors = Harness::new().compile_err(
        "fn start() {\n  ask(\"Day?\", \"got_day\", #{ timeout: \"soon\", on_timeout: \"no_anser\" });\n}\n\
         fn got_day(answer) {}\nfn no_answer() {}",
    );
    let found: Vec<(usize, usize, &str, Option<&str>)> = errors
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str(), d.hint.as_deref()))
        .collect();
    assert_eq!(
        found,
        [
            (
                2,
                38,
                "ask(): invalid timeout `soon`: the unit must be s, m, h or d",
                Some("write a whole number and a unit: `30s`, `30m`, `2h` or `1d`")
            ),
            (
                2,
                58,
                "ask() names on_timeout `no_anser`, but there is no such function in this script",
                Some("did you mean `no_answer`?")
            ),
        ]
    );
    let d = one(Harness::new().compile_err(
        "fn start() { ask(\"Day?\", \"got_day\", #{ timout: \"2h\" }); }\nfn got_day(a) {}",
    ));
    assert_eq!(
        d.message,
        "ask(): unknown option `timout`: the options are `timeout` and `on_timeout`"
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean `timeout`?"));
    let d = one(Harness::new().compile_err(
        "fn start() { ask(\"Day?\", \"got_day\", #{ on_timeout: \"later\" }); }\n\
         fn got_day(a) {}\nfn later() {}",
    ));
    assert_eq!(d.message, "ask(): `on_timeout` without `timeout`");
    // A well-formed map, and one built at run time, load.
    Harness::new().compile(
        "fn start() { ask(\"Day?\", \"got_day\", #{ timeout: \"2h\", on_timeout: \"later\" }); }\n\
         fn got_day(a) {}\nfn later() {}",
    );
    Harness::new().compile(
        "fn start() { let t = \"2h\"; ask(\"Day?\", \"got_day\", #{ timeout: t }); }\nfn got_day(a) {}",
    );
}

#[test]
fn a_handler_must_take_one_parameter() {
    let d =
        one(Harness::new()
            .compile_err("fn start() { ask(\"Day?\", \"got_day\"); }\nfn got_day() {}"));
    assert_eq!(
        d.message,
        "handler `got_day` must take exactly one parameter (the answer)"
    );
}

#[test]
fn the_api_called_with_wrong_arguments_is_a_compile_error() {
    let d = one(Harness::new().compile_err("fn start() {\n  ask(\"Name?\");\n}"));
    assert_eq!((d.line, d.column), (2, 3));
    assert_eq!(d.message, "ask() called with 1 argument(s)");
    assert_eq!(
        d.hint.as_deref(),
        Some("write ask(question, \"handler\") or ask(question, \"handler\", #{ timeout: \"2h\", on_timeout: \"no_answer\" })")
    );
}

#[test]
fn node_and_handler_refs_are_extracted_with_positions() {
    let h = Harness::new();
    let script = h.compile(
        "fn start() {\n  if vars.x == 1 { go_to(\"main\"); return; }\n  ask(\"Day?\", \"got_day\");\n}\n\
         fn got_day(answer) {\n  let target = \"computed\";\n  go_to(target);\n  // go_to(\"commented\")\n  go_to(\"browse\");\n}",
    );
    assert_eq!(
        script.node_refs,
        vec![
            NameRef {
                name: "main".into(),
                line: 2,
                column: 26
            },
            NameRef {
                name: "browse".into(),
                line: 9,
                column: 9
            },
        ]
    );
    assert_eq!(
        script.handler_refs,
        vec![NameRef {
            name: "got_day".into(),
            line: 3,
            column: 15
        }]
    );
    assert_eq!(script.functions, ["got_day", "start"]);
    assert!(script.has_handler("got_day"));
    assert!(!script.has_handler("start"));
}

#[test]
fn an_expression_too_deep_is_a_compile_error() {
    let deep = format!(
        "fn start() {{ let x = {}1{}; }}",
        "(".repeat(200),
        ")".repeat(200)
    );
    let d = one(Harness::new().compile_err(&deep));
    assert_eq!(d.message, "expression nested too deeply");
}

#[test]
fn closures_work_and_are_not_listed_as_functions() {
    let h = Harness::new();
    let script = h.compile(
        "fn start() { let double = |x| x * 2; let list = [1, 2].map(|x| x + 1); say(`${double.call(21)} ${list}`); }",
    );
    assert_eq!(script.functions, ["start"]);
    let effect = h.call(&script, "start", None, Map::new()).unwrap();
    assert_eq!(texts(&effect), ["42 [2, 3]"]);
}

#[test]
fn the_engine_and_scripts_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<ScriptEngine>();
    shareable::<CompiledScript>();
}

#[test]
fn storing_vars_inside_vars_copies_it() {
    let effect = Harness::new()
        .start("fn start() { vars.a = 1; vars.me = vars; let v = vars; v.b = 2; }")
        .unwrap();
    assert_eq!(effect.vars, vars(json!({"a": 1, "me": {"a": 1}})));
}

#[test]
fn an_unknown_function_is_a_compile_error_with_a_hint() {
    let cases = [
        (
            "fn start() {\n  say(lowercase(\"A\"));\n}",
            (2, 7),
            "unknown function `lowercase()`",
            "did you mean `to_lower`?",
        ),
        (
            "fn got_name(answer) {\n  vars.name = answer.lowercase();\n}\nfn start() {}",
            (2, 22),
            "unknown function `.lowercase()`",
            "did you mean `to_lower`?",
        ),
        (
            "fn start() {\n  let n = \"a\".to_lwer();\n}",
            (2, 15),
            "unknown function `.to_lwer()`",
            "did you mean `to_lower`?",
        ),
        (
            "fn start() {\n  got_nmae(1);\n}\nfn got_name(answer) {}",
            (2, 3),
            "unknown function `got_nmae()`",
            "did you mean `got_name`?",
        ),
        (
            "fn start() {\n  frobnicate_everything();\n}",
            (2, 3),
            "unknown function `frobnicate_everything()`",
            "no function of this name is defined in this file, built into Rhai, or part of the author API (docs/scripting.md lists them)",
        ),
        (
            "fn start() {\n  crm::lookup(1);\n}",
            (2, 3),
            "unknown module `crm`",
            "functions written `crm::name(...)` come from the host program, and it registers no `crm` module",
        ),
    ];
    for (source, at, message, hint) in cases {
        let d = one(Harness::new().compile_err(source));
        assert_eq!(
            ((d.line, d.column), d.message.as_str(), d.hint.as_deref()),
            (at, message, Some(hint)),
            "{source}"
        );
    }
}

/// Functions that are not in the engine's list but exist all the same: the
/// script's own, closures, function pointers and what a map holds.
#[test]
fn known_functions_are_not_reported() {
    let h = Harness::new();
    let script = h.compile(
        "fn double(x) { x * 2 }\n\
         fn twice() { this * 2 }\n\
         fn start() {\n\
           let f = Fn(\"double\");\n\
           let g = |x| x + 1;\n\
           let add = |a, b| a + b;\n\
           let inc = add.curry(1);\n\
           let obj = #{ greet: |name| `hi ${name}` };\n\
           obj.shout = |name| `HI ${name}`;\n\
           let n = 3;\n\
           say(`${f.call(2)} ${call(g, 1)} ${inc.call(1)} ${obj.greet(\"a\")} ${obj.shout(\"b\")} ${n.twice()} ${type_of(n)} ${is_def_fn(\"double\", 1)}`);\n\
           say(`${\"Ab\".to_lower()} ${[3, 1].len()} ${\"a b\".split(\" \").len()} ${now().len() > 0}`);\n\
           print(1); debug(2);\n\
         }",
    );
    let effect = h.call(&script, "start", None, Map::new()).unwrap();
    assert_eq!(
        texts(&effect),
        ["4 2 2 hi a HI b 6 i64 true", "ab 2 2 true"]
    );
}

#[test]
fn host_functions_are_known_and_others_are_not() {
    let mut functions = ScriptFunctions::new();
    functions
        .register("loyalty_points", |_: String| Ok::<_, String>(10))
        .unwrap();
    let engine = ScriptEngine::with_functions(Limits::default(), functions);
    let path = Path::new("flows/bot/test.rhai");
    assert!(engine
        .compile(path, "fn start() { say(loyalty_points(\"x\")); }")
        .is_ok());
    let errors = engine
        .compile(path, "fn start() { say(loyalty_pionts(\"x\")); }")
        .expect_err("misspelt host function");
    assert_eq!(errors[0].message, "unknown function `loyalty_pionts()`");
    assert_eq!(
        errors[0].hint.as_deref(),
        Some("did you mean `loyalty_points`?")
    );
}

#[test]
fn the_vars_a_script_sets_are_listed() {
    let script = Harness::new().compile(
        "fn start() {\n\
           vars.name = \"a\";\n\
           vars[\"day\"] = 1;\n\
           vars.order.size = 2;\n\
           vars.list = [];\n\
           vars.list.push(1);\n\
           vars.count += 1;\n\
           vars += #{ total: 3 };\n\
           vars.mixin(#{ tip: 1, note: vars.name });\n\
           let day = vars.day;\n\
         }",
    );
    assert_eq!(
        script.written,
        WrittenVars {
            names: ["count", "day", "list", "name", "note", "order", "tip", "total"]
                .map(String::from)
                .to_vec(),
            computed: false,
        }
    );
    for computed in [
        "fn start() { let k = \"x\"; vars[k] = 1; }",
        "fn start() { vars = #{} + #{}; }",
        "fn start() { let m = #{}; vars.mixin(m); }",
    ] {
        let script = Harness::new().compile(computed);
        assert!(script.written.computed, "{computed}");
    }
}

/// SPEC §8.1: `ask_buttons`/`ask_list` send an interactive question whose body
/// is its numbered text; WhatsApp's limits are checked when the call runs.
#[test]
fn ask_buttons_and_ask_list_send_menus_within_the_limits() {
    use crate::message::InteractiveStyle;
    let effect = Harness::new()
        .start(
            r#"fn start() {
                ask_list("Which day?", "Days", [#{ label: "Monday", id: "mon", description: "9 to 5" }, "Tuesday"], "got");
            }
            fn got(a) {}"#,
        )
        .unwrap();
    assert_eq!(effect.next, Next::Ask("got".into()));
    assert_eq!(texts(&effect), ["Which day?\n1. Monday\n2. Tuesday"]);
    let menu = effect.replies[0].menu().expect("a list");
    assert_eq!(menu.style, InteractiveStyle::List);
    assert_eq!(menu.button.as_deref(), Some("Days"));
    let ids: Vec<&str> = menu.choices.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["mon", "2"]);
    assert_eq!(menu.choices[0].description.as_deref(), Some("9 to 5"));

    // Built at run time, so only the call can tell.
    let cases = [
        (
            r#"let c = []; for i in 0..4 { c.push(`Option ${i}`); } ask_buttons("Pick", c, "got");"#,
            "ask_buttons(): buttons hold at most 3 choices, found 4",
        ),
        (
            r#"let l = "xxxxxxxxxx" + "xxxxxxxxxx" + "x"; ask_buttons("Pick", [l], "got");"#,
            "ask_buttons(): label `xxxxxxxxxxxxxxxxxxxxx` is 21 characters long; WhatsApp allows at most 20",
        ),
        (
            r#"let b = "bbbbbbbbbb" + "bbbbbbbbbb" + "b"; ask_list("Pick", b, ["A"], "got");"#,
            "ask_list(): the list's button is 21 characters long; WhatsApp allows at most 20",
        ),
        (
            r#"let c = [#{ label: "A", id: "same" }, #{ label: "B", id: "same" }]; ask_buttons("Pick", c, "got");"#,
            "ask_buttons(): id `same` is used twice",
        ),
        (
            r#"ask_buttons("Pick", "A, B", "got");"#,
            "ask_buttons(): the choices must be a list, like [\"Yes\", \"No\"], not string",
        ),
        (
            r#"ask_buttons("Pick", [#{ id: "a" }], "got");"#,
            "ask_buttons(): choice 1 has no `label`",
        ),
    ];
    for (body, message) in cases {
        let source = format!("fn start() {{\n    {body}\n}}\nfn got(a) {{}}\n");
        let err = Harness::new().start(&source).unwrap_err();
        assert_eq!(err.message, message, "{body}");
    }
}
