//! The two [`ScriptHttp`]s: [`ReqwestScriptHttp`] for the server, [`StubHttp`] for
//! tests and `switchboard test`. The allow-list is checked before either is called.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::runtime::Handle;

use super::{HttpRequest, HttpResponse, ScriptHttp};

/// Real HTTP for scripts, on the process's own Tokio runtime.
///
/// Scripts are synchronous and run on a blocking thread (`spawn_blocking`), so each
/// request is driven with [`Handle::block_on`] on the runtime that owns the
/// connection pool: no second runtime or thread pool (as reqwest's `blocking`
/// feature would start), and timeouts use the runtime's timer. Calling it on an async
/// worker thread panics (Tokio forbids blocking there); the script engine turns that
/// panic into a script error.
///
/// Redirects are not followed: a redirect could lead to a host outside `http.allow`,
/// so the script sees the 3xx response instead.
#[derive(Debug, Clone)]
pub struct ReqwestScriptHttp {
    client: reqwest::Client,
    runtime: Handle,
}

impl ReqwestScriptHttp {
    /// Uses `runtime` to drive requests.
    pub fn new(runtime: Handle) -> ReqwestScriptHttp {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with rustls and no custom certificates always builds");
        ReqwestScriptHttp { client, runtime }
    }

    /// Uses the runtime of the calling thread. Panics outside a Tokio runtime.
    pub fn current() -> ReqwestScriptHttp {
        ReqwestScriptHttp::new(Handle::current())
    }

    async fn send(&self, req: &HttpRequest) -> Result<HttpResponse, String> {
        let builder = match (req.method.as_str(), &req.body) {
            ("GET", _) => self.client.get(&req.url),
            ("POST", Some(body)) => self.client.post(&req.url).json(body),
            ("POST", None) => self.client.post(&req.url),
            (other, _) => return Err(format!("unsupported method {other}")),
        };
        let mut response = builder
            .timeout(req.timeout)
            .send()
            .await
            .map_err(describe)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            body.extend_from_slice(&chunk);
            if body.len() > req.max_body_bytes {
                return Err(format!(
                    "the response body is over the limit of {} bytes",
                    req.max_body_bytes
                ));
            }
        }
        Ok(HttpResponse {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

impl ScriptHttp for ReqwestScriptHttp {
    fn request(&self, req: &HttpRequest) -> Result<HttpResponse, String> {
        self.runtime.block_on(self.send(req))
    }
}

/// A short cause for the script error, without the URL (the caller names it,
/// without its query string).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        let mut cause: &dyn std::error::Error = &err;
        while let Some(next) = cause.source() {
            cause = next;
        }
        format!("could not connect ({cause})")
    } else {
        err.to_string()
    }
}

/// Canned responses keyed by `"METHOD URL"`, recording every request. A request with
/// no stub is an error (`no stub for GET https://...`), and is remembered apart
/// ([`StubHttp::take_unanswered`]) so a test fails even when its script caught
/// the error.
#[derive(Debug, Default)]
pub struct StubHttp {
    stubs: HashMap<String, HttpResponse>,
    requests: Mutex<Vec<HttpRequest>>,
    unanswered: Mutex<Vec<String>>,
}

impl StubHttp {
    pub fn new() -> StubHttp {
        StubHttp::default()
    }

    /// Answers `key` (`"GET https://api.example/cars"`) with `response`. URLs are
    /// compared after normalisation, so `https://API.example` matches `https://api.example/`.
    pub fn with(mut self, key: &str, response: HttpResponse) -> StubHttp {
        self.insert(key, response);
        self
    }

    /// See [`StubHttp::with`].
    pub fn insert(&mut self, key: &str, response: HttpResponse) {
        let (method, url) = key.trim().split_once(' ').unwrap_or(("GET", key));
        self.stubs.insert(stub_key(method, url.trim()), response);
    }

    /// Answers every `"METHOD URL"` of `stubs` with its response.
    pub fn from_stubs(stubs: &[(String, HttpResponse)]) -> StubHttp {
        let mut http = StubHttp::new();
        for (key, response) in stubs {
            http.insert(key, response.clone());
        }
        http
    }

    /// The requests without a stub (`"GET https://..."`) since the last call.
    pub fn take_unanswered(&self) -> Vec<String> {
        std::mem::take(&mut *self.unanswered.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every request made so far, in order.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn stub_key(method: &str, url: &str) -> String {
    let url = url::Url::parse(url).map_or_else(|_| url.to_owned(), String::from);
    format!("{} {url}", method.to_ascii_uppercase())
}

impl ScriptHttp for StubHttp {
    fn request(&self, req: &HttpRequest) -> Result<HttpResponse, String> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(req.clone());
        let answer = self.stubs.get(&stub_key(&req.method, &req.url)).cloned();
        answer.ok_or_else(|| {
            let call = format!("{} {}", req.method, req.url);
            self.unanswered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(call.clone());
            format!("no stub for {call}")
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn get(url: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            url: url.into(),
            body: None,
            timeout: Duration::from_secs(5),
            max_body_bytes: 1024,
        }
    }

    #[test]
    fn stubs_match_normalised_urls_and_record_requests() {
        let stub = StubHttp::new().with(
            "GET https://API.example.com",
            HttpResponse::json(200, &json!([1])),
        );
        let answer = stub.request(&get("https://api.example.com/")).unwrap();
        assert_eq!(answer.body, "[1]");
        assert_eq!(stub.requests(), vec![get("https://api.example.com/")]);
    }

    #[test]
    fn an_unstubbed_request_is_an_error_naming_it() {
        let stub = StubHttp::new().with(
            "POST https://api.example.com/",
            HttpResponse::json(200, &json!({})),
        );
        assert_eq!(
            stub.request(&get("https://api.example.com/")).unwrap_err(),
            "no stub for GET https://api.example.com/"
        );
    }

    #[test]
    fn unanswered_requests_are_taken_once() {
        let stub = StubHttp::from_stubs(&[(
            "GET https://api.example.com/a".into(),
            HttpResponse::json(200, &json!({})),
        )]);
        assert!(stub.request(&get("https://api.example.com/a")).is_ok());
        assert!(stub.request(&get("https://api.example.com/b")).is_err());
        assert_eq!(
            stub.take_unanswered(),
            ["GET https://api.example.com/b".to_owned()]
        );
        assert!(stub.take_unanswered().is_empty());
        assert_eq!(stub.requests().len(), 2);
    }
}
