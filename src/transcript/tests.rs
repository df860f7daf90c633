//! Transcript tests: reading test files, and running them against a bot.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::run::same_value;
use super::*;
use crate::flow::{load_bot, LoadOptions};
use crate::script::Limits;

fn bot_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Bot) {
    let dir = tempfile::tempdir().unwrap();
    let bot_dir = dir.path().join("t");
    std::fs::create_dir_all(bot_dir.join("tests")).unwrap();
    std::fs::write(
        bot_dir.join("bot.yaml"),
        "error_reply: Oops\nhttp:\n  allow: [api.example.com]\n",
    )
    .unwrap();
    for (name, text) in files {
        std::fs::write(bot_dir.join(name), text).unwrap();
    }
    let options = LoadOptions {
        allow_missing_credentials: true,
        ..LoadOptions::default()
    };
    let bot = load_bot(&bot_dir, &ScriptEngine::new(Limits::default()), &options)
        .unwrap_or_else(|d| panic!("{d:?}"));
    (dir, bot)
}

/// Test files obey the bot folder's bounds: a link leading outside it and
/// a file over 1 MiB are errors naming the file, and are not run.
#[test]
fn test_files_linked_outside_or_oversized_are_errors() {
    let (dir, bot) = bot_with(&[("menus.yaml", "main:\n  say: hi\n")]);
    let outside = dir.path().join("outside.yaml");
    std::fs::write(
        &outside,
        "name: leaked\nsteps:\n  - user: hi\n    bot: hi\n",
    )
    .unwrap();
    let tests = bot.dir.join("tests");
    std::os::unix::fs::symlink(&outside, tests.join("linked.yaml")).unwrap();
    let padding = "#".repeat(1024 * 1024 + 1);
    std::fs::write(tests.join("big.yaml"), padding).unwrap();
    let (found, errors) = load_tests(&tests);
    assert!(found.is_empty(), "{found:?}");
    let messages: Vec<(PathBuf, &str)> = errors
        .iter()
        .map(|d| (d.file.clone(), d.message.as_str()))
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0].0, tests.join("big.yaml"));
    assert_eq!(
        messages[0].1,
        "this file is larger than 1 MiB, the most a flow file may be"
    );
    assert_eq!(messages[1].0, tests.join("linked.yaml"));
    assert!(
        messages[1].1.contains("is a symbolic link to")
            && messages[1].1.contains("outside the bot folder"),
        "{messages:?}"
    );
}

const MENUS: &str = r#"
main:
  say: Welcome! Pick one
  options:
    - label: Name
      goto: ask_name
    - label: Price
      goto: price
ask_name:
  say: What's your name?
  save_as: name
  goto: greet
greet:
  say: ["Thanks {{ name }}", "Bye"]
"#;

const PRICE: &str = r#"
fn start() {
    let r = http_get("https://api.example.com/price");
    say("Price: " + r.json.amount);
    vars.amount = r.json.amount;
    ask("Buy?", "buy");
}
fn buy(answer) { say("ok " + answer); }
"#;

fn run(test_yaml: &str) -> Report {
    let (_dir, bot) = bot_with(&[
        ("menus.yaml", MENUS),
        ("price.rhai", PRICE),
        ("tests/t.yaml", test_yaml),
    ]);
    run_bot_tests(&bot, &ScriptEngine::new(Limits::default()))
}

fn failure(test_yaml: &str) -> String {
    let report = run(test_yaml);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.results.len(), 1);
    report.results[0]
        .failure
        .clone()
        .expect("the test should fail")
}

const GOOD: &str = r#"
name: name path
steps:
  - user: hi
    bot: Welcome
  - user: "1"
    bot: {exact: "What's your name?"}
    node: ask_name
  - user: Amina
    bot: ["Thanks Amina", {regex: "^By."}]
    vars: {name: Amina}
---
name: price path
steps:
  - user: hi
  - user: price
    bot: ["Price: 30", "Buy?"]
    vars: {amount: "30"}
    node: price
  - user: yes
    bot: ok yes
http:
  "GET https://api.example.com/price": {status: 200, json: {amount: 30}}
"#;

#[test]
fn good_transcripts_pass() {
    let report = run(GOOD);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.results.len(), 2);
    for r in &report.results {
        assert_eq!(r.failure, None, "{}", r.name);
    }
    assert!(report.is_success());
}

#[test]
fn wrong_text_shows_expected_and_received() {
    let f = failure("name: x\nsteps:\n  - user: hi\n    bot: Goodbye\n");
    assert!(f.contains("t.yaml:3: step 1 (user: \"hi\")"), "{f}");
    assert!(f.contains("contains \"Goodbye\""), "{f}");
    assert!(
        f.contains("1. \"Welcome! Pick one\\n1. Name\\n2. Price\""),
        "{f}"
    );
}

#[test]
fn reply_count_must_match() {
    let f =
        failure("name: x\nsteps:\n  - user: hi\n  - user: \"1\"\n  - user: Zed\n    bot: Thanks\n");
    assert!(f.contains("step 3"), "{f}");
    assert!(f.contains("expected 1 reply, got 2"), "{f}");
}

#[test]
fn regex_exact_vars_and_node_failures() {
    let f = failure("name: x\nsteps:\n  - user: hi\n    bot: {regex: '^Pick'}\n");
    assert!(f.contains("matches regex \"^Pick\""), "{f}");
    let f = failure("name: x\nsteps:\n  - user: hi\n    bot: {exact: Welcome}\n");
    assert!(f.contains("is exactly \"Welcome\""), "{f}");
    let f = failure(
        "name: x\nsteps:\n  - user: hi\n  - user: \"1\"\n  - user: Zed\n    vars: {name: Zoe}\n",
    );
    assert!(
        f.contains("vars.name: expected \"Zoe\", got \"Zed\""),
        "{f}"
    );
    let f = failure("name: x\nsteps:\n  - user: hi\n    node: greet\n");
    assert!(
        f.contains("expected the conversation at node `greet`, it is at `main`"),
        "{f}"
    );
}

#[test]
fn unstubbed_http_fails_naming_the_call() {
    let f = failure("name: x\nsteps:\n  - user: hi\n  - user: \"2\"\n");
    assert!(
        f.contains("GET https://api.example.com/price, which has no stub"),
        "{f}"
    );
}

#[test]
fn loose_var_comparison() {
    assert!(same_value(&Value::from(30), &Value::from("30")));
    assert!(same_value(&Value::from("2.5"), &Value::from(2.5)));
    assert!(!same_value(&Value::from("31"), &Value::from(30)));
    assert!(same_value(
        &serde_json::json!({"a": [1, "x"]}),
        &serde_json::json!({"a": ["1", "x"]})
    ));
}

#[test]
fn bad_test_files_are_located() {
    let cases = [
        (
            "name: x\nstep:\n  - user: hi\n",
            2,
            "unknown key `step` in a test",
        ),
        (
            "name: x\nsteps:\n  - user: hi\n    bott: x\n",
            4,
            "unknown key `bott` in a step",
        ),
        (
            "name: x\nsteps:\n  - user: hi\n---\nname: y\nsteps:\n  - usr: hi\n",
            7,
            "unknown key `usr` in a step",
        ),
        (
            "name: x\nsteps:\n  - user: hi\n    bot: {regex: '('}\n",
            4,
            "invalid regex",
        ),
        (
            "name: x\nsteps:\n  - user: [a, b]\n",
            3,
            "`user` must be a message text or a map",
        ),
        (
            "name: x\nsteps:\n  - user: hi\n    bot: x\n   oops: 1\n",
            5,
            "invalid YAML",
        ),
        ("steps:\n  - user: hi\n", 1, "this test has no `name`"),
    ];
    for (text, line, message) in cases {
        let errors = parse_tests(Path::new("t.yaml"), text).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|d| d.line == line && d.message.contains(message)),
            "{text:?}: {errors:?}"
        );
    }
}

/// A quoted stub value is text, as in flow files: `"007"` reaches the
/// script as the string "007", not the number 7.
#[test]
fn quoted_stub_values_stay_text() {
    let report = run(r#"
name: quoted
steps:
  - user: hi
  - user: price
    bot: ["Price: 007", "Buy?"]
    vars: {amount: "007"}
http:
  "GET https://api.example.com/price": {status: 200, json: {amount: "007"}}
"#);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.results[0].failure, None);
}

/// Tests are separated by `---` lines, a comment after the marker too; every
/// problem is located in the whole file, with the flow files' messages.
#[test]
fn documents_split_at_markers_and_errors_are_located() {
    let text =
        "name: a\nsteps:\n  - user: hi\n--- # the second test\nname: b\nsteps:\n  - user: hi\n";
    let tests = parse_tests(Path::new("t.yaml"), text).unwrap();
    assert_eq!(
        tests
            .iter()
            .map(|t| (t.name.as_str(), t.line))
            .collect::<Vec<_>>(),
        [("a", 1), ("b", 5)]
    );
    let text = "name: a\nsteps:\n  - user: hi\n---\nname: b\nname: c\nsteps:\n  - user: &x hi\n";
    let errors = parse_tests(Path::new("t.yaml"), text).unwrap_err();
    let found: Vec<(usize, usize, &str)> = errors
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [(6, 1, "duplicate key `name` (first defined at line 5)")]
    );
}

#[test]
fn user_maps_become_messages() {
    let text = "name: x\nsteps:\n  - user: {button: Yes, media: [https://x/a.jpg], latitude: 1.5, longitude: -2}\n";
    let tests = parse_tests(Path::new("t.yaml"), text).unwrap();
    let user = &tests[0].steps[0].user;
    assert_eq!(user.button.as_deref(), Some("Yes"));
    assert_eq!(user.media, ["https://x/a.jpg"]);
    assert_eq!((user.latitude, user.longitude), (Some(1.5), Some(-2.0)));
}

/// A bot whose `lab` script always throws, so its contacts get `error_reply`.
fn run_error_path(test_yaml: &str) -> Report {
    let menus = "main:\n  say: Welcome\n  options:\n    - label: Lab\n      goto: lab\n";
    let lab = "fn start() {\n    throw \"the lab system is down\";\n}\n";
    let (_dir, bot) = bot_with(&[
        ("menus.yaml", menus),
        ("lab.rhai", lab),
        ("tests/t.yaml", test_yaml),
    ]);
    let report = run_bot_tests(&bot, &ScriptEngine::new(Limits::default()));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    report
}

/// SPEC §11: a step that expects what the contact got passes even when the flow
/// failed; the error is a note. The conversation then starts over, as live.
#[test]
fn a_step_expecting_the_error_reply_passes_with_a_note() {
    let report = run_error_path(
        "name: lab down\nsteps:\n  - user: hi\n  - user: lab\n    bot: {exact: Oops}\n  - user: hi\n    bot: {exact: \"Welcome\\n1. Lab\"}\n    node: main\n",
    );
    let result = &report.results[0];
    assert_eq!(result.failure, None);
    assert_eq!(result.notes.len(), 1, "{:?}", result.notes);
    let note = &result.notes[0];
    assert!(
        note.starts_with("note: ")
            && note.contains("t.yaml:4: step 2 (user: \"lab\"): the flow failed and the contact got the error reply, as this step expects")
            && note.contains("lab.rhai:2: the lab system is down"),
        "{note}"
    );
}

#[test]
fn a_step_not_matching_the_error_reply_fails_and_shows_the_error() {
    let cases = [
        (
            "    bot: {exact: Your results are ready}\n",
            "is exactly \"Your results are ready\"",
        ),
        (
            "    bot: {exact: Oops}\n    vars: {result: ready}\n",
            "vars.result: expected \"ready\", but it is not set",
        ),
        (
            "",
            "to expect this, write what the contact got: `bot: {exact: \"Oops\"}`",
        ),
    ];
    for (expect, want) in cases {
        let report = run_error_path(&format!(
            "name: lab down\nsteps:\n  - user: hi\n  - user: lab\n{expect}"
        ));
        let result = &report.results[0];
        let failure = result.failure.as_deref().expect("the step should fail");
        assert!(
            failure.contains("step 2 (user: \"lab\")")
                && failure.contains("the flow failed, so the contact got the error reply:")
                && failure.contains("lab.rhai:2: the lab system is down")
                && failure.contains(want),
            "{expect:?}: {failure}"
        );
        assert!(result.notes.is_empty(), "{:?}", result.notes);
    }
}

/// SPEC §8.1, §8.2: `{buttons}`, `{list}` and `{template}` expectations, and
/// taps by `button` and `payload`.
fn run_whatsapp(test_yaml: &str) -> Report {
    let settings = "templates:\n  reminder:\n    content_sid: HXb5b62575e6e4ff6129ad7c8efe1f983e\n    variables: {\"1\": \"{{ user.name }}\"}\n";
    let menus = r#"
main:
  say: Pick
  style: buttons
  options:
    - label: Remind me
      id: remind
      goto: remind
    - label: Services
      goto: services
services:
  say: Which?
  style: list
  options:
    - label: Wash
      description: 10 min
remind:
  template: reminder
  options:
    - label: Confirm
      id: yes_1
      say: Confirmed.
"#;
    let (_dir, bot) = bot_with(&[
        ("bot.yaml", settings),
        ("menus.yaml", menus),
        ("tests/t.yaml", test_yaml),
    ]);
    let report = run_bot_tests(&bot, &ScriptEngine::new(Limits::default()));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    report
}

#[test]
fn buttons_lists_templates_and_taps_in_transcripts() {
    let report = run_whatsapp(
        r#"
name: buttons, a template and its button
steps:
  - user: hi
    bot: {buttons: ["Remind me", "Services"]}
  - user: {payload: remind}
    bot: {template: reminder}
    node: remind
  - user: {payload: yes_1}
    bot: {exact: Confirmed.}
---
name: a list, tapped by its text
steps:
  - user: hi
    bot: "Pick\n1. Remind me\n2. Services"
  - user: {button: Services}
    bot: {list: [Wash]}
"#,
    );
    for result in &report.results {
        assert_eq!(result.failure, None, "{}", result.name);
    }
    assert_eq!(report.passed(), 2);

    let failing = run_whatsapp(
        "name: wrong\nsteps:\n  - user: hi\n    bot: {list: [\"Remind me\", \"Services\"]}\n",
    );
    let failure = failing.results[0]
        .failure
        .clone()
        .expect("a list is not buttons");
    assert!(
        failure.contains("is list [\"Remind me\", \"Services\"]")
            && failure.contains("[buttons [\"Remind me\", \"Services\"]]"),
        "{failure}"
    );
    let failing =
        run_whatsapp("name: wrong\nsteps:\n  - user: remind\n    bot: {template: remindr}\n");
    assert!(failing.results[0].failure.is_some());
}

/// SPEC §9.4: `wait:` moves the test clock and fires the waits that run out
/// meanwhile; `start:` starts a conversation as the start API would, and is
/// skipped outside the 24-hour window.
#[test]
fn wait_and_start_steps_drive_timeouts_and_starts() {
    const NODES: &str =
        "main:\n  say: Hi\n  save_as: day\n  timeout: 2h\n  on_timeout: nudge\n  goto: done\n\
                         nudge:\n  say: \"Still there, {{ name }}?\"\n\
                         done:\n  say: Booked.\n";
    let passing = r#"
name: a start, then no answer for 3 hours
steps:
  - start: {node: main, vars: {name: Amina}}
    bot: Hi
    node: main
  - wait: 1h
  - wait: 2h
    bot: {exact: "Still there, Amina?"}
---
name: an answer cancels the wait
steps:
  - user: hi
  - user: Monday
    bot: Booked.
  - wait: 1d
---
name: a start after a day without a message is skipped
steps:
  - user: hi
  - user: Monday
  - wait: 25h
  - start: nudge
    bot: []
"#;
    let (_dir, bot) = bot_with(&[("menus.yaml", NODES), ("tests/t.yaml", passing)]);
    let report = run_bot_tests(&bot, &ScriptEngine::new(Limits::default()));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for result in &report.results {
        assert!(result.passed(), "{}: {:?}", result.name, result.failure);
    }
    assert_eq!(report.results.len(), 3);

    let failing = |test: &str| {
        let (_dir, bot) = bot_with(&[("menus.yaml", NODES), ("tests/t.yaml", test)]);
        let report = run_bot_tests(&bot, &ScriptEngine::new(Limits::default()));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        report.results[0]
            .failure
            .clone()
            .expect("the test should fail")
    };
    // A wait with no `bot:` expects nothing sent.
    let quiet = failing("name: q\nsteps:\n  - user: hi\n  - wait: 3h\n");
    assert!(quiet.contains("step 2 (wait: 3h)"), "{quiet}");
    assert!(quiet.contains("Still there"), "{quiet}");
    // A skipped start says why.
    let skipped = failing("name: s\nsteps:\n  - wait: 2d\n  - start: nudge\n    bot: Still\n");
    assert!(
        skipped.contains("the start was skipped (outside_window)"),
        "{skipped}"
    );
    let unknown = failing("name: u\nsteps:\n  - start: nuge\n");
    assert!(
        unknown.contains("no node `nuge` to start at; did you mean `nudge`?"),
        "{unknown}"
    );

    let errors = parse_tests(
        Path::new("t.yaml"),
        "name: e\nsteps:\n  - wait: soon\n  - start: {vars: {a: 1}}\n  - user: hi\n    wait: 1h\n",
    )
    .unwrap_err();
    let messages: Vec<&str> = errors.iter().map(|d| d.message.as_str()).collect();
    assert!(
        messages.contains(&"invalid wait `soon`: the unit must be s, m, h or d"),
        "{messages:?}"
    );
    assert!(messages.contains(&"`start` has no `node`"), "{messages:?}");
    assert!(
        messages.contains(&"a step does one thing: `user`, `wait` or `start`"),
        "{messages:?}"
    );
}
