//! Who a reply is sent from: a bot's `twilio:` setting, and a field of every
//! request to Twilio's Messages API.

/// Who a reply is sent from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSender {
    From(String),
    MessagingService(String),
}
