//! Parsing Twilio's form-encoded webhooks into our types.

use crate::message::{InboundMessage, UserInfo};
use crate::store::OutboxStatus;

/// A form body as ordered key/value pairs (keys may repeat).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// An inbound message webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundWebhook {
    pub message_sid: String,
    /// `From`, as sent: the conversation's contact address.
    pub from: String,
    pub to: Option<String>,
    pub user: UserInfo,
    pub message: InboundMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing required parameter `{0}`")]
    Missing(&'static str),
}

impl InboundWebhook {
    pub fn from_params(params: &[(String, String)]) -> Result<InboundWebhook, WebhookError> {
        let _ = params;
        todo!("twilio helper")
    }
}

/// A status callback.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusCallback {
    pub message_sid: String,
    /// `None` for statuses we do not track (queued, accepted, sending...).
    pub status: Option<OutboxStatus>,
    pub error_code: Option<i64>,
}

impl StatusCallback {
    pub fn from_params(params: &[(String, String)]) -> Result<StatusCallback, WebhookError> {
        let _ = params;
        todo!("twilio helper")
    }
}
