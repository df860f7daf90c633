//! Everything that knows Twilio's wire format: webhook signatures, the webhook
//! form, and the REST client that sends messages.

pub mod client;
pub mod signature;
pub mod webhook;

pub use client::{OutgoingMessage, SendOutcome, TwilioClient};
