//! Broadcasts (SPEC §9.3): `POST /api/bots/{bot}/broadcasts` (JSON, or CSV
//! with the options as query parameters), `GET`/`DELETE /api/broadcasts/{id}`,
//! behind the admin token. The whole body is checked before anything is
//! recorded: a broadcast is accepted whole or not at all.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::admin::authorize;
use super::outbound::{check_vars, json_object, parse_at, refused, valid_address, ADDRESS_RULE};
use super::{ApiError, AppState};
use crate::outbound::{BroadcastRequest, Contact};
use crate::store::IfActive;

/// The most contacts one broadcast may have.
pub const MAX_CONTACTS: usize = 200_000;
/// The largest broadcast body: 200,000 contacts with a few vars each.
pub const MAX_BROADCAST_BYTES: usize = 32 * 1024 * 1024;

#[derive(Serialize)]
pub struct AcceptedView {
    id: i64,
    total: usize,
}

#[derive(Serialize)]
pub struct ProgressView {
    id: i64,
    bot: String,
    node: String,
    status: String,
    total: i64,
    pending: i64,
    started: i64,
    sent: i64,
    failed: i64,
    cancelled: i64,
    /// Skipped contacts by reason.
    skipped: BTreeMap<String, i64>,
    created_at: String,
}

/// `POST /api/bots/{bot}/broadcasts`.
pub async fn create(
    State(app): State<AppState>,
    Path(bot): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<(StatusCode, Json<AcceptedView>), ApiError> {
    authorize(&app, &headers)?;
    let loaded = app
        .registry
        .get(&bot)
        .ok_or_else(|| ApiError::UnknownBot(bot.clone()))?;
    let now = app.clock.now();
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/csv"));
    let request = if csv {
        let options = query_options(query.as_deref().unwrap_or_default(), now)?;
        let contacts = parse_csv(&body)?;
        BroadcastRequest {
            contacts,
            ..options
        }
    } else {
        if query.is_some_and(|q| !q.is_empty()) {
            return Err(ApiError::BadRequest(
                "query parameters are for a CSV body (Content-Type: text/csv); in JSON give `node`, `at` and `if_active` in the body".into(),
            ));
        }
        parse_json(&body, now)?
    };
    let (id, total) = app
        .outbound
        .broadcast(&loaded, request)
        .await
        .map_err(refused)?;
    Ok((StatusCode::ACCEPTED, Json(AcceptedView { id, total })))
}

/// `GET /api/broadcasts/{id}`.
pub async fn progress(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ProgressView>, ApiError> {
    authorize(&app, &headers)?;
    let id = broadcast_id(&id)?;
    let progress = app
        .store
        .broadcast(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no broadcast {id}")))?;
    Ok(Json(ProgressView {
        id: progress.id,
        bot: progress.bot,
        node: progress.node,
        status: progress.status,
        total: progress.total,
        pending: progress.pending,
        started: progress.started,
        sent: progress.sent,
        failed: progress.failed,
        cancelled: progress.cancelled,
        skipped: progress.skipped,
        created_at: DateTime::<Utc>::from_timestamp_millis(progress.created_at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }))
}

/// `DELETE /api/broadcasts/{id}`: cancels the contacts not started yet (204).
pub async fn cancel(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&app, &headers)?;
    let id = broadcast_id(&id)?;
    let now_ms = app.clock.now().timestamp_millis();
    if app.store.cancel_broadcast(id, now_ms).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no broadcast {id}")))
    }
}

fn broadcast_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::BadRequest(
            "the id in /api/broadcasts/{id} must be a number, as answered when the broadcast was accepted".into(),
        )
    })
}

/// `node`, `at` and `if_active` of a CSV broadcast, from the query string.
fn query_options(query: &str, now: DateTime<Utc>) -> Result<BroadcastRequest, ApiError> {
    let mut options = BroadcastRequest::default();
    let mut node = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "node" => node = Some(value.trim().to_owned()),
            "at" => options.at_ms = Some(parse_at(&value, now)?),
            "if_active" => options.if_active = if_active(&value)?,
            other => {
                return Err(ApiError::BadRequest(format!(
                "unknown query parameter `{}`: a CSV broadcast takes `node`, `at` and `if_active`",
                other.chars().take(64).collect::<String>()
            )))
            }
        }
    }
    options.node = node.filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::BadRequest(
            "`node` is missing: with a CSV body, name the node in the query: /api/bots/BOT/broadcasts?node=promo".into(),
        )
    })?;
    Ok(options)
}

fn if_active(word: &str) -> Result<IfActive, ApiError> {
    IfActive::parse(word).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`if_active` must be `interrupt` (the default) or `skip`, not `{}`",
            word.chars().take(64).collect::<String>()
        ))
    })
}

/// A JSON broadcast: `{"node", "contacts": [{"to", "vars"}], "at", "if_active"}`.
fn parse_json(body: &[u8], now: DateTime<Utc>) -> Result<BroadcastRequest, ApiError> {
    const EXAMPLE: &str = r#"{"node": "promo", "contacts": [{"to": "whatsapp:+14155550100", "vars": {"name": "Amina"}}]}"#;
    let bad = |message: String| ApiError::BadRequest(message);
    let fields = json_object(body, EXAMPLE, ", or CSV with Content-Type: text/csv")?;
    let mut request = BroadcastRequest::default();
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("node", Value::String(node)) if !node.trim().is_empty() => {
                request.node = node.trim().to_owned()
            }
            ("at", Value::String(at)) => request.at_ms = Some(parse_at(&at, now)?),
            ("if_active", Value::String(word)) => request.if_active = if_active(&word)?,
            ("contacts", Value::Array(contacts)) => {
                if contacts.len() > MAX_CONTACTS {
                    return Err(bad(format!(
                        "{} contacts: at most {MAX_CONTACTS} are accepted in one broadcast; split it",
                        contacts.len()
                    )));
                }
                request.contacts = Vec::with_capacity(contacts.len());
                for (i, contact) in contacts.into_iter().enumerate() {
                    request.contacts.push(json_contact(i, contact)?);
                }
            }
            ("node" | "at" | "if_active", _) => {
                return Err(bad(format!("`{key}` must be a non-empty string")))
            }
            ("contacts", _) => {
                return Err(bad(format!("`contacts` must be a list such as {EXAMPLE}")))
            }
            (other, _) => {
                return Err(bad(format!(
                    "unknown field `{}`: a broadcast has `node`, `contacts`, and optionally `at` and `if_active`",
                    other.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    if request.node.is_empty() {
        return Err(bad("`node` is missing: name the node to start at".into()));
    }
    if request.contacts.is_empty() {
        return Err(bad(format!("`contacts` is missing or empty: {EXAMPLE}")));
    }
    Ok(request)
}

/// Contact `i` (0-based) of a JSON broadcast.
fn json_contact(i: usize, contact: Value) -> Result<Contact, ApiError> {
    let at = |what: String| ApiError::BadRequest(format!("contacts[{i}]: {what}"));
    let Value::Object(mut fields) = contact else {
        return Err(at(
            r#"each contact must be an object like {"to": "+14155550100"}"#.into(),
        ));
    };
    let to = match fields.remove("to") {
        Some(Value::String(to)) if valid_address(&to) => to,
        Some(_) | None => return Err(at(format!("`to` {ADDRESS_RULE}"))),
    };
    let vars = match fields.remove("vars") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(vars)) => {
            check_vars(&vars).map_err(|e| at(e.to_string()))?;
            vars
        }
        Some(_) => return Err(at("`vars` must be a JSON object of names and values".into())),
    };
    if let Some(other) = fields.keys().next() {
        return Err(at(format!(
            "unknown field `{}`: a contact has `to` and optionally `vars`",
            other.chars().take(64).collect::<String>()
        )));
    }
    Ok((to, vars))
}

/// A CSV broadcast: a header line with a `to` column and one column per var,
/// then one line per contact. Fields may be quoted (`"..."`, with `""` for a
/// quote). Errors name the line.
fn parse_csv(body: &[u8]) -> Result<Vec<Contact>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the CSV is not UTF-8 text".into()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = csv_records(text);
    let (_, header) = records.next().transpose()?.ok_or_else(|| {
        ApiError::BadRequest(
            "the CSV is empty: send a header line `to,name` and a line per contact".into(),
        )
    })?;
    let Some(to_column) = header.iter().position(|h| h.trim() == "to") else {
        return Err(ApiError::BadRequest(
            "line 1: no `to` column: the header line names the columns, such as `to,name`".into(),
        ));
    };
    let names: Vec<String> = header.iter().map(|h| h.trim().to_owned()).collect();
    let var_columns: Map<String, Value> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != to_column)
        .map(|(_, name)| (name.clone(), Value::Null))
        .collect();
    check_vars(&var_columns).map_err(|e| ApiError::BadRequest(format!("line 1: {e}")))?;
    let mut contacts = Vec::new();
    for record in records {
        let (line, fields) = record?;
        if fields.len() == 1 && fields[0].trim().is_empty() {
            continue;
        }
        if fields.len() != names.len() {
            return Err(ApiError::BadRequest(format!(
                "line {line}: {} fields, but the header has {} columns",
                fields.len(),
                names.len()
            )));
        }
        if contacts.len() == MAX_CONTACTS {
            return Err(ApiError::BadRequest(format!(
                "line {line}: at most {MAX_CONTACTS} contacts are accepted in one broadcast; split it"
            )));
        }
        let mut to = String::new();
        let mut vars = Map::new();
        for (i, field) in fields.into_iter().enumerate() {
            if i == to_column {
                to = field.trim().to_owned();
            } else {
                vars.insert(names[i].clone(), Value::String(field));
            }
        }
        if !valid_address(&to) {
            return Err(ApiError::BadRequest(format!(
                "line {line}: `to` {ADDRESS_RULE}"
            )));
        }
        contacts.push((to, vars));
    }
    if contacts.is_empty() {
        return Err(ApiError::BadRequest(
            "the CSV has a header but no contacts".into(),
        ));
    }
    Ok(contacts)
}

/// The records of a CSV text, each with the line it starts on.
fn csv_records(text: &str) -> impl Iterator<Item = Result<(usize, Vec<String>), ApiError>> + '_ {
    let mut chars = text.chars().peekable();
    let mut line = 1;
    std::iter::from_fn(move || {
        chars.peek()?;
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut at_field_start = true;
        loop {
            let Some(c) = chars.next() else {
                if quoted {
                    return Some(Err(ApiError::BadRequest(format!(
                        "line {start}: a quoted field is not closed: end it with `\"`"
                    ))));
                }
                break;
            };
            match c {
                '"' if at_field_start => {
                    quoted = true;
                    at_field_start = false;
                }
                '"' if quoted => {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        field.push('"');
                    } else {
                        quoted = false;
                    }
                }
                ',' if !quoted => {
                    fields.push(std::mem::take(&mut field));
                    at_field_start = true;
                }
                '\r' if !quoted && chars.peek() == Some(&'\n') => {}
                '\n' if !quoted => {
                    line += 1;
                    break;
                }
                c => {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c);
                    at_field_start = false;
                }
            }
        }
        fields.push(field);
        Some(Ok((start, fields)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(result: Result<Vec<Contact>, ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn csv_reads_quotes_and_names_the_line_of_a_problem() {
        let contacts = parse_csv(
            b"to,name,note\r\n+14155550100,Amina,\"says \"\"hi\"\", twice\"\nwhatsapp:+14155550101,Ben,\n",
        )
        .unwrap();
        assert_eq!(contacts.len(), 2);
        assert_eq!(contacts[0].0, "+14155550100");
        assert_eq!(contacts[0].1["note"], "says \"hi\", twice");
        assert_eq!(contacts[1].1["name"], "Ben");
        assert!(bad(parse_csv(b"name\nAmina\n")).contains("no `to` column"));
        assert!(bad(parse_csv(b"to,name\n+14155550100,A\n+1,B\n")).starts_with("line 3: `to`"));
        assert!(bad(parse_csv(b"to,name\n+14155550100\n")).starts_with("line 2: 1 fields"));
        assert!(bad(parse_csv(b"to,1x\n+14155550100,a\n")).starts_with("line 1:"));
        assert!(bad(parse_csv(b"to\n\"+14155550100\n")).contains("not closed"));
        assert!(bad(parse_csv(b"to\n")).contains("no contacts"));
    }
}
