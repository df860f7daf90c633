//! Webhooks as Twilio sends them: form bodies signed with the real algorithm.

use switchboard::twilio::signature;

/// The form body Twilio would POST to `url` with `params`, and its
/// `X-Twilio-Signature` for `auth_token`.
pub fn signed_form(auth_token: &str, url: &str, params: &[(&str, &str)]) -> (String, String) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    (body, signature::compute(auth_token, url, &owned))
}
