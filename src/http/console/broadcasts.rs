//! The console's broadcasts and scheduled starts pages and their cancel
//! actions (SPEC §10.3), behind the session and, for actions, the CSRF token
//! and origin checks of every console form (`http/console.rs`).

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Form, Router};

use super::{acting, action_id, back_to, error_page, query, shown, viewer, ActionForm, Answer};
use crate::console::{BroadcastsQuery, ScheduledQuery};
use crate::http::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/broadcasts", get(broadcasts))
        .route("/console/broadcasts/{id}/cancel", post(cancel_broadcast))
        .route("/console/scheduled", get(scheduled))
        .route("/console/scheduled/{id}/cancel", post(cancel_scheduled))
}

async fn broadcasts(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<BroadcastsQuery>, QueryRejection>,
) -> Answer {
    let (console, session) = viewer(&app, &headers, "/broadcasts")?;
    let q = query(&console, &session, q)?;
    shown(
        &console,
        &session,
        console.broadcasts_page(&session, &q).await,
    )
}

async fn cancel_broadcast(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Form<ActionForm>, FormRejection>,
) -> Answer {
    let (console, session, f) = acting(&app, &headers, body)?;
    let id = action_id(&console, &session, &id, "broadcast")?;
    let note = console
        .cancel_broadcast(id)
        .await
        .map_err(|error| error_page(&console, Some(&session), error))?;
    Ok(back_to(&console, f.back, "/broadcasts", note))
}

async fn scheduled(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ScheduledQuery>, QueryRejection>,
) -> Answer {
    let (console, session) = viewer(&app, &headers, "/scheduled")?;
    let q = query(&console, &session, q)?;
    shown(
        &console,
        &session,
        console.scheduled_page(&session, &q).await,
    )
}

async fn cancel_scheduled(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Form<ActionForm>, FormRejection>,
) -> Answer {
    let (console, session, f) = acting(&app, &headers, body)?;
    let id = action_id(&console, &session, &id, "scheduled start")?;
    let note = console
        .cancel_scheduled(id)
        .await
        .map_err(|error| error_page(&console, Some(&session), error))?;
    Ok(back_to(&console, f.back, "/scheduled", note))
}
