//! Loading bots from temporary folders: good bots, each error and warning with
//! its exact file, line, column and hint, and whole flows folders.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::domain::MessageSender;
use crate::flow::TemplateContext;
use crate::message::UserInfo;
use crate::script::Limits;

const TWILIO: &str = "twilio:\n  account_sid: AC1\n  auth_token: tok\n  from: \"whatsapp:+1\"\n";
const MAIN: &str = "main:\n  say: hi\n";

fn engine() -> ScriptEngine {
    ScriptEngine::new(Limits::default())
}

fn strict() -> LoadOptions {
    LoadOptions {
        allow_missing_credentials: false,
        env: Some(HashMap::new()),
    }
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

/// A temp flows folder holding one bot folder `id` with `files`.
fn bot_folder(id: &str, files: &[(&str, &str)]) -> (TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(id);
    fs::create_dir(&dir).unwrap();
    write(&dir, files);
    (root, dir)
}

fn load_with(
    files: &[(&str, &str)],
    options: &LoadOptions,
) -> (PathBuf, Result<Bot, Vec<Diagnostic>>) {
    let (root, dir) = bot_folder("shop", files);
    let result = load_bot(&dir, &engine(), options);
    // Keep `dir` meaningful for comparisons after the temp folder is gone.
    drop(root);
    (dir, result)
}

fn load(files: &[(&str, &str)]) -> Result<Bot, Vec<Diagnostic>> {
    load_with(files, &strict()).1
}

/// One expected diagnostic; `file` is relative to the bot folder ("" = the folder).
struct Want {
    file: &'static str,
    line: usize,
    column: usize,
    message: &'static str,
    hint: Option<&'static str>,
}

fn want(
    file: &'static str,
    line: usize,
    column: usize,
    message: &'static str,
    hint: Option<&'static str>,
) -> Want {
    Want {
        file,
        line,
        column,
        message,
        hint,
    }
}

fn assert_has(dir: &Path, diagnostics: &[Diagnostic], severity: Severity, want: &Want, case: &str) {
    let found = diagnostics.iter().find(|d| d.message == want.message);
    let Some(d) = found else {
        panic!(
            "{case}: no diagnostic `{}` among:\n{}",
            want.message,
            render(diagnostics)
        );
    };
    let file = d.file.strip_prefix(dir).unwrap_or(&d.file);
    assert_eq!(file, Path::new(want.file), "{case}: file of {d}");
    assert_eq!(
        (d.line, d.column),
        (want.line, want.column),
        "{case}: position of {d}"
    );
    assert_eq!(d.severity, severity, "{case}: severity of {d}");
    if let Some(hint) = want.hint {
        assert_eq!(d.hint.as_deref(), Some(hint), "{case}: hint of {d}");
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

/// Bot files as (name, text) pairs.
type Files = Vec<(&'static str, String)>;

/// Loads each case's files and finds its one expected error among what the
/// load reported.
fn assert_errors(cases: Vec<(&str, Files, Want)>) {
    for (case, files, want) in cases {
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let (dir, result) = load_with(&files, &strict());
        let diagnostics = match result {
            Ok(bot) => panic!("{case}: loaded, warnings:\n{}", render(&bot.warnings)),
            Err(d) => d,
        };
        assert_has(&dir, &diagnostics, Severity::Error, &want, case);
    }
}

fn bot_yaml(extra: &str) -> String {
    format!("{TWILIO}{extra}")
}

#[test]
fn errors_are_located_with_hints() {
    let cases: Vec<(&str, Files, Want)> = vec![
        (
            "yaml syntax",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  say: hi\n   goto: x\n".into())],
            want("menus.yaml", 3, 8, "invalid YAML: mapping values are not allowed in this context", None),
        ),
        (
            "unknown key in bot.yaml, close",
            vec![("bot.yaml", bot_yaml("nmae: Shop\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 5, 1, "unknown key `nmae` in bot.yaml", Some("did you mean `name`?")),
        ),
        (
            "unknown key in bot.yaml, far",
            vec![("bot.yaml", bot_yaml("colour: red\n")), ("menus.yaml", MAIN.into())],
            want(
                "bot.yaml",
                5,
                1,
                "unknown key `colour` in bot.yaml",
                Some("allowed keys in bot.yaml: `name`, `start`, `session_timeout`, `error_reply`, `keywords`, `opt_out`, `twilio`, `http`, `vars`, `menu_style`, `read_receipts`, `templates`, `outbound`, `handoff_timeout`, `handoff_notify`, `handoff_secret`"),
            ),
        ),
        (
            "unknown key in opt_out",
            vec![("bot.yaml", bot_yaml("opt_out:\n  stpo: [x]\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 6, 3, "unknown key `stpo` in `opt_out:`", Some("did you mean `stop`?")),
        ),
        (
            "opt_out neither off nor a map",
            vec![("bot.yaml", bot_yaml("opt_out: maybe\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 5, 10, "`opt_out` must be `off` or a map of settings, found `maybe`", None),
        ),
        (
            "opt_out word in two lists",
            vec![
                ("bot.yaml", bot_yaml("opt_out:\n  stop: [STOP, quit]\n  start: [Quit]\n")),
                ("menus.yaml", MAIN.into()),
            ],
            want(
                "bot.yaml",
                7,
                11,
                "`quit` is in both `opt_out.stop` (line 6) and `opt_out.start`",
                Some("a word can only do one thing: keep it in one of the lists"),
            ),
        ),
        (
            "opt_out word in a default list",
            vec![("bot.yaml", bot_yaml("opt_out:\n  start: [stop]\n")), ("menus.yaml", MAIN.into())],
            want(
                "bot.yaml",
                6,
                11,
                "`stop` is also one of the default `opt_out.stop` words",
                Some("a word can only do one thing: write `stop:` under `opt_out:` with the words you want there"),
            ),
        ),
        (
            "empty opt_out word",
            vec![("bot.yaml", bot_yaml("opt_out:\n  help: [\"\"]\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 6, 10, "an empty word in `opt_out.help`", None),
        ),
        (
            "opt_out reply that is a list",
            vec![("bot.yaml", bot_yaml("opt_out:\n  help_reply: [a, b]\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 6, 15, "`help_reply` must be a text value, found a list", None),
        ),
        (
            "unknown key in twilio",
            vec![
                ("bot.yaml", "twilio:\n  acount_sid: AC1\n  auth_token: tok\n  from: x\n".into()),
                ("menus.yaml", MAIN.into()),
            ],
            want("bot.yaml", 2, 3, "unknown key `acount_sid` in `twilio:`", Some("did you mean `account_sid`?")),
        ),
        (
            "unknown key in http",
            vec![("bot.yaml", bot_yaml("http:\n  alow: [a.example]\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 6, 3, "unknown key `alow` in `http:`", Some("did you mean `allow`?")),
        ),
        (
            "unknown node key",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  sya: hi\n".into())],
            want("menus.yaml", 2, 3, "unknown key `sya` in node `main`", Some("did you mean `say`?")),
        ),
        (
            "unknown option key",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", "main:\n  options:\n    - label: A\n      goto: main\n      lable: x\n".into()),
            ],
            want("menus.yaml", 5, 7, "unknown key `lable` in option 1", Some("did you mean `label`?")),
        ),
        (
            "unknown goto",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", "main:\n  say: hi\n  goto: brows\nbrowse:\n  say: x\n".into()),
            ],
            want("menus.yaml", 3, 9, "unknown node `brows` in goto", Some("did you mean `browse`?")),
        ),
        (
            "unknown option goto",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", "main:\n  options:\n    - label: Browse\n      goto: nowhere\n".into()),
            ],
            want(
                "menus.yaml",
                4,
                13,
                "unknown node `nowhere` in goto of option `Browse`",
                Some("nodes of this bot: `main`"),
            ),
        ),
        (
            "unknown keyword target",
            vec![("bot.yaml", bot_yaml("keywords:\n  Menu: mian\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 6, 9, "unknown node `mian` for keyword `menu`", Some("did you mean `main`?")),
        ),
        (
            "missing start",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "home:\n  say: hi\n".into())],
            want(
                "bot.yaml",
                0,
                0,
                "no node `main` to start at",
                Some("add a node named `main`, or set `start:` in bot.yaml (e.g. `start: home`)"),
            ),
        ),
        (
            "unknown start",
            vec![("bot.yaml", bot_yaml("start: hom\n")), ("menus.yaml", "home:\n  say: hi\n".into())],
            want("bot.yaml", 5, 8, "unknown start node `hom`", Some("did you mean `home`?")),
        ),
        (
            "duplicate node in two files",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("a.yaml", "main:\n  say: one\n".into()),
                ("menus.yml", "other:\n  say: x\nmain:\n  say: two\n".into()),
            ],
            want(
                "menus.yml",
                3,
                1,
                "node `main` is defined twice: in a.yaml:1:1 and in menus.yml",
                Some("node names are unique within a bot (a .rhai file's node is named after the file): rename one"),
            ),
        ),
        (
            "duplicate node in one file",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  say: one\nmain:\n  say: two\n".into())],
            want("menus.yaml", 3, 1, "duplicate key `main` (first defined at line 1)", Some("remove one of them, or rename it")),
        ),
        (
            "goto loop",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", "main:\n  say: hi\n  goto: b\nb:\n  say: there\n  goto: main\n".into()),
            ],
            want("menus.yaml", 6, 9, "`goto` loop without waiting: b → main → b", None),
        ),
        (
            "goto to itself",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  goto: main\n".into())],
            want("menus.yaml", 2, 9, "`goto` loop without waiting: main → main", None),
        ),
        (
            "bad regex",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", "main:\n  say: Name?\n  save_as: name\n  validate: \"[a-z\"\n".into()),
            ],
            want("menus.yaml", 4, 14, "invalid regex in `validate`: unclosed character class", None),
        ),
        (
            "bad template",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  say: \"Hi {{ name }\"\n".into())],
            want(
                "menus.yaml",
                2,
                20,
                "template error in `say`: syntax error: unexpected `}`, expected end of variable block",
                Some("placeholders look like `{{ name }}` or `{{ user.name }}`"),
            ),
        ),
        (
            "bad template in a block",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", "main:\n  say: hi\n  invalid: |\n    Sorry.\n    {{ x | nosuch }}\n".into()),
            ],
            want("menus.yaml", 5, 12, "template error in `invalid`: unknown filter: filter nosuch is unknown", None),
        ),
        (
            "bad session_timeout",
            vec![("bot.yaml", bot_yaml("session_timeout: 30 minutes\n")), ("menus.yaml", MAIN.into())],
            want(
                "bot.yaml",
                5,
                18,
                "invalid session_timeout `30 minutes`: the unit must be s, m, h or d",
                Some("write a whole number and a unit: `30s`, `30m`, `2h` or `1d`"),
            ),
        ),
        (
            "missing credentials var",
            vec![
                ("bot.yaml", "twilio:\n  account_sid: AC1\n  auth_token: ${SHOP_TOKEN}\n  from: x\n".into()),
                ("menus.yaml", MAIN.into()),
            ],
            want(
                "bot.yaml",
                3,
                15,
                "SHOP_TOKEN is not set: export it, or run with --dry-run",
                Some("or give it a default: `${SHOP_TOKEN:-value}`"),
            ),
        ),
        (
            "unset var outside twilio",
            vec![("bot.yaml", bot_yaml("name: Shop ${SHOP_NAME}\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 5, 12, "SHOP_NAME is not set (used in `name`)", None),
        ),
        (
            "bad interpolation",
            vec![("bot.yaml", bot_yaml("name: ${SHOP-x}\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 5, 7, "`${SHOP-x}` is not a valid variable reference", None),
        ),
        (
            "no twilio section",
            vec![("bot.yaml", "name: Shop\n".into()), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 0, 0, "no `twilio:` section: this bot has no credentials to send messages with", None),
        ),
        (
            "no auth token",
            vec![("bot.yaml", "twilio:\n  account_sid: AC1\n  from: x\n".into()), ("menus.yaml", MAIN.into())],
            want(
                "bot.yaml",
                1,
                1,
                "no `twilio.auth_token`: this bot cannot send messages",
                Some("add `auth_token: ${SHOP_TWILIO_AUTH_TOKEN}` under `twilio:`, or run with --dry-run"),
            ),
        ),
        (
            "two senders",
            vec![("bot.yaml", bot_yaml("  messaging_service_sid: MG1\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 5, 3, "`from` and `messaging_service_sid` are both set", None),
        ),
        (
            "bad api_base",
            vec![("bot.yaml", bot_yaml("  api_base: api.twilio.com\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 5, 13, "invalid api_base `api.twilio.com`: it is not a URL", None),
        ),
        (
            "bad max_per_second",
            vec![("bot.yaml", bot_yaml("  max_per_second: 0\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 5, 19, "max_per_second must be a whole number above 0, found `0`", None),
        ),
        (
            "bad allowed host",
            vec![("bot.yaml", bot_yaml("http:\n  allow: [\"https://api.x.example/v1\"]\n")), ("menus.yaml", MAIN.into())],
            want(
                "bot.yaml",
                6,
                11,
                "`https://api.x.example/v1` is not a host name or IP address",
                Some("write just the host: `api.x.example`"),
            ),
        ),
        (
            "keyword twice",
            vec![("bot.yaml", bot_yaml("keywords:\n  menu: main\n  MENU: main\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 7, 3, "keyword `menu` is listed twice (first at line 6)", None),
        ),
        (
            "anchors",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  say: &greet hi\nother:\n  say: *greet\n".into())],
            want(
                "menus.yaml",
                2,
                8,
                "YAML anchors are not supported",
                Some("anchors (`&name`) and aliases (`*name`) are not supported: repeat the value instead"),
            ),
        ),
        (
            "validate without save_as",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  say: hi\n  validate: x\n".into())],
            want("menus.yaml", 3, 3, "`validate` without `save_as` in node `main`", None),
        ),
        (
            "media not a URL",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  say: hi\n  media: car.jpg\n".into())],
            want("menus.yaml", 3, 10, "media `car.jpg` is not an http(s) URL", None),
        ),
        (
            "save_as user",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  say: hi\n  save_as: user\n".into())],
            want("menus.yaml", 3, 12, "`save_as: user` would hide `user` in templates", None),
        ),
        (
            "option without label",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  options:\n    - goto: main\n".into())],
            want("menus.yaml", 3, 7, "option 1 has no `label`", None),
        ),
        (
            "option as a plain string",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  options:\n    - Browse\n".into())],
            want("menus.yaml", 3, 7, "option 1 must be a map with a `label`", Some("write `- label: Browse`")),
        ),
        (
            "say as a map",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  say:\n    a: b\n".into())],
            want("menus.yaml", 3, 5, "`say` must be a text value, found a map", Some("quote the text if it contains `: `")),
        ),
        (
            "empty goto",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main:\n  say: hi\n  goto:\n".into())],
            want(
                "menus.yaml",
                3,
                3,
                "`goto` must be a text value, found nothing",
                Some("write a value after the `:`, or remove the key"),
            ),
        ),
        (
            "node not a map",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", "main: hello\n".into())],
            want("menus.yaml", 1, 7, "`main` must be a map of `key: value` lines, found a value", None),
        ),
        (
            "node name with a space",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", format!("{MAIN}two words:\n  say: x\n"))],
            want("menus.yaml", 3, 1, "`two words` is not a valid node name", None),
        ),
        (
            "bot.yml",
            vec![("bot.yaml", bot_yaml("")), ("bot.yml", "name: x\n".into()), ("menus.yaml", MAIN.into())],
            want("bot.yml", 0, 0, "settings are read from `bot.yaml`, not `bot.yml`", Some("rename it to bot.yaml")),
        ),
    ];
    assert_errors(cases);
}

#[test]
fn warnings_do_not_block_loading() {
    let cases: Vec<(&str, String, String, Want)> = vec![
        (
            "unreachable node",
            bot_yaml(""),
            format!("{MAIN}lost:\n  say: x\n"),
            want(
                "menus.yaml",
                3,
                1,
                "node `lost` is never reached",
                Some("no goto, keyword or script `go_to` leads here from `main`: link to it, or remove it"),
            ),
        ),
        (
            "option without goto and say",
            bot_yaml(""),
            "main:\n  options:\n    - label: Bye\n".into(),
            want(
                "menus.yaml",
                3,
                7,
                "option `Bye` has no goto and no say: choosing it ends the conversation silently",
                Some("add a `say` (a last message) or a `goto`"),
            ),
        ),
        (
            "keyword equals a label",
            bot_yaml("keywords:\n  menu: main\n"),
            "main:\n  options:\n    - label: Shop\n      say: s\n    - label: Menu\n      goto: main\n".into(),
            want(
                "menus.yaml",
                5,
                14,
                "keyword `menu` also matches option 2 of `main`",
                Some("keywords win: answering `menu` here goes to `main`; rename the keyword or drop `menu` from this option"),
            ),
        ),
        (
            "keyword equals a match word",
            bot_yaml("keywords:\n  help: main\n"),
            "main:\n  options:\n    - label: Support\n      match: [agent, help]\n      say: s\n".into(),
            want("menus.yaml", 4, 22, "keyword `help` also matches option 1 of `main`", None),
        ),
        (
            "keyword equals a number",
            bot_yaml("keywords:\n  \"1\": main\n"),
            "main:\n  options:\n    - label: Support\n      say: s\n".into(),
            want("menus.yaml", 3, 14, "keyword `1` also matches option 1 of `main`", None),
        ),
        (
            "keyword is a stop word",
            bot_yaml("keywords:\n  Stop: main\n"),
            MAIN.into(),
            want(
                "bot.yaml",
                6,
                3,
                "keyword `stop` is an opt-out `stop` word",
                Some("the stop word wins: `stop` opts the contact out and never goes to `main`; rename the keyword"),
            ),
        ),
        (
            "option label is a stop word",
            bot_yaml(""),
            "main:\n  options:\n    - label: Unsubscribe\n      say: s\n".into(),
            want(
                "menus.yaml",
                3,
                14,
                "answer `unsubscribe` of option 1 of `main` is an opt-out `stop` word",
                Some("opt-out words are checked first: answering `unsubscribe` opts the contact out instead of choosing this option; change the label or `match` word"),
            ),
        ),
        (
            "match word is a help word",
            bot_yaml(""),
            "main:\n  options:\n    - label: Support\n      match: [help]\n      say: s\n".into(),
            want(
                "menus.yaml",
                4,
                15,
                "answer `help` of option 1 of `main` is an opt-out `help` word",
                Some("opt-out words are checked first: answering `help` sends `opt_out.help_reply` instead of choosing this option; change the label or `match` word"),
            ),
        ),
        (
            "match word is a custom stop word",
            bot_yaml("opt_out:\n  stop: [quit]\n"),
            "main:\n  options:\n    - label: Leave\n      match: [Quit]\n      say: s\n".into(),
            want("menus.yaml", 4, 15, "answer `quit` of option 1 of `main` is an opt-out `stop` word", None),
        ),
        (
            "two options share an answer",
            bot_yaml(""),
            "main:\n  options:\n    - label: Yes\n      say: y\n    - label: OK\n      match: [yes]\n      say: k\n".into(),
            want(
                "menus.yaml",
                6,
                15,
                "answer `yes` matches options 1 and 2 of `main`",
                Some("the first one wins, so option 2 cannot be chosen with `yes`"),
            ),
        ),
        (
            "options, save_as and goto",
            bot_yaml(""),
            "main:\n  save_as: x\n  goto: main\n  options:\n    - label: A\n      say: a\n".into(),
            want(
                "menus.yaml",
                3,
                9,
                "node `main` has both `options` and `goto`: the `goto` is never used",
                Some("the chosen option decides where to go: give each option its own `goto`"),
            ),
        ),
        (
            "option value without save_as",
            bot_yaml(""),
            "main:\n  options:\n    - label: A\n      value: a\n      goto: main\n".into(),
            want(
                "menus.yaml",
                4,
                7,
                "option 1 has a `value`, but node `main` has no `save_as`: the value is never stored",
                Some("add `save_as: NAME` to node `main` to keep the chosen option's value in `{{ NAME }}`"),
            ),
        ),
        (
            "options and goto",
            bot_yaml(""),
            "main:\n  options:\n    - label: A\n      say: a\n  goto: main\n".into(),
            want("menus.yaml", 5, 9, "node `main` has both `options` and `goto`: the `goto` is never used", None),
        ),
        (
            "unknown user field",
            bot_yaml(""),
            "main:\n  say: \"Hi {{ user.nmae }}\"\n".into(),
            want("menus.yaml", 2, 15, "`user.nmae` is always empty", Some("did you mean `user.name`?")),
        ),
        (
            "node that does nothing",
            bot_yaml(""),
            "main:\n  say: hi\n  goto: end\nend: {}\n".into(),
            want("menus.yaml", 4, 1, "node `end` does nothing: it sends nothing and ends the conversation", None),
        ),
        (
            "subfolder with nodes",
            bot_yaml(""),
            MAIN.into(),
            want("more", 0, 0, "files in the subfolder `more/` are not loaded", None),
        ),
    ];
    for (case, bot, menus, want) in cases {
        let files = [
            ("bot.yaml", bot.as_str()),
            ("menus.yaml", menus.as_str()),
            ("more/extra.yaml", "x: [\n"),
        ];
        let (dir, result) = load_with(&files, &strict());
        let bot = match result {
            Ok(bot) => bot,
            Err(d) => panic!("{case}: did not load:\n{}", render(&d)),
        };
        assert_has(&dir, &bot.warnings, Severity::Warning, &want, case);
    }
}

/// An option's `value` and `set`, and `validate` next to `options`: each
/// mistake located, with a hint that says what to write instead.
#[test]
fn option_value_and_set_errors_are_located() {
    let deep = format!("{}1{}", "[".repeat(20), "]".repeat(20));
    let big = "x".repeat(70 * 1024);
    let option =
        |lines: &str| format!("main:\n  options:\n    - label: A\n{lines}      goto: main\n");
    let cases: Vec<(&str, String, Want)> = vec![
        (
            "validate with options and save_as",
            "main:\n  save_as: size\n  validate: \"[a-z]+\"\n  options:\n    - label: Small\n      goto: main\n".into(),
            want(
                "menus.yaml",
                3,
                3,
                "`validate` cannot be used with `options` in node `main`",
                Some("an answer must choose an option, so there is nothing to validate: remove `validate`; to check a typed answer, ask for it in a node of its own with `save_as` and `validate`"),
            ),
        ),
        (
            "validate with options, no save_as",
            "main:\n  validate: x\n  options:\n    - label: Small\n      goto: main\n".into(),
            want("menus.yaml", 2, 3, "`validate` cannot be used with `options` in node `main`", None),
        ),
        (
            "set not a map",
            option("      set: price\n"),
            want(
                "menus.yaml",
                4,
                12,
                "`set` must be a map of `name: value` lines, found a value",
                Some("write the vars this option sets, such as `set: {price: 25}`"),
            ),
        ),
        (
            "set left empty",
            option("      set:\n"),
            want("menus.yaml", 4, 7, "`set` must be a map of `name: value` lines, found nothing", None),
        ),
        (
            "set var without a value",
            option("      set:\n        price:\n"),
            want(
                "menus.yaml",
                5,
                9,
                "`price` in `set` has no value",
                Some("write the value after the `:`, such as `price: 25`, or `price: \"\"` for an empty text"),
            ),
        ),
        (
            "set var not a name",
            option("      set: {2x: 1}\n"),
            want("menus.yaml", 4, 13, "`2x` is not a valid variable name", None),
        ),
        (
            "set user",
            option("      set: {user: x}\n"),
            want("menus.yaml", 4, 13, "`set: {user: ...}` would hide `user` in templates", None),
        ),
        (
            "set template",
            option("      set: {note: \"Hi {{ user.name }}\"}\n"),
            want(
                "menus.yaml",
                4,
                23,
                "`{{ }}` is not filled in inside `set`: the text is stored as written",
                Some("store plain values here (`price: 25`), and show vars with `{{ name }}` in a `say`; to compute a value, use a script node"),
            ),
        ),
        (
            "set template in a list",
            option("      set:\n        notes:\n          - plain\n          - \"{% if x %}y{% endif %}\"\n"),
            want("menus.yaml", 7, 14, "`{{ }}` is not filled in inside `set`: the text is stored as written", None),
        ),
        (
            "set the save_as var",
            "main:\n  save_as: size\n  options:\n    - label: Small\n      set: {size: 1}\n      goto: main\n".into(),
            want(
                "menus.yaml",
                5,
                13,
                "option 1 sets `size`, which `save_as: size` also sets",
                Some("to choose what `save_as` stores, write `value: ...` on the option; or rename `size` in `set`"),
            ),
        ),
        (
            "value a list",
            option("      value: [a, b]\n"),
            want("menus.yaml", 4, 14, "`value` must be a text value, found a list", None),
        ),
        (
            "value empty",
            option("      value: \"\"\n"),
            want("menus.yaml", 4, 14, "`value` is empty", None),
        ),
        (
            "value template",
            option("      value: \"{{ name }}\"\n"),
            want("menus.yaml", 4, 15, "`{{ }}` is not filled in inside `value`: the text is stored as written", None),
        ),
        (
            "unknown option key",
            option("      vaule: a\n"),
            want("menus.yaml", 4, 7, "unknown key `vaule` in option 1", Some("did you mean `value`?")),
        ),
        (
            "set nested too deep",
            option(&format!("      set: {{deep: {deep}}}\n")),
            want(
                "menus.yaml",
                4,
                35, // the 17th `[`: the bound is 16 levels
                "this value is nested more than 16 levels deep",
                Some("vars set by an option are short values such as `price: 25`; build bigger data in a script node"),
            ),
        ),
        (
            "set too big",
            option(&format!("      set: {{note: {big}}}\n")),
            want(
                "menus.yaml",
                4,
                7,
                "option 1 stores 71 KiB in vars; a conversation's vars hold at most 64 KiB",
                Some("keep long texts in the `say` that shows them, and store only short values"),
            ),
        ),
    ];
    for (case, menus, want) in cases {
        let files = [("bot.yaml", bot_yaml("")), ("menus.yaml", menus)];
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let (dir, result) = load_with(&files, &strict());
        let diagnostics = match result {
            Ok(bot) => panic!("{case}: loaded, warnings:\n{}", render(&bot.warnings)),
            Err(d) => d,
        };
        assert_has(&dir, &diagnostics, Severity::Error, &want, case);
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        assert_eq!(
            errors,
            1,
            "{case}: one error expected:\n{}",
            render(&diagnostics)
        );
    }
}

/// A hostile file nesting a `set` value 100,000 deep is refused by the YAML
/// reader's own recursion limit, located, before anything walks the value.
#[test]
fn a_hostile_set_value_is_refused_without_a_crash() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let menus = format!(
        "main:\n  options:\n    - label: A\n      set: {{deep: {deep}}}\n      goto: main\n"
    );
    let errors = load(&[("bot.yaml", &bot_yaml("")), ("menus.yaml", &menus)]).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|d| d.line == 4 && d.message == "invalid YAML: recursion limit exceeded"),
        "{:?}",
        errors.iter().map(|d| &d.message).collect::<Vec<_>>()
    );
}

#[test]
fn option_values_and_sets_load() {
    let menus = r#"
main:
  say: Which service?
  save_as: service
  options:
    - label: " Haircut "
      set: {price: 25, note: "25", ok: true, list: [a, 2], map: {k: v}}
      goto: main
    - label: Colour
      value: 60
      goto: main
    - label: Trim
      value: "007"
      goto: main
"#;
    let bot = load(&[("bot.yaml", &bot_yaml("")), ("menus.yaml", menus)])
        .unwrap_or_else(|d| panic!("{}", render(&d)));
    assert!(bot.warnings.is_empty(), "{}", render(&bot.warnings));
    let Some(Node::Menu(main)) = bot.node("main") else {
        panic!("main is not a menu node");
    };
    let values: Vec<&serde_json::Value> = main.options.iter().map(|o| &o.value).collect();
    assert_eq!(values, [&json!("Haircut"), &json!(60), &json!("007")]);
    assert_eq!(
        serde_json::Value::Object(main.options[0].set.clone()),
        json!({"price": 25, "note": "25", "ok": true, "list": ["a", 2], "map": {"k": "v"}})
    );
    assert!(main.options[1].set.is_empty());
}

#[test]
fn every_error_is_reported_at_once() {
    let errors = load(&[
        ("bot.yaml", &bot_yaml("session_timeout: soon\nnmae: x\n")),
        ("a.yaml", "main:\n  sya: hi\n  goto: nowhere\n"),
        ("b.yaml", "b:\n  say: \"{{ x\"\n"),
    ])
    .unwrap_err();
    let errors: Vec<&str> = errors
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(
        errors,
        [
            "unknown key `sya` in node `main`",
            "unknown node `nowhere` in goto",
            "template error in `say`: syntax error: unexpected end of input, expected end of variable block",
            "invalid session_timeout `soon`: the unit must be s, m, h or d",
            "unknown key `nmae` in bot.yaml",
        ]
    );
}

#[test]
fn a_full_bot_loads() {
    let bot = r#"
name: Shop
start: home
session_timeout: 2h
keywords:
  " Menu ": home
  help: help
twilio:
  account_sid: ${SID}
  auth_token: ${TOKEN}
  messaging_service_sid: MG123
  api_base: ${API:-http://127.0.0.1:9999/}
  max_per_second: 5
http:
  allow: [API.Shop.example, 10.0.0.2]
vars: [age]
"#;
    let menus = r#"
home:
  say:
    - "Hello {{ user.name }}!"
    - |
      Pick one:
  media: https://shop.example/logo.png
  options:
    - label: Ask name
      match: [NAME, " me "]
      goto: ask
    - label: Bye
      say: Bye!
  invalid: Reply 1 or 2.
ask:
  say: What's your name?
  save_as: name
  validate: "[A-Za-z]+"
  invalid: Letters only.
  goto: greet
"#;
    let help = "help:\n  say: Send menu.\n  goto: home\ngreet:\n  say: \"Nice to meet you, {{ name }}! You are {{ age }}.\"\n  goto: home\n";
    let options = LoadOptions {
        allow_missing_credentials: false,
        env: Some(HashMap::from([
            ("SID".into(), "AC9".into()),
            ("TOKEN".into(), "tok".into()),
        ])),
    };
    let (_, result) = load_with(
        &[("bot.yaml", bot), ("menus.yaml", menus), ("help.yml", help)],
        &options,
    );
    let bot = result.unwrap_or_else(|d| panic!("{}", render(&d)));

    assert_eq!(bot.id.as_str(), "shop");
    assert_eq!(bot.name, "Shop");
    assert_eq!(bot.start, "home");
    assert_eq!(bot.session_timeout, Duration::from_secs(7200));
    assert_eq!(
        bot.error_reply,
        "Sorry, something went wrong. Send *menu* to start again."
    );
    assert_eq!(
        bot.keywords,
        HashMap::from([
            ("menu".to_owned(), "home".to_owned()),
            ("help".to_owned(), "help".to_owned())
        ])
    );
    assert_eq!(bot.twilio.account_sid.as_deref(), Some("AC9"));
    assert_eq!(
        bot.twilio.auth_token.as_ref().map(|t| t.expose()),
        Some("tok")
    );
    assert_eq!(
        bot.twilio.sender,
        Some(MessageSender::MessagingService("MG123".into()))
    );
    assert_eq!(bot.twilio.api_base, "http://127.0.0.1:9999");
    assert_eq!(bot.twilio.max_per_second, Some(5));
    assert_eq!(*bot.http_allow, ["api.shop.example", "10.0.0.2"]);
    assert_eq!(bot.nodes.len(), 4);
    assert!(bot.warnings.is_empty(), "{}", render(&bot.warnings));

    let Some(Node::Menu(home)) = bot.node("home") else {
        panic!("home is not a menu node");
    };
    assert_eq!(home.origin.line, 2);
    assert_eq!(home.say.len(), 2);
    assert_eq!(home.say[1].source, "Pick one:");
    assert_eq!(home.media[0].source, "https://shop.example/logo.png");
    assert_eq!(home.options[0].matches, ["name", "me"]);
    assert_eq!(
        home.invalid.as_ref().map(|t| t.source.as_str()),
        Some("Reply 1 or 2.")
    );
    for (answer, chosen) in [
        (" NAME ", Some(0)),
        ("2", Some(1)),
        ("bye", Some(1)),
        ("ask NAMES", None),
        ("3", None),
        ("", None),
    ] {
        assert_eq!(home.choose(answer).map(|(i, _)| i), chosen, "{answer:?}");
    }

    let Some(Node::Menu(ask)) = bot.node("ask") else {
        panic!("ask is not a menu node");
    };
    assert!(ask.waits());
    assert_eq!(ask.save_as.as_deref(), Some("name"));
    let validate = ask.validate.as_ref().unwrap();
    assert!(validate.is_match("Amina"));
    assert!(!validate.is_match("Amina1"));
    assert!(!validate.is_match("x Amina!"));

    let user = UserInfo {
        phone: "+1555".into(),
        name: "Bo".into(),
        channel: "whatsapp".into(),
    };
    let vars = json!({"name": "Amina", "age": 30.0});
    let ctx = TemplateContext {
        vars: vars.as_object().unwrap(),
        user: &user,
        message: None,
    };
    assert_eq!(bot.render(&home.say[0], &ctx).unwrap(), "Hello Bo!");
    let Some(Node::Menu(greet)) = bot.node("greet") else {
        panic!("greet is not a menu node");
    };
    assert_eq!(
        bot.render(&greet.say[0], &ctx).unwrap(),
        "Nice to meet you, Amina! You are 30."
    );
}

#[test]
fn defaults() {
    let bot = load(&[("bot.yaml", TWILIO), ("menus.yaml", MAIN)]).unwrap();
    assert_eq!(bot.name, "shop");
    assert_eq!(bot.start, "main");
    assert_eq!(bot.session_timeout, Duration::from_secs(24 * 3600));
    assert_eq!(
        bot.error_reply,
        "Sorry, something went wrong. Please try again."
    );
    assert_eq!(bot.twilio.api_base, "https://api.twilio.com");
    assert_eq!(
        bot.twilio.sender,
        Some(MessageSender::From("whatsapp:+1".into()))
    );
    assert_eq!(bot.twilio.max_per_second, None);
    assert!(bot.keywords.is_empty());
    assert!(bot.http_allow.is_empty());
    assert_eq!(bot.opt_out, Some(crate::flow::OptOut::default()));
}

#[test]
fn opt_out_settings() {
    let load_opt_out = |yaml: &str| {
        load(&[("bot.yaml", &bot_yaml(yaml)), ("menus.yaml", MAIN)])
            .unwrap_or_else(|d| panic!("{yaml}: {}", render(&d)))
            .opt_out
    };
    for off in ["opt_out: off\n", "opt_out: Off\n", "opt_out: false\n"] {
        assert_eq!(load_opt_out(off), None, "{off}");
    }
    assert_eq!(
        load_opt_out("opt_out: on\n"),
        Some(crate::flow::OptOut::default())
    );
    let custom = load_opt_out(
        "opt_out:\n  stop: [\" Halt \", ARRÊT]\n  help: Info\n  stop_reply: \"\"\n  start_reply: \"Hi again, ${NAME:-friend}\"\n  help_reply:\n",
    )
    .unwrap();
    let defaults = crate::flow::OptOut::default();
    assert_eq!(custom.stop, ["halt", "arrêt"]);
    assert_eq!(custom.start, defaults.start);
    assert_eq!(custom.help, ["info"]);
    assert_eq!(custom.stop_reply, "");
    assert_eq!(custom.start_reply, "Hi again, friend");
    assert_eq!(custom.help_reply, "");
}

#[test]
fn interpolation_of_credentials() {
    let bot_yaml = "twilio:\n  account_sid: ${SID}\n  auth_token: ${TOKEN}\n  from: x\n  api_base: ${API:-https://edge.example/}\n";
    let env = |pairs: &[(&str, &str)]| -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    struct Case {
        name: &'static str,
        env: Option<HashMap<String, String>>,
        allow: bool,
        token: Result<Option<&'static str>, &'static str>,
        warnings: Vec<&'static str>,
        api_base: &'static str,
    }
    let cases = [
        Case {
            name: "all set",
            env: env(&[("SID", "AC1"), ("TOKEN", "t"), ("API", "http://localhost:1")]),
            allow: false,
            token: Ok(Some("t")),
            warnings: vec![],
            api_base: "http://localhost:1",
        },
        Case {
            name: "optional unset",
            env: env(&[("SID", "AC1"), ("TOKEN", "t")]),
            allow: false,
            token: Ok(Some("t")),
            warnings: vec![],
            api_base: "https://edge.example",
        },
        Case {
            name: "required unset",
            env: env(&[("SID", "AC1")]),
            allow: false,
            token: Err("TOKEN is not set: export it, or run with --dry-run"),
            warnings: vec![],
            api_base: "",
        },
        Case {
            name: "required empty",
            env: env(&[("SID", "AC1"), ("TOKEN", "")]),
            allow: false,
            token: Err("TOKEN is not set: export it, or run with --dry-run"),
            warnings: vec![],
            api_base: "",
        },
        Case {
            name: "required unset, allowed",
            env: env(&[]),
            allow: true,
            token: Ok(None),
            warnings: vec![
                "SID is not set: `twilio.account_sid` stays empty, so this bot can only run with --dry-run",
                "TOKEN is not set: `twilio.auth_token` stays empty, so this bot can only run with --dry-run",
            ],
            api_base: "https://edge.example",
        },
    ];
    for case in cases {
        let options = LoadOptions {
            allow_missing_credentials: case.allow,
            env: case.env,
        };
        let (_, result) = load_with(&[("bot.yaml", bot_yaml), ("menus.yaml", MAIN)], &options);
        match (case.token, result) {
            (Ok(token), Ok(bot)) => {
                assert_eq!(
                    bot.twilio.auth_token.as_ref().map(|t| t.expose()),
                    token,
                    "{}",
                    case.name
                );
                let warnings: Vec<&str> = bot.warnings.iter().map(|d| d.message.as_str()).collect();
                assert_eq!(warnings, case.warnings, "{}", case.name);
                assert_eq!(bot.twilio.api_base, case.api_base, "{}", case.name);
            }
            (Err(message), Err(diagnostics)) => {
                assert!(
                    diagnostics.iter().any(|d| d.message == message),
                    "{}: {}",
                    case.name,
                    render(&diagnostics)
                );
            }
            (want, Ok(_)) => panic!("{}: loaded, wanted {want:?}", case.name),
            (want, Err(d)) => panic!("{}: wanted {want:?}, got\n{}", case.name, render(&d)),
        }
    }
}

#[test]
fn missing_twilio_section_is_a_warning_when_allowed() {
    let options = LoadOptions {
        allow_missing_credentials: true,
        env: Some(HashMap::new()),
    };
    let (_, result) = load_with(
        &[("bot.yaml", "name: Shop\n"), ("menus.yaml", MAIN)],
        &options,
    );
    let bot = result.unwrap_or_else(|d| panic!("{}", render(&d)));
    assert!(bot.twilio.auth_token.is_none());
    assert_eq!(bot.warnings.len(), 1, "{}", render(&bot.warnings));
    assert_eq!(
        bot.warnings[0].message,
        "no `twilio:` section: this bot can only run with --dry-run"
    );
}

#[test]
fn editor_files_tests_and_other_files_are_ignored() {
    let garbage = "this: [is not: valid yaml\n";
    let bot = load(&[
        ("bot.yaml", TWILIO),
        ("menus.yaml", MAIN),
        (".hidden.yaml", garbage),
        ("menus.yaml~", garbage),
        ("menus.yaml.swp", garbage),
        ("x.swx", garbage),
        ("save.tmp", garbage),
        ("#menus.yaml#", garbage),
        ("tests/main.yaml", garbage),
        ("README.md", garbage),
        ("logo.png", garbage),
        (".git/config.yaml", garbage),
    ])
    .unwrap_or_else(|d| panic!("{}", render(&d)));
    assert!(bot.warnings.is_empty(), "{}", render(&bot.warnings));
    assert_eq!(bot.nodes.len(), 1);
}

#[test]
fn folder_problems() {
    let (_root, dir) = bot_folder("Kibo Auto", &[("bot.yaml", TWILIO), ("menus.yaml", MAIN)]);
    let errors = load_bot(&dir, &engine(), &strict()).unwrap_err();
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    assert_eq!(errors[0].file, dir);
    assert_eq!(
        errors[0].message,
        "`Kibo Auto` is not a valid bot id: use lowercase letters, digits, `_` and `-`"
    );
    let hint = errors[0].hint.as_deref().unwrap();
    assert!(hint.ends_with("kibo-auto`"), "{hint}");

    let (_root, dir) = bot_folder("shop", &[("menus.yaml", MAIN)]);
    let errors = load_bot(&dir, &engine(), &strict()).unwrap_err();
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    assert_eq!(
        errors[0].message,
        format!("no bot.yaml in {}", dir.display())
    );

    let errors = load_bot(&dir.join("nope"), &engine(), &strict()).unwrap_err();
    assert!(
        errors[0].message.ends_with("does not exist"),
        "{}",
        render(&errors)
    );
}

#[test]
fn suggested_ids() {
    for (name, id) in [
        ("Kibo Auto", "kibo-auto"),
        ("Café!", "caf"),
        ("--", "my-bot"),
        ("A_b", "a_b"),
    ] {
        assert_eq!(suggest_id(name), id);
    }
}

#[test]
fn load_flows_and_check() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        &[
            ("good/bot.yaml", TWILIO),
            ("good/menus.yaml", "main:\n  say: hi\nlost:\n  say: x\n"),
            ("broken/bot.yaml", TWILIO),
            ("broken/menus.yaml", "main:\n  goto: nowhere\n"),
            ("Bad Name/bot.yaml", TWILIO),
            ("Bad Name/menus.yaml", MAIN),
            (".hidden/bot.yaml", "garbage: ["),
            ("README.md", "flows"),
        ],
    );
    let loaded = load_flows(root.path(), &engine(), &strict());
    let ids: Vec<&str> = loaded.bots.keys().map(BotId::as_str).collect();
    assert_eq!(ids, ["good"]);
    let with_diagnostics: Vec<&str> = loaded.diagnostics.keys().map(BotId::as_str).collect();
    assert_eq!(with_diagnostics, ["broken", "good"]);
    assert!(loaded.diagnostics[&BotId::parse("good").unwrap()]
        .iter()
        .all(|d| !d.is_error()));
    assert_eq!(loaded.other.len(), 1);
    assert!(loaded.other[0]
        .message
        .starts_with("`Bad Name` is not a valid bot id"));
    assert!(loaded.has_errors());

    let all = check_flows(root.path(), &engine(), &strict());
    let summary: Vec<(String, usize, Severity)> = all
        .iter()
        .map(|d| {
            let file = d
                .file
                .strip_prefix(root.path())
                .unwrap()
                .display()
                .to_string();
            (file, d.line, d.severity)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("Bad Name".to_owned(), 0, Severity::Error),
            ("broken/menus.yaml".to_owned(), 2, Severity::Error),
            ("good/menus.yaml".to_owned(), 3, Severity::Warning),
        ]
    );
}

#[test]
fn missing_flows_folder() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("flows");
    let loaded = load_flows(&missing, &engine(), &strict());
    assert!(loaded.bots.is_empty());
    assert_eq!(loaded.other.len(), 1);
    assert_eq!(
        loaded.other[0].message,
        format!("flows folder {} does not exist", missing.display())
    );
    assert!(loaded.other[0].hint.is_some());
    assert_eq!(check_flows(&missing, &engine(), &strict()).len(), 1);
}

#[test]
fn kibo_auto_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/kibo-auto");
    let options = LoadOptions {
        allow_missing_credentials: true,
        env: Some(HashMap::new()),
    };
    let bot = load_bot(&dir, &engine(), &options).unwrap_or_else(|d| panic!("{}", render(&d)));
    assert_eq!(bot.name, "Kibo Auto");
    assert_eq!(bot.start, "main");
    assert_eq!(bot.session_timeout, Duration::from_secs(30 * 60));
    assert_eq!(bot.keywords.get("menu").map(String::as_str), Some("main"));
    assert_eq!(*bot.http_allow, ["api.kiboauto.example"]);
    let warnings: Vec<&str> = bot.warnings.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        warnings,
        [
            "KIBO_TWILIO_ACCOUNT_SID is not set: `twilio.account_sid` stays empty, so this bot can only run with --dry-run",
            "KIBO_TWILIO_AUTH_TOKEN is not set: `twilio.auth_token` stays empty, so this bot can only run with --dry-run",
        ]
    );
    let Some(Node::Menu(main)) = bot.node("main") else {
        panic!("main is not a menu node");
    };
    assert_eq!(
        main.say[0].source.lines().next(),
        Some("👋 Welcome to Kibo Auto! 🚗")
    );
    let labels: Vec<&str> = main.options.iter().map(|o| o.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "Browse cars",
            "Book a test drive",
            "Opening hours",
            "Talk to a person"
        ]
    );
    assert_eq!(
        main.choose("cars").map(|(_, o)| o.goto.as_deref()),
        Some(Some("browse"))
    );
    assert!(bot.node("test_drive").is_some());

    let env = HashMap::from([
        ("KIBO_TWILIO_ACCOUNT_SID".to_owned(), "AC1".to_owned()),
        ("KIBO_TWILIO_AUTH_TOKEN".to_owned(), "tok".to_owned()),
    ]);
    let strict = LoadOptions {
        allow_missing_credentials: false,
        env: Some(env),
    };
    let bot = load_bot(&dir, &engine(), &strict).unwrap_or_else(|d| panic!("{}", render(&d)));
    assert!(bot.warnings.is_empty(), "{}", render(&bot.warnings));
    assert_eq!(bot.twilio.api_base, "https://api.twilio.com");
}

/// Whether this build's script engine compiles (it is written in parallel with
/// the loader); the script tests below run once it does.
fn scripts_compile() -> bool {
    std::panic::catch_unwind(|| {
        engine()
            .compile(Path::new("probe.rhai"), "fn start() {}")
            .is_ok()
    })
    .unwrap_or(false)
}

#[test]
fn script_nodes() {
    if !scripts_compile() {
        return;
    }
    let errors = load(&[
        ("bot.yaml", TWILIO),
        ("menus.yaml", "main:\n  say: hi\n  goto: flow\n"),
        ("flow.rhai", "fn start() {\n    go_to(\"mian\");\n}\n"),
    ])
    .unwrap_err();
    let d = errors
        .iter()
        .find(|d| d.message == "unknown node `mian` in go_to")
        .unwrap_or_else(|| panic!("{}", render(&errors)));
    assert_eq!(d.line, 2);
    assert!(d.file.ends_with("flow.rhai"));
    assert_eq!(d.hint.as_deref(), Some("did you mean `main`?"));

    let errors = load(&[
        ("bot.yaml", TWILIO),
        (
            "menus.yaml",
            "main:\n  say: hi\n  goto: flow\nflow:\n  say: x\n",
        ),
        ("flow.rhai", "fn start() {\n    go_to(\"main\");\n}\n"),
    ])
    .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|d| d.message == "node `flow` is defined twice: in flow.rhai and in menus.yaml"),
        "{}",
        render(&errors)
    );

    let bot = load(&[
        ("bot.yaml", TWILIO),
        ("menus.yaml", "main:\n  say: hi\n  goto: flow\n"),
        ("flow.rhai", "fn start() {\n    go_to(\"main\");\n}\n"),
    ])
    .unwrap_or_else(|d| panic!("{}", render(&d)));
    assert!(matches!(bot.node("flow"), Some(Node::Script(_))));
    assert!(bot.warnings.is_empty(), "{}", render(&bot.warnings));
}

#[test]
fn broken_fixtures_each_show_one_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken");
    let cases = [
        (
            "bad-regex",
            "menus.yaml",
            4,
            14,
            "invalid regex in `validate`: unclosed character class",
        ),
        (
            "bad-session-timeout",
            "bot.yaml",
            2,
            18,
            "invalid session_timeout `30 minutes`: the unit must be s, m, h or d",
        ),
        (
            "bad-template",
            "menus.yaml",
            2,
            23,
            "template error in `say`: syntax error: unexpected `}`, expected end of variable block",
        ),
        (
            "bad-yaml-syntax",
            "menus.yaml",
            3,
            8,
            "invalid YAML: mapping values are not allowed in this context",
        ),
        (
            "duplicate-node",
            "menus.yaml",
            1,
            1,
            "node `main` is defined twice: in a.yaml:1:1 and in menus.yaml",
        ),
        (
            "goto-loop",
            "menus.yaml",
            3,
            9,
            "`goto` loop without waiting: main → more → main",
        ),
        (
            "missing-credentials",
            "bot.yaml",
            4,
            15,
            "BROKEN_TWILIO_AUTH_TOKEN is not set: export it, or run with --dry-run",
        ),
        (
            "missing-start",
            "bot.yaml",
            0,
            0,
            "no node `main` to start at",
        ),
        (
            "unknown-bot-key",
            "bot.yaml",
            2,
            1,
            "unknown key `sesion_timeout` in bot.yaml",
        ),
        (
            "unknown-goto",
            "menus.yaml",
            5,
            13,
            "unknown node `brows` in goto of option `Browse cars`",
        ),
        (
            "unknown-node-key",
            "menus.yaml",
            2,
            3,
            "unknown key `sya` in node `main`",
        ),
    ];
    let mut folders: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let listed: Vec<&str> = cases.iter().map(|c| c.0).collect();
    assert_eq!(folders, listed, "every fixture has a case");

    let loaded = load_flows(&root, &engine(), &strict());
    assert!(
        loaded.bots.is_empty(),
        "{:?}",
        loaded.bots.keys().collect::<Vec<_>>()
    );
    for (case, file, line, column, message) in cases {
        let dir = root.join(case);
        let diagnostics = &loaded.diagnostics[&BotId::parse(case).unwrap()];
        let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
        assert_eq!(errors.len(), 1, "{case}:\n{}", render(diagnostics));
        let d = errors[0];
        assert_eq!(
            (
                d.file.strip_prefix(&dir).unwrap(),
                d.line,
                d.column,
                d.message.as_str()
            ),
            (Path::new(file), line, column, message),
            "{case}"
        );
    }

    // `check` tolerates missing credentials: that fixture is then only a warning.
    let tolerant = LoadOptions {
        allow_missing_credentials: true,
        env: Some(HashMap::new()),
    };
    let loaded = load_flows(&root, &engine(), &tolerant);
    let ids: Vec<&str> = loaded.bots.keys().map(BotId::as_str).collect();
    assert_eq!(ids, ["missing-credentials"]);
}

#[test]
fn a_load_error_prints_like_rustc() {
    let (dir, result) = load_with(
        &[
            ("bot.yaml", TWILIO),
            (
                "menus.yaml",
                "main:\n  options:\n    - label: Browse\n      goto: brows\nbrowse:\n  say: Cars.\n",
            ),
        ],
        &strict(),
    );
    let diagnostics = result.unwrap_err();
    let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{}", render(&diagnostics));
    let want = format!(
        "{}:4:13: error: unknown node `brows` in goto of option `Browse`\n  \
         |\n4 |       goto: brows\n  |             ^\n  = hint: did you mean `browse`?",
        dir.join("menus.yaml").display()
    );
    assert_eq!(errors[0].to_string(), want);
}

/// A node file linked to a file outside the bot folder (here an `/etc/passwd`
/// look-alike that is valid YAML) is a load error naming the link and its
/// target, and its text never reaches a diagnostic.
#[test]
fn a_flow_file_linked_outside_the_bot_folder_does_not_load() {
    let root = tempfile::tempdir().unwrap();
    let secret = root.path().join("passwd");
    fs::write(&secret, "root: x:0:0:root:/root:/bin/bash\n").unwrap();
    let dir = root.path().join("flows").join("shop");
    write(&dir, &[("bot.yaml", TWILIO), ("menus.yaml", MAIN)]);
    std::os::unix::fs::symlink(&secret, dir.join("users.yaml")).unwrap();
    let errors = load_bot(&dir, &engine(), &strict()).unwrap_err();
    let d = errors
        .iter()
        .find(|d| d.file == dir.join("users.yaml"))
        .unwrap_or_else(|| panic!("{}", render(&errors)));
    assert!(d.is_error());
    assert_eq!(
        d.message,
        format!(
            "this file is a symbolic link to {}, outside the bot folder {}",
            secret.canonicalize().unwrap().display(),
            dir.display()
        )
    );
    assert!(d
        .hint
        .as_deref()
        .unwrap()
        .starts_with("copy the file into the bot folder"));
    assert!(
        !render(&errors).contains("/bin/bash"),
        "{}",
        render(&errors)
    );

    // The same for a script and for bot.yaml itself.
    fs::remove_file(dir.join("users.yaml")).unwrap();
    fs::write(
        root.path().join("outside.rhai"),
        "fn main() { say(\"hi\"); }\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(root.path().join("outside.rhai"), dir.join("flow.rhai")).unwrap();
    let errors = load_bot(&dir, &engine(), &strict()).unwrap_err();
    assert!(
        errors.iter().any(
            |d| d.file == dir.join("flow.rhai") && d.message.contains("outside the bot folder")
        ),
        "{}",
        render(&errors)
    );
}

/// Links that stay inside the folder load (a ConfigMap mount makes them).
#[test]
fn a_flow_file_linked_inside_the_bot_folder_loads() {
    let (_root, dir) = bot_folder("shop", &[("bot.yaml", TWILIO), ("..data/menus.yaml", MAIN)]);
    std::os::unix::fs::symlink("..data/menus.yaml", dir.join("menus.yaml")).unwrap();
    let bot = load_bot(&dir, &engine(), &strict()).unwrap_or_else(|d| panic!("{}", render(&d)));
    assert!(bot.node("main").is_some());
}

/// A bot folder that is itself a link is refused with a reason (it was
/// silently skipped), whatever it points at (docs/decisions.md).
#[test]
fn a_linked_bot_folder_is_refused_with_a_reason() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        &[
            ("elsewhere/shop/bot.yaml", TWILIO),
            ("elsewhere/shop/menus.yaml", MAIN),
        ],
    );
    let flows = root.path().join("flows");
    fs::create_dir(&flows).unwrap();
    std::os::unix::fs::symlink(root.path().join("elsewhere/shop"), flows.join("shop")).unwrap();
    let loaded = load_flows(&flows, &engine(), &strict());
    assert!(loaded.bots.is_empty());
    let errors = &loaded.diagnostics[&BotId::parse("shop").unwrap()];
    assert_eq!(errors.len(), 1, "{}", render(errors));
    assert_eq!(errors[0].file, flows.join("shop"));
    assert!(
        errors[0].message.starts_with("bot folder ")
            && errors[0].message.contains("is a symbolic link to"),
        "{}",
        render(errors)
    );
}

/// A flow file over 1 MiB is a load error; the one at the limit loads.
#[test]
fn a_flow_file_over_one_mib_does_not_load() {
    let padding = "#".repeat(1024 * 1024 - MAIN.len());
    let at_limit = format!("{MAIN}{padding}");
    assert_eq!(at_limit.len(), 1024 * 1024);
    load(&[("bot.yaml", TWILIO), ("menus.yaml", &at_limit)])
        .unwrap_or_else(|d| panic!("{}", render(&d)));
    let over = format!("{at_limit}#");
    let (dir, result) = load_with(&[("bot.yaml", TWILIO), ("menus.yaml", &over)], &strict());
    let errors = result.unwrap_err();
    assert_has(
        &dir,
        &errors,
        Severity::Error,
        &want(
            "menus.yaml",
            0,
            0,
            "this file is larger than 1 MiB, the most a flow file may be",
            None,
        ),
        "oversized",
    );
}

/// A `{{ name }}` nothing sets is a warning at its `{{`, wherever templates are
/// rendered, with the closest var that is set.
#[test]
fn vars_nothing_sets_are_warnings_at_the_placeholder() {
    let asks = "ask_name:\n  say: Your name?\n  save_as: name\n  goto: main\n";
    let cases: Vec<(&str, String, Want)> = vec![
        (
            "misspelt in say",
            format!("main:\n  say: \"All booked, {{{{ nme }}}}!\"\n  goto: ask_name\n{asks}"),
            want(
                "menus.yaml",
                2,
                21,
                "`nme` is always empty: nothing in this bot sets it",
                Some("did you mean `name`?"),
            ),
        ),
        (
            "another case",
            format!("main:\n  say: |-\n    Hello\n    {{{{ Name }}}}, welcome\n  goto: ask_name\n{asks}"),
            want(
                "menus.yaml",
                4,
                5,
                "`Name` is always empty: nothing in this bot sets it",
                Some("did you mean `name`? Names are case-sensitive"),
            ),
        ),
        (
            "in an option's say",
            format!("main:\n  options:\n    - label: A\n      say: \"ok {{{{ nmae }}}}\"\n      goto: ask_name\n{asks}"),
            want("menus.yaml", 4, 16, "`nmae` is always empty: nothing in this bot sets it", Some("did you mean `name`?")),
        ),
        (
            "in invalid",
            format!("main:\n  options:\n    - label: A\n      goto: ask_name\n  invalid: \"Sorry {{{{ nam }}}}\"\n{asks}"),
            want("menus.yaml", 5, 19, "`nam` is always empty: nothing in this bot sets it", Some("did you mean `name`?")),
        ),
        (
            "in media, nothing close",
            format!("main:\n  say: hi\n  media: \"https://x.example/{{{{ car_id }}}}.jpg\"\n  goto: ask_name\n{asks}"),
            want(
                "menus.yaml",
                3,
                29,
                "`car_id` is always empty: nothing in this bot sets it",
                Some("set it with `save_as: car_id`, an option's `set:`, or `vars.car_id = ...` in a script; if conversations are started with it, list it in bot.yaml: `vars: [car_id]`"),
            ),
        ),
    ];
    for (case, menus, want) in cases {
        let files = [("bot.yaml", TWILIO), ("menus.yaml", menus.as_str())];
        let (dir, result) = load_with(&files, &strict());
        let bot = result.unwrap_or_else(|d| panic!("{case}: did not load:\n{}", render(&d)));
        assert_has(&dir, &bot.warnings, Severity::Warning, &want, case);
    }
}

/// No warning for vars that are set, declared or built in.
#[test]
fn vars_set_anywhere_are_not_warned_about() {
    let menus = "main:\n  say: \"{{ name }} {{ day }} {{ size }} {{ total }} {{ promo }} {{ price }} {{ user.name }} {{ message.text }}\"\n  \
                 options:\n    - label: A\n      goto: ask_name\n      set: {price: 25}\n    - label: B\n      goto: order\n\
                 ask_name:\n  say: Name?\n  save_as: name\n  goto: main\n\
                 loop:\n  say: \"{% for c in cars %}{{ c }} {{ loop.index }}{% endfor %}{% set n = 1 %}{{ n }}\"\n";
    let script = "fn start() {\n  vars.day = \"mon\";\n  vars[\"size\"] = 1;\n  vars += #{ total: 2, cars: [] };\n  go_to(\"loop\");\n}\n";
    let bot = load(&[
        ("bot.yaml", &bot_yaml("vars: [promo]\n")),
        ("menus.yaml", menus),
        ("order.rhai", script),
    ])
    .unwrap_or_else(|d| panic!("{}", render(&d)));
    assert!(bot.warnings.is_empty(), "{}", render(&bot.warnings));

    // A script writing a computed name may set anything.
    let bot = load(&[
        ("bot.yaml", TWILIO),
        (
            "menus.yaml",
            "main:\n  say: \"{{ anything }}\"\n  goto: s\n",
        ),
        (
            "s.rhai",
            "fn start() {\n  let k = \"anything\";\n  vars[k] = 1;\n}\n",
        ),
    ])
    .unwrap_or_else(|d| panic!("{}", render(&d)));
    assert!(bot.warnings.is_empty(), "{}", render(&bot.warnings));
}

#[test]
fn bot_yaml_vars_must_be_names() {
    let cases = [
        (
            "vars: [first name]\n",
            5,
            8,
            "`first name` is not a valid variable name",
        ),
        (
            "vars:\n  - user\n",
            6,
            5,
            "`user` is built in, so it cannot be a var",
        ),
        (
            "vars: {a: 1}\n",
            5,
            1,
            "`vars` must be a list of names, found a map",
        ),
    ];
    for (extra, line, column, message) in cases {
        let (dir, result) = load_with(
            &[("bot.yaml", &bot_yaml(extra)), ("menus.yaml", MAIN)],
            &strict(),
        );
        let errors = result.expect_err(extra);
        assert_has(
            &dir,
            &errors,
            Severity::Error,
            &want("bot.yaml", line, column, message, None),
            extra,
        );
    }
}

/// `main:` with its lines at the left margin: one error saying to indent them,
/// not "found nothing" for `main` and "must be a map" for each of its lines.
#[test]
fn a_node_body_that_is_not_indented() {
    let cases = [
        (
            "main:\nsay: hi\noptions:\n  - label: A\n    say: a\n",
            2,
            1,
            "indent `say:` and the other lines of `main` by two spaces under `main:`",
        ),
        (
            "main:\n  say: hi\noptions:\n  - label: A\n    say: a\n",
            3,
            1,
            "indent `options:` and the other lines of `main` by two spaces under `main:`",
        ),
    ];
    for (menus, line, column, hint) in cases {
        let (dir, result) = load_with(&[("bot.yaml", TWILIO), ("menus.yaml", menus)], &strict());
        let errors = result.expect_err(menus);
        let errors: Vec<&Diagnostic> = errors.iter().filter(|d| d.is_error()).collect();
        assert_eq!(errors.len(), 1, "{menus}: {errors:#?}");
        let d = errors[0];
        assert_eq!(d.file, dir.join("menus.yaml"));
        assert_eq!(
            (d.line, d.column, d.message.as_str(), d.hint.as_deref()),
            (
                line,
                column,
                "the lines of node `main` must be indented under it",
                Some(hint)
            ),
            "{menus}"
        );
    }

    // A node with nothing under it at the end of the file says how to fill it.
    let (dir, result) = load_with(
        &[
            ("bot.yaml", TWILIO),
            ("menus.yaml", "main:\n  say: hi\n  goto: end\nend:\n"),
        ],
        &strict(),
    );
    assert_has(
        &dir,
        &result.expect_err("empty node"),
        Severity::Error,
        &want(
            "menus.yaml",
            4,
            1,
            "`end` must be a map of `key: value` lines, found nothing",
            Some("write its lines under `end:`, indented by two spaces, or remove the key"),
        ),
        "empty node",
    );
}

/// A misspelt `options` loses the menu's links: the error comes alone, not under
/// a "never reached" warning for every node the menu led to.
#[test]
fn a_broken_bot_gets_no_never_reached_warnings() {
    let menus = "main:\n  say: Hi\n  optoins:\n    - label: Cut\n      goto: cut\n    - label: Colour\n      goto: colour\n\
                 cut:\n  say: A cut.\ncolour:\n  say: A colour.\n";
    let errors = load(&[("bot.yaml", TWILIO), ("menus.yaml", menus)]).unwrap_err();
    let messages: Vec<&str> = errors.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        ["unknown key `optoins` in node `main`"],
        "{}",
        render(&errors)
    );
    assert_eq!(errors[0].hint.as_deref(), Some("did you mean `options`?"));
}

const HX: &str = "HXb5b62575e6e4ff6129ad7c8efe1f983e";

/// SPEC §8.1 and §8.2: each WhatsApp limit and template name is an error at
/// the place to fix.
#[test]
fn whatsapp_limits_and_templates_are_located() {
    let long = |n: usize| "x".repeat(n);
    let four = "    - label: A\n    - label: B\n    - label: C\n    - label: D\n";
    let templates = format!("templates:\n  reminder:\n    content_sid: {HX}\n");
    let cases: Vec<(&str, Files, Want)> = vec![
        (
            "too many buttons",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", format!("main:\n  say: Pick\n  style: buttons\n  options:\n{four}")),
            ],
            want(
                "menus.yaml",
                4,
                3,
                "node `main` has 4 options, but WhatsApp buttons hold at most 3",
                Some("use `style: list`, or fewer options; or use `style: auto` to fall back to text when a menu does not fit"),
            ),
        ),
        (
            "too many buttons by the bot's menu_style",
            vec![
                ("bot.yaml", bot_yaml("menu_style: buttons\n")),
                ("menus.yaml", format!("main:\n  say: Pick\n  options:\n{four}")),
            ],
            want(
                "menus.yaml",
                3,
                3,
                "node `main` has 4 options, but WhatsApp buttons hold at most 3 (`menu_style: buttons` in bot.yaml)",
                Some("use `style: list`, or fewer options; or give node `main` its own `style: text` (or `auto`)"),
            ),
        ),
        (
            "a button label over 20",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", format!("main:\n  say: Pick\n  style: buttons\n  options:\n    - label: {}\n", long(21))),
            ],
            want(
                "menus.yaml",
                5,
                14,
                "option 1's label is 21 characters long; WhatsApp allows at most 20 in buttons",
                None,
            ),
        ),
        (
            "a list label over 24",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", format!("main:\n  say: Pick\n  style: list\n  options:\n    - label: {}\n", long(25))),
            ],
            want(
                "menus.yaml",
                5,
                14,
                "option 1's label is 25 characters long; WhatsApp allows at most 24 in list",
                None,
            ),
        ),
        (
            "more than 10 list items",
            vec![
                ("bot.yaml", bot_yaml("")),
                (
                    "menus.yaml",
                    format!(
                        "main:\n  say: Pick\n  style: list\n  options:\n{}",
                        (1..=11).map(|i| format!("    - label: O{i}\n")).collect::<String>()
                    ),
                ),
            ],
            want("menus.yaml", 4, 3, "node `main` has 11 options, but WhatsApp list hold at most 10", None),
        ),
        (
            "a description over 72",
            vec![
                ("bot.yaml", bot_yaml("")),
                (
                    "menus.yaml",
                    format!("main:\n  say: Pick\n  style: list\n  options:\n    - label: A\n      description: {}\n", long(73)),
                ),
            ],
            want(
                "menus.yaml",
                6,
                20,
                "option 1's description is 73 characters long; WhatsApp allows at most 72",
                Some("shorten the description"),
            ),
        ),
        (
            "a description on buttons",
            vec![
                ("bot.yaml", bot_yaml("")),
                (
                    "menus.yaml",
                    "main:\n  say: Pick\n  style: buttons\n  options:\n    - label: A\n      description: short\n".into(),
                ),
            ],
            want("menus.yaml", 6, 20, "option 1 has a `description`, but buttons show none", None),
        ),
        (
            "a list button over 20",
            vec![
                ("bot.yaml", bot_yaml("")),
                (
                    "menus.yaml",
                    format!("main:\n  say: Pick\n  style: list\n  button: {}\n  options:\n    - label: A\n", long(21)),
                ),
            ],
            want("menus.yaml", 4, 11, "`button` is 21 characters long; WhatsApp allows at most 20", None),
        ),
        (
            "a text over 1024",
            vec![
                ("bot.yaml", bot_yaml("")),
                (
                    "menus.yaml",
                    format!("main:\n  say: {}\n  style: buttons\n  options:\n    - label: A\n", long(1025)),
                ),
            ],
            want(
                "menus.yaml",
                2,
                8,
                "the message text is 1025 characters long; WhatsApp allows at most 1024 under buttons",
                None,
            ),
        ),
        (
            "buttons without say",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", "main:\n  style: buttons\n  options:\n    - label: A\n".into()),
            ],
            want(
                "menus.yaml",
                2,
                10,
                "node `main` is sent as buttons, but has no `say`",
                Some("WhatsApp shows buttons under a message: add `say: Please choose:`"),
            ),
        ),
        (
            "an id over 200",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", format!("main:\n  say: Pick\n  options:\n    - label: A\n      id: {}\n", long(201))),
            ],
            want("menus.yaml", 5, 11, "option 1: id `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx` is 201 characters long; WhatsApp allows at most 200", None),
        ),
        (
            "an id used twice",
            vec![
                ("bot.yaml", bot_yaml("")),
                (
                    "menus.yaml",
                    "main:\n  say: Pick\n  options:\n    - label: A\n      id: same\n    - label: B\n      id: same\n".into(),
                ),
            ],
            want(
                "menus.yaml",
                7,
                11,
                "option 2 has the id `same`, which option 1 already answers to",
                Some("each option needs its own id: a tap must choose one option"),
            ),
        ),
        (
            "an unknown style",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", "main:\n  say: Pick\n  style: buttns\n  options:\n    - label: A\n".into()),
            ],
            want("menus.yaml", 3, 10, "unknown style `buttns`", Some("did you mean `buttons`?")),
        ),
        (
            "an unknown menu_style",
            vec![("bot.yaml", bot_yaml("menu_style: lists\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 5, 13, "unknown menu_style `lists`", Some("did you mean `list`?")),
        ),
        (
            "an unknown template node",
            vec![
                ("bot.yaml", bot_yaml(&templates)),
                ("menus.yaml", "main:\n  template: remnder\n".into()),
            ],
            want("menus.yaml", 2, 13, "unknown template `remnder`", Some("did you mean `reminder`?")),
        ),
        (
            "an unknown template in a script",
            vec![
                ("bot.yaml", bot_yaml(&templates)),
                ("menus.yaml", MAIN.into()),
                ("remind.rhai", "fn start() {\n    say_template(\"remnder\");\n}\n".into()),
            ],
            want("remind.rhai", 2, 18, "unknown template `remnder`", Some("did you mean `reminder`?")),
        ),
        (
            "a content_sid that is not one",
            vec![
                ("bot.yaml", bot_yaml("templates:\n  reminder:\n    content_sid: MG123\n")),
                ("menus.yaml", MAIN.into()),
            ],
            want("bot.yaml", 7, 18, "`MG123` is not a Content SID", None),
        ),
        (
            "a template without content_sid",
            vec![
                ("bot.yaml", bot_yaml("templates:\n  reminder:\n    variables: {\"1\": x}\n")),
                ("menus.yaml", MAIN.into()),
            ],
            want("bot.yaml", 6, 3, "template `reminder` has no `content_sid`", None),
        ),
        (
            "too many literal buttons in a script",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", MAIN.into()),
                (
                    "pick.rhai",
                    "fn start() {\n    ask_buttons(\"Pick\", [\"A\", \"B\", \"C\", \"D\"], \"got\");\n}\nfn got(a) {}\n".into(),
                ),
            ],
            want("pick.rhai", 2, 5, "ask_buttons(): buttons hold at most 3 choices, found 4", None),
        ),
    ];
    assert_errors(cases);
}

/// Menus, ids, templates and read receipts load into the bot as written.
#[test]
fn whatsapp_settings_load() {
    let settings = format!(
        "menu_style: auto\nread_receipts: true\ntemplates:\n  reminder:\n    content_sid: {HX}\n    variables: {{\"1\": \"{{{{ name }}}}\"}}\n"
    );
    let bot = load(&[
        ("bot.yaml", &bot_yaml(&settings)),
        (
            "menus.yaml",
            "main:\n  say: Pick\n  style: list\n  button: See all\n  options:\n    - label: A\n      id: a\n      description: first\n      goto: remind\nremind:\n  template: reminder\n",
        ),
    ])
    .unwrap_or_else(|d| panic!("{}", render(&d)));
    assert_eq!(bot.menu_style, crate::flow::MenuStyle::Auto);
    assert!(bot.read_receipts);
    assert_eq!(bot.twilio.content_api_base, "https://content.twilio.com");
    assert_eq!(
        bot.twilio.messaging_api_base,
        "https://messaging.twilio.com"
    );
    let Some(Node::Menu(main)) = bot.node("main") else {
        panic!("main is a menu");
    };
    assert_eq!(main.style, Some(crate::flow::MenuStyle::List));
    assert_eq!(main.button.as_deref(), Some("See all"));
    assert_eq!(main.options[0].id.as_deref(), Some("a"));
    assert_eq!(main.options[0].description.as_deref(), Some("first"));
    let template = &bot.whatsapp_templates["reminder"];
    assert_eq!(template.content_sid, HX);
    assert_eq!(template.variables.len(), 1);
}

/// SPEC §8.2: an outbound start should begin with a template.
#[test]
fn outbound_nodes_begin_with_a_template() {
    let settings =
        format!("outbound: [main, remind]\ntemplates:\n  reminder:\n    content_sid: {HX}\n");
    let (dir, result) = load_with(
        &[
            ("bot.yaml", &bot_yaml(&settings)),
            (
                "menus.yaml",
                "main:\n  say: hi\nremind:\n  template: reminder\n",
            ),
        ],
        &strict(),
    );
    let bot = result.unwrap_or_else(|d| panic!("{}", render(&d)));
    assert_has(
        &dir,
        &bot.warnings,
        Severity::Warning,
        &want(
            "bot.yaml",
            5,
            12,
            "outbound node `main` sends free-form text without beginning with a template",
            None,
        ),
        "outbound",
    );
    assert!(!bot.warnings.iter().any(|d| d.message.contains("`remind`")));

    let (dir, result) = load_with(
        &[
            ("bot.yaml", &bot_yaml("outbound: [mian]\n")),
            ("menus.yaml", MAIN),
        ],
        &strict(),
    );
    let diagnostics = result.expect_err("an unknown outbound node is an error");
    assert_has(
        &dir,
        &diagnostics,
        Severity::Error,
        &want(
            "bot.yaml",
            5,
            12,
            "unknown node `mian` in `outbound`",
            Some("did you mean `main`?"),
        ),
        "unknown outbound node",
    );
}

/// SPEC §9.1, §9.2: `outbound:`, `timeout` and `on_timeout`, each error and
/// warning located with its hint.
#[test]
fn timeouts_and_outbound_are_checked() {
    let waiting = "main:\n  say: Day?\n  save_as: day\n  timeout: 2h\n  on_timeout: nudge\nnudge:\n  say: Still there?\n";
    let settings = bot_yaml("outbound: [nudge]\n");
    let bot = load(&[("bot.yaml", settings.as_str()), ("menus.yaml", waiting)])
        .unwrap_or_else(|d| panic!("{}", render(&d)));
    let Some(Node::Menu(main)) = bot.node("main") else {
        panic!("main is a menu");
    };
    assert_eq!(main.timeout, Some(Duration::from_secs(7200)));
    assert_eq!(main.on_timeout.as_deref(), Some("nudge"));
    assert_eq!(bot.outbound.as_deref(), Some(&["nudge".to_owned()][..]));
    assert!(bot.may_start_at("nudge"));
    assert!(!bot.may_start_at("main"));
    // The only warning: `nudge` is free-form (SPEC §8.2), not the timeout.
    assert_eq!(bot.warnings.len(), 1, "{}", render(&bot.warnings));
    assert!(
        bot.warnings[0]
            .message
            .contains("without beginning with a template"),
        "{}",
        render(&bot.warnings)
    );

    let cases: Vec<(&str, String, &str, Want)> = vec![
        (
            "unknown on_timeout",
            bot_yaml(""),
            "main:\n  say: Day?\n  save_as: day\n  timeout: 2h\n  on_timeout: nuge\nnudge:\n  say: x\n",
            want("menus.yaml", 5, 15, "unknown node `nuge` in on_timeout", Some("did you mean `nudge`?")),
        ),
        (
            "bad timeout",
            bot_yaml(""),
            "main:\n  say: Day?\n  save_as: day\n  timeout: 2 hours\n",
            want(
                "menus.yaml",
                4,
                12,
                "invalid timeout `2 hours`: the unit must be s, m, h or d",
                Some("write a whole number and a unit: `30s`, `30m`, `2h` or `1d`"),
            ),
        ),
        (
            "timeout on a node that does not wait",
            bot_yaml(""),
            "main:\n  say: Hi\n  timeout: 2h\n",
            want(
                "menus.yaml",
                3,
                12,
                "`timeout` in node `main`, which does not wait for an answer",
                None,
            ),
        ),
        (
            "on_timeout without timeout",
            bot_yaml(""),
            "main:\n  say: Day?\n  save_as: day\n  on_timeout: main\n",
            want("menus.yaml", 4, 15, "`on_timeout` without `timeout` in node `main`", None),
        ),
        (
            "unknown outbound node",
            bot_yaml("outbound: [remnder]\n"),
            "main:\n  say: Hi\nreminder:\n  say: x\n",
            want("bot.yaml", 5, 12, "unknown node `remnder` in `outbound`", Some("did you mean `reminder`?")),
        ),
    ];
    for (case, settings, nodes, want) in cases {
        let (dir, result) = load_with(
            &[("bot.yaml", settings.as_str()), ("menus.yaml", nodes)],
            &strict(),
        );
        let errors = result.expect_err(case);
        assert_has(&dir, &errors, Severity::Error, &want, case);
    }

    let long = "main:\n  say: Day?\n  save_as: day\n  timeout: 2d\n";
    let settings = bot_yaml("session_timeout: 1d\n");
    let bot = load(&[("bot.yaml", settings.as_str()), ("menus.yaml", long)])
        .unwrap_or_else(|d| panic!("{}", render(&d)));
    let warning = bot
        .warnings
        .iter()
        .find(|d| d.message == "node `main` waits 2d, longer than the bot's session_timeout (1d)")
        .unwrap_or_else(|| panic!("{}", render(&bot.warnings)));
    assert_eq!((warning.line, warning.column), (4, 12));
}

#[test]
fn handoff_is_checked_where_it_is_written() {
    const PERSON: &str =
        "main:\n  say: hi\n  options:\n    - label: A person\n      handoff: sales team\n";
    assert_errors(vec![
        (
            "a queue name with a space",
            vec![("bot.yaml", bot_yaml("")), ("menus.yaml", PERSON.into())],
            want(
                "menus.yaml",
                5,
                16,
                "handoff queue `sales team` has ' ', which a queue name may not have",
                Some("a queue name is 1 to 64 letters, digits, `-`, `_` or `.`, such as `sales`"),
            ),
        ),
        (
            "handoff and options on one node",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("menus.yaml", "main:\n  say: hi\n  handoff: sales\n  options:\n    - label: A\n".into()),
            ],
            want("menus.yaml", 4, 3, "node `main` has both `handoff` and `options`", None),
        ),
        (
            "handoff and goto on one option",
            vec![
                ("bot.yaml", bot_yaml("")),
                (
                    "menus.yaml",
                    "main:\n  say: hi\n  options:\n    - label: A\n      handoff: sales\n      goto: main\n".into(),
                ),
            ],
            want("menus.yaml", 6, 13, "option 1 has both `handoff` and `goto`", None),
        ),
        (
            "handoff_notify without a secret",
            vec![
                ("bot.yaml", bot_yaml("handoff_notify: https://example.com/hook\n")),
                ("menus.yaml", MAIN.into()),
            ],
            want("bot.yaml", 5, 17, "handoff_notify without handoff_secret", None),
        ),
        (
            "handoff_notify not a URL",
            vec![
                ("bot.yaml", bot_yaml("handoff_notify: example.com/hook\nhandoff_secret: s\n")),
                ("menus.yaml", MAIN.into()),
            ],
            want("bot.yaml", 5, 17, "handoff_notify `example.com/hook` is not an http(s) URL", None),
        ),
        (
            "bad handoff_timeout",
            vec![("bot.yaml", bot_yaml("handoff_timeout: a day\n")), ("menus.yaml", MAIN.into())],
            want("bot.yaml", 5, 18, "invalid handoff_timeout `a day`: the unit must be s, m, h or d", None),
        ),
        (
            "a script's handoff queue",
            vec![
                ("bot.yaml", bot_yaml("")),
                ("main.rhai", "fn start() {\n  handoff(\"\");\n}\n".into()),
            ],
            want("main.rhai", 2, 11, "handoff(): a handoff queue name is empty", None),
        ),
    ]);
}

#[test]
fn a_handoff_loads_with_its_settings() {
    let bot = load(&[
        (
            "bot.yaml",
            &bot_yaml("handoff_timeout: 4h\nhandoff_notify: https://example.com/hook\nhandoff_secret: s3cret\n"),
        ),
        (
            "menus.yaml",
            "main:\n  say: hi\n  options:\n    - label: A person\n      say: One moment.\n      handoff: sales\n    - label: The desk\n      goto: desk\n\
             desk:\n  say: Connecting you.\n  handoff: support\n",
        ),
    ])
    .unwrap_or_else(|d| panic!("{}", render(&d)));
    assert_eq!(bot.handoff.timeout, Duration::from_secs(4 * 3600));
    let (url, secret) = bot.handoff.notify.clone().unwrap();
    assert_eq!(
        (url.as_str(), secret.expose()),
        ("https://example.com/hook", "s3cret")
    );
    let Some(Node::Menu(main)) = bot.node("main") else {
        panic!("main is a menu")
    };
    assert_eq!(main.options[0].handoff.as_deref(), Some("sales"));
    let Some(Node::Menu(desk)) = bot.node("desk") else {
        panic!("desk is a menu")
    };
    assert_eq!(desk.handoff.as_deref(), Some("support"));
    assert!(bot.warnings.is_empty(), "{}", render(&bot.warnings));
}
