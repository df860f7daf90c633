//! The web console (SPEC §10.3) over HTTP: sign-in and sessions, CSRF and
//! origin checks on every form, each page's data on both stores, the outbox
//! actions, the simulator, and hostile input. The store queries behind the
//! pages are tested directly too (paging never repeats or skips a row).
//! `console_browser.rs` drives the same pages in a real browser.

use std::path::Path;
use std::time::Duration;

use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::json;
use switchboard::domain::OutboxStatus;
use switchboard::store::{
    Cursor, InboundOutcome, NewInbound, Store, TimelineEntry, CANCELLED_MESSAGE,
};

use crate::both_stores;
use crate::support::app::{
    new_contact, new_sid, Options, TestApp, ACCOUNT_SID, AUTH_TOKEN, BOT, FROM, WELCOME,
};
use crate::support::fake_twilio::FakeReply;

pub const TOKEN: &str = "admin-secret";

/// A browser-like client of the console: no redirects followed, the session
/// cookie and CSRF token kept.
pub struct ConsoleClient {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

/// The value of the first `name="csrf" value="..."` on a page.
fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(html[at..].split('"').next()?.to_owned())
}

impl ConsoleClient {
    pub fn new(app: &TestApp) -> ConsoleClient {
        ConsoleClient {
            base: app.base.clone(),
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            cookie: None,
            csrf: None,
        }
    }

    /// Signs in with the admin token and reads the CSRF token from a page.
    pub async fn signed_in(app: &TestApp) -> ConsoleClient {
        let mut client = ConsoleClient::new(app);
        let response = client.sign_in(TOKEN).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let set = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        client.cookie = Some(set.split(';').next().unwrap().to_owned());
        let (status, html) = client.get("/console/bots").await;
        assert_eq!(status, 200, "{html}");
        client.csrf = csrf_of(&html);
        assert!(client.csrf.is_some(), "no CSRF token on the bots page");
        client
    }

    pub async fn sign_in(&self, token: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/console/signin", self.base))
            .form(&[("token", token), ("next", "")])
            .send()
            .await
            .unwrap()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        request
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    /// POSTs `form` with this session's CSRF token added.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        if let Some(csrf) = &self.csrf {
            fields.push(("csrf", csrf));
        }
        self.request(reqwest::Method::POST, path)
            .form(&fields)
            .send()
            .await
            .unwrap()
    }
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn without_an_admin_token_the_console_says_how_to_turn_it_on() {
    let db = crate::support::db::TestDb::sqlite().await;
    let app = TestApp::spawn_with(
        &db,
        Options {
            admin_token: None,
            ..Options::default()
        },
    )
    .await;
    let client = ConsoleClient::new(&app);
    for path in ["/console/", "/console/bots", "/console/signin"] {
        let (status, html) = client.get(path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(html.contains("--admin-token"), "{path}: {html}");
        assert!(html.contains("SWITCHBOARD_ADMIN_TOKEN"), "{path}");
    }
    let response = client.sign_in("").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The stylesheet is there for that page.
    let (status, css) = client.get("/console/assets/console.css").await;
    assert_eq!(status, 200);
    assert!(css.contains(".msg"));
    let (status, js) = client.get("/console/assets/console.js").await;
    assert_eq!(status, 200);
    assert!(js.contains("data-poll"));
}

#[tokio::test]
async fn sign_in_sessions_and_sign_out() {
    let db = crate::support::db::TestDb::sqlite().await;
    let app = TestApp::spawn(&db).await;
    let anonymous = ConsoleClient::new(&app);

    // Every page redirects to sign-in, coming back to it afterwards.
    for path in [
        "/console/bots",
        "/console/bots/shop",
        "/console/conversations",
        "/console/conversations/1",
        "/console/outbox",
        "/console/simulator",
        "/console/simulator/shop",
    ] {
        let response = anonymous
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(
            location(&response).starts_with("/console/signin?next=%2Fconsole%2F"),
            "{path}: {}",
            location(&response)
        );
    }
    // Every action is 401 without a session, whatever it carries.
    for path in [
        "/console/signout",
        "/console/outbox/1/retry",
        "/console/outbox/1/cancel",
        "/console/simulator/shop/send",
        "/console/simulator/shop/reset",
        "/console/simulator/shop/save",
    ] {
        let response = anonymous.post(path, &[("csrf", "x"), ("text", "hi")]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, _) = anonymous.get("/console/simulator/shop/version").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A wrong token is refused and says so.
    let response = anonymous.sign_in("admin-secreT").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get("set-cookie").is_none());
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("not the admin token"));

    // The right one gives an HttpOnly, SameSite=Strict cookie for /console.
    let response = anonymous.sign_in(TOKEN).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/bots");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "switchboard_console=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");

    // Sign-in goes back where it was asked from, but only to a console page.
    let back = anonymous
        .http
        .post(format!("{}/console/signin", app.base))
        .form(&[("token", TOKEN), ("next", "/console/outbox?bot=shop")])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&back), "/console/outbox?bot=shop");
    for evil in [
        "https://evil.example/",
        "//evil.example/console/",
        "/console/..\\x",
    ] {
        let away = anonymous
            .http
            .post(format!("{}/console/signin", app.base))
            .form(&[("token", TOKEN), ("next", evil)])
            .send()
            .await
            .unwrap();
        assert_eq!(location(&away), "/console/bots", "{evil}");
    }

    let client = ConsoleClient::signed_in(&app).await;
    let (status, html) = client.get("/console/").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");

    // Sign-out ends the session: the same cookie no longer opens a page.
    let response = client.post("/console/signout", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _) = client.get("/console/bots").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn every_form_needs_the_sessions_token_and_this_origin() {
    let db = crate::support::db::TestDb::sqlite().await;
    let app = TestApp::spawn(&db).await;
    let client = ConsoleClient::signed_in(&app).await;
    let csrf = client.csrf.clone().unwrap();
    let other = ConsoleClient::signed_in(&app).await;
    let actions = [
        "/console/signout",
        "/console/outbox/1/retry",
        "/console/outbox/1/cancel",
        "/console/simulator/shop/send",
        "/console/simulator/shop/reset",
        "/console/simulator/shop/save",
    ];
    for path in actions {
        let send = |token: Option<&str>, headers: &[(&str, &str)]| {
            let mut request = client.request(reqwest::Method::POST, path);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let mut form = vec![("text", "hi"), ("name", "t")];
            if let Some(token) = token {
                form.push(("csrf", token));
            }
            request.form(&form).send()
        };
        // No token, a wrong one, another session's.
        let zeros = "0".repeat(64);
        for token in [None, Some(""), Some(zeros.as_str()), other.csrf.as_deref()] {
            let response = send(token, &[]).await.unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path} {token:?}");
        }
        // The right token from another site.
        for headers in [
            &[("origin", "https://evil.example")][..],
            &[("origin", "null")][..],
            &[("sec-fetch-site", "cross-site")][..],
            &[("sec-fetch-site", "same-site")][..],
        ] {
            let response = send(Some(&csrf), headers).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{path} {headers:?}"
            );
        }
    }
    // From the console's own page it goes through.
    let response = client
        .request(reqwest::Method::POST, "/console/outbox/1/cancel")
        .header("origin", app.base.as_str())
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", csrf.as_str()), ("back", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/outbox?note=not-cancelled");
    // And the session survived every refusal.
    let (status, _) = client.get("/console/bots").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn hostile_input_is_refused_with_a_message() {
    let db = crate::support::db::TestDb::sqlite().await;
    let app = TestApp::spawn(&db).await;
    let client = ConsoleClient::signed_in(&app).await;

    // Cookies that are not a session: redirect to sign-in, never a 500.
    let cookies = vec![
        "switchboard_console=".to_owned(),
        "switchboard_console=zz".to_owned(),
        "switchboard_console=../../etc".to_owned(),
        format!("switchboard_console={}", "a".repeat(4000)),
        format!("switchboard_console={}", "0".repeat(64)),
        "other=1; switchboard_console".to_owned(),
    ];
    for cookie in &cookies {
        let response = client
            .http
            .get(format!("{}/console/bots", app.base))
            .header("cookie", cookie.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{cookie:.40}");
    }

    // A form over the limit is 413; a message over the simulator's limit is 400.
    let big = "x".repeat(switchboard::http::CONSOLE_MAX_FORM_BYTES + 1);
    let response = client
        .post("/console/simulator/shop/send", &[("text", &big)])
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let long_message = "y".repeat(switchboard::console::MAX_MESSAGE_BYTES + 1);
    let response = client
        .post("/console/simulator/shop/send", &[("text", &long_message)])
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("longer than 16 KiB"));
    let response = client
        .http
        .post(format!("{}/console/signin", app.base))
        .body("token=%ZZ&&&==")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    let response = client
        .http
        .post(format!("{}/console/signin", app.base))
        .body("{\"token\": \"admin-secret\"}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Query strings and path parts that are not what the pages make.
    for (path, status, says) in [
        ("/console/conversations/abc", 400, "by its number"),
        ("/console/conversations/1?before=soon", 400, "by its number"),
        (
            "/console/conversations/999999",
            404,
            "no conversation 999999",
        ),
        (
            "/console/conversations?bot=shop&before=1.2.3",
            400,
            "not a page position",
        ),
        (
            "/console/conversations?bot=Not%20A%20Bot",
            400,
            "not a bot id",
        ),
        (
            "/console/outbox?bot=shop&failed_before=x",
            400,
            "not a page position",
        ),
        ("/console/bots/nope", 404, "no bot named `nope`"),
        ("/console/simulator/nope", 404, "no bot named `nope`"),
    ] {
        let (got, html) = client.get(path).await;
        assert_eq!(got.as_u16(), status, "{path}: {html}");
        assert!(html.contains(says), "{path}: {html}");
    }
    let q = "q".repeat(switchboard::console::MAX_QUERY_CHARS + 1);
    let (status, _) = client
        .get(&format!("/console/conversations?bot=shop&q={q}"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Test names are file names, never paths.
    for name in ["../evil", "a/b", ""] {
        let response = client
            .post(
                "/console/simulator/shop/save",
                &[("name", name), ("to", "tests")],
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
    }
    assert!(!app.flows.join("evil.yaml").exists());

    // Pages carry headers that keep them in this origin and out of caches.
    let response = client
        .request(reqwest::Method::GET, "/console/bots")
        .send()
        .await
        .unwrap();
    let headers = response.headers();
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
}

/// A bot folder that does not load, beside the shop bot.
fn write_broken_bot(flows: &Path) {
    let dir = flows.join("broken");
    std::fs::create_dir_all(&dir).unwrap();
    let shop = std::fs::read_to_string(flows.join(BOT).join("bot.yaml")).unwrap();
    std::fs::write(dir.join("bot.yaml"), shop.replace("Test Shop", "Broken")).unwrap();
    std::fs::write(
        dir.join("menus.yaml"),
        "main:\n  say: Hi\n  options:\n    - label: Go\n      goto: mian\n",
    )
    .unwrap();
}

#[tokio::test]
async fn bots_page_shows_status_errors_with_source_lines_and_a_diagram() {
    let db = crate::support::db::TestDb::sqlite().await;
    let app =
        TestApp::spawn_with_bots(&db, Options::default(), |flows, _| write_broken_bot(flows)).await;
    let client = ConsoleClient::signed_in(&app).await;
    let (status, html) = client.get("/console/bots").await;
    assert_eq!(status, 200);
    assert!(html.contains("Test Shop"), "{html}");
    assert!(html.contains("loaded"), "{html}");
    assert!(html.contains("not loaded"), "{html}");
    // The error as `check` prints it: file:line:col, the source line, the hint.
    assert!(html.contains("menus.yaml:5:13"), "{html}");
    assert!(html.contains("goto: mian"), "{html}");
    assert!(html.contains("did you mean `main`?"), "{html}");

    let (status, html) = client.get("/console/bots/shop").await;
    assert_eq!(status, 200);
    assert!(html.contains("<svg class=\"diagram\""), "{html}");
    for node in ["main", "browse", "ask_name", "greet"] {
        assert!(html.contains(&format!("<title>{node}</title>")), "{node}");
    }
    assert!(
        html.contains("option “Browse” → <code>browse</code>"),
        "{html}"
    );
    assert!(html.contains("flowchart TD"), "the Mermaid source");
}

async fn message(store: &Store, contact: &str, sid: &str, at: i64, bodies: &[&str]) {
    let msg = NewInbound {
        bot: BOT.into(),
        contact: contact.into(),
        message_sid: sid.into(),
        body: format!("text {sid}"),
        payload: json!({ "text": format!("text {sid}"), "media": [] }),
        received_at_ms: at,
    };
    let outcome = store
        .process_inbound(&msg, crate::store::replying("main", at, bodies))
        .await
        .unwrap();
    assert!(matches!(outcome, InboundOutcome::Processed { .. }));
}

both_stores!(conversation_pages_never_repeat_or_skip, |db| async move {
    let store = db.store.clone();
    // 7 conversations, three of them last active in the same millisecond.
    let times = [1000, 2000, 2000, 2000, 3000, 4000, 5000];
    for (n, at) in times.iter().enumerate() {
        message(
            &store,
            &format!("whatsapp:+1{n}"),
            &format!("SM{n:032}"),
            *at,
            &["ok"],
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut from = Cursor::NEWEST;
    let mut pages = 0;
    loop {
        let page = store.conversations(BOT, from, 2).await.unwrap();
        assert!(page.rows.len() <= 2);
        seen.extend(
            page.rows
                .iter()
                .map(|c| (c.updated_at_ms, c.contact.clone())),
        );
        pages += 1;
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let contacts: Vec<&str> = seen.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(seen.len(), 7, "{contacts:?}");
    let times: Vec<i64> = seen.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [5000, 4000, 3000, 2000, 2000, 2000, 1000]);
    // Another bot's conversations are not listed.
    assert!(store
        .conversations("other", Cursor::NEWEST, 10)
        .await
        .unwrap()
        .rows
        .is_empty());

    // Search: by contact with or without `whatsapp:` and `+`, by MessageSid.
    for q in ["whatsapp:+13", "+13", "13", " 13 "] {
        let found = store.search_conversations(BOT, q).await.unwrap();
        assert_eq!(found.len(), 1, "{q}");
        assert_eq!(found[0].contact, "whatsapp:+13");
    }
    let found = store
        .search_conversations(BOT, &format!("SM{:032}", 5))
        .await
        .unwrap();
    assert_eq!(found[0].contact, "whatsapp:+15");
    assert!(store
        .search_conversations(BOT, "nobody")
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .search_conversations("other", "+13")
        .await
        .unwrap()
        .is_empty());
});

both_stores!(timeline_pages_end_between_milliseconds, |db| async move {
    let store = db.store.clone();
    let contact = "whatsapp:+1999";
    // Messages at 10, 20, 30, 40 ms, each with two replies at the same ms.
    for (n, at) in [10, 20, 30, 40].iter().enumerate() {
        message(&store, contact, &format!("SM{n:032}"), *at, &["a", "b"]).await;
    }
    let conversation = store.search_conversations(BOT, contact).await.unwrap()[0].clone();
    let detail = store
        .conversation_by_id(conversation.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.summary, conversation);
    assert!(store
        .conversation_by_id(conversation.id + 1000)
        .await
        .unwrap()
        .is_none());

    let mut all = Vec::new();
    let mut before = i64::MAX;
    loop {
        // Pages of about 4: one message and its two replies fit, two do not.
        let page = store.timeline(&conversation, before, 4).await.unwrap();
        assert!(!page.entries.is_empty());
        // Oldest first within a page, each message before its replies.
        let kinds: Vec<char> = page
            .entries
            .iter()
            .map(|e| match e {
                TimelineEntry::Inbound(_) => 'i',
                TimelineEntry::Reply(_) => 'r',
            })
            .collect();
        assert_eq!(kinds.len() % 3, 0, "{kinds:?}");
        assert!(kinds.chunks(3).all(|c| c == ['i', 'r', 'r']), "{kinds:?}");
        let mut entries = page.entries.clone();
        entries.extend(all);
        all = entries;
        match page.older_before_ms {
            Some(b) => before = b,
            None => break,
        }
    }
    let times: Vec<i64> = all.iter().map(|e| e.at_ms()).collect();
    assert_eq!(times, [10, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40]);
});

both_stores!(
    retry_and_cancel_move_only_the_rows_they_should,
    |db| async move {
        let store = db.store.clone();
        message(
            &store,
            "whatsapp:+1",
            &format!("SM{:032}", 1),
            1000,
            &["one", "two"],
        )
        .await;
        let rows = store.outbox_for(BOT, "whatsapp:+1").await.unwrap();
        let (first, second) = (rows[0].id, rows[1].id);

        // Queued: cancel works once; retry does nothing to a queued row.
        assert_eq!(store.retry_reply(first, 2000).await.unwrap(), None);
        assert_eq!(
            store.cancel_reply(first, 2000).await.unwrap().as_deref(),
            Some(BOT)
        );
        assert_eq!(store.cancel_reply(first, 2001).await.unwrap(), None);
        let row = &store.outbox_for(BOT, "whatsapp:+1").await.unwrap()[0];
        assert_eq!(row.status, OutboxStatus::Failed);
        assert_eq!(row.error_message.as_deref(), Some(CANCELLED_MESSAGE));
        assert_eq!(row.error_code, None);

        // It is listed as failed; the other as queued.
        let failed = store.failed_replies(BOT, Cursor::NEWEST, 10).await.unwrap();
        assert_eq!(
            failed.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            [first]
        );
        let queued = store.queued_replies(BOT, Cursor::OLDEST, 10).await.unwrap();
        assert_eq!(
            queued.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            [second]
        );
        assert!(store
            .failed_replies("other", Cursor::NEWEST, 10)
            .await
            .unwrap()
            .rows
            .is_empty());

        // A failed row is queued again, due now, as a new reply.
        assert_eq!(
            store.retry_reply(first, 3000).await.unwrap().as_deref(),
            Some(BOT)
        );
        assert_eq!(store.retry_reply(first, 3001).await.unwrap(), None);
        let row = &store.outbox_for(BOT, "whatsapp:+1").await.unwrap()[0];
        assert_eq!(row.status, OutboxStatus::Queued);
        assert_eq!((row.attempts, row.next_attempt_at_ms), (0, 3000));
        assert_eq!((row.error_code, row.error_message.clone()), (None, None));
        assert_eq!(row.twilio_sid, None);
        // And it is claimable again, ahead of the reply after it.
        let claimed = store
            .claim_due(switchboard::store::ClaimRequest {
                now_ms: 3000,
                lease: Duration::from_secs(30),
                limit: 10,
                bulk_limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), [first]);
        // A row being sent cannot be cancelled.
        assert_eq!(store.cancel_reply(first, 3002).await.unwrap(), None);

        // Pages of the queued list follow the due order.
        for n in 2..7 {
            message(
                &store,
                &format!("whatsapp:+{n}"),
                &format!("SM{n:032}"),
                1000 + n,
                &["x"],
            )
            .await;
        }
        let mut ids = Vec::new();
        let mut from = Cursor::OLDEST;
        loop {
            let page = store.queued_replies(BOT, from, 2).await.unwrap();
            ids.extend(page.rows.iter().map(|r| r.id));
            match page.next {
                Some(next) => from = next,
                None => break,
            }
        }
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids.len(), 6, "{ids:?}");
        assert_eq!(sorted.len(), 6);
    }
);

/// Sends `text` from `contact` through the signed webhook.
async fn say(app: &TestApp, contact: &str, text: &str) -> String {
    let sid = new_sid();
    let response = app.message(contact, &sid, text).await;
    assert_eq!(response.status(), 200);
    sid
}

both_stores!(
    conversations_timeline_and_outbox_pages_show_the_data,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let client = ConsoleClient::signed_in(&app).await;
        let (alice, bob) = (new_contact(), new_contact());
        let alice_sid = say(&app, &alice, "hello").await;
        app.replies(&alice, 1).await;
        // Bob's reply fails for good: Twilio refuses the number.
        app.twilio
            .push(FakeReply::error(400, 21211, "Invalid 'To' Phone Number"));
        say(&app, &bob, "hi").await;
        let rows = app.settled(&bob).await;
        assert_eq!(rows[0].status, OutboxStatus::Failed);
        let failed_id = rows[0].id;

        // The list: both contacts, newest first, with their node.
        let (status, html) = client.get("/console/conversations?bot=shop").await;
        assert_eq!(status, 200, "{html}");
        let (a, b) = (html.find(&alice).unwrap(), html.find(&bob).unwrap());
        assert!(b < a, "newest activity first");
        assert!(html.contains("<code>main</code>"));

        // Search by the number alone and by the MessageSid.
        let number = alice.trim_start_matches("whatsapp:+");
        for q in [number, alice_sid.as_str()] {
            let (status, html) = client
                .get(&format!("/console/conversations?bot=shop&q={q}"))
                .await;
            assert_eq!(status, 200);
            assert!(html.contains(&alice), "{q}: {html}");
            assert!(!html.contains(&bob), "{q}");
        }

        // Bob's timeline: his message, the failed reply with code, meaning and Retry.
        let id = app.store.search_conversations(BOT, &bob).await.unwrap()[0].id;
        let (status, html) = client.get(&format!("/console/conversations/{id}")).await;
        assert_eq!(status, 200, "{html}");
        assert!(html.contains("hi"), "{html}");
        assert!(html.contains("Welcome to the shop!"), "{html}");
        assert!(html.contains(">failed<"), "{html}");
        assert!(
            html.contains("21211: invalid &#39;To&#39; phone number"),
            "{html}"
        );
        assert!(
            html.contains(&format!("/console/outbox/{failed_id}/retry")),
            "{html}"
        );

        // The outbox page lists it under failed.
        let (status, html) = client.get("/console/outbox?bot=shop").await;
        assert_eq!(status, 200);
        assert!(
            html.contains(&format!("id=\"reply-{failed_id}\"")),
            "{html}"
        );
        assert!(html.contains("21211"), "{html}");

        // Retry: back to the timeline with a note, and the reply goes out.
        let back = format!("/console/conversations/{id}");
        let response = client
            .post(
                &format!("/console/outbox/{failed_id}/retry"),
                &[("back", back.as_str())],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), format!("{back}?note=retried"));
        let replies = app.replies(&bob, 1).await;
        assert_eq!(replies, [WELCOME]);
        let (_, html) = client.get(&format!("{back}?note=retried")).await;
        assert!(html.contains("queued again"), "{html}");
        // Retrying again does nothing, and says so.
        let response = client
            .post(&format!("/console/outbox/{failed_id}/retry"), &[])
            .await;
        assert_eq!(location(&response), "/console/outbox?note=not-retried");
    }
);

both_stores!(
    cancelling_a_queued_reply_from_the_outbox_page,
    |db| async move {
        let app = TestApp::spawn_with(
            &db,
            Options {
                run_sender: false,
                ..Options::default()
            },
        )
        .await;
        let client = ConsoleClient::signed_in(&app).await;
        let contact = new_contact();
        say(&app, &contact, "hello").await;
        let row = app.outbox(&contact).await[0].clone();
        let (_, html) = client.get("/console/outbox?bot=shop").await;
        assert!(
            html.contains(&format!("/console/outbox/{}/cancel", row.id)),
            "{html}"
        );
        assert!(html.contains("Welcome to the shop!"), "{html}");
        let response = client
            .post(
                &format!("/console/outbox/{}/cancel", row.id),
                &[("back", "/console/outbox?bot=shop")],
            )
            .await;
        assert_eq!(
            location(&response),
            "/console/outbox?bot=shop&note=cancelled"
        );
        let row = app.outbox(&contact).await[0].clone();
        assert_eq!(row.status, OutboxStatus::Failed);
        // The sender finds nothing to send.
        assert_eq!(app.sender.run_once().await.unwrap(), 0);
        assert!(app.twilio.received().is_empty());
        let (_, html) = client.get("/console/outbox?bot=shop&note=cancelled").await;
        assert!(html.contains("will not be sent"), "{html}");
        assert!(html.contains(CANCELLED_MESSAGE), "{html}");
    }
);

/// A bot whose script looks up stock over HTTP; `stub` adds a transcript test
/// with an `http:` stub for it.
fn write_stock_bot(flows: &Path, api_base: &str, stub: bool) {
    let dir = flows.join("stock");
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(
        dir.join("bot.yaml"),
        format!(
            "name: Stock\nstart: look\nhttp:\n  allow: [api.shop.example]\ntwilio:\n  account_sid: {ACCOUNT_SID}\n  auth_token: {AUTH_TOKEN}\n  from: \"{FROM}\"\n  api_base: {api_base}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("look.rhai"),
        "fn start() {\n  let r = http_get(\"https://api.shop.example/stock\");\n  say(`We have ${r.json.len()} items`);\n}\n",
    )
    .unwrap();
    if stub {
        std::fs::write(
            dir.join("tests/stock.yaml"),
            "name: stock\nsteps:\n  - user: hi\n    bot: We have 2 items\nhttp:\n  \"GET https://api.shop.example/stock\": {status: 200, json: [1, 2]}\n",
        )
        .unwrap();
    }
}

#[tokio::test]
async fn the_simulator_talks_to_a_bot_without_twilio_or_the_database() {
    let db = crate::support::db::TestDb::sqlite().await;
    let app = TestApp::spawn_with_bots(&db, Options::default(), |flows, api| {
        write_stock_bot(flows, api, true)
    })
    .await;
    let client = ConsoleClient::signed_in(&app).await;
    let (status, html) = client.get("/console/simulator").await;
    assert_eq!(status, 200);
    assert!(html.contains("/console/simulator/shop"), "{html}");

    let (status, html) = client.get("/console/simulator/shop").await;
    assert_eq!(status, 200, "{html}");
    let response = client
        .post("/console/simulator/shop/send", &[("text", "hi")])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/simulator/shop");
    client
        .post("/console/simulator/shop/send", &[("text", "2")])
        .await;
    client
        .post("/console/simulator/shop/send", &[("text", "Zed")])
        .await;
    let (_, html) = client.get("/console/simulator/shop").await;
    assert!(html.contains("Welcome to the shop!"), "{html}");
    assert!(html.contains("What&#39;s your name?"), "{html}");
    assert!(html.contains("Nice to meet you, Zed!"), "{html}");
    // Vars and node beside the chat.
    assert!(html.contains("&quot;name&quot;: &quot;Zed&quot;"), "{html}");
    assert!(html.contains("<code>main</code>"), "{html}");
    // Nothing reached the database or Twilio.
    assert_eq!(app.store.inbound_count("shop").await.unwrap(), 0);
    assert!(app.twilio.received().is_empty());

    // Save as a transcript test: downloaded, or written to tests/.
    let response = client
        .post(
            "/console/simulator/shop/save",
            &[("name", "greeting"), ("to", "download")],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"greeting.yaml\""
    );
    let yaml = response.text().await.unwrap();
    assert!(yaml.contains("name: \"greeting\""), "{yaml}");
    assert!(yaml.contains("- user: \"Zed\""), "{yaml}");
    let response = client
        .post(
            "/console/simulator/shop/save",
            &[("name", "greeting"), ("to", "tests")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let saved = app.flows.join("shop/tests/greeting.yaml");
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), yaml);
    let (_, html) = client.get("/console/simulator/shop").await;
    assert!(html.contains("saved 3 steps to"), "{html}");

    // A change to the bot's files shows as a notice, and the version moves.
    let (_, before) = client.get("/console/simulator/shop/version").await;
    let nodes = app.flows.join("shop/nodes.yaml");
    let text = std::fs::read_to_string(&nodes).unwrap();
    std::fs::write(&nodes, text.replace("Welcome to the shop!", "Hello again!")).unwrap();
    std::fs::write(app.flows.join("shop/extra.yaml"), "other:\n  say: x\n").unwrap();
    let (status, after) = client.get("/console/simulator/shop/version").await;
    assert_eq!(status, 200);
    assert_ne!(before, after);
    client.post("/console/simulator/shop/reset", &[]).await;
    client
        .post("/console/simulator/shop/send", &[("text", "hi")])
        .await;
    let (_, html) = client.get("/console/simulator/shop").await;
    assert!(html.contains("Hello again!"), "{html}");

    // Script HTTP: the tests' stub answers.
    client
        .post("/console/simulator/stock/send", &[("text", "hi")])
        .await;
    let (_, html) = client.get("/console/simulator/stock").await;
    assert!(html.contains("We have 2 items"), "{html}");
}

#[tokio::test]
async fn the_simulator_refuses_script_http_without_a_stub() {
    let db = crate::support::db::TestDb::sqlite().await;
    let app = TestApp::spawn_with_bots(&db, Options::default(), |flows, api| {
        write_stock_bot(flows, api, false)
    })
    .await;
    let client = ConsoleClient::signed_in(&app).await;
    client
        .post("/console/simulator/stock/send", &[("text", "hi")])
        .await;
    let (_, html) = client.get("/console/simulator/stock").await;
    assert!(html.contains("Flow error"), "{html}");
    assert!(
        html.contains("no stub for GET https://api.shop.example/stock"),
        "{html}"
    );
}
