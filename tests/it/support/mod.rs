//! Shared test helpers.

pub mod app;
pub mod browser;
pub mod db;
pub mod fake_twilio;
pub mod poll;
pub mod webhook;

pub use poll::eventually;
