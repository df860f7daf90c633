//! Failed sends, whether Twilio refused them at once or reported them later in
//! a status callback (SPEC §8.4): what a failure's code says about its contact
//! is recorded (21610: opted out; 63016: window closed until they write again),
//! and failures are counted by code in `/metrics`. The sender and the status
//! callback both come here, so the two ways a failure arrives act alike.

use crate::domain::ContactMark;
use crate::flow::Bot;
use crate::store::{Store, StoreError};
use crate::twilio::errors;

/// The `code` label of a failure the engine decided itself: the contact opted
/// out, so the row was never sent.
pub const OPTED_OUT: &str = "opted_out";

/// Which message failed, to find its contact.
#[derive(Debug, Clone, Copy)]
pub enum FailedMessage<'a> {
    /// A send the sender just made: the row's conversation and when it was queued.
    Row {
        conversation_id: i64,
        queued_at_ms: i64,
    },
    /// A message Twilio reported on by its SID (a status callback).
    Sid(&'a str),
}

/// Counts one failed message of `bot` in `switchboard_message_failures_total`,
/// labelled by its Twilio code (`other` for a code not in the table, `none`
/// without one) or by [`OPTED_OUT`].
pub fn count(bot: &str, code: Option<i64>, opted_out: bool) {
    let label = match code {
        _ if opted_out => OPTED_OUT.to_owned(),
        Some(code) => errors::metric_label(code),
        None => "none".to_owned(),
    };
    metrics::counter!("switchboard_message_failures_total", "bot" => bot.to_owned(), "code" => label)
        .increment(1);
}

/// Records on the contact of `message` what a failure with `code` says about
/// them, if anything, and if the bot acts on it (an opt-out only while the bot's
/// opt-out layer is on). Counts a new opt-out.
pub async fn mark_contact(
    store: &Store,
    bot: &Bot,
    code: i64,
    message: FailedMessage<'_>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let Some(mark) = errors::contact_mark(code) else {
        return Ok(());
    };
    if mark == ContactMark::OptedOut && bot.opt_out.is_none() {
        return Ok(());
    }
    let changed = match message {
        FailedMessage::Row {
            conversation_id,
            queued_at_ms,
        } => {
            store
                .mark_contact(conversation_id, queued_at_ms, mark, now_ms)
                .await?
        }
        FailedMessage::Sid(sid) => {
            store
                .mark_contact_of_message(bot.id.as_str(), sid, mark, now_ms)
                .await?
        }
    };
    if changed {
        match mark {
            ContactMark::OptedOut => {
                tracing::info!(bot = %bot.id, code, "Twilio refused a message because the contact opted out: no more messages go to them until they send a start word");
                metrics::counter!("switchboard_opt_outs_total", "bot" => bot.id.to_string(), "via" => "twilio")
                    .increment(1);
            }
            ContactMark::WindowClosed => {
                tracing::info!(bot = %bot.id, code, "the contact's 24-hour window is closed: free-form messages wait until they write again")
            }
        }
    }
    Ok(())
}
