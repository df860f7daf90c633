//! The HTTP surface: Twilio webhooks, health, metrics (behind the admin token,
//! or open on their own listener), the admin API and the web console's routes.
//! Only this module knows status codes.

mod admin;
mod broadcast;
mod console;
mod error;
mod handoff;
mod health;
mod history;
mod outbound;
mod server;
mod signed;
mod webhook;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::console::Console;
use crate::domain::{Clock, Secret};
use crate::flow::Registry;
use crate::handoff::Notifier;
use crate::inbound::Inbound;
use crate::outbound::Outbound;
use crate::store::Store;

pub use console::{COOKIE as CONSOLE_COOKIE, MAX_FORM_BYTES as CONSOLE_MAX_FORM_BYTES};
pub use error::ApiError;
pub use health::{OutboxDepthCache, OUTBOX_DEPTH_MAX_AGE};
pub use server::serve;

/// Largest webhook body accepted; Twilio's are a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest body a request to `path` may have: [`MAX_BODY_BYTES`], but
/// for a broadcast's list of contacts.
pub(crate) fn body_limit(path: &str) -> usize {
    if path.starts_with("/api/bots/") && path.ends_with("/broadcasts") {
        broadcast::MAX_BROADCAST_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Takes each verified inbound message from here to the commit.
    inbound: Arc<Inbound>,
    /// Starts conversations (the start API) and runs the scheduled ones.
    outbound: Arc<Outbound>,
    /// Delivers handoff notices (SPEC §10.2).
    notifier: Arc<Notifier>,
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
        let outbound = Arc::new(Outbound::new(
            store.clone(),
            registry.clone(),
            inbound.clone(),
            clock.clone(),
        ));
        let notifier = Arc::new(Notifier::new(
            store.clone(),
            registry.clone(),
            clock.clone(),
            config.public_url.clone(),
        ));
        AppState {
            inbound,
            outbound,
            notifier,
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

impl AppState {
    /// The engine's [`Outbound`], whose scheduler `serve` runs.
    pub fn outbound(&self) -> Arc<Outbound> {
        self.outbound.clone()
    }

    /// The engine's [`Notifier`], whose delivery task `serve` runs.
    pub fn notifier(&self) -> Arc<Notifier> {
        self.notifier.clone()
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
        .route(
            "/api/bots/{bot}/conversations",
            post(outbound::start).get(history::conversations),
        )
        .route("/api/bots/{bot}/contacts/{contact}", get(history::contact))
        .route(
            "/api/bots/{bot}/contacts/{contact}/messages",
            post(handoff::message),
        )
        .route(
            "/api/bots/{bot}/contacts/{contact}/release",
            post(handoff::release),
        )
        .route("/api/scheduled", get(outbound::scheduled))
        .route("/api/scheduled/{id}", delete(outbound::cancel))
        .route(
            "/api/bots/{bot}/broadcasts",
            post(broadcast::create).layer(DefaultBodyLimit::max(broadcast::MAX_BROADCAST_BYTES)),
        )
        .route(
            "/api/broadcasts/{id}",
            get(broadcast::progress).delete(broadcast::cancel),
        )
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
