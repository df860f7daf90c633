//! What a claimed row must pass before it may go to Twilio at all, decided from
//! what the claim read about its contact: a contact who opted out gets nothing
//! but the answers to their opt-out words (SPEC §8.3), and a free-form WhatsApp
//! message goes only within 24 hours of the contact's last message (SPEC §8.2).
//! A refused row fails at once, without a request to Twilio.

use crate::failures;
use crate::flow::OptOut;
use crate::store::{OutboxRow, SendResult};
use crate::twilio::errors;

/// How long after a contact's last message WhatsApp accepts free-form messages.
pub(super) const WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Why a row is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The contact opted out of this bot.
    OptedOut,
    /// A free-form WhatsApp message, and the contact last wrote 24 hours ago or
    /// more (or never, or Twilio reported their window closed since).
    OutsideWindow,
}

impl Refusal {
    /// Why `row` may not be sent at `now_ms` by a bot whose opt-out layer is
    /// `opt_out` (`None`: `opt_out: off`, so opt-outs are not kept); `None` when
    /// it may.
    pub(super) fn of(opt_out: Option<&OptOut>, row: &OutboxRow, now_ms: i64) -> Option<Refusal> {
        let opted_out = row.contact_opted_out_at_ms.is_some() && opt_out.is_some();
        if opted_out && !row.kind.reaches_opted_out() {
            return Some(Refusal::OptedOut);
        }
        if row.kind.needs_window() && is_whatsapp(&row.contact) {
            let open = row
                .window_opened_at_ms
                .is_some_and(|opened| now_ms < opened.saturating_add(WINDOW_MS));
            if !open {
                return Some(Refusal::OutsideWindow);
            }
        }
        None
    }

    /// The row's outcome: failed, with the reason in its message (and 63016 as
    /// its code for the window, the code Twilio would have answered with).
    pub(super) fn result(self) -> SendResult {
        match self {
            Refusal::OptedOut => SendResult::Failed {
                error_code: None,
                error_message: format!(
                    "{}: the contact opted out of this bot's messages (a stop word, or Twilio's {}); nothing is sent until they send a start word",
                    failures::OPTED_OUT,
                    errors::UNSUBSCRIBED
                ),
            },
            Refusal::OutsideWindow => SendResult::Failed {
                error_code: Some(errors::OUTSIDE_WINDOW),
                error_message: errors::meaning(errors::OUTSIDE_WINDOW),
            },
        }
    }
}

/// WhatsApp addresses are `whatsapp:+1...`; SMS has no window.
fn is_whatsapp(contact: &str) -> bool {
    contact
        .get(..9)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("whatsapp:"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OutboxStatus;
    use crate::message::ReplyKind;

    const NOW: i64 = 100 * WINDOW_MS;

    fn row(contact: &str, kind: ReplyKind, opted_out: bool, opened: Option<i64>) -> OutboxRow {
        OutboxRow {
            id: 1,
            bot: "b".into(),
            contact: contact.into(),
            conversation_id: 1,
            body: "hi".into(),
            media: Vec::new(),
            status: OutboxStatus::Sending,
            attempts: 1,
            next_attempt_at_ms: 0,
            claim_token: Some(1),
            twilio_sid: None,
            error_code: None,
            error_message: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            kind,
            content: None,
            contact_opted_out_at_ms: opted_out.then_some(5),
            window_opened_at_ms: opened,
            bulk: false,
            history: Vec::new(),
        }
    }

    fn check(opt_out_layer: bool, row: &OutboxRow) -> Option<Refusal> {
        let opt_out = opt_out_layer.then(OptOut::default);
        Refusal::of(opt_out.as_ref(), row, NOW)
    }

    #[test]
    fn the_window_holds_for_free_form_whatsapp_only() {
        use ReplyKind::*;
        let wa = "whatsapp:+15550001";
        let just_inside = Some(NOW - WINDOW_MS + 1);
        let just_outside = Some(NOW - WINDOW_MS);
        assert_eq!(check(true, &row(wa, FreeForm, false, just_inside)), None);
        for opened in [just_outside, None] {
            for kind in [FreeForm, OptOutReply] {
                assert_eq!(
                    check(true, &row(wa, kind, false, opened)),
                    Some(Refusal::OutsideWindow),
                    "{kind:?} {opened:?}"
                );
            }
            assert_eq!(check(true, &row(wa, Template, false, opened)), None);
            assert_eq!(
                check(true, &row("+15550001", FreeForm, false, opened)),
                None
            );
        }
        assert_eq!(
            check(true, &row("WhatsApp:+1555", FreeForm, false, None)),
            Some(Refusal::OutsideWindow)
        );
    }

    #[test]
    fn an_opted_out_contact_gets_only_opt_out_replies_while_the_layer_is_on() {
        use ReplyKind::*;
        let open = Some(NOW);
        for contact in ["whatsapp:+15550001", "+15550001"] {
            for kind in [FreeForm, Template] {
                assert_eq!(
                    check(true, &row(contact, kind, true, open)),
                    Some(Refusal::OptedOut)
                );
                assert_eq!(check(false, &row(contact, kind, true, open)), None);
            }
            assert_eq!(check(true, &row(contact, OptOutReply, true, open)), None);
        }
    }

    #[test]
    fn refusals_fail_the_row_with_their_reason() {
        assert_eq!(
            Refusal::OutsideWindow.result(),
            SendResult::Failed {
                error_code: Some(63016),
                error_message: "outside the 24-hour window: start with a template".into()
            }
        );
        match Refusal::OptedOut.result() {
            SendResult::Failed {
                error_code: None,
                error_message,
            } => assert!(error_message.starts_with("opted_out: "), "{error_message}"),
            other => panic!("{other:?}"),
        }
    }
}
