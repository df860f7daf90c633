//! `/healthz`, `/readyz` and `/metrics`. None of them waits for a database
//! write: on SQLite they read on the read connections, and the outbox depth is
//! counted at most once every [`OUTBOX_DEPTH_MAX_AGE`], one count at a time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{admin, ApiError, AppState};
use crate::store::{OutboxDepth, SchemaStatus, Store};

/// How old a served outbox depth may be. Counting a large outbox reads every
/// row (500k rows: tens of ms on SQLite, more under load), so scrapes share
/// one count.
pub const OUTBOX_DEPTH_MAX_AGE: Duration = Duration::from_secs(5);

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the database answers, its schema has every migration this binary
/// knows, and at least one bot is loaded.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    match app.store.schema().await {
        Ok(SchemaStatus::Current) => {}
        Ok(SchemaStatus::NotMigrated { missing, known }) => {
            tracing::warn!(?missing, "not ready: database not migrated");
            let message = format!(
                "database not migrated ({} of {known} migrations missing): run `switchboard migrate` with this DATABASE_URL\n",
                missing.len()
            );
            return (StatusCode::SERVICE_UNAVAILABLE, message);
        }
        Err(error) => {
            tracing::warn!(%error, "not ready: database");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable\n".to_owned(),
            );
        }
    }
    if app.registry.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no bots loaded\n".to_owned(),
        );
    }
    (StatusCode::OK, "ready\n".to_owned())
}

/// `/metrics` on the main listener: only with the admin token.
pub async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(error) = admin::authorize(&app, &headers) {
        return match error {
            ApiError::AdminDisabled => ApiError::MetricsDisabled.into_response(),
            other => other.into_response(),
        };
    }
    open_metrics(State(app)).await
}

/// `/metrics` as the `--metrics-listen` listener serves it, to anyone who can
/// reach that address.
pub async fn open_metrics(State(app): State<AppState>) -> Response {
    if let Some(depth) = app.outbox_depth.get(&app.store).await {
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
        .into_response()
}

/// The last outbox count and when it was taken, shared by the scrapes of one
/// engine.
#[derive(Debug, Default)]
pub struct OutboxDepthCache {
    last: Mutex<Option<(Instant, OutboxDepth)>>,
    /// Held while one scrape counts; the others serve the last count meanwhile.
    counting: tokio::sync::Mutex<()>,
}

impl OutboxDepthCache {
    /// A count at most [`OUTBOX_DEPTH_MAX_AGE`] old when one can be had without
    /// waiting for another scrape's count; else the last one (`None` before the
    /// first count, or when counting failed).
    async fn get(&self, store: &Store) -> Option<OutboxDepth> {
        if let Some(fresh) = self.cached(|taken| taken.elapsed() < OUTBOX_DEPTH_MAX_AGE) {
            return Some(fresh);
        }
        let Ok(_counting) = self.counting.try_lock() else {
            return self.cached(|_| true);
        };
        match store.outbox_depth().await {
            Ok(depth) => {
                *self.last.lock().expect("not poisoned") = Some((Instant::now(), depth.clone()));
                Some(depth)
            }
            Err(error) => {
                tracing::warn!(%error, "counting the outbox for /metrics");
                self.cached(|_| true)
            }
        }
    }

    fn cached(&self, usable: impl Fn(Instant) -> bool) -> Option<OutboxDepth> {
        let last = self.last.lock().expect("not poisoned");
        last.as_ref()
            .filter(|(taken, _)| usable(*taken))
            .map(|(_, depth)| depth.clone())
    }
}
