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
//! - [`config`]: settings of a running engine.
//! - [`http`]: routes, webhook and status-callback handlers, health, metrics, admin API.
//! - [`twilio`]: everything that knows Twilio's wire format (signatures, webhook form,
//!   REST client).
//! - [`inbound`]: one message at a time per contact, and the transaction around a step.
//! - [`conversation`]: one message + state -> new state + replies (pure but for script HTTP).
//! - [`flow`]: bots as data; loading and checking a flows folder; the live registry.
//! - [`script`]: the Rhai engine, its limits and the author API.
//! - [`store`]: all SQL, over SQLite and Postgres.
//! - [`sender`]: the outbox drain and the retry policy.
//! - [`app`]: wiring the above into a server.
//! - [`transcript`], [`chat`]: the authoring loop (`switchboard test`, `switchboard chat`).

pub mod app;
pub mod chat;
pub mod cli;
pub mod config;
pub mod conversation;
pub mod flow;
pub mod http;
pub mod inbound;
pub mod message;
pub mod script;
pub mod sender;
pub mod store;
pub mod transcript;
pub mod twilio;

pub use app::{App, StartError};
pub use config::{Config, SenderConfig};
