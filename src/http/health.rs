//! `/healthz`, `/readyz` and `/metrics`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the database answers and at least one bot is loaded.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    if let Err(error) = app.store.ping().await {
        tracing::warn!(%error, "not ready: database");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n");
    }
    if app.registry.is_empty() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no bots loaded\n");
    }
    (StatusCode::OK, "ready\n")
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    // The outbox depth is read when scraped rather than tracked on every change.
    if let Ok(depth) = app.store.outbox_depth().await {
        for (status, count) in depth.counts {
            metrics::gauge!("switchboard_outbox_rows", "status" => status.as_str())
                .set(count as f64);
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.render(),
    )
}
