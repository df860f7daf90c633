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
    /// The content type of each of [`InboundMessage::media`], same order
    /// (`MediaContentType0..N`).
    #[serde(default)]
    pub media_types: Vec<String>,
    /// A shared location's address (`Address`).
    #[serde(default)]
    pub address: Option<String>,
    /// A shared location's name (`Label`).
    #[serde(default)]
    pub label: Option<String>,
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
    /// Sent from a Content resource instead of as text: an interactive menu
    /// (whose `body` is its numbered-text fallback) or an approved template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

impl Reply {
    /// A free-form text message.
    pub fn text(body: impl Into<String>) -> Reply {
        Reply {
            body: body.into(),
            media: Vec::new(),
            kind: ReplyKind::FreeForm,
            content: None,
        }
    }

    /// An interactive menu; `fallback` (the numbered text) is its body, sent
    /// when the menu cannot be (SMS, a Content API refusal).
    pub fn interactive(menu: Interactive, fallback: impl Into<String>) -> Reply {
        Reply {
            content: Some(Content::Menu(menu)),
            ..Reply::text(fallback)
        }
    }

    /// An approved template (SPEC §8.2): no body, never held back by the window.
    pub fn template(template: TemplateSend) -> Reply {
        Reply {
            kind: ReplyKind::Template,
            content: Some(Content::Template(template)),
            ..Reply::text("")
        }
    }

    /// The interactive menu this reply carries, if any.
    pub fn menu(&self) -> Option<&Interactive> {
        match &self.content {
            Some(Content::Menu(menu)) => Some(menu),
            _ => None,
        }
    }

    /// The template this reply sends, if any.
    pub fn template_send(&self) -> Option<&TemplateSend> {
        match &self.content {
            Some(Content::Template(template)) => Some(template),
            _ => None,
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

/// What a reply sends through Twilio's Content API rather than as `Body`.
/// Stored with the outbox row as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Quick-reply buttons or a list picker (SPEC §8.1).
    Menu(Interactive),
    /// An approved template (SPEC §8.2).
    Template(TemplateSend),
}

/// Which interactive type a menu is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractiveStyle {
    /// `twilio/quick-reply`: up to 3 buttons.
    Buttons,
    /// `twilio/list-picker`: up to 10 items behind a button.
    List,
}

impl InteractiveStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            InteractiveStyle::Buttons => "buttons",
            InteractiveStyle::List => "list",
        }
    }

    /// The most options it holds.
    pub fn max_choices(self) -> usize {
        match self {
            InteractiveStyle::Buttons => limits::MAX_BUTTONS,
            InteractiveStyle::List => limits::MAX_LIST_ITEMS,
        }
    }

    /// The longest label (characters).
    pub fn max_label(self) -> usize {
        match self {
            InteractiveStyle::Buttons => limits::MAX_BUTTON_LABEL,
            InteractiveStyle::List => limits::MAX_LIST_LABEL,
        }
    }
}

/// WhatsApp's limits on interactive messages (reference §9.2), in characters.
pub mod limits {
    pub const MAX_BUTTONS: usize = 3;
    pub const MAX_BUTTON_LABEL: usize = 20;
    pub const MAX_LIST_ITEMS: usize = 10;
    pub const MAX_LIST_LABEL: usize = 24;
    pub const MAX_DESCRIPTION: usize = 72;
    /// The list's own button, that opens it.
    pub const MAX_LIST_BUTTON: usize = 20;
    pub const MAX_TEXT: usize = 1024;
    pub const MAX_ID: usize = 200;
    /// The list button's label when none is given.
    pub const DEFAULT_LIST_BUTTON: &str = "Options";
}

/// An interactive menu: the parts that are the same for every contact (the
/// style, button, choices) make its Content resource; `text` goes in a variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interactive {
    pub style: InteractiveStyle,
    /// The message text above the buttons, as rendered for this contact.
    pub text: String,
    /// A list's button label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<String>,
    pub choices: Vec<Choice>,
}

/// One button or list item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub label: String,
    /// What WhatsApp returns as `ButtonPayload` when it is chosen.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Interactive {
    /// `1. Browse cars`, one line per choice: the menu as numbered text.
    pub fn numbered_list(&self) -> String {
        let lines: Vec<String> = self
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}. {}", i + 1, c.label))
            .collect();
        lines.join("\n")
    }

    /// The first way this menu breaks WhatsApp's limits, said for an author.
    pub fn problem(&self) -> Option<String> {
        choices_problem(self.style, self.button.as_deref(), &self.choices)
            .or_else(|| text_problem(&self.text))
    }
}

/// The first way `choices` (and a list's `button`) break the limits of `style`.
pub fn choices_problem(
    style: InteractiveStyle,
    button: Option<&str>,
    choices: &[Choice],
) -> Option<String> {
    let name = style.as_str();
    if choices.is_empty() {
        return Some(format!("{name} need at least one choice"));
    }
    if choices.len() > style.max_choices() {
        return Some(format!(
            "{name} hold at most {} choices, found {}",
            style.max_choices(),
            choices.len()
        ));
    }
    if let Some(button) = button {
        if let Some(p) = length_problem("the list's button", button, limits::MAX_LIST_BUTTON) {
            return Some(p);
        }
    }
    for (i, choice) in choices.iter().enumerate() {
        if choice.label.trim().is_empty() {
            return Some(format!("choice {} has no label", i + 1));
        }
        let what = format!("label `{}`", choice.label);
        if let Some(p) = length_problem(&what, &choice.label, style.max_label()) {
            return Some(p);
        }
        if let Some(p) = id_problem(&choice.id) {
            return Some(p);
        }
        if choices[..i].iter().any(|c| c.id == choice.id) {
            return Some(format!("id `{}` is used twice", choice.id));
        }
        if let Some(description) = &choice.description {
            if style == InteractiveStyle::Buttons {
                return Some("buttons have no descriptions (lists do)".to_owned());
            }
            let what = format!("the description of `{}`", choice.label);
            if let Some(p) = length_problem(&what, description, limits::MAX_DESCRIPTION) {
                return Some(p);
            }
        }
    }
    None
}

/// Whether an interactive message's text fits.
pub fn text_problem(text: &str) -> Option<String> {
    length_problem("the message text", text, limits::MAX_TEXT)
}

/// Whether an option id fits.
pub fn id_problem(id: &str) -> Option<String> {
    if id.trim().is_empty() {
        return Some("an id cannot be empty".to_owned());
    }
    length_problem(&format!("id `{id}`"), id, limits::MAX_ID)
}

/// `{what} is N characters long; WhatsApp allows at most {max}`, when it is.
pub fn length_problem(what: &str, text: &str, max: usize) -> Option<String> {
    let n = text.chars().count();
    (n > max).then(|| format!("{what} is {n} characters long; WhatsApp allows at most {max}"))
}

/// An approved template to send (SPEC §8.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSend {
    /// Its name in `bot.yaml`.
    pub name: String,
    /// The `HX...` Content SID.
    pub content_sid: String,
    /// Placeholder key -> value, rendered for this contact.
    #[serde(default)]
    pub variables: std::collections::BTreeMap<String, String>,
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
