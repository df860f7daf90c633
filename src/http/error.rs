//! The one API error type and its one mapping to status codes. 5xx bodies are
//! generic; the cause goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no bot named `{0}` is loaded")]
    UnknownBot(String),
    #[error("missing or invalid X-Twilio-Signature")]
    BadSignature,
    #[error("{0}")]
    BadRequest(String),
    #[error("admin API disabled: start the server with --admin-token TOKEN (or SWITCHBOARD_ADMIN_TOKEN) to enable it")]
    AdminDisabled,
    #[error("metrics need the admin token: start the server with --admin-token TOKEN (or SWITCHBOARD_ADMIN_TOKEN) and scrape with `Authorization: Bearer TOKEN`, or serve them on their own address with --metrics-listen ADDR")]
    MetricsDisabled,
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("database unavailable")]
    Unavailable(#[source] StoreError),
    /// The message waited past the webhook's deadline; Twilio may deliver it again.
    #[error("busy: try again later")]
    Busy,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownBot(_) => StatusCode::NOT_FOUND,
            ApiError::BadSignature | ApiError::AdminDisabled | ApiError::MetricsDisabled => {
                StatusCode::FORBIDDEN
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable(_) | ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Unavailable(cause) => tracing::error!(error = %cause, "answering 503"),
            ApiError::Busy => {
                tracing::warn!(
                    "answering 503: a message waited for its turn past the webhook's deadline"
                )
            }
            _ => {}
        }
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
