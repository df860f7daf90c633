//! The start API (SPEC §9.1): `POST /api/bots/{bot}/conversations`,
//! `GET /api/scheduled`, `DELETE /api/scheduled/{id}`, behind the admin token.
//! Every field is checked here, with a message that says what to fix; the
//! start itself is `outbound`'s.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::admin::authorize;
use super::{ApiError, AppState};
use crate::outbound::{StartAnswer, StartRefused, StartRequest};
use crate::store::{CancelStart, IfActive, StartRow};

/// The fields a start request may have.
const FIELDS: [&str; 5] = ["to", "node", "vars", "at", "if_active"];

/// Limits on what one request may carry (the body itself is limited to 64 KiB).
const MAX_VARS: usize = 100;
const MAX_VAR_NAME: usize = 64;
const MAX_NODE_NAME: usize = 200;
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// How far ahead a start may be scheduled.
const MAX_AHEAD_DAYS: i64 = 366;
/// Pending starts listed at most by one `GET /api/scheduled`.
const MAX_LISTED: usize = 1000;

/// The 202 answer.
#[derive(Serialize)]
pub struct StartView {
    id: i64,
    status: String,
    reason: Option<String>,
}

impl From<StartAnswer> for StartView {
    fn from(answer: StartAnswer) -> StartView {
        StartView {
            id: answer.id,
            status: answer.status,
            reason: answer.reason,
        }
    }
}

/// One pending start in `GET /api/scheduled`.
#[derive(Serialize)]
pub struct ScheduledView {
    id: i64,
    bot: String,
    to: String,
    node: String,
    vars: Map<String, Value>,
    at: String,
    if_active: &'static str,
    created_at: String,
}

impl From<StartRow> for ScheduledView {
    fn from(row: StartRow) -> ScheduledView {
        ScheduledView {
            id: row.id,
            bot: row.bot,
            to: row.contact,
            node: row.node,
            vars: row.vars,
            at: rfc3339(row.run_at_ms),
            if_active: row.if_active.as_str(),
            created_at: rfc3339(row.created_at_ms),
        }
    }
}

/// `ms` as an RFC 3339 time in UTC, to the millisecond.
pub(super) fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `POST /api/bots/{bot}/conversations`.
pub async fn start(
    State(app): State<AppState>,
    Path(bot): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<StartView>), ApiError> {
    authorize(&app, &headers)?;
    let loaded = app
        .registry
        .get(&bot)
        .ok_or_else(|| ApiError::UnknownBot(bot.clone()))?;
    let now = app.clock.now();
    let mut request = parse_start(&body, now)?;
    request.idempotency_key = idempotency_key(&headers)?;
    let answer = app
        .outbound
        .request(&loaded, request)
        .await
        .map_err(refused)?;
    Ok((StatusCode::ACCEPTED, Json(answer.into())))
}

/// `GET /api/scheduled?bot=ID`: pending starts, soonest first.
pub async fn scheduled(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ScheduledView>>, ApiError> {
    authorize(&app, &headers)?;
    let mut bot = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "bot" => bot = Some(value.into_owned()),
            other => {
                return Err(ApiError::BadRequest(format!(
                "unknown query parameter `{}`: the only one is `bot`, as in /api/scheduled?bot=ID",
                other.chars().take(64).collect::<String>()
            )))
            }
        }
    }
    let rows = app
        .store
        .scheduled_starts(bot.as_deref(), MAX_LISTED)
        .await?;
    Ok(Json(rows.into_iter().map(ScheduledView::from).collect()))
}

/// `DELETE /api/scheduled/{id}`: 204 when cancelled (or already), 409 once it ran.
pub async fn cancel(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&app, &headers)?;
    let id: i64 = id.parse().map_err(|_| {
        ApiError::BadRequest(
            "the id in /api/scheduled/{id} must be a number, as answered when the start was scheduled"
                .into(),
        )
    })?;
    let now_ms = app.clock.now().timestamp_millis();
    match app.store.cancel_start(id, now_ms).await? {
        CancelStart::Cancelled => Ok(StatusCode::NO_CONTENT),
        CancelStart::Ran(status) => Err(ApiError::Conflict(format!(
            "start {id} already ran (it was {}): there is nothing left to cancel",
            status.as_str()
        ))),
        CancelStart::NotFound => Err(ApiError::NotFound(format!(
            "no scheduled start {id} (finished starts are forgotten after 30 days)"
        ))),
    }
}

/// The status each refusal is answered with.
pub(super) fn refused(refusal: StartRefused) -> ApiError {
    match refusal {
        StartRefused::UnknownNode { .. } => ApiError::NotFound(refusal.to_string()),
        StartRefused::NotOutbound { .. } => ApiError::NotAllowed(refusal.to_string()),
        StartRefused::OptedOut | StartRefused::InProgress => {
            ApiError::Conflict(refusal.to_string())
        }
        StartRefused::Store(error) => ApiError::from(error),
    }
}

/// The `Idempotency-Key` header, if sent.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters, such as a UUID"
        ))
    };
    let key = value.to_str().map_err(|_| bad())?;
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !visible {
        return Err(bad());
    }
    Ok(Some(key.to_owned()))
}

/// A body that must be a JSON object like `example`; `or` follows the
/// example in the message for a body that is not JSON at all.
pub(super) fn json_object(
    body: &[u8],
    example: &str,
    or: &str,
) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not valid JSON ({e}): send a JSON object such as {example}{or}"
        ))
    })?;
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(ApiError::BadRequest(format!(
            "the body must be a JSON object such as {example}"
        ))),
    }
}

/// The body of a start request, checked field by field at `now`.
fn parse_start(body: &[u8], now: DateTime<Utc>) -> Result<StartRequest, ApiError> {
    const EXAMPLE: &str =
        r#"{"to": "whatsapp:+14155550100", "node": "reminder", "vars": {"name": "Amina"}}"#;
    let bad = |message: String| ApiError::BadRequest(message);
    let fields = json_object(body, EXAMPLE, "")?;
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown field `{}`: a start has `to`, `node`, and optionally `vars`, `at` and `if_active`",
            unknown.chars().take(64).collect::<String>()
        )));
    }
    let text = |name: &str| text_field(&fields, name);
    let to = text("to")?.ok_or_else(|| {
        bad(format!(
            "`to` is missing: give the contact's address, such as {EXAMPLE}"
        ))
    })?;
    if !valid_address(to) {
        return Err(bad(format!("`to` {ADDRESS_RULE}")));
    }
    let node =
        text("node")?.ok_or_else(|| bad("`node` is missing: name the node to start at".into()))?;
    if node.trim().is_empty() || node.len() > MAX_NODE_NAME {
        return Err(bad(format!(
            "`node` must be a node name of 1 to {MAX_NODE_NAME} characters"
        )));
    }
    let vars =
        match fields.get("vars") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(vars)) => {
                check_vars(vars)?;
                vars.clone()
            }
            Some(_) => return Err(bad(
                r#"`vars` must be a JSON object of names and values, such as {"name": "Amina"}"#
                    .into(),
            )),
        };
    let at_ms = match text("at")? {
        None => None,
        Some(at) => Some(parse_at(at, now)?),
    };
    let if_active = match text("if_active")? {
        None => IfActive::default(),
        Some(word) => IfActive::parse(word).ok_or_else(|| {
            bad(format!(
                "`if_active` must be `interrupt` (the default) or `skip`, not `{}`",
                word.chars().take(64).collect::<String>()
            ))
        })?,
    };
    Ok(StartRequest {
        to: to.to_owned(),
        node: node.trim().to_owned(),
        vars,
        at_ms,
        if_active,
        idempotency_key: None,
    })
}

/// A field that must be a string when present (`null` counts as absent).
fn text_field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::BadRequest(format!("`{name}` must be a string"))),
    }
}

/// What [`valid_address`] wants, for messages: "`to` {ADDRESS_RULE}".
pub(super) const ADDRESS_RULE: &str = "must be a phone number in E.164 form, `whatsapp:+14155550100` for WhatsApp or `+14155550100` for SMS";

/// `whatsapp:+` or `+`, then 7 to 15 digits not starting with 0.
pub(super) fn valid_address(to: &str) -> bool {
    let number = to.strip_prefix("whatsapp:").unwrap_or(to);
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

pub(super) fn check_vars(vars: &Map<String, Value>) -> Result<(), ApiError> {
    if vars.len() > MAX_VARS {
        return Err(ApiError::BadRequest(format!(
            "`vars` has {} names; at most {MAX_VARS} are accepted",
            vars.len()
        )));
    }
    for name in vars.keys() {
        let mut chars = name.chars();
        let valid = name.len() <= MAX_VAR_NAME
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ApiError::BadRequest(format!(
                "`vars` name `{}` is not a valid variable name: use up to {MAX_VAR_NAME} letters, digits and `_`, not starting with a digit",
                name.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// `at`: an RFC 3339 time, at most [`MAX_AHEAD_DAYS`] ahead; a past time means now.
pub(super) fn parse_at(at: &str, now: DateTime<Utc>) -> Result<i64, ApiError> {
    let parsed = DateTime::parse_from_rfc3339(at).map_err(|e| {
        ApiError::BadRequest(format!(
            "`at` is not an RFC 3339 time ({e}): write it like 2026-12-02T09:00:00Z or 2026-12-02T10:00:00+01:00"
        ))
    })?;
    let at = parsed.with_timezone(&Utc);
    if at > now + chrono::Duration::days(MAX_AHEAD_DAYS) {
        return Err(ApiError::BadRequest(format!(
            "`at` is more than {MAX_AHEAD_DAYS} days ahead: schedule it nearer the time"
        )));
    }
    Ok(at.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn refused(body: &str) -> String {
        match parse_start(body.as_bytes(), now()) {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected a 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_full_request_parses() {
        let request = parse_start(
            br#"{"to": "whatsapp:+14155550100", "node": " reminder ", "vars": {"name": "Amina"},
                 "at": "2026-12-02T09:00:00Z", "if_active": "skip"}"#,
            now(),
        )
        .unwrap();
        assert_eq!(request.to, "whatsapp:+14155550100");
        assert_eq!(request.node, "reminder");
        assert_eq!(request.vars["name"], "Amina");
        assert_eq!(request.if_active, IfActive::Skip);
        assert_eq!(
            request.at_ms,
            Some(now().timestamp_millis() + 33 * 3600 * 1000)
        );
    }

    #[test]
    fn malformed_requests_say_what_to_fix() {
        for (body, says) in [
            ("", "not valid JSON"),
            ("[1]", "must be a JSON object"),
            (r#"{"node": "x"}"#, "`to` is missing"),
            (r#"{"to": 5, "node": "x"}"#, "`to` must be a string"),
            (r#"{"to": "hello", "node": "x"}"#, "E.164"),
            (r#"{"to": "whatsapp:+1", "node": "x"}"#, "E.164"),
            (r#"{"to": "+14155550100"}"#, "`node` is missing"),
            (r#"{"to": "+14155550100", "node": ""}"#, "1 to 200"),
            (
                r#"{"to": "+14155550100", "node": "x", "vars": [1]}"#,
                "`vars` must be a JSON object",
            ),
            (
                r#"{"to": "+14155550100", "node": "x", "vars": {"1a": 1}}"#,
                "not a valid variable name",
            ),
            (
                r#"{"to": "+14155550100", "node": "x", "at": "tomorrow"}"#,
                "RFC 3339",
            ),
            (
                r#"{"to": "+14155550100", "node": "x", "at": "2030-01-01T00:00:00Z"}"#,
                "days ahead",
            ),
            (
                r#"{"to": "+14155550100", "node": "x", "if_active": "later"}"#,
                "`interrupt`",
            ),
            (
                r#"{"to": "+14155550100", "node": "x", "when": 1}"#,
                "unknown field `when`",
            ),
        ] {
            let message = refused(body);
            assert!(message.contains(says), "{body}: {message}");
        }
    }

    #[test]
    fn a_past_time_is_kept_and_means_now() {
        let request = parse_start(
            br#"{"to": "+14155550100", "node": "x", "at": "2020-01-01T00:00:00Z"}"#,
            now(),
        )
        .unwrap();
        assert!(request.at_ms.unwrap() < now().timestamp_millis());
    }
}
