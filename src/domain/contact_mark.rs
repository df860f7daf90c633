//! What Twilio's error codes tell us about a contact, beyond the one message
//! that failed (SPEC §8.3, §8.4).

/// A fact about a contact learnt from a failed send, which changes what may be
/// sent to them next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContactMark {
    /// The contact does not want this sender's messages (Twilio 21610): opted out,
    /// as if they had sent a `stop` word.
    OptedOut,
    /// The contact's 24-hour WhatsApp window is closed (Twilio 63016) until they
    /// write again.
    WindowClosed,
}
