//! `POST /webhooks/twilio/{bot}` and its `/status` callback: verify, parse, hand
//! over, answer. The 200 is sent only after the store committed.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::signed::{SignedForm, TwilioForm};
use super::{ApiError, AppState};
use crate::domain::OutboxStatus;
use crate::failures::{self, FailedMessage};
use crate::flow::Bot;
use crate::store::{InboundOutcome, StatusUpdate};
use crate::twilio::errors;
use crate::twilio::webhook::{InboundWebhook, StatusCallback, WebhookError, EMPTY_TWIML};

pub async fn inbound(State(app): State<AppState>, form: TwilioForm) -> Result<Response, ApiError> {
    let result = accept(&app, &form).await;
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
        form.bot_id().to_owned()
    };
    metrics::counter!("switchboard_webhooks_total", "bot" => bot_label, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("switchboard_webhook_seconds")
        .record(form.received_at().elapsed().as_secs_f64());
    result.map(|_| twiml())
}

async fn accept(app: &AppState, form: &TwilioForm) -> Result<InboundOutcome, ApiError> {
    let SignedForm { bot, params } = form.verify(app)?;
    let webhook = InboundWebhook::from_params(&params).map_err(|e| refuse(&bot, &e))?;
    Ok(app.inbound.accept(bot, webhook, form.received_at()).await?)
}

pub async fn status(State(app): State<AppState>, form: TwilioForm) -> Result<Response, ApiError> {
    let SignedForm { bot, params } = form.verify(&app)?;
    let callback = StatusCallback::from_params(&params).map_err(|e| refuse(&bot, &e))?;
    let Some(status) = callback.status else {
        return Ok(twiml());
    };
    let failed = matches!(status, OutboxStatus::Failed | OutboxStatus::Undelivered);
    // A code only means something with a failure (SPEC §8.4).
    let code = callback.error_code.filter(|_| failed);
    let now_ms = app.clock.now().timestamp_millis();
    let update = StatusUpdate {
        bot: bot.id.to_string(),
        sid: callback.message_sid.clone(),
        status,
        error_code: code,
        error_message: code.map(errors::meaning),
        now_ms,
    };
    let moved = app.store.apply_status(&update).await?;
    tracing::debug!(bot = %bot.id, sid = %callback.message_sid, status = status.as_str(), moved, "status callback");
    if failed && moved {
        failures::count(bot.id.as_str(), code, false);
        let meaning = code.map_or_else(|| "no error code given".to_owned(), errors::meaning);
        tracing::warn!(bot = %bot.id, sid = %callback.message_sid, status = status.as_str(), error_code = ?code, %meaning, "Twilio reported that a message failed after sending");
    }
    // Also when the row had moved already: a callback retried after a failed
    // mark still marks.
    if let Some(code) = code {
        let message = FailedMessage::Sid(&callback.message_sid);
        failures::mark_contact(&app.store, &bot, code, message, now_ms).await?;
    }
    Ok(twiml())
}

/// A webhook that can never be processed as sent: 400, logged once. The error names
/// the parameter (escaped), never its value.
fn refuse(bot: &Bot, error: &WebhookError) -> ApiError {
    tracing::warn!(bot = %bot.id, %error, "refused a webhook (400)");
    ApiError::BadRequest(error.to_string())
}

fn twiml() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/xml")],
        EMPTY_TWIML,
    )
        .into_response()
}
