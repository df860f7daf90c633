//! The shared nouns: what several layers name but none of them owns. Each file
//! holds one noun; none of them imports anything else of the crate, so every
//! module may use them without making a cycle (`docs/ARCHITECTURE.md`).
//!
//! - [`BotId`]: a bot's id, its folder name.
//! - [`Secret`]: an auth token that `Debug` never shows.
//! - [`Clock`]: the current time, replaceable in tests and by embedders.
//! - [`Diagnostic`]: a located problem in an author's file, printed like rustc.
//! - [`ConversationState`]: where a conversation stands between messages.
//! - [`OutboxStatus`]: how far along an outbox row is.
//! - [`MessageSender`]: who a reply is sent from.
//! - [`ContactMark`]: what a failed send told us about its contact (opted out, window closed).
//! - [`SideEffects`]: whether a conversation step may act on the world or must only compute.

mod bot_id;
mod clock;
mod contact_mark;
mod conversation_state;
mod diagnostic;
mod message_sender;
mod outbox_status;
mod secret;
mod side_effects;

pub use bot_id::{BotId, InvalidBotId};
pub use clock::{Clock, FixedClock, SystemClock};
pub use contact_mark::ContactMark;
pub use conversation_state::{ConversationState, Handoff};
pub use diagnostic::{Diagnostic, Severity};
pub use message_sender::MessageSender;
pub use outbox_status::OutboxStatus;
pub use secret::Secret;
pub use side_effects::SideEffects;
