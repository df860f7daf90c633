//! The plain data that flows between layers: what a contact sent, who they are,
//! and what the bot replies. No Twilio wire format here (that is `twilio/`).

use serde::{Deserialize, Serialize};

/// Who the contact is, as scripts and templates see them (`user.phone`...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The address without channel prefix: `+14155550100` (or a WhatsApp BSUID).
    pub phone: String,
    /// WhatsApp profile name, empty when unknown.
    pub name: String,
    /// `whatsapp`, `sms`, ... (the `From` prefix; `sms` when there is none).
    pub channel: String,
}

/// One inbound message, as the conversation sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// `Body`, as sent.
    pub text: String,
    /// `MediaUrl0..N`.
    pub media: Vec<String>,
    /// A WhatsApp button's text (`ButtonText`), if one was pressed.
    pub button: Option<String>,
    /// A WhatsApp button's payload (`ButtonPayload`).
    pub button_payload: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

impl InboundMessage {
    /// A text-only message.
    pub fn text(text: impl Into<String>) -> InboundMessage {
        InboundMessage {
            text: text.into(),
            ..InboundMessage::default()
        }
    }

    /// The answer a menu or `ask` sees: the text, or the pressed button's text.
    pub fn answer(&self) -> &str {
        if self.text.trim().is_empty() {
            self.button.as_deref().unwrap_or(&self.text)
        } else {
            &self.text
        }
    }
}

/// One outgoing message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub body: String,
    pub media: Vec<String>,
    /// What rules the sender applies to it (the 24-hour window, opt-out).
    #[serde(default)]
    pub kind: ReplyKind,
}

impl Reply {
    /// A free-form text message.
    pub fn text(body: impl Into<String>) -> Reply {
        Reply {
            body: body.into(),
            media: Vec::new(),
            kind: ReplyKind::FreeForm,
        }
    }

    /// The answer to a `stop`, `start` or `help` word (SPEC §8.3).
    pub fn opt_out(body: impl Into<String>) -> Reply {
        Reply {
            kind: ReplyKind::OptOutReply,
            ..Reply::text(body)
        }
    }
}

/// What kind of message a reply is, which decides what the sender checks before
/// sending it (SPEC §8.2, §8.3). Stored with each outbox row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// Anything but a template: on WhatsApp only sent within 24 hours of the
    /// contact's last message; never sent to a contact who opted out.
    #[default]
    FreeForm,
    /// An approved WhatsApp template: sent whenever the contact last wrote, but
    /// never to a contact who opted out. (Nothing makes these yet; templates
    /// (SPEC §8.2) will.)
    Template,
    /// The answer to a `stop`, `start` or `help` word: the one thing a contact
    /// who opted out still gets. Free-form, so the window applies.
    OptOutReply,
}

impl ReplyKind {
    /// Every kind, in declaration order.
    pub const ALL: [ReplyKind; 3] = [
        ReplyKind::FreeForm,
        ReplyKind::Template,
        ReplyKind::OptOutReply,
    ];

    /// The name stored in the outbox's `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyKind::FreeForm => "free_form",
            ReplyKind::Template => "template",
            ReplyKind::OptOutReply => "opt_out_reply",
        }
    }

    pub fn parse(s: &str) -> Option<ReplyKind> {
        ReplyKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether WhatsApp's 24-hour window limits it.
    pub fn needs_window(self) -> bool {
        !matches!(self, ReplyKind::Template)
    }

    /// Whether it goes to a contact who opted out.
    pub fn reaches_opted_out(self) -> bool {
        matches!(self, ReplyKind::OptOutReply)
    }
}

#[cfg(test)]
mod tests {
    use super::ReplyKind;

    #[test]
    fn kind_names_round_trip() {
        for kind in ReplyKind::ALL {
            assert_eq!(ReplyKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ReplyKind::parse("text"), None);
    }
}
