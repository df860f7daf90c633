//! The HTTP surface: Twilio webhooks, health, metrics (behind the admin token,
//! or open on their own listener), the admin API and the web console's routes.
//! Only this module knows status codes.

mod admin;
mod console;
mod error;
mod health;
mod server;
mod signed;
mod webhook;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::console::Console;
use crate::domain::{Clock, Secret};
use crate::flow::Registry;
use crate::inbound::Inbound;
use crate::store::Store;

pub use console::{COOKIE as CONSOLE_COOKIE, MAX_FORM_BYTES as CONSOLE_MAX_FORM_BYTES};
pub use error::ApiError;
pub use health::{OutboxDepthCache, OUTBOX_DEPTH_MAX_AGE};
pub use server::serve;

/// Largest webhook body accepted; Twilio's are a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Takes each verified inbound message from here to the commit.
    inbound: Arc<Inbound>,
    store: Store,
    registry: Arc<Registry>,
    /// Stamps status callbacks.
    clock: Arc<dyn Clock>,
    /// The base of the URL Twilio signs; without it (only under `dry_run`) the URL
    /// is rebuilt from request headers.
    public_url: Option<String>,
    dry_run: bool,
    admin_token: Option<Secret>,
    metrics: PrometheusHandle,
    /// The outbox count `/metrics` serves, shared by scrapes.
    outbox_depth: Arc<OutboxDepthCache>,
    /// The web console's pages; `None` in an engine assembled without it.
    console: Option<Arc<Console>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("public_url", &self.public_url)
            .field("dry_run", &self.dry_run)
            .field("admin_token", &self.admin_token)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The handlers' view of an engine: `config` gives the public URL, `dry_run` and
    /// the admin token; `metrics` renders `/metrics`.
    pub fn new(
        config: &Config,
        store: Store,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        inbound: Arc<Inbound>,
        metrics: PrometheusHandle,
    ) -> AppState {
        AppState {
            inbound,
            store,
            registry,
            clock,
            public_url: config.public_url.clone(),
            dry_run: config.dry_run,
            admin_token: config.admin_token.clone(),
            metrics,
            outbox_depth: Arc::default(),
            console: None,
        }
    }

    /// The same state serving the web console's pages at `/console/`.
    pub fn with_console(mut self, console: Arc<Console>) -> AppState {
        self.console = Some(console);
        self
    }
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
        .merge(console::routes())
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
