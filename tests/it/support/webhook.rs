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

/// POSTs `params` to `url` as Twilio would: form-encoded and signed with `auth_token`.
pub async fn post_signed(
    http: &reqwest::Client,
    auth_token: &str,
    url: &str,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let (body, signature) = signed_form(auth_token, url, params);
    http.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The most requests inside any window of one second.
pub fn busiest_second(times: &[std::time::Instant]) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut worst = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end].duration_since(sorted[start]) >= std::time::Duration::from_secs(1) {
            start += 1;
        }
        worst = worst.max(end - start + 1);
    }
    worst
}
