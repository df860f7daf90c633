//! A bot's nodes and links ([`Graph`], the same picture `switchboard graph`
//! writes) drawn as an SVG on the server: nodes in rows by their distance from
//! `start`, links as curves with their option labels. No script, no library:
//! the page shows it as it comes. Every author text is XML-escaped here.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

use crate::flow::graph::{EdgeKind, Graph, NodeKind};

const BOX_W: i64 = 180;
const BOX_H: i64 = 46;
const GAP_X: i64 = 40;
const ROW_H: i64 = 120;
const MARGIN: i64 = 20;
/// Nodes side by side before a layer wraps onto another row.
const PER_ROW: usize = 5;
/// Width of one lane of the gutter that links going up run in.
const LANE: i64 = 16;
/// Characters of a label or summary drawn; the rest is cut with `…`.
const LABEL_CHARS: usize = 24;

/// Where each node sits: (row, column).
fn layout(graph: &Graph) -> HashMap<&str, (i64, i64)> {
    // Distance from `start` (breadth first, in the author's order); nodes not
    // reached from it come after the furthest layer, in the author's order.
    let mut layer: HashMap<&str, usize> = HashMap::new();
    let mut queue = VecDeque::new();
    if graph.nodes.iter().any(|n| n.name == graph.start) {
        layer.insert(graph.start.as_str(), 0);
        queue.push_back(graph.start.as_str());
    }
    while let Some(name) = queue.pop_front() {
        let next = layer[name] + 1;
        for edge in graph.edges.iter().filter(|e| e.from == name) {
            if !layer.contains_key(edge.to.as_str()) {
                layer.insert(edge.to.as_str(), next);
                queue.push_back(edge.to.as_str());
            }
        }
    }
    let unreached = layer.values().max().map_or(0, |m| m + 1);
    let mut layers: Vec<Vec<&str>> = Vec::new();
    for node in &graph.nodes {
        let l = *layer.get(node.name.as_str()).unwrap_or(&unreached);
        if layers.len() <= l {
            layers.resize(l + 1, Vec::new());
        }
        layers[l].push(node.name.as_str());
    }
    let mut at = HashMap::new();
    let mut row = 0;
    for names in layers.iter().filter(|l| !l.is_empty()) {
        for chunk in names.chunks(PER_ROW) {
            for (column, name) in chunk.iter().enumerate() {
                at.insert(*name, (row, column as i64));
            }
            row += 1;
        }
    }
    at
}

/// `text` cut to [`LABEL_CHARS`] characters.
fn short(text: &str) -> String {
    if text.chars().count() <= LABEL_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(LABEL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// `text` for XML content or a quoted attribute.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The graph as an `<svg>` element sized to fit, or `None` for a bot with no
/// nodes.
pub fn svg(graph: &Graph) -> Option<String> {
    if graph.nodes.is_empty() {
        return None;
    }
    let at = layout(graph);
    let rows = at.values().map(|(r, _)| r + 1).max().unwrap_or(1);
    let columns = at.values().map(|(_, c)| c + 1).max().unwrap_or(1);
    // Links that go up or sideways run down a gutter left of the boxes, each
    // in a lane of its own, so they cross no box and no other link.
    let row_of = |name: &str| at.get(name).map_or(0, |(r, _)| *r);
    let climbing = graph
        .edges
        .iter()
        .filter(|e| e.from != e.to && row_of(&e.to) <= row_of(&e.from))
        .count() as i64;
    let gutter = LANE * climbing + if climbing > 0 { 30 } else { 0 };
    let width = gutter + MARGIN * 2 + columns * BOX_W + (columns - 1) * GAP_X + 90;
    let height = MARGIN * 2 + rows * ROW_H - (ROW_H - BOX_H);
    let corner = |name: &str| {
        let (row, column) = at.get(name).copied().unwrap_or((0, 0));
        (
            gutter + MARGIN + column * (BOX_W + GAP_X),
            MARGIN + row * ROW_H,
        )
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"diagram\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" \
         width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{} flow diagram\">",
        esc(&graph.bot)
    );
    out.push_str(
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" \
         markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>",
    );
    // Links first, so boxes are drawn over their ends; labels last, over both.
    let mut labels = String::new();
    let mut lane = 0;
    for (n, edge) in graph.edges.iter().enumerate() {
        let (fx, fy) = corner(edge.from.as_str());
        let (tx, ty) = corner(edge.to.as_str());
        let (path, (lx, ly), anchor) = if edge.from == edge.to {
            // A loop on the box's right side, its label beyond it.
            let (x, y) = (fx + BOX_W, fy + BOX_H / 2);
            (
                format!(
                    "M{x},{} C{},{} {},{} {x},{}",
                    y - 8,
                    x + 40,
                    y - 30,
                    x + 40,
                    y + 30,
                    y + 8
                ),
                (x + 40, y + 4),
                "start",
            )
        } else if row_of(&edge.to) > row_of(&edge.from) {
            // Down: out of the bottom (spread when several leave one box), into the top.
            let spread = (n as i64 % 5 - 2) * 12;
            let (x1, y1) = (fx + BOX_W / 2 + spread, fy + BOX_H);
            let (x2, y2) = (tx + BOX_W / 2, ty);
            let mid = (y1 + y2) / 2;
            (
                format!("M{x1},{y1} C{x1},{mid} {x2},{mid} {x2},{y2}"),
                ((x1 + x2) / 2, mid + 4),
                "middle",
            )
        } else {
            // Up or sideways: out of the left side, down its lane, into the left side.
            let gx = gutter + MARGIN - 20 - LANE * lane;
            let (y1, y2) = (fy + BOX_H / 2 + 6, ty + 12 + (lane % 3) * 8);
            lane += 1;
            (
                format!("M{fx},{y1} C{gx},{y1} {gx},{y2} {tx},{y2}"),
                (gx + 2, (y1 + y2) / 2 + 4),
                "middle",
            )
        };
        let (class, label) = match &edge.kind {
            EdgeKind::Option(label) => ("link option", short(label)),
            EdgeKind::Goto => ("link goto", String::new()),
            EdgeKind::ScriptGoTo => ("link script", "go_to".to_owned()),
            EdgeKind::Timeout(after) => ("link timeout", format!("after {after}")),
        };
        let dash = if matches!(edge.kind, EdgeKind::ScriptGoTo | EdgeKind::Timeout(_)) {
            " stroke-dasharray=\"4 3\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<path class=\"{class}\" d=\"{path}\" fill=\"none\" stroke=\"#555\"{dash} \
             marker-end=\"url(#arrow)\"/>"
        );
        if !label.is_empty() {
            let w = label.chars().count() as i64 * 7 + 8;
            let left = if anchor == "start" {
                lx - 4
            } else {
                lx - w / 2
            };
            let _ = write!(
                labels,
                "<rect x=\"{left}\" y=\"{}\" width=\"{w}\" height=\"16\" rx=\"3\" fill=\"#fff\" \
                 fill-opacity=\"0.9\"/><text class=\"edge-label\" x=\"{lx}\" y=\"{ly}\" \
                 text-anchor=\"{anchor}\" font-size=\"11\">{}</text>",
                ly - 12,
                esc(&label)
            );
        }
    }
    for node in &graph.nodes {
        let (x, y) = corner(node.name.as_str());
        let start = node.name == graph.start;
        let (fill, dash, second) = match node.kind {
            NodeKind::Menu => ("#eef4ff", "", short(&node.summary)),
            NodeKind::Script => ("#fff6e5", " stroke-dasharray=\"5 3\"", "script".to_owned()),
        };
        let stroke_width = if start { 3 } else { 1 };
        let _ = write!(
            out,
            "<g class=\"node\"><title>{}</title><rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" \
             height=\"{BOX_H}\" rx=\"8\" fill=\"{fill}\" stroke=\"#345\" \
             stroke-width=\"{stroke_width}\"{dash}/><text x=\"{}\" y=\"{}\" \
             text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{}</text>",
            esc(&node.name),
            x + BOX_W / 2,
            y + 19,
            esc(&short(&node.name))
        );
        if !second.is_empty() {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\" \
                 fill=\"#444\">{}</text>",
                x + BOX_W / 2,
                y + 36,
                esc(&second)
            );
        }
        out.push_str("</g>");
    }
    out.push_str(&labels);
    out.push_str("</svg>");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::graph::{Edge, GraphNode};

    fn node(name: &str, kind: NodeKind, summary: &str) -> GraphNode {
        GraphNode {
            name: name.into(),
            kind,
            summary: summary.into(),
        }
    }

    fn graph() -> Graph {
        Graph {
            bot: "shop".into(),
            start: "main".into(),
            nodes: vec![
                node("main", NodeKind::Menu, "Welcome <b>&</b>"),
                node("browse", NodeKind::Menu, ""),
                node("check", NodeKind::Script, ""),
                node("orphan", NodeKind::Menu, ""),
            ],
            edges: vec![
                Edge {
                    from: "main".into(),
                    to: "browse".into(),
                    kind: EdgeKind::Option("Browse \"all\" <cars>".into()),
                },
                Edge {
                    from: "browse".into(),
                    to: "check".into(),
                    kind: EdgeKind::Goto,
                },
                Edge {
                    from: "check".into(),
                    to: "main".into(),
                    kind: EdgeKind::ScriptGoTo,
                },
            ],
            keywords: vec![],
        }
    }

    #[test]
    fn nodes_are_in_rows_by_distance_from_start() {
        let g = graph();
        let at = layout(&g);
        assert_eq!(at["main"], (0, 0));
        assert_eq!(at["browse"], (1, 0));
        assert_eq!(at["check"], (2, 0));
        assert_eq!(at["orphan"], (3, 0));
    }

    #[test]
    fn author_text_is_escaped_and_every_node_and_link_drawn() {
        let svg = svg(&graph()).unwrap();
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(svg.contains("Welcome &lt;b&gt;&amp;&lt;/b&gt;"), "{svg}");
        assert!(svg.contains("Browse &quot;all&quot; &lt;cars&gt;"), "{svg}");
        assert_eq!(svg.matches("<g class=\"node\">").count(), 4);
        assert_eq!(svg.matches("class=\"link ").count(), 3);
        assert!(svg.contains(">go_to</text>"));
    }

    #[test]
    fn wide_layers_wrap_and_an_empty_bot_has_no_diagram() {
        let mut g = graph();
        g.nodes = (0..12)
            .map(|i| node(&format!("n{i}"), NodeKind::Menu, ""))
            .collect();
        g.start = "n0".into();
        g.edges.clear();
        let at = layout(&g);
        // n0 is layer 0; the 11 unreached nodes fill rows of five.
        assert_eq!(at["n1"], (1, 0));
        assert_eq!(at["n6"], (2, 0));
        assert_eq!(at["n11"], (3, 0));
        g.nodes.clear();
        assert_eq!(svg(&g), None);
    }
}
