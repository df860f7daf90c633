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
}

impl Reply {
    pub fn text(body: impl Into<String>) -> Reply {
        Reply {
            body: body.into(),
            media: Vec::new(),
        }
    }
}
