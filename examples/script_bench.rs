//! Per-message cost of a script call, and how long a runaway script runs before the
//! limits stop it. Not a test: run it by hand, in release mode.
//!
//! ```text
//! cargo run --release --example script_bench
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use switchboard::domain::{Clock, SystemClock};
use switchboard::message::{InboundMessage, UserInfo};
use switchboard::script::{
    CompiledScript, Limits, ScriptCall, ScriptEngine, ScriptError, ScriptHttp, StubHttp,
};

/// A typical handler: a few `vars` writes, a branch, a `say` with interpolation, an `ask`.
const HANDLER: &str = r#"
fn start() {
    ask("What's your name?", "got_name");
}

fn got_name(answer) {
    vars.name = answer;
    vars.visits = if vars.visits == () { 1 } else { vars.visits + 1 };
    vars.step = "day";
    if vars.visits > 1 {
        say(`Welcome back, ${vars.name}! This is visit ${vars.visits}.`);
    } else {
        say(`Nice to meet you, ${vars.name}!`);
    }
    ask("Which day suits you for a test drive?", "got_day");
}

fn got_day(answer) {
    go_to("main");
}
"#;

const CALLS: usize = 20_000;
const WARMUP: usize = 1_000;

fn main() {
    let engine = ScriptEngine::new(Limits::default());
    let started = Instant::now();
    let script = engine
        .compile(Path::new("bench.rhai"), HANDLER)
        .map(Arc::new)
        .expect("the bench script compiles");
    println!("compile: {} µs", started.elapsed().as_micros());

    let user = UserInfo {
        phone: "+14155550100".into(),
        name: "Amina".into(),
        channel: "whatsapp".into(),
    };
    let message = InboundMessage::text("Amina");
    // Shared like the server's: a call clones these `Arc`s, it does not build them.
    let http: Arc<dyn ScriptHttp> = Arc::new(StubHttp::new());
    let allow: Arc<[String]> = Arc::new([]);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut vars = match json!({"visits": 0, "car": "RAV4", "source": "ad"}) {
        Value::Object(map) => map,
        _ => unreachable!(),
    };

    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let started = Instant::now();
        let effect = engine
            .call(
                &script,
                ScriptCall {
                    bot: "bench",
                    contact: "whatsapp:+14155550100",
                    function: "got_name",
                    answer: Some("Amina"),
                    vars: vars.clone(),
                    user: &user,
                    message: &message,
                    http: Arc::clone(&http),
                    http_allow: Arc::clone(&allow),
                    clock: Arc::clone(&clock),
                    deadline: None,
                    side_effects: switchboard::domain::SideEffects::Allowed,
                },
            )
            .expect("the bench handler runs");
        let elapsed = started.elapsed();
        if i >= WARMUP {
            samples.push(elapsed);
        }
        vars = effect.vars;
        vars.insert("visits".into(), json!(0));
    }
    samples.sort();
    println!(
        "typical handler, {CALLS} calls: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        micros(percentile(&samples, 0.50)),
        micros(percentile(&samples, 0.99)),
        micros(*samples.last().unwrap()),
    );

    let runaway = "fn start() { loop { } }";
    let script = Arc::new(engine.compile(Path::new("runaway.rhai"), runaway).unwrap());
    let mut stops = Vec::new();
    for _ in 0..20 {
        let (elapsed, err) = time_start(&engine, &script, &user, &message, &http);
        stops.push(elapsed);
        assert!(err.message.starts_with("too many operations"), "{err}");
    }
    stops.sort();
    println!(
        "runaway `loop {{}}` stopped by the operation limit ({} ops): median {:.1} ms, max {:.1} ms",
        engine.limits().max_operations,
        millis(percentile(&stops, 0.5)),
        millis(*stops.last().unwrap()),
    );

    // With the operation limit off, only the wall-clock deadline is left.
    let mut no_operation_limit = Limits::default();
    no_operation_limit.max_operations = 0;
    let deadline_only = ScriptEngine::new(no_operation_limit);
    let script = Arc::new(
        deadline_only
            .compile(Path::new("runaway.rhai"), runaway)
            .unwrap(),
    );
    let (elapsed, err) = time_start(&deadline_only, &script, &user, &message, &http);
    println!(
        "runaway `loop {{}}` stopped by the wall clock ({:?} budget): {:.1} ms ({})",
        deadline_only.limits().wall_time,
        millis(elapsed),
        err.message
    );
}

fn time_start(
    engine: &ScriptEngine,
    script: &Arc<CompiledScript>,
    user: &UserInfo,
    message: &InboundMessage,
    http: &Arc<dyn ScriptHttp>,
) -> (Duration, ScriptError) {
    let started = Instant::now();
    let err = engine
        .call(
            script,
            ScriptCall {
                bot: "bench",
                contact: "whatsapp:+14155550100",
                function: "start",
                answer: None,
                vars: Map::new(),
                user,
                message,
                http: Arc::clone(http),
                http_allow: Arc::new([]),
                clock: Arc::new(SystemClock),
                deadline: None,
                side_effects: switchboard::domain::SideEffects::Allowed,
            },
        )
        .expect_err("a runaway script is stopped");
    (started.elapsed(), err)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
