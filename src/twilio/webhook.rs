//! Parsing Twilio's form-encoded webhooks (inbound messages and status callbacks)
//! into our types. Pure functions over already-verified parameters: signature checks
//! live in `signature`, HTTP status codes in the HTTP layer.
//!
//! Twilio adds parameters without notice, so unknown ones are ignored.

use crate::domain::OutboxStatus;
use crate::message::{InboundMessage, UserInfo};

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

/// Longest `From` or `To` accepted, in bytes: Twilio addresses are far shorter, and
/// the contact address is part of indexed keys.
pub const MAX_ADDRESS_BYTES: usize = 256;

/// A webhook that lacks what we need to process it, or carries what can never be
/// stored (the HTTP layer answers 400: Twilio retrying would not help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The parameter is absent or empty.
    #[error("missing required parameter `{0}`")]
    Missing(&'static str),
    /// `MessageSid` is not a Twilio message SID.
    #[error("`MessageSid` must be two letters followed by 32 hex digits")]
    BadMessageSid,
    /// An address longer than [`MAX_ADDRESS_BYTES`].
    #[error("`{name}` is longer than {max} bytes")]
    TooLong { name: &'static str, max: usize },
    /// A NUL byte in a parameter (named here escaped and shortened): text columns
    /// cannot hold it.
    #[error("parameter `{0}` contains a NUL byte, which cannot be stored")]
    Nul(String),
}

impl InboundWebhook {
    /// Reads an inbound message webhook. `From` and `MessageSid` are required (absent
    /// or empty is [`WebhookError::Missing`]); everything else is optional. Refuses
    /// what could never be stored: a malformed `MessageSid`, an address over
    /// [`MAX_ADDRESS_BYTES`], a NUL byte in any parameter.
    pub fn from_params(params: &[(String, String)]) -> Result<InboundWebhook, WebhookError> {
        let form = Form(params);
        let message_sid = form.message_sid()?;
        let from = form.required("From")?;
        form.address_fits("From")?;
        form.address_fits("To")?;
        form.no_nul()?;
        let (channel, phone) = match from.split_once(':') {
            Some((prefix, address)) if !prefix.is_empty() => (prefix, address),
            _ => ("sms", from),
        };
        let user = UserInfo {
            phone: phone.to_owned(),
            name: form.get("ProfileName").unwrap_or_default().to_owned(),
            channel: channel.to_owned(),
        };
        let (media, media_types) = form.media_with_types().into_iter().unzip();
        let message = InboundMessage {
            text: form.get("Body").unwrap_or_default().to_owned(),
            media,
            media_types,
            address: form.non_empty("Address").map(str::to_owned),
            label: form.non_empty("Label").map(str::to_owned),
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
        let message_sid = form.message_sid()?;
        form.no_nul()?;
        let status = form
            .non_empty("MessageStatus")
            .or_else(|| form.non_empty("SmsStatus"))
            .and_then(tracked_status);
        let error_code = form.non_empty("ErrorCode").and_then(parse_error_code);
        Ok(StatusCallback {
            message_sid: message_sid.to_owned(),
            status,
            error_code,
        })
    }
}

/// Twilio's error codes are five digits; six allow for growth. Anything else
/// (signs, exponents, a number too big for the column, text) is no code at all,
/// so an odd value can neither fail the callback nor be stored as a code.
fn parse_error_code(text: &str) -> Option<i64> {
    let digits = text.trim();
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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

    /// `MessageSid`: required, and two ASCII letters then 32 hex digits (`SM…`, `MM…`).
    fn message_sid(&self) -> Result<&'a str, WebhookError> {
        let sid = self.required("MessageSid")?;
        let (prefix, digits) = sid.as_bytes().split_at(2.min(sid.len()));
        let well_formed = sid.len() == 34
            && prefix.iter().all(u8::is_ascii_alphabetic)
            && digits.iter().all(u8::is_ascii_hexdigit);
        if well_formed {
            Ok(sid)
        } else {
            Err(WebhookError::BadMessageSid)
        }
    }

    fn address_fits(&self, key: &'static str) -> Result<(), WebhookError> {
        match self.get(key) {
            Some(value) if value.len() > MAX_ADDRESS_BYTES => Err(WebhookError::TooLong {
                name: key,
                max: MAX_ADDRESS_BYTES,
            }),
            _ => Ok(()),
        }
    }

    /// Every parameter, not only the ones read today: Twilio never sends a NUL, and
    /// a field stored later must not become a way in.
    fn no_nul(&self) -> Result<(), WebhookError> {
        match self
            .0
            .iter()
            .find(|(key, value)| key.contains('\0') || value.contains('\0'))
        {
            Some((key, _)) => Err(WebhookError::Nul(key.escape_debug().take(64).collect())),
            None => Ok(()),
        }
    }

    fn coordinate(&self, key: &str) -> Option<f64> {
        self.get(key)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    }

    /// `MediaUrl0..MediaUrl{NumMedia-1}`, in index order. Found by scanning the
    /// parameters rather than counting up to `NumMedia`, so a huge `NumMedia` costs
    /// nothing; when `NumMedia` is given, URLs at or past it are ignored.
    /// Each media URL with its `MediaContentType{N}` (empty when not given),
    /// in index order.
    fn media_with_types(&self) -> Vec<(String, String)> {
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
        indexed
            .into_iter()
            .map(|(index, url)| {
                let kind = self
                    .get(&format!("MediaContentType{index}"))
                    .unwrap_or_default();
                (url.to_owned(), kind.to_owned())
            })
            .collect()
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
            ("SmsMessageSid", SID),
            ("NumMedia", "0"),
            ("ProfileName", "Ana"),
            ("MessageType", "text"),
            ("WaId", "14155550100"),
            ("Body", "Hello there"),
            ("To", "whatsapp:+14155238886"),
            ("MessageSid", SID),
            ("AccountSid", "AC00"),
            ("From", "whatsapp:+14155550100"),
            ("ApiVersion", "2010-04-01"),
            ("SomethingTwilioAddsLater", "x"),
        ]))
        .unwrap();
        assert_eq!(
            hook,
            InboundWebhook {
                message_sid: SID.into(),
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
            ("MessageSid", SID),
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
            ("MessageSid", SID),
            ("From", "messenger:1234567890"),
        ]))
        .unwrap();
        assert_eq!(hook.user.channel, "messenger");
        assert_eq!(hook.user.phone, "1234567890");

        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", SID),
            ("From", "whatsapp:US.13491208655302741918"),
        ]))
        .unwrap();
        assert_eq!(hook.user.channel, "whatsapp");
        assert_eq!(hook.user.phone, "US.13491208655302741918");
    }

    #[test]
    fn body_may_be_empty_or_absent() {
        for list in [
            &[("MessageSid", SID), ("From", "+1"), ("Body", "")][..],
            &[("MessageSid", SID), ("From", "+1")][..],
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
            InboundWebhook::from_params(&params(&[("MessageSid", SID)])),
            Err(WebhookError::Missing("From"))
        );
        assert_eq!(
            InboundWebhook::from_params(&params(&[("MessageSid", SID), ("From", "")])),
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
            ("MessageSid", SID),
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
            ("MessageSid", SID),
            ("From", "+1"),
            ("MediaUrl0", "https://m/0"),
        ]))
        .unwrap();
        assert_eq!(hook.message.media, ["https://m/0"]);

        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", SID),
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
            ("MessageSid", SID),
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
            ("MessageSid", SID),
            ("From", "whatsapp:+1"),
            ("Latitude", "37.7879277"),
            ("Longitude", "-122.3937508"),
            ("Address", "1 Main St"),
        ]))
        .unwrap();
        assert_eq!(hook.message.latitude, Some(37.7879277));
        assert_eq!(hook.message.longitude, Some(-122.3937508));

        let hook = InboundWebhook::from_params(&params(&[
            ("MessageSid", SID),
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
                ("MessageSid", SID),
                ("MessageStatus", status),
            ]))
            .unwrap();
            assert_eq!(callback.status, expected, "{status}");
        }
    }

    #[test]
    fn status_falls_back_to_sms_status() {
        let callback = StatusCallback::from_params(&params(&[
            ("MessageSid", SID),
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
            ("MessageSid", SID),
            ("MessageStatus", "undelivered"),
            ("SmsStatus", "undelivered"),
            ("ErrorCode", "63016"),
            ("ChannelPrefix", "whatsapp"),
        ]))
        .unwrap();
        assert_eq!(
            callback,
            StatusCallback {
                message_sid: SID.into(),
                status: Some(OutboxStatus::Undelivered),
                error_code: Some(63016),
            }
        );
    }

    #[test]
    fn error_codes_are_read_trimmed() {
        for (text, code) in [(" 63016 ", 63016), ("030008", 30008), ("21610", 21610)] {
            let callback = StatusCallback::from_params(&params(&[
                ("MessageSid", SID),
                ("MessageStatus", "failed"),
                ("ErrorCode", text),
            ]))
            .unwrap();
            assert_eq!(callback.error_code, Some(code), "{text:?}");
        }
    }

    #[test]
    fn unparsable_error_code_is_ignored() {
        let huge = "9".repeat(10_000);
        for code in [
            "",
            "abc",
            "-21610",
            "+21610",
            "2.1e4",
            "0x5410",
            "21610abc",
            "1234567",
            "99999999999999999999",
            huge.as_str(),
            "６３０１６",
        ] {
            let callback = StatusCallback::from_params(&params(&[
                ("MessageSid", SID),
                ("MessageStatus", "failed"),
                ("ErrorCode", code),
            ]))
            .unwrap();
            assert_eq!(callback.error_code, None, "{code:?}");
        }
    }

    #[test]
    fn status_callback_requires_message_sid() {
        assert_eq!(
            StatusCallback::from_params(&params(&[("MessageStatus", "sent")])),
            Err(WebhookError::Missing("MessageSid"))
        );
    }

    const SID: &str = "SM0123456789abcdef0123456789ABCDEF";

    #[test]
    fn message_sid_is_two_letters_and_32_hex_digits() {
        for good in [
            SID,
            "MM00000000000000000000000000000000",
            "sm0123456789abcdef0123456789abcdef",
        ] {
            let hook =
                InboundWebhook::from_params(&params(&[("MessageSid", good), ("From", "+1")]));
            assert_eq!(hook.unwrap().message_sid, good);
            let callback = StatusCallback::from_params(&params(&[("MessageSid", good)]));
            assert_eq!(callback.unwrap().message_sid, good);
        }
        let long = format!("SM{}", "a".repeat(8 * 1024));
        for bad in [
            "SM1",
            "SM0123456789abcdef0123456789abcde",
            "SM0123456789abcdef0123456789abcdef0",
            "S10123456789abcdef0123456789abcdef",
            "SMg123456789abcdef0123456789abcdef",
            "SM0123456789abcdef0123456789abcd\0f",
            "\u{e9}M0123456789abcdef0123456789abcde",
            long.as_str(),
        ] {
            assert_eq!(
                InboundWebhook::from_params(&params(&[("MessageSid", bad), ("From", "+1")])),
                Err(WebhookError::BadMessageSid),
                "{bad:?}"
            );
            assert_eq!(
                StatusCallback::from_params(&params(&[("MessageSid", bad)])),
                Err(WebhookError::BadMessageSid),
                "{bad:?}"
            );
        }
        assert_eq!(
            WebhookError::BadMessageSid.to_string(),
            "`MessageSid` must be two letters followed by 32 hex digits"
        );
    }

    #[test]
    fn from_is_at_most_256_bytes() {
        let at_limit = format!("whatsapp:+{}", "1".repeat(256 - 10));
        assert_eq!(at_limit.len(), 256);
        let hook =
            InboundWebhook::from_params(&params(&[("MessageSid", SID), ("From", &at_limit)]));
        assert!(hook.is_ok());
        let over = format!("{at_limit}1");
        assert_eq!(
            InboundWebhook::from_params(&params(&[("MessageSid", SID), ("From", &over)])),
            Err(WebhookError::TooLong {
                name: "From",
                max: 256
            })
        );
        assert_eq!(
            WebhookError::TooLong {
                name: "From",
                max: 256
            }
            .to_string(),
            "`From` is longer than 256 bytes"
        );
    }

    #[test]
    fn a_nul_byte_in_any_parameter_is_refused() {
        let base = [("MessageSid", SID), ("From", "whatsapp:+1"), ("Body", "hi")];
        for (key, value) in [
            ("Body", "hi\0"),
            ("ProfileName", "A\0"),
            ("From", "whatsapp:+1\0"),
            ("To", "whatsapp:+2\0"),
            ("MediaUrl0", "https://m/\0"),
            ("ButtonText", "\0"),
            ("ButtonPayload", "x\0"),
            ("Latitude", "1.0\0"),
            ("Address", "1 Main St\0"),
            ("SomethingTwilioAddsLater", "\0"),
        ] {
            let mut list: Vec<(&str, &str)> =
                base.iter().filter(|(k, _)| *k != key).copied().collect();
            list.push((key, value));
            assert_eq!(
                InboundWebhook::from_params(&params(&list)),
                Err(WebhookError::Nul(key.to_owned())),
                "{key}"
            );
        }
        assert_eq!(
            InboundWebhook::from_params(&params(&[
                ("MessageSid", SID),
                ("From", "+1"),
                ("Bo\0dy", "")
            ])),
            Err(WebhookError::Nul("Bo\\0dy".to_owned()))
        );
        assert_eq!(
            StatusCallback::from_params(&params(&[
                ("MessageSid", SID),
                ("MessageStatus", "sent\0")
            ])),
            Err(WebhookError::Nul("MessageStatus".to_owned()))
        );
        assert_eq!(
            WebhookError::Nul("Body".into()).to_string(),
            "parameter `Body` contains a NUL byte, which cannot be stored"
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
