//! What starting a conversation from outside (SPEC §9.1, §9.3) asks of a bot's
//! nodes.

use std::collections::HashSet;

use super::{Bot, Node};

/// Whether entering `node` sends an approved WhatsApp template before any
/// free-form text. A start for a WhatsApp contact outside the 24-hour window
/// (SPEC §8.2) is only worth running when it does: anything else would be
/// refused by the sender, so such a start is skipped (`outside_window`).
///
/// The one place this question is answered: a menu node with `template:`; a
/// node that says nothing and only goes on (`goto`) answers as its target does;
/// a script node that calls `say_template("...")` with a literal name (what it
/// sends first is only known by running it; should it say something else first,
/// the sender refuses that message as any free-form message outside the window).
pub fn begins_with_template(bot: &Bot, node: &str) -> bool {
    let mut seen = HashSet::new();
    let mut name = node;
    while seen.insert(name) {
        match bot.node(name) {
            Some(Node::Menu(menu)) if menu.template.is_some() => return true,
            Some(Node::Menu(menu)) if menu.say.is_empty() && menu.media.is_empty() => {
                match (&menu.goto, menu.options.is_empty()) {
                    (Some(next), true) => name = next,
                    _ => return false,
                }
            }
            Some(Node::Menu(_)) | None => return false,
            Some(Node::Script(script)) => return !script.script.template_refs.is_empty(),
        }
    }
    false
}
