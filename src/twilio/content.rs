//! Twilio's Content API (`POST {content_api_base}/v1/Content`, reference §9.1)
//! for interactive menus, and the typing indicator that marks an inbound
//! WhatsApp message read (`POST {messaging_api_base}/v2/Indicators/Typing.json`,
//! reference §9.5).
//!
//! A menu's Content resource holds what every contact's copy has in common (the
//! type, labels, ids, descriptions, the list's button); the message text goes in
//! the variable `{{1}}`, so one resource serves every contact. What to create
//! when, and remembering it, is the sender's; this module only knows the wire.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::client::{execute, SendOutcome, TwilioClient};
use crate::domain::Secret;
use crate::message::{Interactive, InteractiveStyle};

/// The placeholder the message text goes in.
const TEXT_VARIABLE: &str = "1";

/// Where and as whom to call the Content API.
#[derive(Debug, Clone, Copy)]
pub struct ContentApi<'a> {
    /// `https://content.twilio.com` or a test double; no trailing slash needed.
    pub base: &'a str,
    pub account_sid: &'a str,
    pub auth_token: &'a Secret,
}

/// The Content resource a menu is sent from (its `types`), the same for every
/// contact: the text is the placeholder `{{1}}`.
pub fn menu_types(menu: &Interactive) -> Value {
    let body = format!("{{{{{TEXT_VARIABLE}}}}}");
    let interactive = match menu.style {
        InteractiveStyle::Buttons => json!({
            "twilio/quick-reply": {
                "body": body,
                "actions": menu.choices.iter()
                    .map(|c| json!({"title": c.label, "id": c.id}))
                    .collect::<Vec<_>>(),
            }
        }),
        InteractiveStyle::List => json!({
            "twilio/list-picker": {
                "body": body,
                "button": menu.button.as_deref().unwrap_or(crate::message::limits::DEFAULT_LIST_BUTTON),
                "items": menu.choices.iter()
                    .map(|c| {
                        let mut item = json!({"item": c.label, "id": c.id});
                        if let Some(d) = &c.description {
                            item["description"] = json!(d);
                        }
                        item
                    })
                    .collect::<Vec<_>>(),
            }
        }),
    };
    let mut types = interactive;
    // Where interactive messages cannot be shown, the numbered list.
    types["twilio/text"] = json!({ "body": format!("{body}\n{}", menu.numbered_list()) });
    types
}

/// A key for a menu's shape: the same for every contact's copy of one menu of
/// one account, different when anything in its Content resource differs.
pub fn shape_key(menu: &Interactive, api: &ContentApi<'_>) -> String {
    let mut hash = Sha256::new();
    hash.update(api.base.trim_end_matches('/').as_bytes());
    hash.update([0]);
    hash.update(api.account_sid.as_bytes());
    hash.update([0]);
    hash.update(menu_types(menu).to_string().as_bytes());
    hash.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `ContentVariables` for one contact's copy of a menu: its text.
pub fn menu_variables(menu: &Interactive) -> String {
    json!({ "1": menu.text }).to_string()
}

/// `ContentVariables` for a template's values.
pub fn template_variables(variables: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::to_string(variables).unwrap_or_else(|_| "{}".to_owned())
}

impl TwilioClient {
    /// Creates the Content resource for `menu`'s shape (named `friendly_name`).
    /// [`SendOutcome::Accepted`] carries the new `HX...` SID; a refusal is
    /// classified like a send's (a 4xx is for good, 429 and 5xx pass).
    pub async fn create_menu_content(
        &self,
        api: &ContentApi<'_>,
        friendly_name: &str,
        menu: &Interactive,
    ) -> SendOutcome {
        let body = json!({
            "friendly_name": friendly_name,
            "language": "en",
            "variables": { "1": "Please choose" },
            "types": menu_types(menu),
        });
        let url = format!("{}/v1/Content", api.base.trim_end_matches('/'));
        let request = self
            .http
            .post(url)
            .basic_auth(api.account_sid, Some(api.auth_token.expose()))
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        execute(request).await
    }

    /// Marks inbound WhatsApp message `message_sid` read with a typing
    /// indicator, within `timeout`. Best effort: the error says what went wrong,
    /// for the log.
    pub async fn typing_indicator(
        &self,
        base: &str,
        account_sid: &str,
        auth_token: &Secret,
        message_sid: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let url = format!("{}/v2/Indicators/Typing.json", base.trim_end_matches('/'));
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("channel", "whatsapp")
            .append_pair("messageId", message_sid)
            .finish();
        let request = self
            .http
            .post(url)
            .timeout(timeout)
            .basic_auth(account_sid, Some(auth_token.expose()))
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form);
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("Twilio answered {}", response.status())),
            Err(error) => Err(error.without_url().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Choice;

    fn menu(style: InteractiveStyle, text: &str) -> Interactive {
        Interactive {
            style,
            text: text.into(),
            button: (style == InteractiveStyle::List).then(|| "See".to_owned()),
            choices: vec![
                Choice {
                    label: "Browse".into(),
                    id: "browse".into(),
                    description: None,
                },
                Choice {
                    label: "Book".into(),
                    id: "2".into(),
                    description: (style == InteractiveStyle::List).then(|| "30 min".to_owned()),
                },
            ],
        }
    }

    #[test]
    fn buttons_and_lists_with_a_text_fallback() {
        let types = menu_types(&menu(InteractiveStyle::Buttons, "Hi"));
        assert_eq!(
            types,
            json!({
                "twilio/quick-reply": {"body": "{{1}}", "actions": [
                    {"title": "Browse", "id": "browse"}, {"title": "Book", "id": "2"}]},
                "twilio/text": {"body": "{{1}}\n1. Browse\n2. Book"},
            })
        );
        let types = menu_types(&menu(InteractiveStyle::List, "Hi"));
        assert_eq!(
            types["twilio/list-picker"],
            json!({"body": "{{1}}", "button": "See", "items": [
                {"item": "Browse", "id": "browse"},
                {"item": "Book", "id": "2", "description": "30 min"}]})
        );
    }

    #[test]
    fn the_shape_leaves_out_the_text_and_keeps_the_account() {
        let token = Secret::new("t");
        let api = ContentApi {
            base: "https://content.twilio.com",
            account_sid: "AC1",
            auth_token: &token,
        };
        let other = ContentApi {
            account_sid: "AC2",
            ..api
        };
        let a = menu(InteractiveStyle::Buttons, "Hi Amina");
        let b = menu(InteractiveStyle::Buttons, "Hi Bo");
        assert_eq!(shape_key(&a, &api), shape_key(&b, &api));
        assert_ne!(shape_key(&a, &api), shape_key(&a, &other));
        let list = menu(InteractiveStyle::List, "Hi Amina");
        assert_ne!(shape_key(&a, &api), shape_key(&list, &api));
        assert_eq!(menu_variables(&a), r#"{"1":"Hi Amina"}"#);
    }
}
