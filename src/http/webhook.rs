//! `POST /webhooks/twilio/{bot}` and its `/status` callback: verify, parse, hand
//! over, answer. The 200 is sent only after the store committed.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::flow::Bot;
use crate::inbound::{self, AcceptError};
use crate::store::{InboundOutcome, StatusUpdate};
use crate::twilio::signature;
use crate::twilio::webhook::{parse_form, InboundWebhook, StatusCallback, EMPTY_TWIML};

pub async fn inbound(
    State(app): State<AppState>,
    Path(bot_id): Path<String>,
    // The URI before any `Router::nest` prefix was stripped: Twilio signed the full URL.
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let result = handle_inbound(&app, &bot_id, &uri, &headers, &body, started).await;
    let outcome = match &result {
        Ok(InboundOutcome::Processed { .. }) => "processed",
        Ok(InboundOutcome::Duplicate) => "duplicate",
        Err(ApiError::UnknownBot(_)) => "unknown_bot",
        Err(ApiError::BadSignature) => "bad_signature",
        Err(ApiError::BadRequest(_)) => "bad_request",
        Err(ApiError::Unavailable(_)) => "unavailable",
        Err(_) => "error",
    };
    // Unknown bots are not labelled by the requested name: anyone can invent names.
    let bot_label = if matches!(result, Err(ApiError::UnknownBot(_))) {
        String::new()
    } else {
        bot_id.clone()
    };
    metrics::counter!("switchboard_webhooks_total", "bot" => bot_label, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("switchboard_webhook_seconds").record(started.elapsed().as_secs_f64());
    result.map(|_| twiml())
}

async fn handle_inbound(
    app: &AppState,
    bot_id: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    started: Instant,
) -> Result<InboundOutcome, ApiError> {
    let bot = app
        .registry
        .get(bot_id)
        .ok_or_else(|| ApiError::UnknownBot(bot_id.to_owned()))?;
    let params = parse_form(body);
    check_signature(app, &bot, uri, headers, &params)?;
    let webhook =
        InboundWebhook::from_params(&params).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let now_ms = app.runtime.clock.now().timestamp_millis();
    let outcome = inbound::accept(
        &app.store,
        &app.locks,
        &app.runtime,
        &app.wake,
        &app.events,
        bot.clone(),
        webhook,
        now_ms,
        started + app.webhook_deadline,
    )
    .await
    .map_err(|error| match error {
        AcceptError::Store(error) => ApiError::Unavailable(error),
        AcceptError::Deadline => ApiError::Busy,
    })?;
    if matches!(outcome, InboundOutcome::Processed { replies } if replies > 0) {
        app.notifier.queued();
    }
    Ok(outcome)
}

pub async fn status(
    State(app): State<AppState>,
    Path(bot_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let bot = app
        .registry
        .get(&bot_id)
        .ok_or_else(|| ApiError::UnknownBot(bot_id.clone()))?;
    let params = parse_form(&body);
    check_signature(&app, &bot, &uri, &headers, &params)?;
    let callback =
        StatusCallback::from_params(&params).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if let Some(status) = callback.status {
        let update = StatusUpdate {
            bot: bot.id.to_string(),
            sid: callback.message_sid.clone(),
            status,
            error_code: callback.error_code,
            now_ms: app.runtime.clock.now().timestamp_millis(),
        };
        let moved = app
            .store
            .apply_status(&update)
            .await
            .map_err(ApiError::Unavailable)?;
        tracing::debug!(bot = %bot.id, sid = %callback.message_sid, status = status.as_str(), moved, "status callback");
    }
    Ok(twiml())
}

/// Verifies `X-Twilio-Signature` over the public URL of this request. A bot without
/// an auth token exists only under `--dry-run`, and then accepts unsigned requests.
fn check_signature(
    app: &AppState,
    bot: &Bot,
    uri: &Uri,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<(), ApiError> {
    let Some(token) = &bot.twilio.auth_token else {
        tracing::warn!(bot = %bot.id, "accepting an unsigned webhook: the bot has no auth token (--dry-run)");
        return Ok(());
    };
    let Some(given) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(ApiError::BadSignature);
    };
    let url = public_request_url(app.public_url.as_deref(), uri, headers);
    if signature::verify(token.expose(), &url, params, given) {
        Ok(())
    } else {
        tracing::warn!(bot = %bot.id, %url, "rejected a webhook: signature does not match");
        Err(ApiError::BadSignature)
    }
}

/// The URL Twilio signed: `--public-url` + path and query as received, or the URL
/// rebuilt from `X-Forwarded-Proto`/`X-Forwarded-Host`/`Host`.
pub fn public_request_url(public_url: Option<&str>, uri: &Uri, headers: &HeaderMap) -> String {
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Some(base) = public_url {
        return format!("{}{}", base.trim_end_matches('/'), path_and_query);
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            // Proxies append: the first value is what the client used.
            .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let proto = header("x-forwarded-proto").unwrap_or_else(|| "http".to_owned());
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    format!("{proto}://{host}{path_and_query}")
}

fn twiml() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/xml")],
        EMPTY_TWIML,
    )
        .into_response()
}
