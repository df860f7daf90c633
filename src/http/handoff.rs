//! The handoff API (SPEC §10.2), behind the admin token: a person's message
//! to a handed-off contact (`POST /api/bots/{bot}/contacts/{contact}/messages`)
//! and handing the conversation back (`.../release`). Every field is checked
//! here with a message that says what to fix; the steps are `inbound`'s.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};

use super::admin::authorize;
use super::outbound::{json_object, valid_address, ADDRESS_RULE};
use super::{ApiError, AppState};
use crate::inbound::PersonRefused;

/// Longest text of a person's message, in characters (Twilio's limit on a
/// message body).
pub const MAX_TEXT_CHARS: usize = 1600;
/// Most media URLs on one message (Twilio's limit).
pub const MAX_MEDIA: usize = 10;
/// Longest media URL.
pub const MAX_MEDIA_URL: usize = 2048;
/// Longest node name a release may name.
const MAX_NODE_NAME: usize = 200;

/// A person's message, as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonMessage {
    pub text: String,
    pub media: Vec<String>,
}

/// The answer to a message or a release.
#[derive(Debug, Serialize)]
pub struct HandoffView {
    /// `queued` (a message) or `released`.
    status: &'static str,
    /// Replies queued for the contact.
    replies: usize,
    /// The node a release entered (`null`: the conversation ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

/// The bot and the contact a path names: 404 for a bot not loaded, 400 for
/// an address that cannot be one.
fn target(
    app: &AppState,
    bot: &str,
    contact: &str,
) -> Result<std::sync::Arc<crate::flow::Bot>, ApiError> {
    let loaded = app
        .registry
        .get(bot)
        .ok_or_else(|| ApiError::UnknownBot(bot.to_owned()))?;
    if !valid_address(contact) {
        return Err(ApiError::BadRequest(format!(
            "the contact in the path {ADDRESS_RULE} (URL-encoded: whatsapp%3A%2B14155550100)"
        )));
    }
    Ok(loaded)
}

/// `POST /api/bots/{bot}/contacts/{contact}/messages`: 202 when queued.
pub async fn message(
    State(app): State<AppState>,
    Path((bot, contact)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<HandoffView>), ApiError> {
    authorize(&app, &headers)?;
    let loaded = target(&app, &bot, &contact)?;
    let message = parse_message(&body)?;
    let replies = app
        .inbound
        .person_answer(loaded, &contact, message.text, message.media)
        .await
        .map_err(refused)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(HandoffView {
            status: "queued",
            replies,
            node: None,
        }),
    ))
}

/// `POST /api/bots/{bot}/contacts/{contact}/release`: 200 once handed back.
pub async fn release(
    State(app): State<AppState>,
    Path((bot, contact)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<HandoffView>, ApiError> {
    authorize(&app, &headers)?;
    let loaded = target(&app, &bot, &contact)?;
    let node = parse_release(&body)?;
    if let Some(node) = &node {
        if loaded.node(node).is_none() {
            return Err(ApiError::NotFound(format!(
                "bot `{bot}` has no node `{}`",
                node.chars().take(64).collect::<String>()
            )));
        }
    }
    let replies = app
        .inbound
        .release(loaded, &contact, node.clone())
        .await
        .map_err(refused)?;
    Ok(Json(HandoffView {
        status: "released",
        replies,
        node,
    }))
}

/// The status each refusal is answered with.
pub(super) fn refused(refusal: PersonRefused) -> ApiError {
    match refusal {
        PersonRefused::Store(error) => ApiError::from(error),
        PersonRefused::UnknownContact => ApiError::NotFound(refusal.to_string()),
        PersonRefused::NotHandedOff
        | PersonRefused::OutsideWindow
        | PersonRefused::OptedOut
        | PersonRefused::Flow { .. } => ApiError::Conflict(refusal.to_string()),
    }
}

/// The body of a message: `text` and/or `media`, nothing else.
pub fn parse_message(body: &[u8]) -> Result<PersonMessage, ApiError> {
    const EXAMPLE: &str = r#"{"text": "Hi, this is Sam from sales."}"#;
    let bad = |message: String| ApiError::BadRequest(message);
    let fields = json_object(body, EXAMPLE, "")?;
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["text", "media"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "unknown field `{}`: a message has `text` and optionally `media` (a list of URLs)",
            unknown.chars().take(64).collect::<String>()
        )));
    }
    let text = match fields.get("text") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(_) => return Err(bad("`text` must be a string".into())),
    };
    check_text(&text)?;
    let media = media(&fields)?;
    if text.trim().is_empty() && media.is_empty() {
        return Err(bad(format!(
            "the message is empty: give a `text`, such as {EXAMPLE}, or `media`"
        )));
    }
    Ok(PersonMessage { text, media })
}

/// A message's text: within [`MAX_TEXT_CHARS`], no control characters but
/// line breaks and tabs.
pub fn check_text(text: &str) -> Result<(), ApiError> {
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(ApiError::BadRequest(format!(
            "`text` has {chars} characters; a message holds at most {MAX_TEXT_CHARS}: split it in two"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::BadRequest(
            "`text` has a control character (such as NUL): send plain text, with line breaks as \\n"
                .into(),
        ));
    }
    Ok(())
}

/// `media`: up to [`MAX_MEDIA`] http(s) URLs.
fn media(fields: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let bad = |message: String| ApiError::BadRequest(message);
    let list = match fields.get("media") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(bad(
                r#"`media` must be a list of URLs, such as ["https://example.com/menu.pdf"]"#
                    .into(),
            ))
        }
    };
    if list.len() > MAX_MEDIA {
        return Err(bad(format!(
            "`media` has {} URLs; a message carries at most {MAX_MEDIA}",
            list.len()
        )));
    }
    list.iter()
        .map(|item| {
            let url = item.as_str().ok_or_else(|| {
                bad("each entry of `media` must be a URL in quotes".into())
            })?;
            let ok = url.len() <= MAX_MEDIA_URL
                && url::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(bad(format!(
                    "`media` entry `{}` is not an http(s) URL of at most {MAX_MEDIA_URL} characters",
                    url.chars().take(64).collect::<String>()
                )));
            }
            Ok(url.to_owned())
        })
        .collect()
}

/// The body of a release: `{"node": "main"}`, or `{}` (or nothing) to end
/// the conversation.
pub fn parse_release(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let fields = json_object(
        body,
        r#"{"node": "main"}"#,
        ", or {} to end the conversation",
    )?;
    if let Some(unknown) = fields.keys().find(|k| k.as_str() != "node") {
        return Err(ApiError::BadRequest(format!(
            "unknown field `{}`: a release has only `node` (the node the bot enters for the contact; without it the conversation ends)",
            unknown.chars().take(64).collect::<String>()
        )));
    }
    match fields.get("node") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(node)) if !node.trim().is_empty() && node.len() <= MAX_NODE_NAME => {
            Ok(Some(node.trim().to_owned()))
        }
        Some(_) => Err(ApiError::BadRequest(format!(
            "`node` must be a node name of 1 to {MAX_NODE_NAME} characters"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_with(body: &str) -> String {
        match parse_message(body.as_bytes()) {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected a 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_message_has_text_or_media() {
        let message =
            parse_message(br#"{"text": "Hi", "media": ["https://example.com/a.jpg"]}"#).unwrap();
        assert_eq!(message.text, "Hi");
        assert_eq!(message.media, ["https://example.com/a.jpg"]);
        assert!(parse_message(br#"{"media": ["https://example.com/a.jpg"]}"#).is_ok());
    }

    #[test]
    fn malformed_messages_say_what_to_fix() {
        let long = format!(r#"{{"text": "{}"}}"#, "a".repeat(MAX_TEXT_CHARS + 1));
        let many = format!(
            r#"{{"text": "x", "media": [{}]}}"#,
            [r#""https://e.com/a""#; MAX_MEDIA + 1].join(",")
        );
        for (body, says) in [
            ("", "not valid JSON"),
            ("{", "not valid JSON"),
            ("[]", "must be a JSON object"),
            (r#"{}"#, "the message is empty"),
            (r#"{"text": "  "}"#, "the message is empty"),
            (r#"{"text": 5}"#, "`text` must be a string"),
            (r#"{"text": "a\u0000b"}"#, "control character"),
            (r#"{"text": "x", "to": "y"}"#, "unknown field `to`"),
            (
                r#"{"text": "x", "media": "https://e.com"}"#,
                "must be a list",
            ),
            (r#"{"text": "x", "media": [1]}"#, "a URL in quotes"),
            (
                r#"{"text": "x", "media": ["file:///etc/passwd"]}"#,
                "not an http(s) URL",
            ),
            (long.as_str(), "at most 1600"),
            (many.as_str(), "at most 10"),
        ] {
            let message = refused_with(body);
            assert!(message.contains(says), "{body:.80}: {message}");
        }
    }

    #[test]
    fn a_release_names_a_node_or_nothing() {
        assert_eq!(parse_release(b"").unwrap(), None);
        assert_eq!(parse_release(b"{}").unwrap(), None);
        assert_eq!(
            parse_release(br#"{"node": " main "}"#).unwrap().as_deref(),
            Some("main")
        );
        for body in [
            r#"{"node": 1}"#,
            r#"{"node": ""}"#,
            r#"{"go": "x"}"#,
            "nope",
        ] {
            assert!(
                matches!(parse_release(body.as_bytes()), Err(ApiError::BadRequest(_))),
                "{body}"
            );
        }
    }
}
