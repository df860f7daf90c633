//! Parsing Twilio's form-encoded webhooks (inbound messages and status callbacks)
//! into our types. Pure functions over already-verified parameters: signature checks
//! live in `signature`, HTTP status codes in the HTTP layer.
//!
//! Twilio adds parameters without notice, so unknown ones are ignored.

use crate::message::{InboundMessage, UserInfo};
use crate::store::OutboxStatus;

/// The "no reply" answer to an inbound webhook: replies go out through the REST API.
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

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

/// A webhook that lacks what we need to process it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The parameter is absent or empty.
    #[error("missing required parameter `{0}`")]
    Missing(&'static str),
}

impl InboundWebhook {
    /// Reads an inbound message webhook. `From` and `MessageSid` are required (absent
    /// or empty is [`WebhookError::Missing`]); everything else is optional.
    pub fn from_params(params: &[(String, String)]) -> Result<InboundWebhook, WebhookError> {
        let form = Form(params);
        let message_sid = form.required("MessageSid")?;
        let from = form.required("From")?;
        let (channel, phone) = match from.split_once(':') {
            Some((prefix, address)) if !prefix.is_empty() => (prefix, address),
            _ => ("sms", from),
        };
        let user = UserInfo {
            phone: phone.to_owned(),
            name: form.get("ProfileName").unwrap_or_default().to_owned(),
            channel: channel.to_owned(),
        };
        let message = InboundMessage {
            text: form.get("Body").unwrap_or_default().to_owned(),
            media: form.media(),
            button: form.non_empty("ButtonText").map(str::to_owned),
            button_payload: form.non_empty("ButtonPayload").map(str::to_owned),
            latitude: form.coordinate("Latitude"),
            longitude: form.coordinate("Longitude"),
        };
        Ok(InboundWebhook {
            message_sid: message_sid.to_owned(),
            from: from.to_owned(),
            to: form.non_empty("To").map(str::to_owned),
            user,
            message,
        })
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
    /// Reads a status callback. `MessageSid` is required; the status comes from
    /// `MessageStatus`, or the deprecated `SmsStatus` when that is all there is.
    pub fn from_params(params: &[(String, String)]) -> Result<StatusCallback, WebhookError> {
        let form = Form(params);
        let message_sid = form.required("MessageSid")?;
        let status = form
            .non_empty("MessageStatus")
            .or_else(|| form.non_empty("SmsStatus"))
            .and_then(tracked_status);
        let error_code = form
            .non_empty("ErrorCode")
            .and_then(|code| code.trim().parse().ok());
        Ok(StatusCallback {
            message_sid: message_sid.to_owned(),
            status,
            error_code,
        })
    }
}

/// The outbox status a Twilio message status moves a row to. Initial and transient
/// statuses (queued, accepted, scheduled, sending...) tell us nothing new.
fn tracked_status(status: &str) -> Option<OutboxStatus> {
    match status.trim().to_ascii_lowercase().as_str() {
        "sent" => Some(OutboxStatus::Sent),
        "delivered" => Some(OutboxStatus::Delivered),
        "read" => Some(OutboxStatus::Read),
        "undelivered" => Some(OutboxStatus::Undelivered),
        "failed" => Some(OutboxStatus::Failed),
        _ => None,
    }
}

/// Lookups over the received parameters; the first value wins when a key repeats.
struct Form<'a>(&'a [(String, String)]);

impl<'a> Form<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn non_empty(&self, key: &str) -> Option<&'a str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    fn required(&self, key: &'static str) -> Result<&'a str, WebhookError> {
        self.non_empty(key).ok_or(WebhookError::Missing(key))
    }

    fn coordinate(&self, key: &str) -> Option<f64> {
        self.get(key)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    }

    /// `MediaUrl0..MediaUrl{NumMedia-1}`, in index order. Found by scanning the
    /// parameters rather than counting up to `NumMedia`, so a huge `NumMedia` costs
    /// nothing; when `NumMedia` is given, URLs at or past it are ignored.
    fn media(&self) -> Vec<String> {
        let limit = self
            .get("NumMedia")
            .and_then(|n| n.trim().parse::<usize>().ok());
        let mut indexed: Vec<(usize, &str)> = self
            .0
            .iter()
            .filter_map(|(key, value)| {
                let index = key.strip_prefix("MediaUrl")?;
                if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some((index.parse().ok()?, value.as_str()))
            })
            .filter(|(index, url)| limit.is_none_or(|n| *index < n) && !url.is_empty())
            .collect();
        indexed.sort_by_key(|(index, _)| *index);
        indexed.dedup_by_key(|(index, _)| *index);
        indexed.into_iter().map(|(_, url)| url.to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn whatsapp_text_message() {
        let hook = InboundWebhook::from_params(&params(&[
            ("SmsMessageSid", "SM11"),
            ("NumMedia", "0"),
            ("ProfileName", "Ana"),
            ("MessageType", "text"),
            ("WaId", "14155550100"),
            ("Body", "Hello there"),
            ("To", "whatsapp:+14155238886"),
            ("MessageSid", "SM11"),
            ("AccountSid", "AC00"),
            ("From", "whatsapp:+14155550100"),
            ("ApiVersion", "2010-04-01"),
            ("SomethingTwilioAddsLater", "x"),
        ]))
        .unwrap();
        assert_eq!(
            hook,
            InboundWebhook {
                message_sid: "SM11".into(),
                from: "whatsapp:+14155550100".into(),
                to: Some("whatsapp:+14155238886".into()),
                user: UserInfo {
                    phone: "+14155550100".into(),
                    name: "Ana".into(),
                    channel: "whatsapp".into(),
                },
                message: InboundMessage::text("Hello there"),
            }
        );
    }

    #[test]
    fn sms_without_prefix() {
        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", "SM12"),
            ("From", "+14155550100"),
            ("Body", "hi"),
        ]))
        .unwrap();
        assert_eq!(hook.user.channel, "sms");
        assert_eq!(hook.user.phone, "+14155550100");
        assert_eq!(hook.user.name, "");
        assert_eq!(hook.to, None);
    }

    #[test]
    fn other_channels_and_bsuid_addresses() {
        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", "SM13"),
            ("From", "messenger:1234567890"),
        ]))
        .unwrap();
        assert_eq!(hook.user.channel, "messenger");
        assert_eq!(hook.user.phone, "1234567890");

        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", "SM14"),
            ("From", "whatsapp:US.13491208655302741918"),
        ]))
        .unwrap();
        assert_eq!(hook.user.channel, "whatsapp");
        assert_eq!(hook.user.phone, "US.13491208655302741918");
    }

    #[test]
    fn body_may_be_empty_or_absent() {
        for list in [
            &[("MessageSid", "SM1"), ("From", "+1"), ("Body", "")][..],
            &[("MessageSid", "SM1"), ("From", "+1")][..],
        ] {
            let hook = InboundWebhook::from_params(&params(list)).unwrap();
            assert_eq!(hook.message.text, "");
        }
    }

    #[test]
    fn from_and_message_sid_are_required() {
        assert_eq!(
            InboundWebhook::from_params(&params(&[("From", "+1")])),
            Err(WebhookError::Missing("MessageSid"))
        );
        assert_eq!(
            InboundWebhook::from_params(&params(&[("MessageSid", "SM1")])),
            Err(WebhookError::Missing("From"))
        );
        assert_eq!(
            InboundWebhook::from_params(&params(&[("MessageSid", "SM1"), ("From", "")])),
            Err(WebhookError::Missing("From"))
        );
        assert_eq!(
            WebhookError::Missing("From").to_string(),
            "missing required parameter `From`"
        );
    }

    #[test]
    fn media_in_index_order_up_to_num_media() {
        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", "MM1"),
            ("From", "whatsapp:+1"),
            ("NumMedia", "2"),
            ("MediaUrl1", "https://api.twilio.com/m/1"),
            ("MediaContentType1", "image/png"),
            ("MediaUrl0", "https://api.twilio.com/m/0"),
            ("MediaContentType0", "image/jpeg"),
            ("MediaUrl2", "https://api.twilio.com/m/2-beyond-num-media"),
            ("MediaUrlX", "not media"),
        ]))
        .unwrap();
        assert_eq!(
            hook.message.media,
            ["https://api.twilio.com/m/0", "https://api.twilio.com/m/1"]
        );
    }

    #[test]
    fn media_without_num_media_and_huge_num_media() {
        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", "MM1"),
            ("From", "+1"),
            ("MediaUrl0", "https://m/0"),
        ]))
        .unwrap();
        assert_eq!(hook.message.media, ["https://m/0"]);

        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", "MM1"),
            ("From", "+1"),
            ("NumMedia", "18446744073709551615"),
            ("MediaUrl0", "https://m/0"),
        ]))
        .unwrap();
        assert_eq!(hook.message.media, ["https://m/0"]);
    }

    #[test]
    fn buttons() {
        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", "SM1"),
            ("From", "whatsapp:+1"),
            ("Body", ""),
            ("ButtonText", "Book a test drive"),
            ("ButtonPayload", "book"),
            ("ButtonType", "REPLY"),
        ]))
        .unwrap();
        assert_eq!(hook.message.button.as_deref(), Some("Book a test drive"));
        assert_eq!(hook.message.button_payload.as_deref(), Some("book"));
        assert_eq!(hook.message.answer(), "Book a test drive");
    }

    #[test]
    fn location_ignores_unparsable_coordinates() {
        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", "SM1"),
            ("From", "whatsapp:+1"),
            ("Latitude", "37.7879277"),
            ("Longitude", "-122.3937508"),
            ("Address", "1 Main St"),
        ]))
        .unwrap();
        assert_eq!(hook.message.latitude, Some(37.7879277));
        assert_eq!(hook.message.longitude, Some(-122.3937508));

        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", "SM1"),
            ("From", "whatsapp:+1"),
            ("Latitude", "north"),
            ("Longitude", "NaN"),
        ]))
        .unwrap();
        assert_eq!(hook.message.latitude, None);
        assert_eq!(hook.message.longitude, None);
    }

    #[test]
    fn status_values() {
        let cases = [
            ("sent", Some(OutboxStatus::Sent)),
            ("delivered", Some(OutboxStatus::Delivered)),
            ("read", Some(OutboxStatus::Read)),
            ("undelivered", Some(OutboxStatus::Undelivered)),
            ("failed", Some(OutboxStatus::Failed)),
            ("queued", None),
            ("accepted", None),
            ("sending", None),
            ("scheduled", None),
            ("canceled", None),
            ("something-new", None),
        ];
        for (status, expected) in cases {
            let callback = StatusCallback::from_params(&params(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", status),
            ]))
            .unwrap();
            assert_eq!(callback.status, expected, "{status}");
        }
    }

    #[test]
    fn status_falls_back_to_sms_status() {
        let callback = StatusCallback::from_params(&params(&[
            ("MessageSid", "SM1"),
            ("SmsStatus", "delivered"),
        ]))
        .unwrap();
        assert_eq!(callback.status, Some(OutboxStatus::Delivered));
    }

    #[test]
    fn failed_status_with_error_code() {
        let callback = StatusCallback::from_params(&params(&[
            ("AccountSid", "AC00"),
            ("From", "whatsapp:+14155238886"),
            ("MessageSid", "SM1"),
            ("MessageStatus", "undelivered"),
            ("SmsStatus", "undelivered"),
            ("ErrorCode", "63016"),
            ("ChannelPrefix", "whatsapp"),
        ]))
        .unwrap();
        assert_eq!(
            callback,
            StatusCallback {
                message_sid: "SM1".into(),
                status: Some(OutboxStatus::Undelivered),
                error_code: Some(63016),
            }
        );
    }

    #[test]
    fn unparsable_error_code_is_ignored() {
        for code in ["", "abc"] {
            let callback = StatusCallback::from_params(&params(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "failed"),
                ("ErrorCode", code),
            ]))
            .unwrap();
            assert_eq!(callback.error_code, None);
        }
    }

    #[test]
    fn status_callback_requires_message_sid() {
        assert_eq!(
            StatusCallback::from_params(&params(&[("MessageStatus", "sent")])),
            Err(WebhookError::Missing("MessageSid"))
        );
    }

    #[test]
    fn form_parsing_keeps_repeats_and_decodes() {
        assert_eq!(
            parse_form(b"Body=It%27s+here&MediaUrl=a&MediaUrl=b"),
            params(&[("Body", "It's here"), ("MediaUrl", "a"), ("MediaUrl", "b")])
        );
    }

    #[test]
    fn empty_twiml_is_an_empty_response() {
        assert!(EMPTY_TWIML.starts_with("<?xml"));
        assert!(EMPTY_TWIML.ends_with("<Response/>"));
    }
}
