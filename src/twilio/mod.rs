//! Everything that knows Twilio's wire format: webhook signatures, the webhook
//! form, the REST client that sends messages, and what its error codes mean.

pub mod client;
pub mod content;
pub mod errors;
pub mod signature;
pub mod webhook;

pub use client::{OutgoingMessage, SendContent, SendOutcome, TwilioClient};
pub use content::ContentApi;
