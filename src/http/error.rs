//! The one API error type and its one mapping to status codes. 5xx bodies are
//! generic; the cause goes to the log.
//!
//! 503 means "try again later" (Twilio retries it), so it is kept for a database
//! that cannot be reached right now; a store error that retrying cannot fix is 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::inbound::AcceptError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no bot named `{0}` is loaded")]
    UnknownBot(String),
    #[error("missing or invalid X-Twilio-Signature")]
    BadSignature,
    #[error("{0}")]
    BadRequest(String),
    /// Something the request names does not exist (a node, a scheduled start).
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with the state of what it names (a contact who
    /// opted out, a start that already ran).
    #[error("{0}")]
    Conflict(String),
    /// The bot does not allow what was asked (a node not in `outbound:`).
    #[error("{0}")]
    NotAllowed(String),
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
    /// A store error that retrying cannot fix (a bug or a broken schema).
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl From<StoreError> for ApiError {
    /// [`ApiError::Unavailable`] only when [`StoreError::is_unavailable`] says the
    /// database could answer later; anything else is [`ApiError::Internal`].
    fn from(error: StoreError) -> ApiError {
        if error.is_unavailable() {
            ApiError::Unavailable(error)
        } else {
            ApiError::Internal(error)
        }
    }
}

impl From<AcceptError> for ApiError {
    /// A message that waited past the webhook's deadline is [`ApiError::Busy`].
    fn from(error: AcceptError) -> ApiError {
        match error {
            AcceptError::Store(error) => ApiError::from(error),
            AcceptError::Deadline => ApiError::Busy,
        }
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownBot(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::BadSignature | ApiError::AdminDisabled | ApiError::MetricsDisabled => {
                StatusCode::FORBIDDEN
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable(_) | ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "answering 500: a store error retrying cannot fix")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_database_is_503() {
        let unavailable = ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        for permanent in [
            StoreError::Database(sqlx::Error::RowNotFound),
            StoreError::Corrupt("vars is not JSON".into()),
        ] {
            let error = ApiError::from(permanent);
            assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(error.to_string(), "internal error");
        }
    }
}
