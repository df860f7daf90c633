//! The integration tests: one binary, real servers on port 0, a fresh database per
//! test (SQLite always; Postgres when `DATABASE_URL` is set), a loopback fake of
//! Twilio's API and webhooks signed with the real algorithm.

mod script;
mod scripts_e2e;
mod store;
mod support;

mod broadcasts;
mod console;
mod console_browser;
mod conversation;
mod errors;
mod handoff;
mod history;
mod http;
mod isolation;
mod opt_out;
mod outbound;
mod production;
mod reload;
mod sender;
mod server;
mod signed_url;
mod structure;
mod timeouts;
mod twilio;
mod unstorable;
mod webhook;
mod whatsapp;
