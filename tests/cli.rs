//! The `switchboard` binary as an author runs it: `check` on broken fixtures,
//! `test` on good and failing transcripts, `chat` driven through stdin.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::str::contains;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn switchboard() -> Command {
    let mut cmd = Command::cargo_bin("switchboard").unwrap();
    // The fixtures' `${VAR}`s must stay unset, and logs must not mix into stdout.
    cmd.env_remove("SWITCHBOARD_FLOWS")
        .env_remove("BROKEN_TWILIO_AUTH_TOKEN")
        .env("RUST_LOG", "error");
    cmd
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A flows folder holding only the fixture bot `name`, from `broken/` (one error
/// each, shared with the loader's tests) or else from `check/` (this file's own).
fn flows_with_broken(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let broken = fixtures().join("broken").join(name);
    let source = if broken.is_dir() {
        broken
    } else {
        fixtures().join("check").join(name)
    };
    copy_dir(&source, &dir.path().join(name));
    dir
}

/// Runs `check` on one broken fixture and returns its stdout; asserts the exit code.
fn check(name: &str, success: bool) -> String {
    let flows = flows_with_broken(name);
    let assert = switchboard().arg("check").arg(flows.path()).assert();
    let assert = if success {
        assert.success()
    } else {
        assert.code(1)
    };
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    // Paths are printed as given; strip the temp folder for readable assertions.
    out.replace(&format!("{}/", flows.path().display()), "")
}

#[test]
fn check_prints_each_error_with_location_source_caret_and_hint() {
    // (fixture, location and message, source line, hint)
    let cases = [
        (
            "bad-regex",
            "bad-regex/menus.yaml:4:14: error: invalid regex in `validate`: unclosed character class",
            "4 |   validate: \"[A-Za-z {2,40}\"\n  |              ^",
            "hint: the answer must match the whole pattern",
        ),
        (
            "bad-session-timeout",
            "bad-session-timeout/bot.yaml:2:18: error: invalid session_timeout `30 minutes`",
            "2 | session_timeout: 30 minutes\n  |                  ^",
            "hint: write a whole number and a unit",
        ),
        (
            "bad-template",
            "bad-template/menus.yaml:2:23: error: template error in `say`",
            "2 |   say: \"Hello {{ name }!\"\n  |                       ^",
            "hint: placeholders look like `{{ name }}`",
        ),
        (
            "bad-yaml-syntax",
            "bad-yaml-syntax/menus.yaml:3:8: error: invalid YAML: mapping values are not allowed",
            "3 |    goto: main\n  |        ^",
            "hint: check the indentation",
        ),
        (
            "duplicate-node",
            "duplicate-node/menus.yaml:1:1: error: node `main` is defined twice: in a.yaml:1:1 and in menus.yaml",
            "1 | main:\n  | ^",
            "hint: node names are unique within a bot",
        ),
        (
            "goto-loop",
            "goto-loop/menus.yaml:3:9: error: `goto` loop without waiting: main → more → main",
            "3 |   goto: more\n  |         ^",
            "hint: these nodes would send messages forever",
        ),
        (
            "unknown-bot-key",
            "unknown-bot-key/bot.yaml:2:1: error: unknown key `sesion_timeout` in bot.yaml",
            "2 | sesion_timeout: 30m\n  | ^",
            "hint: did you mean `session_timeout`?",
        ),
        (
            "unknown-goto",
            "unknown-goto/menus.yaml:5:13: error: unknown node `brows` in goto",
            "5 |       goto: brows\n  |             ^",
            "hint: did you mean `browse`?",
        ),
        (
            "unknown-node-key",
            "unknown-node-key/menus.yaml:2:3: error: unknown key `sya` in node `main`",
            "2 |   sya: Hello\n  |   ^",
            "hint: did you mean `say`?",
        ),
        (
            "script-error",
            "script-error/main.rhai:2:23: error: ask() names handler `anwser`",
            "2 |     ask(\"Your name?\", \"anwser\");\n  |                       ^",
            "hint: did you mean `answer`?",
        ),
    ];
    for (name, head, source, hint) in cases {
        let out = check(name, false);
        for want in [head, source, hint] {
            assert!(out.contains(want), "{name}: missing {want:?} in\n{out}");
        }
        assert!(out.contains("error(s)"), "{name}: no summary in\n{out}");
    }
}

#[test]
fn check_reports_a_missing_start_node_for_the_whole_file() {
    let out = check("missing-start", false);
    assert!(
        out.contains("missing-start/bot.yaml: error: no node `main` to start at"),
        "{out}"
    );
    assert!(
        out.contains("hint: add a node named `main`, or set `start:`"),
        "{out}"
    );
}

/// The security review's template (ten billion loop iterations) and a 10 MB
/// value: `check` refuses both at once, pointing at each `say`, instead of
/// growing without bound (the review saw 527 MB after 30 s).
#[test]
fn check_stops_runaway_templates_with_their_location() {
    let flows = flows_with_broken("runaway-template");
    let assert = switchboard()
        .arg("check")
        .arg(flows.path())
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .code(1);
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    let out = out.replace(&format!("{}/", flows.path().display()), "");
    for want in [
        "runaway-template/menus.yaml:2:8: error: template error in `say`: the template does too much work: it was stopped after 100000 steps",
        "runaway-template/menus.yaml:9:5: error: template error in `say`: the template produces too much output: it was stopped at 64 KiB",
        "loop over fewer items (e.g. `{% for car in cars[:20] %}`), or build long text in a script node",
        "2 error(s)",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn check_warnings_do_not_fail() {
    let cases = [
        (
            "missing-credentials",
            "missing-credentials/bot.yaml:4:15: warning: BROKEN_TWILIO_AUTH_TOKEN is not set",
        ),
        (
            "option-silent",
            "option-silent/menus.yaml:6:7: warning: option `Bye` has no goto and no say",
        ),
        (
            "keyword-clash",
            "keyword-clash/menus.yaml:6:14: warning: keyword `menu` also matches option 2 of `main`",
        ),
    ];
    for (name, want) in cases {
        let out = check(name, true);
        assert!(out.contains(want), "{name}: missing {want:?} in\n{out}");
        assert!(out.contains("ok: no errors"), "{name}: {out}");
    }
}

/// `check` on a flows folder holding one bot `salon` made of `files`; returns
/// stdout with the temp folder stripped, and asserts the exit code.
fn check_salon(files: &[(&str, &str)], success: bool) -> String {
    let flows = tempfile::tempdir().unwrap();
    let bot = flows.path().join("salon");
    std::fs::create_dir(&bot).unwrap();
    for (name, text) in files {
        std::fs::write(bot.join(name), text).unwrap();
    }
    let assert = switchboard().arg("check").arg(flows.path()).assert();
    let assert = if success {
        assert.success()
    } else {
        assert.code(1)
    };
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    out.replace(&format!("{}/", flows.path().display()), "")
}

/// A bot's files as (name, text), `bot.yaml` left out.
type BotFiles = Vec<(&'static str, String)>;

const SALON_BOT: &str =
    "name: Salon\ntwilio:\n  account_sid: AC1\n  auth_token: tok\n  from: \"whatsapp:+1\"\n";

/// The mistakes of issue 14's first-time author, each as `check` prints it:
/// location, message, source line with the caret, hint.
#[test]
fn check_explains_a_first_time_authors_mistakes() {
    let asks = "ask_name:\n  say: Your name?\n  save_as: name\n  goto: booked\n";
    // A menu that leads to the script `book.rhai` of the script cases.
    let to_book = (
        "menus.yaml",
        String::from("main:\n  say: Hi\n  goto: book\n"),
    );
    // (case, files, exit ok, the whole diagnostic as printed)
    let cases: Vec<(&str, BotFiles, bool, &str)> = vec![
        (
            "a var nothing sets",
            vec![("menus.yaml", format!("main:\n  say: Hi\n  goto: ask_name\n{asks}booked:\n  say: \"All booked, {{{{ nme }}}}!\"\n"))],
            true,
            "salon/menus.yaml:9:21: warning: `nme` is always empty: nothing in this bot sets it\n  \
             |\n9 |   say: \"All booked, {{ nme }}!\"\n  |                     ^\n  \
             = hint: did you mean `name`?",
        ),
        (
            "a var in another case",
            vec![("menus.yaml", format!("main:\n  say: Hi\n  goto: ask_name\n{asks}booked:\n  say: \"All booked, {{{{ Name }}}}!\"\n"))],
            true,
            "salon/menus.yaml:9:21: warning: `Name` is always empty: nothing in this bot sets it\n  \
             |\n9 |   say: \"All booked, {{ Name }}!\"\n  |                     ^\n  \
             = hint: did you mean `name`? Names are case-sensitive",
        ),
        (
            "an unknown function",
            vec![
                to_book.clone(),
                ("book.rhai", "fn start() {\n    ask(\"Which service?\", \"got_service\");\n}\n\nfn got_service(answer) {\n    vars.service = lowercase(answer);\n}\n".into()),
            ],
            false,
            "salon/book.rhai:6:20: error: unknown function `lowercase()`\n  \
             |\n6 |     vars.service = lowercase(answer);\n  |                    ^\n  \
             = hint: did you mean `to_lower`?",
        ),
        (
            "an unknown method",
            vec![
                to_book.clone(),
                ("book.rhai", "fn start() {\n    ask(\"Which service?\", \"got_service\");\n}\n\nfn got_service(answer) {\n    vars.service = answer.lowercase();\n}\n".into()),
            ],
            false,
            "salon/book.rhai:6:27: error: unknown function `.lowercase()`\n  \
             |\n6 |     vars.service = answer.lowercase();\n  |                           ^\n  \
             = hint: did you mean `to_lower`?",
        ),
        (
            "a missing `;`",
            vec![
                to_book.clone(),
                ("book.rhai", "fn start() {\n    let greeting = \"Welcome!\"\n    say(greeting);\n}\n".into()),
            ],
            false,
            "salon/book.rhai:2:30: error: missing `;` at the end of this statement\n  \
             |\n2 |     let greeting = \"Welcome!\"\n  |                              ^\n  \
             = hint: add `;` here: every statement ends with one",
        ),
        (
            "an unclosed string",
            vec![
                to_book.clone(),
                ("book.rhai", "fn start() {\n    ask(\"Which service?, \"got_service\");\n}\nfn got_service(answer) {}\n".into()),
            ],
            false,
            "salon/book.rhai:2:9: error: this string is never closed\n  \
             |\n2 |     ask(\"Which service?, \"got_service\");\n  |         ^\n  \
             = hint: add the closing `\"` where this text ends: the `\"` after it was read as its end, so what follows is out of place",
        ),
        (
            "a missing `}`",
            vec![
                to_book.clone(),
                ("book.rhai", "fn start() {\n    if user.name == \"\" {\n        say(\"Hello!\");\n    say(\"Welcome\");\n}\n".into()),
            ],
            false,
            "salon/book.rhai:2:24: error: this `{` is never closed\n  \
             |\n2 |     if user.name == \"\" {\n  |                        ^\n  \
             = hint: add a `}` where its block ends",
        ),
        (
            "an unexpected `)`",
            vec![
                to_book.clone(),
                ("book.rhai", "fn start() {\n    say(\"Welcome\"));\n}\n".into()),
            ],
            false,
            "salon/book.rhai:2:19: error: unexpected `)`: there is no `(` for it to close\n  \
             |\n2 |     say(\"Welcome\"));\n  |                   ^\n  \
             = hint: remove it, or add the `(` it should close",
        ),
        (
            "a node body not indented",
            vec![("menus.yaml", "main:\nsay: Welcome to the salon!\noptions:\n  - label: Book\n    say: Booked\n".into())],
            false,
            "salon/menus.yaml:2:1: error: the lines of node `main` must be indented under it\n  \
             |\n2 | say: Welcome to the salon!\n  | ^\n  \
             = hint: indent `say:` and the other lines of `main` by two spaces under `main:`",
        ),
        (
            "a tab",
            vec![("menus.yaml", "main:\n  say: Welcome\n\tgoto: main\n".into())],
            false,
            "salon/menus.yaml:3:1: error: a tab is used for indentation: YAML allows only spaces\n  \
             |\n3 | \tgoto: main\n  | ^\n  \
             = hint: indent with spaces, not tabs",
        ),
        (
            "a misspelt key",
            vec![("menus.yaml", "main:\n  say: Hi\n  optoins:\n    - label: Cut\n      goto: cut\ncut:\n  say: A cut.\n".into())],
            false,
            "salon/menus.yaml:3:3: error: unknown key `optoins` in node `main`\n  \
             |\n3 |   optoins:\n  |   ^\n  \
             = hint: did you mean `options`?\n\n1 error(s), 0 warning(s)",
        ),
    ];
    for (case, files, success, want) in cases {
        let mut all = vec![("bot.yaml", SALON_BOT.to_owned())];
        all.extend(files);
        let files: Vec<(&str, &str)> = all.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let out = check_salon(&files, success);
        assert!(out.contains(want), "{case}: missing\n{want}\nin\n{out}");
    }
}

#[test]
fn check_passes_on_a_good_folder() {
    switchboard()
        .arg("check")
        .arg(fixtures().join("transcripts"))
        .assert()
        .success()
        .stdout(contains("ok: no errors"));
}

/// `check` and `test` take one bot's folder as well as a flows folder, and a
/// bot's `tests/` is never read as a bot (its `---` separators are not node
/// files to "fix").
#[test]
fn check_and_test_take_a_bot_folder() {
    let shop = fixtures().join("transcripts/shop");
    let assert = switchboard().arg("check").arg(&shop).assert().success();
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(out.contains("ok: no errors"), "{out}");
    assert!(!out.contains("shop/tests") && !out.contains("---"), "{out}");

    switchboard()
        .arg("test")
        .arg(&shop)
        .assert()
        .success()
        .stdout(contains("ok      shop: order with a name"))
        .stdout(contains("3 passed, 0 failed"));
    switchboard()
        .args(["test", "--bot", "shop"])
        .arg(&shop)
        .assert()
        .success()
        .stdout(contains("3 passed, 0 failed"));
    switchboard()
        .args(["test", "--bot", "other"])
        .arg(&shop)
        .assert()
        .code(1)
        .stdout(contains("no bot `other`"));
    // `.` inside the bot folder: the id comes from the folder's real name.
    switchboard()
        .current_dir(&shop)
        .args(["test", "."])
        .assert()
        .success()
        .stdout(contains("ok      shop: stock from the API"));
}

/// The trap of issue 14: a bot folder whose tests hold `---` separators was
/// checked as a flows folder, `tests/` as a bot, with the hint to delete them.
#[test]
fn check_never_reads_tests_as_a_bot() {
    let flows = tempfile::tempdir().unwrap();
    let bot = flows.path().join("salon");
    copy_dir(&fixtures().join("transcripts/shop"), &bot);
    let out = |args: &[&Path], success: bool| {
        let assert = switchboard().arg("check").args(args).assert();
        let assert = if success {
            assert.success()
        } else {
            assert.code(1)
        };
        String::from_utf8(assert.get_output().stdout.clone()).unwrap()
    };
    for text in [out(&[&bot], true), out(&[flows.path()], true)] {
        assert!(
            !text.contains("---") && !text.contains("salon/tests"),
            "{text}"
        );
    }

    // Without its bot.yaml the folder is still a bot (its scripts and tests say
    // so), and the error is the missing file.
    std::fs::remove_file(bot.join("bot.yaml")).unwrap();
    let text = out(&[&bot], false);
    assert!(
        text.contains(&format!("error: no bot.yaml in {}", bot.display())),
        "{text}"
    );
    assert!(
        !text.contains("---") && !text.contains("salon/tests"),
        "{text}"
    );

    // A folder with neither bots nor bot files is not silently "ok".
    let empty = tempfile::tempdir().unwrap();
    let text = out(&[empty.path()], false);
    assert!(
        text.starts_with(&format!("error: no bots in {}", empty.path().display())),
        "{text}"
    );
    switchboard()
        .arg("test")
        .arg(empty.path())
        .assert()
        .code(1)
        .stdout(contains("error: no bots in"));

    // A `tests` folder among the bots is skipped, with a word about where tests go.
    std::fs::create_dir(empty.path().join("tests")).unwrap();
    std::fs::write(
        empty.path().join("tests/a.yaml"),
        "name: a\nsteps:\n  - user: hi\n---\nname: b\nsteps:\n  - user: hi\n",
    )
    .unwrap();
    copy_dir(
        &fixtures().join("transcripts/shop"),
        &empty.path().join("shop"),
    );
    let text = out(&[empty.path()], true);
    assert!(
        text.contains("warning: a folder named `tests` without a bot.yaml is not a bot: skipped"),
        "{text}"
    );
    assert!(!text.contains("---"), "{text}");
}

#[test]
fn graph_prints_mermaid_or_dot_and_names_the_bots_when_one_is_unknown() {
    let flows = fixtures().join("transcripts");
    let assert = switchboard()
        .args(["graph", "shop", "--flows"])
        .arg(&flows)
        .assert()
        .success();
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(out.starts_with("flowchart TD\n"), "{out}");
    for line in [
        "    n_main[\"main<br/>Welcome to the Corner Shop!\"]\n",
        "    n_stock[[\"stock<br/>script\"]]\n",
        "    entry_start --> n_main\n",
        "    entry_keywords -.->|\"menu\"| n_main\n",
        "    n_main -->|\"Order\"| n_ask_name\n",
        "    n_ask_name --> n_thanks\n",
        "    class n_main start_node\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }

    // By path, in DOT.
    switchboard()
        .args(["graph", "--format", "dot"])
        .arg(flows.join("shop"))
        .assert()
        .success()
        .stdout(predicates::str::starts_with("digraph \"shop\" {\n"))
        .stdout(contains("    \"main\" -> \"stock\" [label=\"Stock\"];\n"));

    switchboard()
        .args(["graph", "shpo", "--flows"])
        .arg(&flows)
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("error: no bot `shpo` in this flows folder"))
        .stderr(contains("hint: did you mean `shop`? the bots are: shop"));

    let broken = flows_with_broken("unknown-goto");
    switchboard()
        .args(["graph", "unknown-goto", "--flows"])
        .arg(broken.path())
        .assert()
        .code(1)
        .stderr(contains("unknown node `brows`"))
        .stderr(contains("bot `unknown-goto` does not load"));
}

#[test]
fn test_passes_on_good_transcripts() {
    switchboard()
        .arg("test")
        .arg(fixtures().join("transcripts"))
        .assert()
        .success()
        .stdout(contains("ok      shop: order with a name"))
        .stdout(contains("ok      shop: stock from the API"))
        .stdout(contains("3 passed, 0 failed"));
}

/// Runs `test` on the shop bot with only the failing test file `file`.
fn failing(file: &str) -> String {
    let flows = tempfile::tempdir().unwrap();
    let bot = flows.path().join("shop");
    copy_dir(&fixtures().join("transcripts/shop"), &bot);
    std::fs::remove_file(bot.join("tests/shop.yaml")).unwrap();
    std::fs::copy(
        fixtures().join("transcripts-failing").join(file),
        bot.join("tests").join(file),
    )
    .unwrap();
    let assert = switchboard()
        .args(["test", "--bot", "shop"])
        .arg(flows.path())
        .assert()
        .code(1);
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    out.replace(&format!("{}/", flows.path().display()), "")
}

#[test]
fn test_fails_with_the_right_message() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "wrong-text.yaml",
            &[
                "FAILED  shop: wrong text",
                "shop/tests/wrong-text.yaml:3: step 1 (user: \"hi\")",
                "1. contains \"Goodbye\"",
                "got:\n        1. \"Welcome to the Corner Shop!\\n1. Order\\n2. Stock\\n3. Hours\"",
            ],
        ),
        (
            "wrong-count.yaml",
            &[
                "step 3 (user: \"Amina\")",
                "expected 1 reply, got 2",
                "1. \"Thanks Amina!\"",
                "2. \"We will call you soon.\"",
            ],
        ),
        (
            "wrong-regex.yaml",
            &["FAILED  shop: wrong regex", "matches regex \"^Goodbye\""],
        ),
        (
            "wrong-vars.yaml",
            &["vars.name: expected \"Zoe\", got \"Amina\""],
        ),
        (
            "wrong-node.yaml",
            &["expected the conversation at node `thanks`, it is at `ask_name`"],
        ),
        (
            "unstubbed.yaml",
            &[
                "step 2 (user: \"2\")",
                "the script called GET https://api.shop.example/stock, which has no stub",
            ],
        ),
    ];
    for (file, wants) in cases {
        let out = failing(file);
        for want in wants {
            assert!(out.contains(want), "{file}: missing {want:?} in\n{out}");
        }
        assert!(out.contains("0 passed, 1 failed"), "{file}: {out}");
    }
}

#[test]
fn test_reports_a_broken_test_file_with_its_location() {
    let out = failing("bad-key.yaml");
    assert!(
        out.contains("shop/tests/bad-key.yaml:4:5: error: unknown key `bott` in a step"),
        "{out}"
    );
    assert!(out.contains("hint: did you mean `bot`?"), "{out}");
}

#[test]
fn test_fails_when_a_bot_does_not_load_or_there_are_no_tests() {
    let flows = flows_with_broken("unknown-goto");
    switchboard()
        .arg("test")
        .arg(flows.path())
        .assert()
        .code(1)
        .stdout(contains("unknown node `brows`"))
        .stdout(contains("bot `unknown-goto` does not load"));

    let flows = flows_with_broken("option-silent");
    switchboard()
        .arg("test")
        .arg(flows.path())
        .assert()
        .code(1)
        .stdout(contains("no transcript tests found"));

    switchboard()
        .args(["test", "--bot", "nope"])
        .arg(fixtures().join("transcripts"))
        .assert()
        .code(1)
        .stdout(contains("no bot `nope`"));
}

/// SPEC §11: `save_as` on a menu and `set` on options, checked and tested from
/// the command line; mistakes in them are located.
#[test]
fn save_as_and_set_remember_a_choice() {
    switchboard()
        .arg("check")
        .arg(fixtures().join("remember"))
        .assert()
        .success()
        // The one warning: no credentials, as for every fixture bot.
        .stdout(contains("warning: no `twilio:` section"))
        .stdout(contains("ok: no errors, 1 warning(s)"));
    switchboard()
        .arg("test")
        .arg(fixtures().join("remember"))
        .assert()
        .success()
        .stdout(contains("ok      salon: book a colour by label"))
        .stdout(contains("ok      salon: book a haircut by a match word"))
        .stdout(contains("2 passed, 0 failed"));

    let out = check("bad-set", false);
    for want in [
        "bad-set/menus.yaml:6:12: error: `set` must be a map of `name: value` lines, found a value",
        "6 |       set: price 25\n  |            ^",
        "hint: write the vars this option sets, such as `set: {price: 25}`",
        "bad-set/menus.yaml:9:14: error: `value` must be a text value, found a list",
        "2 error(s)",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

/// SPEC §11: a transcript may expect the bot's `error_reply`; the script's
/// error is then a note, and a step expecting something else still fails.
#[test]
fn test_accepts_a_step_that_expects_the_error_reply() {
    let assert = switchboard()
        .arg("test")
        .arg(fixtures().join("error-path"))
        .assert()
        .success();
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    let lab = fixtures().join("error-path/lab");
    let want = format!(
        "ok      lab: the lab is down, the patient is told to try later\n    \
         note: {}:5: step 2 (user: \"results\"): the flow failed and the contact got the error reply, as this step expects\n      \
         script error in {}:2: the lab system is down",
        lab.join("tests/lab-down.yaml").display(),
        lab.join("results.rhai").display()
    );
    assert!(out.contains(&want), "missing {want:?} in\n{out}");
    assert!(out.contains("1 passed, 0 failed"), "{out}");

    // The same step expecting the results fails, and says why the flow failed.
    let flows = tempfile::tempdir().unwrap();
    copy_dir(&lab, &flows.path().join("lab"));
    let test = flows.path().join("lab/tests/lab-down.yaml");
    let text = std::fs::read_to_string(&test).unwrap();
    let text = text.replace(
        "{exact: \"Sorry, we can't reach the lab right now. Please try again later.\"}",
        "Your results",
    );
    std::fs::write(&test, text).unwrap();
    let assert = switchboard().arg("test").arg(flows.path()).assert().code(1);
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    for want in [
        "FAILED  lab: the lab is down, the patient is told to try later",
        "lab-down.yaml:5: step 2 (user: \"results\")",
        "the flow failed, so the contact got the error reply:",
        "results.rhai:2: the lab system is down",
        "✗ 1. contains \"Your results\"",
        "0 passed, 1 failed",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains("note:"), "{out}");
}

#[test]
fn chat_through_stdin() {
    switchboard()
        .args(["chat", "shop", "--flows"])
        .arg(fixtures().join("transcripts"))
        .arg("--stubs")
        .arg(fixtures().join("transcripts/stubs.yaml"))
        .write_stdin("hi\n2\nyes\n/vars\n/reset\n1\n/quit\nnever sent\n")
        .assert()
        .success()
        // Piped lines are echoed, so the output reads as the conversation it was.
        .stdout(
            "chatting with shop (Corner Shop). Commands: /reset, /vars, /save FILE, /quit\n\
             you> hi\n\
             bot> Welcome to the Corner Shop!\n     1. Order\n     2. Stock\n     3. Hours\n\
             you> 2\n\
             bot> We have 2 items: tea\n\
             bot> Want one?\n\
             you> yes\n\
             bot> Great!\n\
             you> /vars\n\
             {\"items\":2}\n\
             you> /reset\n\
             (new conversation)\n\
             you> 1\n\
             bot> Welcome to the Corner Shop!\n     1. Order\n     2. Stock\n     3. Hours\n\
             you> /quit\n",
        );
}

/// A chat piped through `chat`, saved with `/save`, passes `switchboard test`:
/// every reply exact, the script's HTTP answer written as a stub.
#[test]
fn chat_save_writes_a_test_that_passes() {
    let flows = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("transcripts"), flows.path());
    let bot = flows.path().join("shop");
    std::fs::remove_dir_all(bot.join("tests")).unwrap();
    let saved = bot.join("tests/from-chat.yaml");
    switchboard()
        .args(["chat", "shop", "--flows"])
        .arg(flows.path())
        .arg("--stubs")
        .arg(flows.path().join("stubs.yaml"))
        .write_stdin("hi\n1\nx\nAmina\nmenu\nstock\nyes\n/save from-chat\n/save from-chat\n")
        .assert()
        .success()
        .stdout(contains(format!(
            "you> /save from-chat\n(saved 7 steps to {}: run it with `switchboard test {}`)\n",
            saved.display(),
            bot.display()
        )))
        .stdout(contains(format!(
            "(not saved: {} exists; `/save! from-chat` replaces it, or choose another name)",
            saved.display()
        )));
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.contains("name: \"from chat\"\n"), "{text}");
    assert!(
        text.contains("  - user: \"Amina\"\n    bot:\n      - {exact: \"Thanks Amina!\"}\n      - {exact: \"We will call you soon.\"}\n"),
        "{text}"
    );
    assert!(
        text.contains("\"GET https://api.shop.example/stock\": {status: 200, json: [{\"name\": \"tea\"}, {\"name\": \"milk\"}]}"),
        "{text}"
    );
    switchboard()
        .arg("test")
        .arg(&bot)
        .assert()
        .success()
        .stdout(contains("ok      shop: from chat"))
        .stdout(contains("1 passed, 0 failed"));
}

#[test]
fn chat_shows_flow_errors_on_stderr() {
    // Without a stub for the stock API, the script fails: error_reply + the error.
    let empty = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(empty.path(), "{}\n").unwrap();
    switchboard()
        .args(["chat", "shop", "--flows"])
        .arg(fixtures().join("transcripts"))
        .arg("--stubs")
        .arg(empty.path())
        .write_stdin("hi\n2\n")
        .assert()
        .success()
        .stdout(contains("bot> Sorry, something went wrong."))
        .stderr(contains("no stub for GET https://api.shop.example/stock"));
}

/// A stubs file is read within the bounds of a flow file (1 MiB), not whole.
#[test]
fn chat_refuses_an_oversized_stubs_file() {
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(big.path(), "#".repeat(1024 * 1024 + 1)).unwrap();
    switchboard()
        .args(["chat", "shop", "--flows"])
        .arg(fixtures().join("transcripts"))
        .arg("--stubs")
        .arg(big.path())
        .write_stdin("hi\n")
        .assert()
        .code(1)
        .stderr(contains(format!(
            "{}: error: this file is larger than 1 MiB",
            big.path().display()
        )));
}

#[test]
fn chat_refuses_a_bot_that_does_not_load() {
    let flows = flows_with_broken("unknown-goto");
    switchboard()
        .args(["chat", "unknown-goto", "--flows"])
        .arg(flows.path())
        .write_stdin("hi\n")
        .assert()
        .code(1)
        .stderr(contains("unknown node `brows`"));
}

#[test]
fn serve_without_public_url_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    let database = format!("sqlite://{}", dir.path().join("sb.db").display());
    let assert = switchboard()
        .env_remove("SWITCHBOARD_PUBLIC_URL")
        .env_remove("SWITCHBOARD_DRY_RUN")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database,
        ])
        .arg("--flows")
        .arg(&flows)
        // Without the refusal the server would run until killed here.
        .timeout(std::time::Duration::from_secs(30))
        .assert()
        .code(1)
        .stderr(contains("--public-url"))
        .stderr(contains("SWITCHBOARD_PUBLIC_URL"))
        .stderr(contains("--dry-run"))
        .stderr(contains("replayed"));
    // Refused before touching the database.
    drop(assert);
    assert!(!dir.path().join("sb.db").exists());
}

#[test]
fn serve_refuses_a_public_url_with_a_query_or_fragment() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    let database = format!("sqlite://{}", dir.path().join("sb.db").display());
    for url in [
        "https://bots.example.com/#",
        "https://bots.example.com/?x=1",
        "bots.example.com",
        "ftp://bots.example.com",
    ] {
        switchboard()
            .env_remove("SWITCHBOARD_DRY_RUN")
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &database,
            ])
            .args(["--public-url", url])
            .arg("--flows")
            .arg(&flows)
            .timeout(std::time::Duration::from_secs(30))
            .assert()
            .code(1)
            .stderr(contains("--public-url"));
    }
}

/// A database URL with a password in both places the SPEC names (SPEC §7).
const SECRET_URL: &str = "postgres://u:hunter2@127.0.0.1:1/db?password=hunter3";
const SECRETS: [&str; 3] = ["hunter2", "hunter3", "admin-hunter4"];

/// stdout and stderr of `switchboard ARGS` with secrets in the environment.
fn output_with_secrets(args: &[&str], database_url: &str) -> (bool, String) {
    let output = switchboard()
        .env("DATABASE_URL", database_url)
        .env("SWITCHBOARD_ADMIN_TOKEN", "admin-hunter4")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn assert_no_secret(text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "`{secret}` printed:\n{text}");
    }
}

#[test]
fn help_never_prints_a_secret_from_the_environment() {
    for command in [
        &["--help"][..],
        &["serve", "--help"],
        &["send", "--help"],
        &["migrate", "--help"],
    ] {
        let (ok, text) = output_with_secrets(command, SECRET_URL);
        assert!(ok, "{command:?}: {text}");
        assert!(
            text.contains("DATABASE_URL") || command.len() == 1,
            "{text}"
        );
        assert_no_secret(&text);
    }
}

#[test]
fn migrate_never_prints_the_database_password() {
    // Nothing listens on port 1: the error must not quote the URL's password.
    let (ok, text) = output_with_secrets(&["migrate"], SECRET_URL);
    assert!(!ok, "{text}");
    assert_no_secret(&text);
    // A URL that does not parse as one is not printed with its password either.
    let (ok, text) =
        output_with_secrets(&["migrate"], "mysql://u:hunter2@[bad/db?password=hunter3");
    assert!(!ok, "{text}");
    assert_no_secret(&text);
}

/// On Postgres (when `DATABASE_URL` is set), a successful `migrate` names the
/// database it migrated without the password.
#[test]
fn migrate_success_names_the_database_without_its_password() {
    let Ok(admin_url) = std::env::var("DATABASE_URL") else {
        eprintln!("NOTE: DATABASE_URL is not set: the Postgres migrate test was SKIPPED.");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let name = format!("sb_cli_{}_{}", std::process::id(), rand::random::<u32>());
    let admin = runtime.block_on(async {
        let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin
    });
    // The test server trusts local connections: the password is not checked.
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_password(Some("hunter2")).unwrap();
    url.set_path(&name);
    url.query_pairs_mut().append_pair("password", "hunter3");
    let (ok, text) = output_with_secrets(&["migrate"], url.as_str());
    runtime.block_on(async {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
    });
    assert!(ok, "{text}");
    assert!(text.contains("migrations applied to"), "{text}");
    assert!(text.contains(&name), "{text}");
    assert_no_secret(&text);
}
