//! What starting a conversation from outside (SPEC §9.1, §9.3) asks of a bot's
//! nodes.

use super::Bot;

/// Whether entering `node` sends an approved WhatsApp template before any
/// free-form text. A start for a WhatsApp contact outside the 24-hour window
/// (SPEC §8.2) is only worth running when it does: anything else would be
/// refused by the sender, so such a start is skipped (`outside_window`).
///
/// The one place this question is answered. No node can send a template yet
/// (`template:` nodes and `say_template` arrive with SPEC §8.2), so today the
/// answer is always `false`; when they exist, this looks at the node entered
/// (and the nodes its `goto` leads to before anything is said).
pub fn begins_with_template(bot: &Bot, node: &str) -> bool {
    let _ = (bot, node);
    false
}
