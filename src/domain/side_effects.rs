/// Whether a conversation step may act on the world (script HTTP calls, host
/// functions, log lines) or only compute its output from the conversation.
///
/// On Postgres a message is first stepped without the contact's turn, with
/// effects refused: such a step can safely run again if another instance
/// moved the conversation meanwhile. A step that reaches an effect stops, and
/// the message takes the turn and steps again with effects allowed, so an
/// effect still happens once per message (SPEC §2, §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SideEffects {
    /// The step holds what makes it run once: effects happen.
    #[default]
    Allowed,
    /// The step may run again: the first effect it reaches stops it, asking
    /// for the turn.
    Refused,
}
