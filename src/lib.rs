//! Switchboard: a chatbot engine for WhatsApp and SMS over Twilio.
//!
//! Staff write bots as YAML menus and Rhai scripts in a flows folder; Twilio posts
//! each inbound message to a webhook; the engine moves the conversation on, commits
//! the message, the new state and the replies in one transaction, answers 200, and a
//! sender drains the replies through Twilio's REST API with retries.
//!
//! # Layout
//!
//! Data flows one way: `http` -> `inbound` -> `conversation` -> `store` (outbox) ->
//! `sender` -> `twilio`.
//!
//! - [`domain`], [`message`]: the shared nouns and plain data every layer may name
//!   (ids, secrets, the clock, diagnostics, conversation state, outbox status).
//! - [`config`]: settings of a running engine.
//! - [`http`]: routes, webhook and status-callback handlers, health, metrics, admin API.
//! - [`twilio`]: everything that knows Twilio's wire format (signatures, webhook form,
//!   REST client).
//! - [`inbound`]: accepting a message: one at a time per contact, the transaction
//!   around a step, then the outbox signal.
//! - [`outbound`]: conversations the business starts (the start API's logic) and
//!   the scheduler that runs due starts, each through `inbound` like a message.
//! - [`conversation`]: one message + state -> new state + replies (pure but for script HTTP).
//! - `source`: an author's file, positions in it, YAML read with positions, "did you
//!   mean" hints; shared by `flow`, `script` and `transcript`.
//! - [`flow`]: bots as data; loading and checking a flows folder; the live registry.
//! - [`script`]: the Rhai engine, its limits and the author API.
//! - [`store`]: all SQL, over SQLite and Postgres.
//! - [`sender`]: the outbox drain and the retry policy.
//! - [`failures`]: what a failed send's code says about its contact (opted out,
//!   window closed), and failures counted by code; for the sender and status callbacks.
//! - [`outbox_signal`]: "replies queued": wakes this process's sender and, by a
//!   coalesced `NOTIFY`, the other instances'.
//! - [`app`]: wiring the above into a server; [`App::builder`] is the embedding API
//!   and its plug points.
//! - [`hooks`]: events for the host program after each commit.
//! - [`logging`]: the log subscriber: escaped values, contacts hashed.
//! - [`transcript`], [`chat`]: the authoring loop (`switchboard test`, `switchboard chat`).
//! - [`console`]: the web console's pages, sessions and simulator, as HTML text;
//!   `http` serves them at `/console/`.
//!
//! # Embedding
//!
//! Most teams run the `switchboard` binary. A Rust service can instead embed the
//! engine: mount its routes in its own axum app, give flow authors Rust functions,
//! and watch every message and send. See `docs/embedding.md` for the whole tour.
//!
//! ```no_run
//! use std::sync::Arc;
//! use switchboard::{App, CancellationToken, Config, EventSink, MessageEvent};
//!
//! struct Audit;
//! impl EventSink for Audit {
//!     fn message_processed(&self, e: &MessageEvent) {
//!         println!("{} {} -> {} replies", e.bot, e.message_sid, e.replies);
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = Config::new("flows", "sqlite://switchboard.db");
//! config.dry_run = true;
//! let app = App::builder(config)
//!     .script_function("crm_lookup", |phone: String| {
//!         Ok::<_, String>(serde_json::json!({ "phone": phone, "tier": "gold" }))
//!     })
//!     .events(Arc::new(Audit))
//!     .mount_path("/bots")
//!     .build()
//!     .await?;
//!
//! let stop = CancellationToken::new();
//! let sender = app.spawn_sender(stop.clone());
//! let router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "my service" }))
//!     .nest("/bots", app.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let shutdown = stop.clone();
//! axum::serve(listener, router)
//!     .with_graceful_shutdown(async move { shutdown.cancelled().await })
//!     .await?;
//! sender.await?;
//! app.close().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod app;
pub mod chat;
pub mod cli;
pub mod config;
pub mod console;
pub mod conversation;
pub mod domain;
pub mod failures;
pub mod flow;
pub mod handoff;
pub mod hooks;
pub mod http;
pub mod inbound;
pub mod logging;
pub mod message;
pub mod outbound;
pub mod outbox_signal;
pub mod script;
pub mod sender;
pub(crate) mod source;
pub mod store;
pub mod transcript;
pub mod twilio;

pub use app::AppBuilder;
pub use app::{App, StartError};
pub use config::{Config, SenderConfig, ServerLimits};
pub use domain::Clock;
pub use hooks::{EventSink, MessageEvent, SendEvent, SendEventOutcome};
pub use script::{HttpRequest, HttpResponse, Limits, ScriptFunction, ScriptHttp};
/// The stop signal [`App::serve`], [`App::spawn_sender`] and [`App::run_sender`] take.
pub use tokio_util::sync::CancellationToken;
