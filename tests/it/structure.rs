//! The import direction `docs/ARCHITECTURE.md` states, checked on the source: the
//! leaf modules import nothing of the crate, the "must not" rules of the code map
//! hold, and no two top-level modules import each other, directly or around a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules that depend on nothing else in the crate.
const LEAVES: &[&str] = &["domain", "message"];

/// `(module, modules it must not import)`, from the code map's "must not" column.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // Script nodes are part of a bot, not the other way round.
    (
        "script",
        &["flow", "conversation", "store", "twilio", "http", "sender"],
    ),
    // "do network or database I/O"
    (
        "flow",
        &[
            "store",
            "twilio",
            "http",
            "sender",
            "inbound",
            "conversation",
        ],
    ),
    // "know about bots or the store"
    (
        "twilio",
        &[
            "flow",
            "store",
            "script",
            "conversation",
            "inbound",
            "sender",
        ],
    ),
    // "make decisions about retries or flows"
    (
        "store",
        &["flow", "script", "conversation", "sender", "twilio", "http"],
    ),
    // "do I/O (script HTTP goes through a trait)"
    (
        "conversation",
        &["store", "twilio", "http", "sender", "inbound"],
    ),
    // "format Twilio requests itself": it hands rows to the client, and needs no
    // script engine.
    ("sender", &["script", "conversation", "http", "inbound"]),
    // "read the environment": plain settings.
    ("config", &["flow", "script", "store", "http", "cli"]),
    ("http", &["script", "transcript", "chat", "cli"]),
    // "decide retries": it acts on a failure already decided.
    (
        "failures",
        &["sender", "http", "inbound", "conversation", "script"],
    ),
    (
        "transcript",
        &["store", "http", "sender", "twilio", "inbound"],
    ),
    ("chat", &["store", "http", "sender", "twilio", "inbound"]),
    // The console's pages are HTML text: routes, cookies and status codes are
    // `http/`'s, which calls it.
    ("console", &["http", "app", "sender", "inbound", "cli"]),
    // The author-file toolkit (positions, YAML, "did you mean") knows no bot,
    // node, script or test.
    (
        "source",
        &["flow", "script", "conversation", "transcript", "store"],
    ),
];

/// Top-level module -> the top-level modules its files name as `crate::x`.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_str().unwrap().trim_end_matches(".rs").to_owned();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let targets = graph.entry(module.clone()).or_default();
            for target in crate_paths(&text) {
                if target != module {
                    targets.insert(target);
                }
            }
        }
    }
    graph
}

/// The first segment of every `crate::` path in `text`, comments left out
/// (`crate::{a, b::c}` gives `a` and `b`). A re-export at the root (`crate::App`)
/// hides which module is used, so it is returned as is and refused by the test.
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            // `$crate::` inside a macro is the same module's own path.
            let own = rest[..at].ends_with('$');
            if let Some(group) = after.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or_default();
                for item in group.split(',') {
                    let name = first_segment(item.trim());
                    if !name.is_empty() && !own {
                        found.push(name);
                    }
                }
            } else {
                let name = first_segment(after);
                if !name.is_empty() && !own {
                    found.push(name);
                }
            }
            rest = after;
        }
    }
    found
}

fn first_segment(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn imports_follow_the_architecture_page() {
    let graph = import_graph();
    let mut broken = Vec::new();
    for (module, targets) in &graph {
        for target in targets {
            if target.starts_with(|c: char| c.is_uppercase()) {
                broken.push(format!(
                    "{module} imports crate::{target}: name the module it lives in"
                ));
            }
        }
        if LEAVES.contains(&module.as_str()) && !targets.is_empty() {
            broken.push(format!("leaf {module} imports {targets:?}"));
        }
    }
    for (module, forbidden) in FORBIDDEN {
        let targets = graph.get(*module).cloned().unwrap_or_default();
        for target in forbidden.iter().filter(|t| targets.contains(**t)) {
            broken.push(format!("{module} must not import {target}"));
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn no_import_cycle_between_modules() {
    let graph = import_graph();
    let mut cycles = Vec::new();
    for (module, targets) in &graph {
        for target in targets {
            // Does `target` lead back to `module`?
            let mut seen = BTreeSet::new();
            let mut stack = vec![target.clone()];
            while let Some(next) = stack.pop() {
                if !seen.insert(next.clone()) {
                    continue;
                }
                stack.extend(graph.get(&next).into_iter().flatten().cloned());
            }
            if seen.contains(module) {
                cycles.push(format!("{module} -> {target} -> ... -> {module}"));
            }
        }
    }
    assert!(cycles.is_empty(), "{cycles:#?}");
}

#[test]
fn crate_paths_reads_groups_and_skips_comments() {
    let text = "use crate::{flow::Bot, message};\nuse crate::store::Store; // crate::http\n\
                let x = $crate::store::sql::X;\n/// [`crate::app`]\n";
    assert_eq!(crate_paths(text), ["flow", "message", "store"]);
}

/// Public types implement `Debug` (C-DEBUG), so a host can log or `dbg!` what it
/// holds; the ones holding secrets or pools print a summary.
#[test]
fn public_types_implement_debug() {
    fn debug<T: std::fmt::Debug + ?Sized>() {}
    debug::<switchboard::App>();
    debug::<switchboard::AppBuilder>();
    debug::<switchboard::conversation::Runtime>();
    debug::<switchboard::conversation::Turn<'static>>();
    debug::<switchboard::flow::TemplateContext<'static>>();
    debug::<switchboard::chat::ChatSession>();
    debug::<switchboard::script::ScriptCall<'static>>();
    debug::<switchboard::script::ErasedFnBox>();
    debug::<switchboard::store::Store>();
    debug::<switchboard::twilio::TwilioClient>();
    debug::<switchboard::logging::Escaped<'static>>();
}
