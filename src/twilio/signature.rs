//! `X-Twilio-Signature`: base64(HMAC-SHA1(auth_token, url + sorted params)).

/// The signature Twilio would send for `url` and form `params`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let _ = (auth_token, url, params);
    todo!("twilio helper")
}

/// Checks `signature` in constant time against `url` and the URL variants Twilio's
/// SDKs accept (port removed, default port added; fragment stripped).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let _ = (auth_token, url, params, signature);
    todo!("twilio helper")
}
