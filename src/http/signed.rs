//! A signed Twilio form for one bot, as both webhooks take it: the [`TwilioForm`]
//! extractor reads it, [`TwilioForm::verify`] finds the bot (404) and checks
//! `X-Twilio-Signature` (403), in the order docs/decisions.md gives.
//!
//! The URL a signature is checked over is `--public-url` + path and query. Only under
//! `--dry-run` may it be rebuilt from `X-Forwarded-Proto`/`X-Forwarded-Host`/`Host`,
//! and then only from a plain `host[:port]` and an `http`/`https` proto: a header
//! carrying `/`, `#` or `@` could rebuild the URL of another endpoint of the same
//! Twilio account, whose signatures our bot's auth token also verifies.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, Request};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::flow::Bot;
use crate::twilio::signature;
use crate::twilio::webhook::parse_form;

/// A Twilio webhook as received for the bot its path names: read (the body within
/// [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES), else 413), not yet checked.
pub(super) struct TwilioForm {
    bot_id: String,
    /// The URI before any `Router::nest` prefix was stripped: Twilio signed the full URL.
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    received_at: Instant,
}

/// A [`TwilioForm`] whose bot is loaded and whose signature holds.
pub(super) struct SignedForm {
    pub bot: Arc<Bot>,
    pub params: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequest<S> for TwilioForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<TwilioForm, Response> {
        let (mut parts, body) = request.into_parts();
        let Path(bot_id) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let OriginalUri(uri) = OriginalUri::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(TwilioForm {
            bot_id,
            uri,
            headers,
            body,
            received_at: Instant::now(),
        })
    }
}

impl TwilioForm {
    /// The bot name the path gave, loaded or not.
    pub fn bot_id(&self) -> &str {
        &self.bot_id
    }

    /// When the request was read: the webhook's deadline counts from here.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// The form, once its bot is found ([`ApiError::UnknownBot`]) and its signature
    /// checked ([`ApiError::BadSignature`]). An unknown bot is a 404 even with a bad
    /// signature: there is no token to check it against.
    pub fn verify(&self, app: &AppState) -> Result<SignedForm, ApiError> {
        let bot = app
            .registry
            .get(&self.bot_id)
            .ok_or_else(|| ApiError::UnknownBot(self.bot_id.clone()))?;
        let params = parse_form(&self.body);
        check_signature(app, &bot, &self.uri, &self.headers, &params)?;
        Ok(SignedForm { bot, params })
    }
}

/// Verifies `X-Twilio-Signature` over the public URL of this request. A bot without
/// an auth token exists only under `--dry-run`, and then accepts unsigned requests.
fn check_signature(
    app: &AppState,
    bot: &Bot,
    uri: &Uri,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<(), ApiError> {
    let Some(token) = &bot.twilio.auth_token else {
        tracing::warn!(bot = %bot.id, "accepting an unsigned webhook: the bot has no auth token (--dry-run)");
        return Ok(());
    };
    let Some(given) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(ApiError::BadSignature);
    };
    if app.public_url.is_none() && !app.dry_run {
        // `serve` refuses to start so; an embedder may still have built such an engine.
        tracing::error!(bot = %bot.id, "rejected a webhook: no public URL is configured (set --public-url or Config::public_url); outside --dry-run the signed URL is never rebuilt from request headers");
        return Err(ApiError::BadSignature);
    }
    let url = match public_request_url(app.public_url.as_deref(), uri, headers) {
        Ok(url) => url,
        Err(error) => {
            tracing::warn!(bot = %bot.id, %error, "rejected a webhook: cannot rebuild its URL");
            return Err(ApiError::BadSignature);
        }
    };
    if signature::verify(token.expose(), &url, params, given) {
        Ok(())
    } else {
        tracing::warn!(bot = %bot.id, url = %url.escape_debug(), "rejected a webhook: signature does not match");
        Err(ApiError::BadSignature)
    }
}

/// Why the URL of a request could not be rebuilt from its headers. Values are
/// shortened, and escaped when printed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuildError {
    /// Which of several values the client used is unknown.
    #[error("{0} appears more than once")]
    Repeated(&'static str),
    #[error("{name} is not host[:port]: {value:?}")]
    BadHost { name: &'static str, value: String },
    #[error("X-Forwarded-Proto is neither http nor https: {0:?}")]
    BadProto(String),
    #[error("the request names no host")]
    NoHost,
}

/// The URL Twilio signed: `--public-url` + path and query as received, or, when there
/// is no public URL (only allowed under `--dry-run`), the URL rebuilt from
/// `X-Forwarded-Proto` (default `http`) and `X-Forwarded-Host`, else `Host`.
///
/// A rebuilt URL takes each header only when it is there once, with one value: a
/// host as `host[:port]` (a DNS name, an IPv4 or a bracketed IPv6 address; nothing
/// else, so no `/`, `#`, `?`, `@`, `,` or space) and a proto of `http` or `https`
/// (lower-cased). Anything else is an error, answered as a bad signature.
pub fn public_request_url(
    public_url: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<String, RebuildError> {
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Some(base) = public_url {
        return Ok(format!("{}{}", base.trim_end_matches('/'), path_and_query));
    }
    let proto = match single_header(headers, "x-forwarded-proto", "X-Forwarded-Proto")? {
        None => "http",
        Some(value) if value.eq_ignore_ascii_case("http") => "http",
        Some(value) if value.eq_ignore_ascii_case("https") => "https",
        Some(value) => return Err(RebuildError::BadProto(shorten(value))),
    };
    let (name, host) = match single_header(headers, "x-forwarded-host", "X-Forwarded-Host")? {
        Some(host) => ("X-Forwarded-Host", host.to_owned()),
        None => match single_header(headers, "host", "Host")? {
            Some(host) => ("Host", host.to_owned()),
            None => (
                "the request target's authority",
                uri.authority()
                    .map(|a| a.as_str().to_owned())
                    .ok_or(RebuildError::NoHost)?,
            ),
        },
    };
    if !is_host_and_port(&host) {
        return Err(RebuildError::BadHost {
            name,
            value: shorten(&host),
        });
    }
    Ok(format!("{proto}://{host}{path_and_query}"))
}

/// The one value of header `key`; `None` when absent or empty. A value that is not
/// visible ASCII is refused as a bad host.
fn single_header<'h>(
    headers: &'h HeaderMap,
    key: &str,
    name: &'static str,
) -> Result<Option<&'h str>, RebuildError> {
    let mut values = headers.get_all(key).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(RebuildError::Repeated(name));
    }
    match value.to_str() {
        Ok("") => Ok(None),
        Ok(text) => Ok(Some(text)),
        Err(_) => Err(RebuildError::BadHost {
            name,
            value: shorten(&String::from_utf8_lossy(value.as_bytes())),
        }),
    }
}

/// `host[:port]`: a DNS name (labels of letters, digits, `-` and `_`) or IPv4 address,
/// or an IPv6 address in brackets; then optionally `:` and a port from 1 to 65535.
fn is_host_and_port(value: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            after => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        (address.parse::<Ipv6Addr>().is_ok(), port)
    } else {
        match value.split_once(':') {
            Some((host, port)) => (is_dns_name(host), Some(port)),
            None => (is_dns_name(value), None),
        }
    };
    let port_ok = port.is_none_or(|port| {
        port.len() <= 5
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    host_ok && port_ok
}

fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An outside value for a log line or error: at most 100 characters.
fn shorten(value: &str) -> String {
    value.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in list {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn rebuilt(list: &[(&'static str, &str)]) -> Result<String, RebuildError> {
        let uri: Uri = "/webhooks/twilio/shop?x=1".parse().unwrap();
        public_request_url(None, &uri, &headers(list))
    }

    #[test]
    fn public_url_is_used_as_given() {
        let uri: Uri = "/webhooks/twilio/shop?x=1".parse().unwrap();
        let hostile = headers(&[("host", "evil.example/x#")]);
        assert_eq!(
            public_request_url(Some("https://bots.example.com/"), &uri, &hostile),
            Ok("https://bots.example.com/webhooks/twilio/shop?x=1".to_owned())
        );
    }

    #[test]
    fn plain_hosts_and_protos_rebuild_the_url() {
        let cases: [(&[(&'static str, &str)], &str); 7] = [
            (&[("host", "bots.example.com")], "http://bots.example.com"),
            (&[("host", "127.0.0.1:8080")], "http://127.0.0.1:8080"),
            (&[("host", "[::1]:8080")], "http://[::1]:8080"),
            (&[("host", "[2001:db8::1]")], "http://[2001:db8::1]"),
            (
                &[
                    ("host", "127.0.0.1"),
                    ("x-forwarded-host", "bots.example.com"),
                ],
                "http://bots.example.com",
            ),
            (
                &[
                    ("host", "a"),
                    ("x-forwarded-proto", "HTTPS"),
                    ("x-forwarded-host", "my_svc.local:443"),
                ],
                "https://my_svc.local:443",
            ),
            (
                &[("host", "bots.example.com"), ("x-forwarded-host", "")],
                "http://bots.example.com",
            ),
        ];
        for (list, base) in cases {
            assert_eq!(
                rebuilt(list),
                Ok(format!("{base}/webhooks/twilio/shop?x=1")),
                "{list:?}"
            );
        }
    }

    #[test]
    fn anything_but_host_and_port_is_refused() {
        let long = "a".repeat(254);
        for host in [
            "vendor.example.net/twilio/incoming#",
            "vendor.example.net#",
            "vendor.example.net?",
            "user@vendor.example.net",
            "a.example, b.example",
            "a example",
            "a..example",
            "-a.example",
            "a.example:",
            "a.example:0",
            "a.example:65536",
            "a.example:80:80",
            "a.example:+80",
            "[::1",
            "[::1]x",
            "[not-v6]:80",
            "::1",
            "a\\b",
            long.as_str(),
        ] {
            for name in ["host", "x-forwarded-host"] {
                let both = [("host", "ok.example"), (name, host)];
                let list = if name == "host" {
                    &both[1..]
                } else {
                    &both[..]
                };
                let result = rebuilt(list);
                assert!(
                    matches!(result, Err(RebuildError::BadHost { .. })),
                    "{name}: {host:?} gave {result:?}"
                );
            }
        }
        // Not visible ASCII (a header value may carry such bytes).
        let mut map = HeaderMap::new();
        map.insert(
            "host",
            axum::http::HeaderValue::from_bytes(b"caf\xc3\xa9.example").unwrap(),
        );
        let uri: Uri = "/webhooks/twilio/shop".parse().unwrap();
        assert!(matches!(
            public_request_url(None, &uri, &map),
            Err(RebuildError::BadHost { .. })
        ));
        for proto in [
            "ftp",
            "https://vendor.example.net/twilio/incoming#",
            "https, http",
            "http ",
        ] {
            let result = rebuilt(&[("host", "ok.example"), ("x-forwarded-proto", proto)]);
            assert!(
                matches!(result, Err(RebuildError::BadProto(_))),
                "{proto:?}"
            );
        }
        assert_eq!(
            rebuilt(&[
                ("host", "a.example"),
                ("x-forwarded-host", "a.example"),
                ("x-forwarded-host", "b.example"),
            ]),
            Err(RebuildError::Repeated("X-Forwarded-Host"))
        );
        assert_eq!(rebuilt(&[]), Err(RebuildError::NoHost));
    }

    #[test]
    fn refusals_print_escaped_and_short() {
        let error = rebuilt(&[("host", "ok.example"), ("x-forwarded-proto", "x\ty")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"X-Forwarded-Proto is neither http nor https: "x\ty""#
        );
        let long = format!("{}/", "a".repeat(300));
        let error = rebuilt(&[("host", &long)]).unwrap_err();
        assert_eq!(
            error.to_string().len(),
            "Host is not host[:port]: \"\"".len() + 100
        );
    }
}
