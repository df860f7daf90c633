//! A bot's conversation as a graph, for `switchboard graph` (and the console,
//! which draws the same picture): its nodes and the links between them, written
//! as Mermaid (the default, which GitHub and most wikis render) or Graphviz DOT.
//!
//! Pure: [`Graph::of`] reads a loaded [`Bot`] and the writers return text. Labels
//! come from authors (option labels, `say` lines, node names may hold any
//! character but whitespace), so each writer escapes them for its format: no
//! label can end a string, open a shape or inject a statement.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use super::{Bot, Node};

/// How many characters of a menu node's first `say` line its box shows.
const SUMMARY_CHARS: usize = 40;

/// The text a graph is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// A Mermaid `flowchart`.
    Mermaid,
    /// A Graphviz `digraph`.
    Dot,
}

/// A bot's nodes and links, in the order the author wrote the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// The bot's id, the DOT graph's name.
    pub bot: String,
    /// The node a new conversation starts at.
    pub start: String,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<Edge>,
    /// `keywords:` of bot.yaml, (keyword, node), sorted by keyword.
    pub keywords: Vec<(String, String)>,
}

/// One node, with what its box says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphNode {
    pub name: String,
    pub kind: NodeKind,
    /// A menu node's first `say` line, shortened; empty when it says nothing.
    pub summary: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Menu,
    Script,
}

/// A link from one node to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeKind {
    /// An option's `goto`, with the option's label.
    Option(String),
    /// A node's own `goto`.
    Goto,
    /// A `go_to("...")` with a literal name in a script.
    ScriptGoTo,
    /// A waiting node's `on_timeout` (SPEC §9.2), with its `timeout` as written
    /// back (`2h`).
    Timeout(String),
}

impl Graph {
    /// The graph of `bot`. Links only to nodes that exist (a loaded bot has no
    /// others, but a script may build a name at run time, which no graph can show).
    pub fn of(bot: &Bot) -> Graph {
        let mut nodes: Vec<&Node> = bot.nodes.values().collect();
        nodes.sort_by(|a, b| {
            let (a, b) = (a.origin(), b.origin());
            (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column))
        });
        let mut edges = Vec::new();
        for node in &nodes {
            let from = node.name().to_owned();
            let mut link = |to: &str, kind: EdgeKind| {
                if bot.nodes.contains_key(to) {
                    edges.push(Edge {
                        from: from.clone(),
                        to: to.to_owned(),
                        kind,
                    });
                }
            };
            match node {
                Node::Menu(menu) => {
                    for option in &menu.options {
                        if let Some(to) = &option.goto {
                            link(to, EdgeKind::Option(option.label.clone()));
                        }
                    }
                    if let Some(to) = &menu.goto {
                        link(to, EdgeKind::Goto);
                    }
                    if let (Some(to), Some(after)) = (&menu.on_timeout, menu.timeout) {
                        link(to, EdgeKind::Timeout(crate::source::format_duration(after)));
                    }
                }
                Node::Script(script) => {
                    let targets: BTreeSet<&str> = script
                        .script
                        .node_refs
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect();
                    for to in targets {
                        link(to, EdgeKind::ScriptGoTo);
                    }
                }
            }
        }
        let mut keywords: Vec<(String, String)> = bot
            .keywords
            .iter()
            .filter(|(_, node)| bot.nodes.contains_key(node.as_str()))
            .map(|(word, node)| (word.clone(), node.clone()))
            .collect();
        keywords.sort();
        Graph {
            bot: bot.id.to_string(),
            start: bot.start.clone(),
            nodes: nodes
                .iter()
                .map(|node| match node {
                    Node::Menu(menu) => GraphNode {
                        name: menu.name.clone(),
                        kind: NodeKind::Menu,
                        summary: menu
                            .say
                            .first()
                            .map_or_else(String::new, |text| summary(&text.source)),
                    },
                    Node::Script(script) => GraphNode {
                        name: script.name.clone(),
                        kind: NodeKind::Script,
                        summary: String::new(),
                    },
                })
                .collect(),
            edges,
            keywords,
        }
    }

    /// The graph as text in `format`.
    pub fn render(&self, format: GraphFormat) -> String {
        match format {
            GraphFormat::Mermaid => self.to_mermaid(),
            GraphFormat::Dot => self.to_dot(),
        }
    }

    /// A Mermaid flowchart. Node ids are made from the names (Mermaid ids allow
    /// few characters, and `end` is a keyword): `n_` and the name's letters,
    /// digits and `_`, with a number added when two names would meet.
    pub fn to_mermaid(&self) -> String {
        let ids = mermaid_ids(&self.nodes);
        let id = |name: &str| ids.get(name).map_or("", String::as_str);
        let mut out = String::from("flowchart TD\n");
        for node in &self.nodes {
            let mut label = mermaid_text(&node.name);
            let second = match node.kind {
                NodeKind::Menu => mermaid_text(&node.summary),
                NodeKind::Script => "script".to_owned(),
            };
            if !second.is_empty() {
                label.push_str("<br/>");
                label.push_str(&second);
            }
            let (open, close) = match node.kind {
                NodeKind::Menu => ("[\"", "\"]"),
                NodeKind::Script => ("[[\"", "\"]]"),
            };
            let _ = writeln!(out, "    {}{open}{label}{close}", id(&node.name));
        }
        if ids.contains_key(&self.start) {
            let _ = writeln!(out, "    entry_start((\"start\"))");
            let _ = writeln!(out, "    entry_start --> {}", id(&self.start));
        }
        if !self.keywords.is_empty() {
            let _ = writeln!(out, "    entry_keywords([\"keywords\"])");
            for (word, node) in &self.keywords {
                let _ = writeln!(
                    out,
                    "    entry_keywords -.->|\"{}\"| {}",
                    mermaid_text(word),
                    id(node)
                );
            }
        }
        for edge in &self.edges {
            let (from, to) = (id(&edge.from), id(&edge.to));
            let _ = match &edge.kind {
                EdgeKind::Option(label) => {
                    writeln!(out, "    {from} -->|\"{}\"| {to}", mermaid_text(label))
                }
                EdgeKind::Goto => writeln!(out, "    {from} --> {to}"),
                EdgeKind::ScriptGoTo => writeln!(out, "    {from} -.->|\"go_to\"| {to}"),
                EdgeKind::Timeout(after) => {
                    writeln!(
                        out,
                        "    {from} -.->|\"after {}\"| {to}",
                        mermaid_text(after)
                    )
                }
            };
        }
        if ids.contains_key(&self.start) {
            let _ = writeln!(out, "    classDef start_node stroke-width:3px");
            let _ = writeln!(out, "    class {} start_node", id(&self.start));
        }
        out
    }

    /// A Graphviz digraph (`dot -Tsvg`). Nodes are quoted names; the two entry
    /// points have ids with a space, which no node name can hold.
    pub fn to_dot(&self) -> String {
        let mut out = format!("digraph {} {{\n", dot_string(&self.bot));
        out.push_str("    node [shape=box, style=rounded];\n");
        for node in &self.nodes {
            let (second, shape) = match node.kind {
                NodeKind::Menu => (node.summary.as_str(), ""),
                NodeKind::Script => ("script", ", shape=component, style=solid"),
            };
            let label = if second.is_empty() {
                node.name.clone()
            } else {
                format!("{}\n{second}", node.name)
            };
            let bold = if node.name == self.start {
                ", penwidth=3"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} [label={}{shape}{bold}];",
                dot_string(&node.name),
                dot_string(&label)
            );
        }
        let names: HashSet<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        if names.contains(self.start.as_str()) {
            let _ = writeln!(
                out,
                "    \"entry start\" [label=\"start\", shape=circle, style=solid];"
            );
            let _ = writeln!(out, "    \"entry start\" -> {};", dot_string(&self.start));
        }
        if !self.keywords.is_empty() {
            let _ = writeln!(
                out,
                "    \"entry keywords\" [label=\"keywords\", shape=oval, style=solid];"
            );
            for (word, node) in &self.keywords {
                let _ = writeln!(
                    out,
                    "    \"entry keywords\" -> {} [label={}, style=dotted];",
                    dot_string(node),
                    dot_string(word)
                );
            }
        }
        for edge in &self.edges {
            let (from, to) = (dot_string(&edge.from), dot_string(&edge.to));
            let _ = match &edge.kind {
                EdgeKind::Option(label) => {
                    writeln!(out, "    {from} -> {to} [label={}];", dot_string(label))
                }
                EdgeKind::Goto => writeln!(out, "    {from} -> {to};"),
                EdgeKind::Timeout(after) => writeln!(
                    out,
                    "    {from} -> {to} [label={}, style=dashed];",
                    dot_string(&format!("after {after}"))
                ),
                EdgeKind::ScriptGoTo => {
                    writeln!(out, "    {from} -> {to} [label=\"go_to\", style=dashed];")
                }
            };
        }
        out.push_str("}\n");
        out
    }
}

/// The first line of `text`, trimmed and cut to [`SUMMARY_CHARS`] with `…`.
fn summary(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or("").trim();
    if line.chars().count() <= SUMMARY_CHARS {
        return line.to_owned();
    }
    let mut short: String = line.chars().take(SUMMARY_CHARS - 1).collect();
    short.truncate(short.trim_end().len());
    short.push('…');
    short
}

/// A Mermaid id for every node name, unique and made of `[A-Za-z0-9_]`.
fn mermaid_ids(nodes: &[GraphNode]) -> HashMap<String, String> {
    let mut taken = HashSet::new();
    let mut ids = HashMap::new();
    for node in nodes {
        let base: String = std::iter::once("n_".to_owned())
            .chain(node.name.chars().map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c.to_string()
                } else {
                    "_".to_owned()
                }
            }))
            .collect();
        let mut id = base.clone();
        let mut n = 2;
        while !taken.insert(id.clone()) {
            id = format!("{base}_{n}");
            n += 1;
        }
        ids.insert(node.name.clone(), id);
    }
    ids
}

/// Text for inside a Mermaid `"..."` label. Mermaid reads `#code;` as a
/// character, so everything that could end the string, end an edge label, open
/// an entity or a `%%{...}%%` directive, or be read as HTML is written that way;
/// so is `:`, because Mermaid drops the last `;` of any line reading like
/// `style ...:...#...;` (a label "Pick a style: #1" would lose one). Line breaks
/// and other control characters become spaces (a label here is one line).
fn mermaid_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '#' | '&' | '<' | '>' | '|' | '`' | '\\' | '[' | ']' | '{' | '}' | ':' => {
                let _ = write!(out, "#{};", u32::from(c));
            }
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `text` as a DOT quoted string: `"` and `\` escaped (a lone backslash would
/// start one of Graphviz's label escapes such as `\N`), a line break as `\n`,
/// other control characters as spaces.
fn dot_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
