//! Compiling a `.rhai` file once per load, with the checks an author needs before any
//! contact runs into them: syntax errors located by line and column with the source
//! line, code outside functions, `fn start`, the author API called with the wrong
//! number of arguments, and `ask` handlers that do not exist.
//!
//! `go_to` targets are collected ([`CompiledScript::node_refs`]) but checked by the
//! flow loader, which knows the bot's node names.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use rhai::{ASTNode, Engine, Expr, Position, Scope, Stmt};

use super::engine::BUILTIN_VARS;
use super::host::Availability;
use super::known::KnownFunctions;
use super::syntax;
use super::written::WrittenVars;
use super::{CompiledScript, NameRef, ScriptFunctions};
use crate::domain::Diagnostic;
use crate::message::{choices_problem, text_problem, Choice, InteractiveStyle};
/// One "did you mean" rule for every author name (`call.rs` checks handlers with it).
pub(super) use crate::source::did_you_mean;
use crate::source::{Pos, SourceFile};

/// The author API with the argument counts it accepts and how to call it, for
/// load-time checks of calls with a wrong number of arguments.
const API: [(&str, &[usize], &str); 12] = [
    ("say", &[1, 2], "say(text) or say(text, media_url)"),
    (
        "ask",
        &[2, 3],
        "ask(question, \"handler\") or ask(question, \"handler\", #{ timeout: \"2h\", on_timeout: \"no_answer\" })",
    ),
    (
        "ask_buttons",
        &[3],
        "ask_buttons(text, [\"Yes\", \"No\"], \"handler\")",
    ),
    (
        "ask_list",
        &[4],
        "ask_list(text, \"Options\", [\"A\", \"B\"], \"handler\")",
    ),
    (
        "say_template",
        &[1, 2],
        "say_template(\"name\") or say_template(\"name\", #{ \"1\": value })",
    ),
    ("go_to", &[1], "go_to(\"node\")"),
    ("end", &[0], "end()"),
    ("handoff", &[1], "handoff(\"sales\")"),
    ("http_get", &[1], "http_get(url)"),
    ("http_post", &[2], "http_post(url, body)"),
    ("now", &[0], "now()"),
    ("log", &[1], "log(text)"),
];

pub(super) fn compile(
    engine: &Engine,
    host: &ScriptFunctions,
    known: &KnownFunctions,
    path: &Path,
    source: &str,
) -> Result<CompiledScript, Vec<Diagnostic>> {
    let file = SourceFile {
        path: path.to_path_buf(),
        text: source.to_owned(),
    };

    // Declared (with no value) so that strict variables mode accepts them; not
    // constants, so the optimizer never folds these placeholders into the code.
    let mut scope = Scope::new();
    for name in BUILTIN_VARS {
        scope.push_dynamic(name, rhai::Dynamic::UNIT);
    }
    let mut ast = engine
        .compile_with_scope(&scope, source)
        .map_err(|e| vec![syntax::parse_error(&file, &e)])?;
    ast.set_source(path.display().to_string());

    let mut diagnostics = Vec::new();

    if let Some(stmt) = ast
        .statements()
        .iter()
        .find(|s| !matches!(s, Stmt::Noop(..)))
    {
        diagnostics.push(error(
            &file,
            stmt.position(),
            "code outside a function never runs",
            Some("move it into `fn start()`, which runs when the conversation enters this node"),
        ));
    }

    let mut functions: Vec<String> = Vec::new();
    let mut arities: HashMap<String, Vec<usize>> = HashMap::new();
    // Closures compile to anonymous functions (`anon$...`); they are not the author's names.
    for f in ast.iter_functions().filter(|f| !f.name.contains('$')) {
        if !functions.iter().any(|n| n == f.name) {
            functions.push(f.name.to_owned());
        }
        arities
            .entry(f.name.to_owned())
            .or_default()
            .push(f.params.len());
    }
    functions.sort();

    match arities.get("start") {
        None => diagnostics.push(error(&file,
            Position::new(1, 1),
            "script has no `fn start()`",
            Some("add one; it runs when the conversation enters this node"),
        )),
        Some(counts) if !counts.contains(&0) => diagnostics.push(error(&file,
            fn_position(source, "start"),
            "`fn start()` must take no parameters",
            Some("write `fn start() { ... }`; the contact's answers go to the handlers named by ask()"),
        )),
        Some(_) => {}
    }

    // Scripts sit at the top of their bot's folder, so the folder names the bot
    // whose host functions the script may call.
    let bot = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str());
    let mut node_refs = Vec::new();
    let mut handler_refs = Vec::new();
    let mut template_refs = Vec::new();
    let mut timeout_refs: Vec<NameRef> = Vec::new();
    let mut written = WrittenVars::default();
    // Keys of map literals and assigned properties: `obj.action()` calls the
    // function an `action` key of a map holds, so such a method is not unknown.
    let mut map_keys: HashSet<String> = HashSet::new();
    let mut unknown: Vec<(String, bool, Position)> = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        written.record(path);
        map_keys.extend(member_names(path.last()));
        let call = match path.last() {
            Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => Some((call, *pos, false)),
            Some(ASTNode::Expr(Expr::FnCall(call, pos))) => Some((call, *pos, false)),
            Some(ASTNode::Expr(Expr::MethodCall(call, pos))) => Some((call, *pos, true)),
            _ => None,
        };
        let Some((call, pos, method)) = call else {
            return true;
        };
        if call.is_operator_call() {
            return true;
        }
        let namespaced = !call.namespace.is_empty();
        if !namespaced && arities.contains_key(call.name.as_str()) {
            // A script's own function of the same name is the author's business.
            return true;
        }
        // Host functions may live in a module: `crm::lookup(...)`.
        let full_name = namespaced.then(|| format!("{}::{}", call.namespace, call.name));
        let name = full_name.as_deref().unwrap_or(call.name.as_str());
        if !known.contains(name) {
            unknown.push((name.to_owned(), method, pos));
            return true;
        }
        if method {
            // Argument counts of the author API and host functions are checked
            // on plain calls, the way authors write them.
            return true;
        }
        if let Some((_, counts, usage)) = API.iter().find(|(api, ..)| *api == name) {
            if !counts.contains(&call.args.len()) {
                diagnostics.push(error(
                    &file,
                    pos,
                    &format!("{name}() called with {} argument(s)", call.args.len()),
                    Some(&format!("write {usage}")),
                ));
                return true;
            }
        }
        match host.availability(name, call.args.len(), bot) {
            Availability::NotHost | Availability::Available => {}
            Availability::WrongArity(counts) => {
                let counts: Vec<String> = counts.iter().map(usize::to_string).collect();
                diagnostics.push(error(
                    &file,
                    pos,
                    &format!("{name}() called with {} argument(s)", call.args.len()),
                    Some(&format!(
                        "{name}() takes {} argument(s)",
                        counts.join(" or ")
                    )),
                ));
            }
            Availability::OtherBots(bots) => {
                let bots: Vec<String> = bots.iter().map(|b| format!("`{b}`")).collect();
                diagnostics.push(error(
                    &file,
                    pos,
                    &format!(
                        "{name}() is not available to this bot{}",
                        bot.map(|b| format!(" (`{b}`)")).unwrap_or_default()
                    ),
                    Some(&format!(
                        "the host program registers it for {} only",
                        bots.join(", ")
                    )),
                ));
            }
        }
        if let Some(style) = match name {
            "ask_buttons" => Some(InteractiveStyle::Buttons),
            "ask_list" => Some(InteractiveStyle::List),
            _ => None,
        } {
            if let Some(problem) = literal_menu_problem(style, &call.args) {
                diagnostics.push(error(
                    &file,
                    pos,
                    &format!("{name}(): {problem}"),
                    Some("WhatsApp's limits: buttons at most 3, labels 20 characters; lists at most 10, labels 24, descriptions 72, button 20; text 1,024"),
                ));
            }
        }
        if let ("handoff", [Expr::StringConstant(queue, p)]) = (name, call.args.as_slice()) {
            if let Some(problem) = crate::domain::Handoff::queue_problem(queue.trim()) {
                diagnostics.push(error(
                    &file,
                    *p,
                    &format!("handoff(): {problem}"),
                    Some(crate::domain::Handoff::QUEUE_HINT),
                ));
            }
        }
        if let ("ask", [_, _, options]) = (name, call.args.as_slice()) {
            for (at, message, hint) in literal_ask_problems(options, &file.text, &mut timeout_refs) {
                diagnostics.push(error(&file, at, &message, Some(&hint)));
            }
        }
        let literal = match (name, call.args.as_slice()) {
            ("go_to", [Expr::StringConstant(s, p)]) => Some((&mut node_refs, s, *p)),
            ("ask", [_, Expr::StringConstant(s, p)] | [_, Expr::StringConstant(s, p), _])
            | ("ask_buttons", [_, _, Expr::StringConstant(s, p)])
            | ("ask_list", [_, _, _, Expr::StringConstant(s, p)]) => {
                Some((&mut handler_refs, s, *p))
            }
            ("say_template", [Expr::StringConstant(s, p), ..]) => {
                Some((&mut template_refs, s, *p))
            }
            _ => None,
        };
        if let Some((refs, s, p)) = literal {
            refs.push(name_ref(s, p));
        }
        true
    });
    node_refs.sort_by_key(|r: &NameRef| (r.line, r.column));
    template_refs.sort_by_key(|r: &NameRef| (r.line, r.column));
    // `on_timeout: "name"` in a literal `ask` options map: called with no
    // arguments when the time runs out (SPEC §9.2).
    for r in &timeout_refs {
        let pos = Position::new(r.line as u16, r.column as u16);
        if arities
            .get(&r.name)
            .is_some_and(|counts| counts.contains(&0))
        {
            continue;
        }
        let (message, hint) = match arities.get(&r.name) {
            Some(_) => (
                format!("on_timeout function `{}` must take no parameters", r.name),
                format!("write `fn {}() {{ ... }}`", r.name),
            ),
            None => (
                format!(
                    "ask() names on_timeout `{}`, but there is no such function in this script",
                    r.name
                ),
                did_you_mean(&r.name, &functions)
                    .unwrap_or_else(|| format!("add `fn {}() {{ ... }}` to this file", r.name)),
            ),
        };
        diagnostics.push(error(&file, pos, &message, Some(&hint)));
    }
    handler_refs.sort_by_key(|r: &NameRef| (r.line, r.column));
    written.finish();

    for (name, method, pos) in unknown {
        if method && map_keys.contains(&name) {
            continue;
        }
        let hint = match known.suggest(&name, &functions) {
            Some(best) => format!("did you mean `{best}`?"),
            None => "no function of this name is defined in this file, built into Rhai, or part of the author API (docs/scripting.md lists them)".to_owned(),
        };
        let message = if method {
            format!("unknown function `.{name}()`")
        } else {
            format!("unknown function `{name}()`")
        };
        diagnostics.push(error(&file, pos, &message, Some(&hint)));
    }

    for handler in &handler_refs {
        let pos = Position::new(handler.line as u16, handler.column as u16);
        match arities.get(&handler.name) {
            Some(counts) if counts.contains(&1) => {}
            Some(_) => diagnostics.push(error(
                &file,
                pos,
                &format!(
                    "handler `{}` must take exactly one parameter (the answer)",
                    handler.name
                ),
                Some(&format!("write `fn {}(answer) {{ ... }}`", handler.name)),
            )),
            None => {
                let hint = did_you_mean(&handler.name, &functions).unwrap_or_else(|| {
                    format!("add `fn {}(answer) {{ ... }}` to this file", handler.name)
                });
                diagnostics.push(error(
                    &file,
                    pos,
                    &format!(
                        "ask() names handler `{}`, but there is no such function in this script",
                        handler.name
                    ),
                    Some(&hint),
                ));
            }
        }
    }

    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let arities = arities
        .into_iter()
        .flat_map(|(name, counts)| counts.into_iter().map(move |n| (name.clone(), n)))
        .collect();
    Ok(CompiledScript {
        path: path.to_path_buf(),
        functions,
        node_refs,
        handler_refs,
        template_refs,
        arities,
        written,
        ast: Arc::new(ast),
    })
}

/// What breaks WhatsApp's limits in an `ask_buttons`/`ask_list` call whose
/// text, button and choices are written as literals (other calls are checked
/// when they run). Choices count when each is a literal label.
/// One entry of an `ask` options map as written: its key, and its value when
/// the script spells it out (`None` when it is computed at run time).
struct AskOption {
    key: String,
    key_at: Position,
    value: Option<Result<String, ()>>,
    value_at: Position,
}

/// The entries of an `ask` options map written out in the script, whether Rhai
/// kept it as a map expression or folded it into a constant (which keeps only
/// the map's position); `None` for options built at run time.
fn ask_options(expr: &Expr, source: &str) -> Option<Vec<AskOption>> {
    match expr {
        Expr::Map(map, _) => Some(
            map.0
                .iter()
                .map(|(key, value)| AskOption {
                    key: key.name.to_string(),
                    key_at: key.pos,
                    value: match value {
                        Expr::StringConstant(text, _) => Some(Ok(text.to_string())),
                        Expr::IntegerConstant(..)
                        | Expr::FloatConstant(..)
                        | Expr::BoolConstant(..)
                        | Expr::Unit(..)
                        | Expr::Array(..)
                        | Expr::Map(..) => Some(Err(())),
                        _ => None,
                    },
                    value_at: value.position(),
                })
                .collect(),
        ),
        Expr::DynamicConstant(value, at) => {
            let map = value.read_lock::<rhai::Map>()?;
            // Rhai keeps the map's position only: find each part after it.
            let find = |needle: &str| {
                let start = Pos {
                    line: at.line().unwrap_or(1),
                    column: at.position().unwrap_or(1),
                };
                let found = crate::source::locate(source, start, needle, 0);
                Position::new(found.line as u16, found.column as u16)
            };
            Some(
                map.iter()
                    .map(|(key, value)| {
                        let value = value.clone().into_string().map_err(|_| ());
                        AskOption {
                            key: key.to_string(),
                            key_at: find(&format!("{key}:")),
                            value_at: match &value {
                                Ok(text) => find(&format!("\"{text}\"")),
                                Err(()) => *at,
                            },
                            value: Some(value),
                        }
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

/// What is wrong with an `ask` options map written out in the script
/// (`#{ timeout: "2h", on_timeout: "no_answer" }`), the same rules the call
/// applies at run time, found at load: unknown keys, a bad duration, a value
/// that is not a string, `on_timeout` without `timeout`. A literal `on_timeout`
/// name goes to `timeout_refs`, checked against the script's functions later.
fn literal_ask_problems(
    options: &Expr,
    source: &str,
    timeout_refs: &mut Vec<NameRef>,
) -> Vec<(Position, String, String)> {
    const USAGE: &str =
        r#"write ask(question, "handler", #{ timeout: "2h", on_timeout: "no_answer" })"#;
    let Some(entries) = ask_options(options, source) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let mut timeout = None;
    let mut on_timeout = None;
    for option in entries {
        let name = option.key.as_str();
        if !matches!(name, "timeout" | "on_timeout") {
            let hint = did_you_mean(name, &["timeout".to_owned(), "on_timeout".to_owned()])
                .unwrap_or_else(|| USAGE.to_owned());
            problems.push((
                option.key_at,
                format!(
                    "ask(): unknown option `{name}`: the options are `timeout` and `on_timeout`"
                ),
                hint,
            ));
            continue;
        }
        if name == "timeout" {
            timeout = Some(option.key_at);
        } else {
            on_timeout = Some(option.key_at);
        }
        match option.value {
            // Built at run time: checked when the call runs.
            None => {}
            Some(Err(())) => problems.push((
                option.value_at,
                format!("ask(): `{name}` must be a string in quotes"),
                USAGE.to_owned(),
            )),
            Some(Ok(text)) if name == "timeout" => {
                if let Err(problem) = crate::source::parse_duration(&text) {
                    problems.push((
                        option.value_at,
                        format!("ask(): invalid timeout `{text}`: {problem}"),
                        "write a whole number and a unit: `30s`, `30m`, `2h` or `1d`".to_owned(),
                    ));
                }
            }
            Some(Ok(text)) => timeout_refs.push(name_ref(&text, option.value_at)),
        }
    }
    if let (Some(at), None) = (on_timeout, timeout) {
        problems.push((
            at,
            "ask(): `on_timeout` without `timeout`".to_owned(),
            "say how long to wait: add `timeout: \"2h\"` (s, m, h or d)".to_owned(),
        ));
    }
    problems
}

fn literal_menu_problem(style: InteractiveStyle, args: &[Expr]) -> Option<String> {
    let literal = |expr: &Expr| match expr {
        Expr::StringConstant(s, _) => Some(s.to_string()),
        _ => None,
    };
    let (text, button, choices) = match (style, args) {
        (InteractiveStyle::Buttons, [text, choices, _]) => (text, None, choices),
        (InteractiveStyle::List, [text, button, choices, _]) => (text, Some(button), choices),
        _ => return None,
    };
    if let Some(problem) = literal(text).and_then(|t| text_problem(&t)) {
        return Some(problem);
    }
    let labels: Vec<String> = match choices {
        Expr::Array(items, _) => items.iter().map(literal).collect::<Option<Vec<_>>>()?,
        Expr::DynamicConstant(value, _) => {
            let items = value.read_lock::<rhai::Array>()?;
            items
                .iter()
                .map(|item| item.clone().into_string().ok())
                .collect::<Option<Vec<_>>>()?
        }
        _ => return None,
    };
    let choices: Vec<Choice> = labels
        .into_iter()
        .enumerate()
        .map(|(i, label)| Choice {
            label,
            id: (i + 1).to_string(),
            description: None,
        })
        .collect();
    let button = button.and_then(literal);
    choices_problem(style, button.as_deref(), &choices)
}

/// Map keys a node names: the keys of a map literal, and the properties an
/// assignment writes (`obj.action = ...`).
fn member_names(node: Option<&ASTNode>) -> Vec<String> {
    match node {
        Some(ASTNode::Expr(Expr::Map(map, _))) => {
            map.0.iter().map(|(key, _)| key.name.to_string()).collect()
        }
        Some(ASTNode::Expr(Expr::DynamicConstant(value, _))) => value
            .as_map_ref()
            .map(|map| map.keys().map(ToString::to_string).collect())
            .unwrap_or_default(),
        Some(ASTNode::Stmt(Stmt::Assignment(assignment))) => {
            let mut names = Vec::new();
            let mut expr = &assignment.1.lhs;
            while let Expr::Dot(chain, ..) | Expr::Index(chain, ..) = expr {
                if let Expr::Property(property, _) = &chain.rhs {
                    names.push(property.2.to_string());
                }
                expr = &chain.rhs;
            }
            names
        }
        _ => Vec::new(),
    }
}

fn name_ref(name: &str, pos: Position) -> NameRef {
    NameRef {
        name: name.to_owned(),
        line: pos.line().unwrap_or(1),
        column: pos.position().unwrap_or(1),
    }
}

/// An error at a Rhai position of `file`.
fn error(file: &SourceFile, pos: Position, message: &str, hint: Option<&str>) -> Diagnostic {
    let pos = Pos {
        line: pos.line().unwrap_or(1),
        column: pos.position().unwrap_or(1),
    };
    let mut d = file.error(pos, message);
    d.hint = hint.map(str::to_owned);
    d
}

/// Where `fn name` is defined (Rhai keeps no position for function definitions).
fn fn_position(source: &str, name: &str) -> Position {
    let pattern = regex::Regex::new(&format!(r"\bfn\s+{}\s*\(", regex::escape(name)))
        .expect("escaped name makes a valid pattern");
    source
        .lines()
        .enumerate()
        .find_map(|(i, line)| {
            let m = pattern.find(line)?;
            let column = line[..m.start()].chars().count() + 1;
            Some(Position::new((i + 1) as u16, column as u16))
        })
        .unwrap_or(Position::new(1, 1))
}
