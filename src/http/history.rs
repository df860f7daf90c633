//! Conversation history (SPEC §10.1), behind the admin token:
//! `GET /api/bots/{bot}/contacts/{contact}` (the contact's opt-out state, their
//! conversation and its timeline, newest first, paged) and
//! `GET /api/bots/{bot}/conversations?q=&before=` (conversations, newest
//! activity first, or those matching a contact or a MessageSid). The reads are
//! the console's (`store/console.rs`), so each is one indexed query per page;
//! this file checks the parameters and shapes the JSON.

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};

use super::admin::authorize;
use super::outbound::rfc3339;
use super::{ApiError, AppState};
use crate::domain::BotId;
use crate::message::{Content, InboundMessage};
use crate::store::{
    ConversationDetail, ConversationSummary, Cursor, InboundRow, OutboxRow, StatusEvent,
    TimelineEntry,
};
use crate::twilio::errors;

/// Conversations per page of the list, unless `limit` asks for fewer (or more,
/// up to [`MAX_CONVERSATIONS`]).
const CONVERSATIONS_PAGE: usize = 50;
const MAX_CONVERSATIONS: usize = 200;
/// Timeline entries per page, unless `limit` says otherwise (up to
/// [`MAX_ENTRIES`]).
const TIMELINE_PAGE: usize = 100;
const MAX_ENTRIES: usize = 500;
/// Longest search text, as in the console.
const MAX_QUERY_CHARS: usize = crate::console::MAX_QUERY_CHARS;
/// Longest contact address taken in the path.
const MAX_CONTACT_CHARS: usize = 256;

/// One conversation in the list.
#[derive(Serialize)]
pub struct ConversationView {
    id: i64,
    contact: String,
    /// Where it stands; `null` when it ended.
    node: Option<String>,
    updated_at: String,
    last_message_at: Option<String>,
    opted_out_at: Option<String>,
}

impl From<ConversationSummary> for ConversationView {
    fn from(c: ConversationSummary) -> ConversationView {
        ConversationView {
            id: c.id,
            contact: c.contact,
            node: c.node,
            updated_at: rfc3339(c.updated_at_ms),
            last_message_at: c.last_inbound_at_ms.map(rfc3339),
            opted_out_at: c.opted_out_at_ms.map(rfc3339),
        }
    }
}

/// `GET /api/bots/{bot}/conversations`.
#[derive(Serialize)]
pub struct ConversationsView {
    bot: String,
    /// Whether a bot of that name is loaded now (history outlives its folder).
    bot_loaded: bool,
    conversations: Vec<ConversationView>,
    /// `before` for the next page; `null` on the last page (and for a search,
    /// which answers at most 50 at once).
    next: Option<String>,
}

/// `GET /api/bots/{bot}/contacts/{contact}`.
#[derive(Serialize)]
pub struct ContactView {
    bot: String,
    contact: String,
    opted_out: bool,
    opted_out_at: Option<String>,
    /// Their last message: their WhatsApp window runs 24 hours from it.
    last_message_at: Option<String>,
    /// When Twilio reported their window closed (63016), unless they wrote since.
    window_closed_at: Option<String>,
    conversation: ConversationInfo,
    /// Newest first.
    timeline: Vec<EntryView>,
    /// `before` for the page of older entries; `null` when this page reaches
    /// the first one kept.
    next: Option<String>,
}

#[derive(Serialize)]
pub struct ConversationInfo {
    id: i64,
    /// Where it stands; `null` when it ended.
    node: Option<String>,
    vars: Map<String, Value>,
    updated_at: String,
    /// The wait with a time limit the conversation stands at (SPEC §9.2).
    timer: Option<TimerView>,
    /// Handed off to a person (SPEC §10.2). Always `null` until the handoff
    /// state is stored (merged with the handoff work).
    handoff: Option<Value>,
}

#[derive(Serialize)]
pub struct TimerView {
    at: String,
    /// The node entered then; `null`: the conversation ends quietly.
    then: Option<String>,
}

/// One timeline entry: a message from the contact, or a reply.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryView {
    Message(MessageView),
    Reply(ReplyView),
}

#[derive(Serialize)]
pub struct MessageView {
    id: i64,
    at: String,
    message_sid: String,
    text: String,
    /// Where the conversation stood after it; `null` when it ended there.
    node: Option<String>,
    media: Vec<MediaView>,
    /// A WhatsApp button the contact pressed.
    button: Option<ButtonView>,
    /// A location the contact shared.
    location: Option<LocationView>,
}

#[derive(Serialize)]
pub struct MediaView {
    url: String,
    content_type: Option<String>,
}

#[derive(Serialize)]
pub struct ButtonView {
    text: Option<String>,
    payload: Option<String>,
}

#[derive(Serialize)]
pub struct LocationView {
    latitude: Option<f64>,
    longitude: Option<f64>,
    address: Option<String>,
    label: Option<String>,
}

#[derive(Serialize)]
pub struct ReplyView {
    id: i64,
    /// When it was queued.
    at: String,
    text: String,
    media: Vec<String>,
    /// An interactive menu or a template, as sent.
    content: Option<Content>,
    status: &'static str,
    attempts: i32,
    twilio_sid: Option<String>,
    error: Option<ErrorView>,
    /// Oldest first, from `queued` on.
    history: Vec<EventView>,
}

#[derive(Serialize)]
pub struct ErrorView {
    code: Option<i64>,
    /// What the code means (SPEC §8.4).
    meaning: Option<String>,
    message: Option<String>,
}

#[derive(Serialize)]
pub struct EventView {
    at: String,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meaning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<String>,
}

impl From<&StatusEvent> for EventView {
    fn from(e: &StatusEvent) -> EventView {
        EventView {
            at: rfc3339(e.at_ms),
            status: e.status.clone(),
            attempt: e.attempt,
            sid: e.sid.clone(),
            code: e.code,
            meaning: e.code.map(errors::meaning),
            error: e.error.clone(),
            next_attempt_at: e.next_attempt_at_ms.map(rfc3339),
            by: e.by.clone(),
        }
    }
}

fn message_view(row: &InboundRow) -> MessageView {
    // Written by this engine from an `InboundMessage`; a row it cannot read
    // still shows its text.
    let message: InboundMessage = serde_json::from_str(&row.payload).unwrap_or_default();
    let media = message
        .media
        .iter()
        .enumerate()
        .map(|(i, url)| MediaView {
            url: url.clone(),
            content_type: message.media_types.get(i).cloned(),
        })
        .collect();
    let button =
        (message.button.is_some() || message.button_payload.is_some()).then(|| ButtonView {
            text: message.button.clone(),
            payload: message.button_payload.clone(),
        });
    let located = message.latitude.is_some()
        || message.longitude.is_some()
        || message.address.is_some()
        || message.label.is_some();
    let location = located.then(|| LocationView {
        latitude: message.latitude,
        longitude: message.longitude,
        address: message.address.clone(),
        label: message.label.clone(),
    });
    MessageView {
        id: row.id,
        at: rfc3339(row.received_at_ms),
        message_sid: row.message_sid.clone(),
        text: row.body.clone(),
        node: row.node.clone(),
        media,
        button,
        location,
    }
}

fn reply_view(row: &OutboxRow) -> ReplyView {
    let error = (row.error_code.is_some() || row.error_message.is_some()).then(|| ErrorView {
        code: row.error_code,
        meaning: row.error_code.map(errors::meaning),
        message: row.error_message.clone(),
    });
    ReplyView {
        id: row.id,
        at: rfc3339(row.created_at_ms),
        text: row.body.clone(),
        media: row.media.clone(),
        content: row.content.clone(),
        status: row.status.as_str(),
        attempts: row.attempts,
        twilio_sid: row.twilio_sid.clone(),
        error,
        history: row.history.iter().map(EventView::from).collect(),
    }
}

/// The bot of a history request: any well-formed id (the rows of a bot whose
/// folder was removed stay readable); whether it is loaded now.
fn history_bot(app: &AppState, bot: &str) -> Result<(String, bool), ApiError> {
    let id = BotId::parse(bot).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`{}` is not a bot id: a bot id is its folder's name (lower-case letters, digits, `-`, `_`)",
            bot.chars().take(64).collect::<String>()
        ))
    })?;
    let loaded = app.registry.get(id.as_str()).is_some();
    Ok((id.to_string(), loaded))
}

/// The query string's parameters, each at most once and each one of `known`.
fn params(query: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut found: Vec<(String, String)> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let key = key.into_owned();
        if !known.contains(&key.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter `{}`: this request takes {}",
                key.chars().take(64).collect::<String>(),
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if found.iter().any(|(k, _)| *k == key) {
            return Err(ApiError::BadRequest(format!(
                "`{key}` is given twice: give it once"
            )));
        }
        found.push((key, value.into_owned()));
    }
    Ok(found)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `limit`: 1 to `max`, `default` when absent.
fn page_size(text: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "`limit` must be a number from 1 to {max}, not `{}`",
            text.chars().take(32).collect::<String>()
        ))),
    }
}

fn bad_cursor(text: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "`before` is `{}`, which is not a page position: pass the `next` of the page before, as it was answered",
        text.chars().take(40).collect::<String>()
    ))
}

/// `GET /api/bots/{bot}/conversations?q=TEXT&before=CURSOR&limit=N`.
pub async fn conversations(
    State(app): State<AppState>,
    Path(bot): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<ConversationsView>, ApiError> {
    authorize(&app, &headers)?;
    let (bot, bot_loaded) = history_bot(&app, &bot)?;
    let params = params(query.as_deref(), &["q", "before", "limit"])?;
    let q = param(&params, "q").map(str::trim).unwrap_or("");
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::BadRequest(format!(
            "`q` is longer than {MAX_QUERY_CHARS} characters: search for a contact (whatsapp:+14155550100) or a MessageSid (SM...)"
        )));
    }
    if q.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "`q` has control characters: search for a contact or a MessageSid".into(),
        ));
    }
    let limit = page_size(
        param(&params, "limit"),
        CONVERSATIONS_PAGE,
        MAX_CONVERSATIONS,
    )?;
    let before = param(&params, "before").filter(|b| !b.is_empty());
    let from = match before {
        None => Cursor::NEWEST,
        Some(text) => Cursor::parse(text).ok_or_else(|| bad_cursor(text))?,
    };
    let (rows, next) = if q.is_empty() {
        let page = app.store.conversations(&bot, from, limit).await?;
        (page.rows, page.next)
    } else {
        if before.is_some() {
            return Err(ApiError::BadRequest(
                "a search (`q`) answers every match at once: drop `before`".into(),
            ));
        }
        (app.store.search_conversations(&bot, q).await?, None)
    };
    Ok(Json(ConversationsView {
        bot,
        bot_loaded,
        conversations: rows.into_iter().map(ConversationView::from).collect(),
        next: next.map(|c| c.to_string()),
    }))
}

/// `GET /api/bots/{bot}/contacts/{contact}?before=CURSOR&limit=N`.
pub async fn contact(
    State(app): State<AppState>,
    Path((bot, contact)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<ContactView>, ApiError> {
    authorize(&app, &headers)?;
    let (bot, bot_loaded) = history_bot(&app, &bot)?;
    if contact.is_empty()
        || contact.chars().count() > MAX_CONTACT_CHARS
        || contact.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(format!(
            "the contact must be an address of 1 to {MAX_CONTACT_CHARS} characters, such as whatsapp:+14155550100"
        )));
    }
    let params = params(query.as_deref(), &["before", "limit"])?;
    let limit = page_size(param(&params, "limit"), TIMELINE_PAGE, MAX_ENTRIES)?;
    let before_ms = match param(&params, "before").filter(|b| !b.is_empty()) {
        None => i64::MAX,
        Some(text) => text.parse::<i64>().map_err(|_| bad_cursor(text))?,
    };
    let Some(detail) = app.store.conversation_with(&bot, &contact).await? else {
        let also = if bot_loaded {
            ""
        } else {
            " (and no bot of that name is loaded)"
        };
        return Err(ApiError::NotFound(format!(
            "bot `{bot}` has no conversation with `{}`{also}: give the contact's whole address, as in whatsapp:+14155550100",
            contact.chars().take(64).collect::<String>()
        )));
    };
    let page = app
        .store
        .timeline(&detail.summary, before_ms, limit)
        .await?;
    let timeline = page
        .entries
        .iter()
        .rev()
        .map(|entry| match entry {
            TimelineEntry::Inbound(row) => EntryView::Message(message_view(row)),
            TimelineEntry::Reply(row) => EntryView::Reply(reply_view(row)),
        })
        .collect();
    let ConversationDetail {
        summary,
        vars,
        timeout_at_ms,
        on_timeout,
        window_closed_at_ms,
    } = detail;
    Ok(Json(ContactView {
        bot,
        contact: summary.contact,
        opted_out: summary.opted_out_at_ms.is_some(),
        opted_out_at: summary.opted_out_at_ms.map(rfc3339),
        last_message_at: summary.last_inbound_at_ms.map(rfc3339),
        window_closed_at: window_closed_at_ms.map(rfc3339),
        conversation: ConversationInfo {
            id: summary.id,
            node: summary.node,
            vars,
            updated_at: rfc3339(summary.updated_at_ms),
            timer: timeout_at_ms.map(|at| TimerView {
                at: rfc3339(at),
                then: on_timeout,
            }),
            handoff: None,
        },
        timeline,
        next: page.older_before_ms.map(|ms| ms.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_known_once_and_bounded() {
        let known = ["q", "before", "limit"];
        assert_eq!(
            params(Some("q=%2B1415&limit=5"), &known).unwrap(),
            [("q".into(), "+1415".into()), ("limit".into(), "5".into())]
        );
        for bad in ["x=1", "q=a&q=b", "before=1&before=2"] {
            assert!(
                matches!(params(Some(bad), &known), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
        assert_eq!(page_size(None, 50, 200).unwrap(), 50);
        assert_eq!(page_size(Some("200"), 50, 200).unwrap(), 200);
        for bad in ["0", "201", "-1", "x", "99999999999999999999999"] {
            assert!(page_size(Some(bad), 50, 200).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stored_message_shows_its_media_button_and_location() {
        let payload = serde_json::to_string(&InboundMessage {
            text: "here".into(),
            media: vec!["https://x/1.jpg".into()],
            media_types: vec!["image/jpeg".into()],
            button: Some("Book".into()),
            button_payload: Some("book".into()),
            latitude: Some(1.5),
            longitude: Some(-2.0),
            address: Some("1 Main St".into()),
            label: Some("Salon".into()),
        })
        .unwrap();
        let view = message_view(&InboundRow {
            id: 1,
            message_sid: "SM1".into(),
            body: "here".into(),
            payload,
            received_at_ms: 0,
            node: Some("menu".into()),
        });
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["media"][0]["content_type"], "image/jpeg");
        assert_eq!(json["button"]["payload"], "book");
        assert_eq!(json["location"]["label"], "Salon");
        assert_eq!(json["node"], "menu");
        let plain = message_view(&InboundRow {
            id: 2,
            message_sid: "SM2".into(),
            body: "hi".into(),
            payload: "not json".into(),
            received_at_ms: 0,
            node: None,
        });
        let json = serde_json::to_value(&plain).unwrap();
        assert_eq!(json["text"], "hi");
        assert!(json["button"].is_null() && json["location"].is_null());
    }
}
