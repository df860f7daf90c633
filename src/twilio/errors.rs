//! Twilio's error codes: a short meaning for the common ones (recorded on a
//! failed outbox row and shown in logs), what a code says about the contact, and
//! a bounded label for `/metrics`. Facts from `reference/twilio.md` §5.1 and §9.3.

use crate::domain::ContactMark;

/// Twilio refused a send because the recipient opted out (replied STOP).
pub const UNSUBSCRIBED: i64 = 21610;
/// WhatsApp: a free-form message outside the 24-hour window.
pub const OUTSIDE_WINDOW: i64 = 63016;

/// The codes this table explains, with a meaning short enough for a log line or
/// a table cell: what happened and, where there is one, what to do.
const MEANINGS: &[(i64, &str)] = &[
    (20003, "authentication failed: check the bot's account_sid and auth_token"),
    (20429, "too many concurrent requests to Twilio's API"),
    (21211, "invalid 'To' phone number"),
    (21408, "sending to this region is not enabled on the Twilio account"),
    (21606, "the 'From' number cannot send messages"),
    (21608, "trial account: the 'To' number is not verified"),
    (21610, "the contact opted out (replied STOP); nothing reaches them until they send START"),
    (21611, "the 'From' number has too many messages queued"),
    (21612, "the 'To' number cannot be reached through this channel"),
    (21614, "the 'To' number is not a valid mobile number"),
    (21617, "the message body is longer than 1,600 characters"),
    (21656, "the ContentVariables are not valid"),
    (30001, "queue overflow: messages were sent faster than the sender's rate"),
    (30002, "the Twilio account is suspended"),
    (30003, "the handset is unreachable (switched off or without signal)"),
    (30004, "the message was blocked (by the contact or their carrier)"),
    (30005, "unknown destination handset"),
    (30006, "a landline or an unreachable carrier"),
    (30007, "the carrier filtered the message (spam or content rules)"),
    (30008, "unknown error reported by the carrier"),
    (30009, "a part of a multi-part message was lost"),
    (30010, "the message price exceeds the maximum price set"),
    (30036, "the validity period expired before the message could be delivered"),
    (63003, "the contact is not a WhatsApp user (or no longer active)"),
    (63005, "WhatsApp did not accept the content"),
    (63013, "the message breaks a WhatsApp policy"),
    (63014, "the contact blocked messages from this sender"),
    (63016, "outside the 24-hour window: start with a template"),
    (63017, "the account's messaging rate limit was exceeded"),
    (63018, "WhatsApp's rate or messaging limit for this sender was reached: wait, and send fewer new conversations"),
    (63019, "the media could not be downloaded"),
    (63021, "the content is not valid for WhatsApp (too long, or an unsupported media type)"),
    (63024, "invalid message recipient"),
    (63027, "the template does not exist in this language"),
    (63028, "the template's number of variables does not match"),
    (63032, "WhatsApp will not deliver to this contact (a WhatsApp limitation)"),
    (63038, "the account's daily message limit was reached"),
    (63051, "the WhatsApp sender is locked for inactivity"),
];

/// What `code` means, for the row and the log: the table's meaning, or for a code
/// it does not explain, where to look it up.
pub fn meaning(code: i64) -> String {
    match MEANINGS.iter().find(|(c, _)| *c == code) {
        Some((_, meaning)) => (*meaning).to_owned(),
        None => format!(
            "Twilio error {code}: not explained here; see https://www.twilio.com/docs/api/errors/{code}"
        ),
    }
}

/// The `code` label of a failure in `/metrics`: the code when the table explains
/// it, else `other`. Bounded, so no stream of odd codes can grow the metrics
/// without end; the row and the log keep the exact code.
pub fn metric_label(code: i64) -> String {
    if MEANINGS.iter().any(|(c, _)| *c == code) {
        code.to_string()
    } else {
        "other".to_owned()
    }
}

/// What a failure with `code` tells us about its contact, beyond the message.
pub fn contact_mark(code: i64) -> Option<ContactMark> {
    match code {
        UNSUBSCRIBED => Some(ContactMark::OptedOut),
        OUTSIDE_WINDOW => Some(ContactMark::WindowClosed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_have_their_meaning_and_label() {
        assert_eq!(
            meaning(63016),
            "outside the 24-hour window: start with a template"
        );
        assert!(meaning(21610).contains("opted out"));
        assert_eq!(metric_label(30008), "30008");
        let mut codes: Vec<i64> = MEANINGS.iter().map(|(c, _)| *c).collect();
        codes.dedup();
        assert_eq!(codes.len(), MEANINGS.len(), "each code once, in order");
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "sorted");
    }

    #[test]
    fn unknown_and_odd_codes_get_a_generic_meaning_and_one_label() {
        for code in [12345, 0, -1, i64::MAX, i64::MIN] {
            assert!(meaning(code).contains(&code.to_string()), "{code}");
            assert_eq!(metric_label(code), "other", "{code}");
            assert_eq!(contact_mark(code), None);
        }
    }

    #[test]
    fn marks() {
        assert_eq!(contact_mark(21610), Some(ContactMark::OptedOut));
        assert_eq!(contact_mark(63016), Some(ContactMark::WindowClosed));
        assert_eq!(contact_mark(30008), None);
    }
}
