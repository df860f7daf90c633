//! `X-Twilio-Signature`: base64(HMAC-SHA1(auth_token, url + sorted params)).
//!
//! Owns the signing algorithm and the URL variants Twilio's SDKs accept. It works on
//! the URL string exactly as Twilio requested it: a URL is never parsed and
//! re-serialised as a whole, because a URL library re-encodes characters Twilio signs
//! raw (`'` becomes `%27`). The one re-encoded variant is the query as WHATWG URL
//! parsing writes it, which is what Twilio's Node SDK signs, tried beside the raw one.
//! Nothing is cut off: a `#` is signed like any other character.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

type HmacSha1 = Hmac<Sha1>;

/// The query parameter carrying the hex SHA-256 of a JSON webhook body.
const BODY_SHA256_PARAM: &str = "bodySHA256";

/// The exact text Twilio signs: `url`, then for each key in byte order, each of its
/// distinct values in byte order, as `key` + `value` with no separators.
///
/// Keys may repeat in `params`; identical values are counted once, as in the
/// official SDKs (python, node, php).
pub fn string_to_sign(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (key, value) in params {
        sorted.entry(key).or_default().insert(value);
    }
    let mut text = String::with_capacity(
        url.len() + params.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
    );
    text.push_str(url);
    for (key, values) in sorted {
        for value in values {
            text.push_str(key);
            text.push_str(value);
        }
    }
    text
}

/// The signature Twilio would send for `url` and form `params`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    BASE64.encode(mac(auth_token, &string_to_sign(url, params)))
}

/// Checks `signature` in constant time against `url` and the URL variants Twilio's
/// SDKs accept (see [`candidate_urls`]). Always false for an empty `auth_token`.
///
/// `url` is the URL Twilio requested, built from the raw request target; `params` are
/// all the form parameters received (URL-decoded, keys may repeat). For a GET webhook
/// pass no params: they are already in the URL's query string.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    // Anyone can compute an HMAC with an empty key: a bot without a token verifies nothing.
    if auth_token.is_empty() {
        return false;
    }
    let given = signature.as_bytes();
    // Every candidate is checked, without stopping at the first match, so the time
    // taken says nothing about which variant (if any) matched.
    let mut matched = Choice::from(0);
    for candidate in candidate_urls(url) {
        let expected = compute(auth_token, &candidate, params);
        matched |= expected.as_bytes().ct_eq(given);
    }
    matched.into()
}

/// Checks a JSON-body webhook (reference §3.2): Twilio adds `bodySHA256` = lowercase
/// hex SHA-256 of the raw body to the URL's query and signs the URL alone.
///
/// False when the URL carries no `bodySHA256`, when it does not match `body`, or when
/// the signature over the URL does not verify. The pre-2019 base64 form of
/// `bodySHA256` is not accepted, like the current SDKs.
pub fn verify_json_body(auth_token: &str, url: &str, body: &[u8], signature: &str) -> bool {
    let Some(claimed) = query_param(url, BODY_SHA256_PARAM) else {
        return false;
    };
    let actual = hex_lower(&Sha256::digest(body));
    let body_ok: bool = actual
        .as_bytes()
        .ct_eq(claimed.to_ascii_lowercase().as_bytes())
        .into();
    // Both checks always run: a wrong body and a wrong signature take the same time.
    let signature_ok = verify(auth_token, url, &[], signature);
    body_ok & signature_ok
}

/// The URLs a signature may have been computed over, `url` itself first.
///
/// Twilio's back end is inconsistent about ports, so the SDKs accept the URL with the
/// port removed and with the scheme's default port added (`:443` for https, `:80` for
/// http). Twilio's docs also say SMS webhooks drop `user:pass@` before signing, while
/// the SDK tests keep it; both are tried. Each of these is also tried with its query
/// percent-encoded as WHATWG URL parsing does (see [`whatwg_query`]). Host and scheme
/// case are kept as given.
///
/// The URL is never cut at a `#`: Twilio never sends a fragment, and a URL rebuilt
/// from request headers that ended at a `#` could match a signature made for another
/// address.
pub fn candidate_urls(url: &str) -> Vec<String> {
    let Some(parts) = UrlParts::split(url) else {
        return vec![url.to_owned()];
    };
    let mut userinfos = vec![parts.userinfo];
    if !parts.userinfo.is_empty() {
        userinfos.push("");
    }
    let toggled_port = match parts.port {
        Some(_) => Some(String::new()),
        None => parts.default_port().map(|port| format!(":{port}")),
    };
    let given_port = parts.port.map_or(String::new(), |port| format!(":{port}"));
    let rests = {
        let mut rests = vec![parts.rest.to_owned()];
        if let Some(encoded) = parts.whatwg_rest() {
            rests.push(encoded);
        }
        rests
    };

    let mut candidates: Vec<String> = Vec::with_capacity(8);
    for userinfo in userinfos {
        for port in std::iter::once(&given_port).chain(toggled_port.as_ref()) {
            for rest in &rests {
                let candidate = format!(
                    "{}{}{}{}{}",
                    parts.scheme_sep, userinfo, parts.host, port, rest
                );
                if !candidates.contains(&candidate) {
                    candidates.push(candidate);
                }
            }
        }
    }
    candidates
}

/// `query` percent-encoded as WHATWG URL parsing (Node's `new URL()`) encodes the
/// query of an http(s) URL: space, `"`, `#`, `<`, `>`, `'`, controls and non-ASCII
/// become `%XX`; everything else, existing `%XX` escapes included, is kept.
pub fn whatwg_query(query: &str) -> String {
    // The `url` crate implements the WHATWG algorithm; a fixed special-scheme base
    // gives the special-query encode set (the one that includes `'`).
    let mut parsed = url::Url::parse("https://signature.invalid/").expect("a valid base URL");
    parsed.set_query(Some(query));
    parsed.query().unwrap_or_default().to_owned()
}

/// A URL cut into raw slices; concatenating them gives back the input.
struct UrlParts<'a> {
    /// `https://`
    scheme_sep: &'a str,
    /// `user:pass@`, with the `@`; empty when absent.
    userinfo: &'a str,
    /// `example.com` or `[::1]`.
    host: &'a str,
    /// The digits after `host:`, when present.
    port: Option<&'a str>,
    /// Path and query, untouched.
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Option<UrlParts<'a>> {
        let scheme_end = url.find("://")? + 3;
        let (scheme_sep, after_scheme) = url.split_at(scheme_end);
        let authority_end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
        let (authority, rest) = after_scheme.split_at(authority_end);
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(at) => authority.split_at(at + 1),
            None => ("", authority),
        };
        // An IPv6 literal contains colons of its own: the port, if any, follows `]`.
        let host_end = if host_port.starts_with('[') {
            host_port.find(']').map_or(host_port.len(), |i| i + 1)
        } else {
            host_port.rfind(':').unwrap_or(host_port.len())
        };
        let (host, port_part) = host_port.split_at(host_end);
        let port = match port_part.strip_prefix(':') {
            Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => Some(digits),
            None if port_part.is_empty() => None,
            // Not a host and port (a malformed authority): no variant can be built.
            _ => return None,
        };
        Some(UrlParts {
            scheme_sep,
            userinfo,
            host,
            port,
            rest,
        })
    }

    /// Path and query with the query encoded by [`whatwg_query`], when that changes
    /// it; only for http and https, the schemes Twilio calls.
    fn whatwg_rest(&self) -> Option<String> {
        self.default_port()?;
        let (path, query) = self.rest.split_once('?')?;
        let encoded = whatwg_query(query);
        (encoded != query).then(|| format!("{path}?{encoded}"))
    }

    fn default_port(&self) -> Option<u16> {
        let scheme = self.scheme_sep.trim_end_matches("://");
        if scheme.eq_ignore_ascii_case("https") {
            Some(443)
        } else if scheme.eq_ignore_ascii_case("http") {
            Some(80)
        } else {
            None
        }
    }
}

fn mac(auth_token: &str, text: &str) -> Vec<u8> {
    let mut mac =
        HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The first value of query parameter `name` in `url` (fragment ignored), decoded.
fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let (_, query) = url.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const VECTORS: &str = include_str!("../../tests/fixtures/twilio_signature_vectors.json");

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `params` in the vectors file: a map (values are strings or arrays of strings),
    /// a list of `[key, value]` pairs, or null for JSON-body cases.
    fn vector_params(value: &Value) -> Option<Vec<(String, String)>> {
        let as_str = |v: &Value| v.as_str().expect("string param value").to_owned();
        match value {
            Value::Null => None,
            Value::Object(map) => Some(
                map.iter()
                    .flat_map(|(key, value)| match value {
                        Value::Array(values) => {
                            values.iter().map(|v| (key.clone(), as_str(v))).collect()
                        }
                        v => vec![(key.clone(), as_str(v))],
                    })
                    .collect(),
            ),
            Value::Array(list) => Some(
                list.iter()
                    .map(|pair| (as_str(&pair[0]), as_str(&pair[1])))
                    .collect(),
            ),
            other => panic!("unexpected params shape: {other}"),
        }
    }

    #[test]
    fn every_official_vector() {
        let file: Value = serde_json::from_str(VECTORS).expect("vectors file is JSON");
        let vectors = file["vectors"].as_array().expect("vectors array");
        assert!(vectors.len() >= 40, "the vectors file lost entries");
        let mut checked_strings = 0;
        for (i, v) in vectors.iter().enumerate() {
            let name = format!("vector {i} ({})", v["test"]);
            let url = v["url"].as_str().unwrap();
            let token = v["auth_token"].as_str().unwrap();
            let signature = v["signature"].as_str().unwrap();
            let valid = v["valid"].as_bool().unwrap();
            let params = vector_params(v.get("params").unwrap_or(&Value::Null));
            let legacy = v["note"].as_str().is_some_and(|n| n.starts_with("LEGACY"));

            match (&params, v["body"].as_str()) {
                (Some(params), _) => {
                    assert_eq!(verify(token, url, params, signature), valid, "{name}");
                }
                (None, Some(body)) if legacy => {
                    // Before 2019 the SDKs put a base64 bodySHA256 in the URL; Twilio and
                    // every current SDK use lowercase hex. We deliberately accept hex only,
                    // so this historic vector must be refused. Its URL signature itself
                    // is still right, which shows the refusal is about the body hash.
                    assert!(valid, "{name}");
                    assert!(verify(token, url, &[], signature), "{name}");
                    assert!(
                        !verify_json_body(token, url, body.as_bytes(), signature),
                        "{name}"
                    );
                }
                (None, Some(body)) => {
                    assert_eq!(
                        verify_json_body(token, url, body.as_bytes(), signature),
                        valid,
                        "{name}"
                    );
                }
                (None, None) => panic!("{name}: neither params nor body"),
            }

            if let Some(expected) = v["string_to_sign"].as_str() {
                let params = params.clone().unwrap_or_default();
                let candidates = candidate_urls(url);
                assert!(
                    candidates
                        .iter()
                        .any(|c| string_to_sign(c, &params) == expected),
                    "{name}: no candidate of {candidates:?} gives {expected:?}"
                );
                assert_eq!(compute(token, expected, &[]), signature, "{name}");
                checked_strings += 1;
            }
        }
        assert!(
            checked_strings >= 30,
            "only {checked_strings} string_to_sign checked"
        );
    }

    #[test]
    fn docs_walkthrough_example() {
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]);
        let url = "https://example.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            compute("12345", url, &params),
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        );
        assert!(verify(
            "12345",
            url,
            &params,
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        ));
        assert!(!verify(
            "54321",
            url,
            &params,
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        ));
    }

    #[test]
    fn sorts_keys_by_bytes_and_dedupes_values() {
        let params = pairs(&[("b", "2"), ("B", "1"), ("a", "y"), ("a", "x"), ("a", "y")]);
        assert_eq!(string_to_sign("U", &params), "UB1axayb2");
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let params = pairs(&[("Body", "hi"), ("From", "whatsapp:+15550001")]);
        let url = "https://bot.example/webhooks/twilio/kibo";
        let sig = compute("tok", url, &params);
        assert!(verify("tok", url, &params, &sig));
        assert!(!verify("tok", url, &pairs(&[("Body", "hi!")]), &sig));
        assert!(!verify("tok", &format!("{url}/"), &params, &sig));
        assert!(!verify("tok", url, &params, ""));
        assert!(!verify("tok", url, &params, &sig[..sig.len() - 1]));
        assert!(!verify("", url, &params, &compute("", url, &params)));
    }

    #[test]
    fn a_fragment_is_signed_like_any_other_character() {
        // Cutting at `#` let a URL rebuilt from a hostile `Host: other.example/path#`
        // match a signature made for another endpoint of the same account.
        let params = pairs(&[("Body", "hi")]);
        let signed_for = "https://vendor.example/twilio/incoming";
        let sig = compute("tok", signed_for, &params);
        assert!(!verify(
            "tok",
            &format!("{signed_for}#/webhooks/twilio/shop"),
            &params,
            &sig
        ));
        assert!(candidate_urls(&format!("{signed_for}#x"))
            .iter()
            .all(|c| c.contains('#') || c.contains("%23")));
    }

    #[test]
    fn query_as_whatwg_url_parsing_encodes_it() {
        // Twilio's Node SDK re-serialises the URL with `new URL()` before signing:
        // `'` becomes `%27` (and space, `"`, `<`, `>` and non-ASCII are escaped).
        let params = pairs(&[("Body", "hi")]);
        let raw = "https://bot.example/hook?Body=It's+amazing&q=\"<a b>\"&n=caf\u{e9}&k=50%25";
        let encoded =
            "https://bot.example/hook?Body=It%27s+amazing&q=%22%3Ca%20b%3E%22&n=caf%C3%A9&k=50%25";
        let sig = compute("tok", encoded, &params);
        assert!(verify("tok", raw, &params, &sig));
        // With the default port toggled too, as for every other variant.
        let sig_443 = compute(
            "tok",
            "https://bot.example:443/hook?Body=It%27s+amazing",
            &params,
        );
        assert!(verify(
            "tok",
            "https://bot.example/hook?Body=It's+amazing",
            &params,
            &sig_443
        ));
        // The path is not re-encoded, and a query with nothing to escape adds nothing.
        assert_eq!(
            candidate_urls("https://bot.example/it's?x=1"),
            [
                "https://bot.example/it's?x=1",
                "https://bot.example:443/it's?x=1"
            ]
        );
        assert_eq!(
            candidate_urls("http://bot.example/hook?Body=It's"),
            [
                "http://bot.example/hook?Body=It's",
                "http://bot.example/hook?Body=It%27s",
                "http://bot.example:80/hook?Body=It's",
                "http://bot.example:80/hook?Body=It%27s",
            ]
        );
    }

    #[test]
    fn userinfo_may_be_dropped_before_signing() {
        let params = pairs(&[("Body", "hi")]);
        let sig = compute("tok", "https://bot.example/hook", &params);
        assert!(verify(
            "tok",
            "https://user:pass@bot.example/hook",
            &params,
            &sig
        ));
        let sig_443 = compute("tok", "https://bot.example:443/hook", &params);
        assert!(verify(
            "tok",
            "https://user:pass@bot.example/hook",
            &params,
            &sig_443
        ));
    }

    #[test]
    fn query_is_used_byte_for_byte() {
        // Twilio signs `'` raw; a re-serialising URL parser would turn it into %27.
        let params = pairs(&[("Body", "hi")]);
        let raw = "https://bot.example/hook?Body=It's+amazing";
        let escaped = "https://bot.example/hook?Body=It%27s+amazing";
        let sig = compute("tok", raw, &params);
        assert!(verify("tok", raw, &params, &sig));
        assert!(!verify("tok", escaped, &params, &sig));
    }

    #[test]
    fn host_case_is_not_normalised() {
        let params = pairs(&[("Body", "hi")]);
        let sig = compute("tok", "https://Bot.example/hook", &params);
        assert!(verify("tok", "https://Bot.example/hook", &params, &sig));
        assert!(!verify("tok", "https://bot.example/hook", &params, &sig));
    }

    #[test]
    fn candidates_toggle_port_and_userinfo() {
        assert_eq!(
            candidate_urls("https://a.example/p?q=1"),
            ["https://a.example/p?q=1", "https://a.example:443/p?q=1"]
        );
        assert_eq!(
            candidate_urls("http://a.example:8080?q"),
            ["http://a.example:8080?q", "http://a.example?q"]
        );
        assert_eq!(
            candidate_urls("https://u:p@a.example/p"),
            [
                "https://u:p@a.example/p",
                "https://u:p@a.example:443/p",
                "https://a.example/p",
                "https://a.example:443/p",
            ]
        );
        assert_eq!(
            candidate_urls("http://[::1]:3000/p"),
            ["http://[::1]:3000/p", "http://[::1]/p"]
        );
        assert_eq!(
            candidate_urls("http://[::1]/p"),
            ["http://[::1]/p", "http://[::1]:80/p"]
        );
        assert_eq!(candidate_urls("ftp://a.example/p"), ["ftp://a.example/p"]);
        assert_eq!(candidate_urls("not a url"), ["not a url"]);
        assert_eq!(
            candidate_urls("https://a.example:x/p"),
            ["https://a.example:x/p"]
        );
    }

    #[test]
    fn json_body_needs_matching_hash_and_signature() {
        let body = br#"{"a":1}"#;
        let hash = hex_lower(&Sha256::digest(body));
        let url = format!("https://bot.example/hook?bodySHA256={hash}");
        let sig = compute("tok", &url, &[]);
        assert!(verify_json_body("tok", &url, body, &sig));
        assert!(!verify_json_body("tok", &format!("{url}#rc=2"), body, &sig));
        assert!(!verify_json_body("tok", &url, br#"{"a":2}"#, &sig));
        assert!(!verify_json_body("other", &url, body, &sig));
        let no_hash = "https://bot.example/hook";
        assert!(!verify_json_body(
            "tok",
            no_hash,
            body,
            &compute("tok", no_hash, &[])
        ));
    }

    #[test]
    fn empty_body_hash_vector() {
        assert_eq!(
            hex_lower(&Sha256::digest(b"{}")),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
