//! The admin API (`/api/*`), behind a Bearer token compared in constant time.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

#[derive(Serialize)]
pub struct BotView {
    id: String,
    name: String,
    loaded_at: Option<String>,
    nodes: usize,
    errors: Vec<ErrorView>,
}

#[derive(Serialize)]
pub struct ErrorView {
    file: String,
    line: usize,
    column: usize,
    message: String,
}

pub async fn bots(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<BotView>>, ApiError> {
    authorize(&app, &headers)?;
    let bots = app
        .registry
        .status()
        .into_iter()
        .map(|status| BotView {
            id: status.id.to_string(),
            name: status.name,
            loaded_at: status.loaded_at.map(|t| t.to_rfc3339()),
            nodes: status.nodes,
            errors: status
                .errors
                .into_iter()
                .filter(|d| d.severity == crate::domain::Severity::Error)
                .map(|d| ErrorView {
                    file: d.file.display().to_string(),
                    line: d.line,
                    column: d.column,
                    message: d.message,
                })
                .collect(),
        })
        .collect();
    Ok(Json(bots))
}

/// Checks the `Authorization: Bearer TOKEN` header against the admin token.
pub(super) fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &app.admin_token else {
        return Err(ApiError::AdminDisabled);
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    if bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Whether `presented` is the admin token (compared in constant time); `false`
/// when the server has none. The console's sign-in.
pub(super) fn token_matches(app: &AppState, presented: &str) -> bool {
    app.admin_token.as_ref().is_some_and(|expected| {
        bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes()))
    })
}
