//! The HTTP surface: Twilio webhooks, health, metrics (behind the admin token,
//! or open on their own listener) and the admin API.
//! Only this module knows status codes.

mod admin;
mod error;
mod health;
mod server;
mod webhook;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Notify;

use crate::conversation::Runtime;
use crate::domain::Secret;
use crate::flow::Registry;
use crate::hooks::Events;
use crate::inbound::ContactLocks;
use crate::sender::OutboxNotifier;
use crate::store::Store;

pub use error::ApiError;
pub use health::{OutboxDepthCache, OUTBOX_DEPTH_MAX_AGE};
pub use server::serve;

/// Largest webhook body accepted; Twilio's are a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub runtime: Runtime,
    pub locks: Arc<ContactLocks>,
    /// Wakes the in-process sender when replies are queued.
    pub wake: Arc<Notify>,
    /// Wakes senders in other instances (coalesced `NOTIFY`) when replies are queued.
    pub notifier: OutboxNotifier,
    pub public_url: Option<String>,
    /// How long a webhook may take, from arrival to answer (SPEC §7).
    pub webhook_deadline: std::time::Duration,
    pub dry_run: bool,
    pub admin_token: Option<Secret>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The host's event hook ([`Events::none`] without one).
    pub events: Events,
    /// The outbox count `/metrics` serves, shared by scrapes.
    pub outbox_depth: Arc<OutboxDepthCache>,
}

/// All routes, ready to serve or to nest into a host application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/twilio/{bot}", post(webhook::inbound))
        .route("/webhooks/twilio/{bot}/status", post(webhook::status))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/bots", get(admin::bots))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Only `/metrics`, open to anyone who can reach it: what `--metrics-listen`
/// serves, on an address the operator keeps private.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::open_metrics))
        .with_state(state)
}
