//! The graph of bots loaded from temporary folders, in both formats, with labels
//! made to break each format.

use std::fs;

use super::*;
use crate::flow::{load_bot, LoadOptions};
use crate::script::ScriptEngine;

/// Loads bot `id` made of `files` (name, text).
fn bot(id: &str, files: &[(&str, &str)]) -> Bot {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(id);
    fs::create_dir(&dir).unwrap();
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
    let options = LoadOptions {
        allow_missing_credentials: true,
        ..LoadOptions::default()
    };
    load_bot(&dir, &ScriptEngine::default(), &options).unwrap_or_else(|d| panic!("{d:#?}"))
}

fn shop() -> Bot {
    bot(
        "shop",
        &[
            ("bot.yaml", "name: Shop\nkeywords:\n  menu: main\n  stock: stock\n"),
            (
                "menus.yaml",
                "main:\n  say: |\n    Welcome to the Corner Shop, the friendliest shop in town!\n    What would you like?\n  options:\n    - label: Order\n      goto: ask_name\n    - label: Stock\n      goto: stock\n    - label: Hours\n      say: 9 to 5.\n\
                 ask_name:\n  say: What's your name?\n  save_as: name\n  goto: thanks\n\
                 thanks:\n  say: \"Thanks {{ name }}!\"\n",
            ),
            (
                "stock.rhai",
                "fn start() {\n  ask(\"Want one?\", \"answer\");\n}\nfn answer(a) {\n  if a == \"yes\" { go_to(\"thanks\"); } else { go_to(\"main\"); }\n  go_to(\"main\");\n}\n",
            ),
        ],
    )
}

#[test]
fn nodes_in_file_order_with_option_goto_and_script_links() {
    let graph = Graph::of(&shop());
    let nodes: Vec<(&str, NodeKind, &str)> = graph
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.kind, n.summary.as_str()))
        .collect();
    assert_eq!(
        nodes,
        [
            (
                "main",
                NodeKind::Menu,
                "Welcome to the Corner Shop, the friendl…"
            ),
            ("ask_name", NodeKind::Menu, "What's your name?"),
            ("thanks", NodeKind::Menu, "Thanks {{ name }}!"),
            ("stock", NodeKind::Script, ""),
        ]
    );
    let edge = |from: &str, to: &str, kind: EdgeKind| Edge {
        from: from.into(),
        to: to.into(),
        kind,
    };
    assert_eq!(
        graph.edges,
        [
            edge("main", "ask_name", EdgeKind::Option("Order".into())),
            edge("main", "stock", EdgeKind::Option("Stock".into())),
            edge("ask_name", "thanks", EdgeKind::Goto),
            // Literal `go_to` names, once each however often they are called.
            edge("stock", "main", EdgeKind::ScriptGoTo),
            edge("stock", "thanks", EdgeKind::ScriptGoTo),
        ]
    );
    assert_eq!(graph.start, "main");
    assert_eq!(
        graph.keywords,
        [
            ("menu".to_owned(), "main".to_owned()),
            ("stock".to_owned(), "stock".to_owned())
        ]
    );
}

#[test]
fn a_wait_with_a_time_limit_links_to_its_on_timeout() {
    let bot = bot(
        "clinic",
        &[
            ("bot.yaml", "name: Clinic\n"),
            (
                "nodes.yaml",
                "main:\n  say: Which day?\n  save_as: day\n  timeout: 90m\n  on_timeout: nudge\n\
                 nudge:\n  say: Still there?\n",
            ),
        ],
    );
    let graph = Graph::of(&bot);
    assert_eq!(
        graph.edges,
        [Edge {
            from: "main".into(),
            to: "nudge".into(),
            kind: EdgeKind::Timeout("90m".into()),
        }]
    );
    assert!(
        graph.to_mermaid().contains("-.->|\"after 90m\"|"),
        "{}",
        graph.to_mermaid()
    );
    assert!(
        graph
            .to_dot()
            .contains("[label=\"after 90m\", style=dashed];"),
        "{}",
        graph.to_dot()
    );
}

#[test]
fn mermaid_of_the_shop() {
    assert_eq!(
        Graph::of(&shop()).to_mermaid(),
        "flowchart TD\n\
         \x20   n_main[\"main<br/>Welcome to the Corner Shop, the friendl…\"]\n\
         \x20   n_ask_name[\"ask_name<br/>What's your name?\"]\n\
         \x20   n_thanks[\"thanks<br/>Thanks #123;#123; name #125;#125;!\"]\n\
         \x20   n_stock[[\"stock<br/>script\"]]\n\
         \x20   entry_start((\"start\"))\n\
         \x20   entry_start --> n_main\n\
         \x20   entry_keywords([\"keywords\"])\n\
         \x20   entry_keywords -.->|\"menu\"| n_main\n\
         \x20   entry_keywords -.->|\"stock\"| n_stock\n\
         \x20   n_main -->|\"Order\"| n_ask_name\n\
         \x20   n_main -->|\"Stock\"| n_stock\n\
         \x20   n_ask_name --> n_thanks\n\
         \x20   n_stock -.->|\"go_to\"| n_main\n\
         \x20   n_stock -.->|\"go_to\"| n_thanks\n\
         \x20   classDef start_node stroke-width:3px\n\
         \x20   class n_main start_node\n"
    );
}

#[test]
fn dot_of_the_shop() {
    assert_eq!(
        Graph::of(&shop()).to_dot(),
        "digraph \"shop\" {\n\
         \x20   node [shape=box, style=rounded];\n\
         \x20   \"main\" [label=\"main\\nWelcome to the Corner Shop, the friendl…\", penwidth=3];\n\
         \x20   \"ask_name\" [label=\"ask_name\\nWhat's your name?\"];\n\
         \x20   \"thanks\" [label=\"thanks\\nThanks {{ name }}!\"];\n\
         \x20   \"stock\" [label=\"stock\\nscript\", shape=component, style=solid];\n\
         \x20   \"entry start\" [label=\"start\", shape=circle, style=solid];\n\
         \x20   \"entry start\" -> \"main\";\n\
         \x20   \"entry keywords\" [label=\"keywords\", shape=oval, style=solid];\n\
         \x20   \"entry keywords\" -> \"main\" [label=\"menu\", style=dotted];\n\
         \x20   \"entry keywords\" -> \"stock\" [label=\"stock\", style=dotted];\n\
         \x20   \"main\" -> \"ask_name\" [label=\"Order\"];\n\
         \x20   \"main\" -> \"stock\" [label=\"Stock\"];\n\
         \x20   \"ask_name\" -> \"thanks\";\n\
         \x20   \"stock\" -> \"main\" [label=\"go_to\", style=dashed];\n\
         \x20   \"stock\" -> \"thanks\" [label=\"go_to\", style=dashed];\n\
         }\n"
    );
}

/// Node names, labels and say lines built to end a string, open a shape, start
/// an entity or an HTML tag, or break a line.
fn hostile() -> Bot {
    bot(
        "hostile",
        &[
            ("bot.yaml", "start: \"a\\\"b\"\nkeywords:\n  \"x|y\": \"a\\\"b\"\n"),
            (
                "menus.yaml",
                "\"a\\\"b\":\n  say: \"<b>#1 & \\\"q\\\"</b> [x] {y} `z` \\\\N\\ttab\\u0085\\u2028e\"\n  options:\n    - label: \"]) --> evil[\\\"#quot;\"\n      goto: end\n    - label: \"a|b\\\\\"\n      goto: \"end-2\"\n\
                 end:\n  say: bye\n\
                 end-2:\n  say: bye\n\
                 end_2:\n  say: \"style x fill:#f00;\"\n",
            ),
        ],
    )
}

#[test]
fn mermaid_escapes_every_label_and_makes_safe_unique_ids() {
    let text = Graph::of(&hostile()).to_mermaid();
    // Quotes and the characters Mermaid gives a meaning are entity codes.
    assert!(
        text.contains("    n_a_b[\"a#34;b<br/>#60;b#62;#35;1 #38; #34;q#34;#60;/b#62; #91;x#93; #123;y#125; #96;z#96; #92;N tab  e\"]\n"),
        "{text}"
    );
    assert!(
        text.contains("    n_a_b -->|\"#93;) --#62; evil#91;#34;#35;quot;\"| n_end\n"),
        "{text}"
    );
    assert!(
        text.contains("    n_a_b -->|\"a#124;b#92;\"| n_end_2\n"),
        "{text}"
    );
    assert!(
        text.contains("    entry_keywords -.->|\"x#124;y\"| n_a_b\n"),
        "{text}"
    );
    // `end-2` and `end_2` would both be `n_end_2`: the later one gets a number.
    assert!(text.contains("    n_end_2[\"end-2<br/>bye\"]\n"), "{text}");
    // `:` too: Mermaid drops the last `;` of a line like `style …:…#…;`.
    assert!(
        text.contains("    n_end_2_2[\"end_2<br/>style x fill#58;#35;f00;\"]\n"),
        "{text}"
    );
    assert!(text.contains("    class n_a_b start_node\n"), "{text}");
    // Every line is a statement of its own: nothing in a label broke a line, and
    // every label's quotes pair up.
    for line in text.lines().skip(1) {
        assert!(line.starts_with("    "), "{line:?}");
        assert_eq!(line.matches('"').count() % 2, 0, "{line:?}");
    }
}

#[test]
fn dot_escapes_quotes_backslashes_and_line_breaks() {
    let text = Graph::of(&hostile()).to_dot();
    assert!(
        text.contains(
            "    \"a\\\"b\" [label=\"a\\\"b\\n<b>#1 & \\\"q\\\"</b> [x] {y} `z` \\\\N tab  e\", penwidth=3];\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("    \"a\\\"b\" -> \"end\" [label=\"]) --> evil[\\\"#quot;\"];\n"),
        "{text}"
    );
    // A label ending in a backslash does not escape its closing quote.
    assert!(
        text.contains("    \"a\\\"b\" -> \"end-2\" [label=\"a|b\\\\\"];\n"),
        "{text}"
    );
    assert!(
        text.contains("    \"entry keywords\" -> \"a\\\"b\" [label=\"x|y\", style=dotted];\n"),
        "{text}"
    );
    for line in text.lines() {
        let unescaped = line.replace("\\\\", "").replace("\\\"", "");
        assert_eq!(unescaped.matches('"').count() % 2, 0, "{line:?}");
    }
}

#[test]
fn render_picks_the_format() {
    let graph = Graph::of(&shop());
    assert!(graph
        .render(GraphFormat::Mermaid)
        .starts_with("flowchart TD\n"));
    assert!(graph
        .render(GraphFormat::Dot)
        .starts_with("digraph \"shop\" {\n"));
}

#[test]
fn summaries_are_one_short_line() {
    assert_eq!(summary("  Hi there\nsecond line"), "Hi there");
    assert_eq!(summary(""), "");
    let long = "é".repeat(60);
    let short = summary(&long);
    assert_eq!(short.chars().count(), SUMMARY_CHARS);
    assert!(short.ends_with('…'));
}
