//! `TestApp`: the real server on port 0, with a fresh database, a flows folder of
//! test bots, a fake Twilio on loopback, and a clock the test can move.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchboard::domain::{Clock, OutboxStatus};
use switchboard::script::{ScriptHttp, StubHttp};
use switchboard::store::{OutboxRow, Store};
use switchboard::{App, Config, SenderConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::db::TestDb;
use super::eventually;
use super::fake_twilio::FakeTwilio;
use super::webhook::post_signed;

pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
pub const AUTH_TOKEN: &str = "test-token";
pub const BOT: &str = "shop";
pub const FROM: &str = "whatsapp:+14155238886";

/// How long [`TestApp::replies`] and [`TestApp::settled`] wait, and how often they look.
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// The real time plus an offset the test can push forward.
#[derive(Default)]
pub struct TestClock(Mutex<Duration>);

impl TestClock {
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(*self.0.lock().unwrap()).unwrap()
    }
}

/// How to start a [`TestApp`].
pub struct Options {
    pub sender: SenderConfig,
    pub run_sender: bool,
    pub dry_run: bool,
    /// Use `--public-url`; otherwise the signed URL is rebuilt from the Host header.
    pub public_url: bool,
    pub admin_token: Option<String>,
    /// The HTTP client scripts use; `None` refuses every call.
    pub script_http: Option<Arc<dyn ScriptHttp>>,
    /// Hot reload on (`config.watch`), and with polling (`--watch-poll`).
    pub watch: bool,
    pub watch_poll: bool,
    /// `Config::webhook_deadline`; `None` for the default.
    pub webhook_deadline: Option<Duration>,
    /// Serve `/metrics` open on a second listener too (`--metrics-listen`).
    pub metrics_listen: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sender: fast_sender(),
            run_sender: true,
            dry_run: false,
            public_url: true,
            admin_token: Some("admin-secret".into()),
            script_http: None,
            watch: false,
            watch_poll: false,
            webhook_deadline: None,
            metrics_listen: false,
        }
    }
}

/// Retries in milliseconds rather than seconds, so retry tests are quick.
pub fn fast_sender() -> SenderConfig {
    let mut sender = SenderConfig::default();
    sender.retry_base = Duration::from_millis(50);
    sender.retry_max = Duration::from_millis(400);
    sender.poll_interval = Duration::from_millis(100);
    sender.request_timeout = Duration::from_secs(5);
    sender
}

pub struct TestApp {
    pub base: String,
    pub store: Store,
    pub twilio: Arc<FakeTwilio>,
    pub clock: Arc<TestClock>,
    pub http: reqwest::Client,
    pub flows: PathBuf,
    pub database_url: String,
    /// `http://ADDR` of the `--metrics-listen` listener, when started with one.
    pub metrics_base: Option<String>,
    /// This server's sender, to run by hand when `run_sender` is off.
    pub sender: switchboard::sender::Sender,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    _flows_dir: Arc<tempfile::TempDir>,
}

impl TestApp {
    pub async fn spawn(db: &TestDb) -> TestApp {
        TestApp::spawn_with(db, Options::default()).await
    }

    pub async fn spawn_with(db: &TestDb, options: Options) -> TestApp {
        TestApp::spawn_with_bots(db, options, |_, _| {}).await
    }

    /// Like [`TestApp::spawn_with`], after `write_bots(flows, twilio_url)` has added
    /// more bot folders beside the shop bot.
    pub async fn spawn_with_bots(
        db: &TestDb,
        options: Options,
        write_bots: impl FnOnce(&Path, &str),
    ) -> TestApp {
        let twilio = Arc::new(FakeTwilio::start().await);
        let flows_dir = Arc::new(tempfile::tempdir().unwrap());
        write_shop_bot(flows_dir.path(), &twilio.url());
        write_bots(flows_dir.path(), &twilio.url());
        let clock = Arc::new(TestClock::default());
        TestApp::start(&db.url, twilio, flows_dir, clock, options).await
    }

    async fn start(
        database_url: &str,
        twilio: Arc<FakeTwilio>,
        flows_dir: Arc<tempfile::TempDir>,
        clock: Arc<TestClock>,
        options: Options,
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let mut config = Config::new(flows_dir.path(), database_url);
        config.public_url = options.public_url.then(|| base.clone());
        config.dry_run = options.dry_run;
        config.admin_token = options.admin_token.map(switchboard::domain::Secret::new);
        config.sender = options.sender;
        config.watch = options.watch;
        config.watch_poll = options.watch_poll;
        if let Some(deadline) = options.webhook_deadline {
            config.webhook_deadline = deadline;
        }
        config.metrics_listen = options
            .metrics_listen
            .then(|| "127.0.0.1:0".parse().unwrap());
        let app = App::builder(config)
            // No stubs: the shop bot makes no calls, and any call would fail.
            .script_http(
                options
                    .script_http
                    .unwrap_or_else(|| Arc::new(StubHttp::new())),
            )
            .clock(clock.clone())
            .build()
            .await
            .expect("app starts");
        let store = app.store().clone();
        let metrics_base = app.metrics_addr().map(|addr| format!("http://{addr}"));
        let sender = app.sender();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let run_sender = options.run_sender;
        let server = tokio::spawn(async move {
            app.serve(listener, stop, run_sender).await.expect("serve");
        });
        TestApp {
            base,
            store,
            twilio,
            clock,
            http: reqwest::Client::new(),
            flows: flows_dir.path().to_path_buf(),
            database_url: database_url.to_owned(),
            metrics_base,
            sender,
            shutdown,
            server: Some(server),
            _flows_dir: flows_dir,
        }
    }

    /// Stops this server (gracefully) and starts a new one on the same database,
    /// flows and fake Twilio.
    pub async fn restart(mut self, options: Options) -> TestApp {
        self.stop().await;
        self.another(options).await
    }

    /// A second server on the same database, flows and fake Twilio, as another
    /// instance behind a load balancer would be.
    pub async fn another(&self, options: Options) -> TestApp {
        TestApp::start(
            &self.database_url,
            self.twilio.clone(),
            self._flows_dir.clone(),
            self.clock.clone(),
            options,
        )
        .await
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub fn webhook_url(&self, bot: &str) -> String {
        format!("{}/webhooks/twilio/{bot}", self.base)
    }

    /// Posts a correctly signed inbound message.
    pub async fn message(&self, contact: &str, sid: &str, text: &str) -> reqwest::Response {
        self.post_signed(BOT, contact, sid, &[("Body", text)]).await
    }

    /// Posts a correctly signed webhook with `extra` params beside From/MessageSid.
    pub async fn post_signed(
        &self,
        bot: &str,
        contact: &str,
        sid: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut params = vec![
            ("MessageSid", sid),
            ("AccountSid", ACCOUNT_SID),
            ("From", contact),
            ("To", FROM),
            ("NumMedia", "0"),
            ("ProfileName", "Amina"),
        ];
        params.extend_from_slice(extra);
        self.post_form(&self.webhook_url(bot), &params).await
    }

    /// POSTs `params` to `url`, signed with the shop bot's auth token.
    pub async fn post_form(&self, url: &str, params: &[(&str, &str)]) -> reqwest::Response {
        post_signed(&self.http, AUTH_TOKEN, url, params).await
    }

    /// POSTs `body` to `url` as a form, with `signature` as `X-Twilio-Signature`
    /// when given (right or wrong: it is sent as is).
    pub async fn post_body(
        &self,
        url: &str,
        signature: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.post_body_with(url, signature, &[], body).await
    }

    /// [`TestApp::post_body`] with extra request headers (`Host`,
    /// `X-Forwarded-*`...).
    pub async fn post_body_with(
        &self,
        url: &str,
        signature: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(signature) = signature {
            request = request.header("x-twilio-signature", signature);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(body).send().await.unwrap()
    }

    /// The full URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `url`, with `token` as the bearer token when given.
    pub async fn get(&self, url: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// GETs `path` of this server and returns the body.
    pub async fn get_text(&self, path: &str) -> String {
        let response = self.get(&self.url(path), None).await;
        response.text().await.unwrap()
    }

    /// The `/metrics` text, scraped with the admin token.
    pub async fn metrics(&self) -> String {
        let response = self.get(&self.url("/metrics"), Some("admin-secret")).await;
        assert_eq!(response.status(), 200, "/metrics with the admin token");
        response.text().await.unwrap()
    }

    /// Sends `text` and asserts the webhook answered 200 with empty TwiML.
    pub async fn say(&self, contact: &str, text: &str) {
        let sid = new_sid();
        let response = self.message(contact, &sid, text).await;
        assert_eq!(response.status(), 200, "webhook for {text:?}");
        assert_eq!(response.headers()["content-type"], "text/xml");
    }

    /// The bodies of this contact's outbox rows, oldest first.
    pub async fn outbox(&self, contact: &str) -> Vec<OutboxRow> {
        self.store.outbox_for(BOT, contact).await.unwrap()
    }

    /// Waits until the fake Twilio has accepted `n` messages to `contact`; returns
    /// their bodies in the order received.
    pub async fn replies(&self, contact: &str, n: usize) -> Vec<String> {
        eventually(WAIT, POLL, || async {
            let got: Vec<String> = self
                .twilio
                .received()
                .into_iter()
                .filter(|m| m.to == contact && (200..300).contains(&m.answered_status))
                .map(|m| m.body)
                .collect();
            if got.len() >= n {
                return Ok(got);
            }
            Err(format!(
                "expected {n} replies to {contact}, got {}: {got:#?}",
                got.len()
            ))
        })
        .await
    }

    /// Waits until every outbox row of `contact` is in a final status.
    pub async fn settled(&self, contact: &str) -> Vec<OutboxRow> {
        self.settled_for(BOT, contact).await
    }

    /// [`TestApp::settled`] for a contact of `bot`.
    pub async fn settled_for(&self, bot: &str, contact: &str) -> Vec<OutboxRow> {
        eventually(WAIT, POLL, || async {
            let rows = self.store.outbox_for(bot, contact).await.unwrap();
            let done = rows
                .iter()
                .all(|r| !matches!(r.status, OutboxStatus::Queued | OutboxStatus::Sending));
            if done && !rows.is_empty() {
                return Ok(rows);
            }
            Err(format!("outbox of {contact} did not settle: {rows:#?}"))
        })
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A fresh `SM...` message SID.
pub fn new_sid() -> String {
    format!("SM{:032x}", rand::random::<u128>())
}

/// A fresh WhatsApp contact address.
pub fn new_contact() -> String {
    format!("whatsapp:+1555{:07}", rand::random::<u32>() % 10_000_000)
}

/// The test bot: a small shop exercising every menu feature.
/// Copies the shop bot's folder to `to`: a second bot of the same flows.
pub fn copy_shop_bot(flows: &Path, to: &str) {
    let (from, to) = (flows.join(BOT), flows.join(to));
    std::fs::create_dir_all(&to).unwrap();
    for file in std::fs::read_dir(from).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
    }
}

pub fn write_shop_bot(flows: &Path, api_base: &str) {
    let dir = flows.join(BOT);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bot.yaml"),
        format!(
            r#"name: Test Shop
start: main
session_timeout: 30m
error_reply: "Oops, something broke. Send menu."
keywords:
  menu: main
twilio:
  account_sid: {ACCOUNT_SID}
  auth_token: {AUTH_TOKEN}
  from: "{FROM}"
  api_base: {api_base}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("nodes.yaml"),
        r#"main:
  say: Welcome to the shop!
  options:
    - label: Browse
      match: [buy, shop]
      goto: browse
    - label: Your name
      goto: ask_name
    - label: Hours
      say: We open 9 to 5.
      goto: main
    - label: Bye
      say: Goodbye!
  invalid: Please reply with a number from the list.

browse:
  say: ["We sell hats.", "And scarves."]
  media: https://example.com/hats.jpg
  goto: main

ask_name:
  say: What's your name?
  save_as: name
  validate: "[A-Za-z ]{2,40}"
  invalid: Please type just your name.
  goto: greet

greet:
  say: "Nice to meet you, {{ name }}! (WhatsApp says {{ user.name }})"
  goto: main
"#,
    )
    .unwrap();
}

/// The welcome message with its option list, as the shop bot sends it.
pub const WELCOME: &str = "Welcome to the shop!\n1. Browse\n2. Your name\n3. Hours\n4. Bye";
