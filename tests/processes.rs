//! Real `switchboard` processes on one Postgres database: two `serve` instances
//! sharing the load, `kill -9` mid-burst, and SIGTERM during load. Skipped (with a
//! visible line) when `DATABASE_URL` is unset. The scenarios run one at a time: the
//! machine is small and each starts its own processes.

#[allow(dead_code)]
#[path = "it/support/db.rs"]
mod db;
#[allow(dead_code)]
#[path = "it/support/fake_twilio.rs"]
mod fake_twilio;
#[path = "it/support/poll.rs"]
mod poll;
#[allow(dead_code)]
#[path = "it/support/webhook.rs"]
mod webhook;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_twilio::{FakeTwilio, DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN};
use futures::StreamExt;
use poll::eventually;
use sqlx::PgPool;

const BOT: &str = "echo";
const MESSAGES: usize = 5;

/// The address Twilio would call: a load balancer in front of the instances. The
/// processes sign-check webhooks over it; the tests send to each instance's own
/// address (never to this one) and sign for it, as Twilio does.
const PUBLIC_URL: &str = "https://bots.switchboard.test";

/// Webhooks answered 503 so far (database outages).
static REFUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh database for one scenario, dropped at the end.
struct Db {
    url: String,
    name: String,
    admin: PgPool,
}

impl Db {
    /// `None` (skipped, with a visible line) without `DATABASE_URL`.
    async fn fresh() -> Option<Db> {
        let url = db::fresh_postgres_url().await?;
        let admin_url = std::env::var("DATABASE_URL").expect("set, or no database was made");
        let admin = PgPool::connect(&admin_url).await.expect("reach Postgres");
        let name = url.rsplit('/').next().expect("a database name").to_owned();
        Some(Db { url, name, admin })
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let pool = PgPool::connect(&self.url).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }

    async fn drop(self) {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&self.admin)
        .await;
    }
}

/// The echo bot: the first message gets `ready`, each later one `echo TEXT`, so a
/// contact's replies show their order.
/// `twilio_extra`: more `twilio:` settings (indented two spaces, one per line).
fn write_flows_with(dir: &Path, api_base: &str, twilio_extra: &str) {
    let bot = dir.join(BOT);
    std::fs::create_dir_all(&bot).unwrap();
    std::fs::write(
        bot.join("bot.yaml"),
        format!(
            "name: Echo\nstart: hello\nsession_timeout: 1h\nerror_reply: oops\ntwilio:\n  account_sid: {DEFAULT_ACCOUNT_SID}\n  auth_token: {DEFAULT_AUTH_TOKEN}\n  from: \"whatsapp:+14155238886\"\n  api_base: {api_base}\n{twilio_extra}"
        ),
    )
    .unwrap();
    std::fs::write(
        bot.join("nodes.yaml"),
        "hello:\n  say: ready\n  goto: listen\n\nlisten:\n  save_as: text\n  goto: echo\n\necho:\n  say: \"echo {{ text }}\"\n  goto: listen\n",
    )
    .unwrap();
}

/// One `switchboard` child process.
struct Proc {
    child: Child,
    base: String,
}

impl Proc {
    async fn spawn(db: &str, flows: &Path, log: &Path, args: &[&str]) -> Proc {
        Proc::spawn_with_env(db, flows, log, args, &[]).await
    }

    /// [`Proc::spawn`] with more environment variables (they win over the defaults).
    /// The process binds port 0 and logs the address it got (the `listening` line,
    /// hence `switchboard::cli` at `info`); its log is copied to `log` as it comes.
    async fn spawn_with_env(
        db: &str,
        flows: &Path,
        log: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--public-url", PUBLIC_URL])
            .args(["--database-url", db])
            .arg("--flows")
            .arg(flows)
            .env("RUST_LOG", "warn,switchboard::cli=info")
            // The default lease: the kill -9 recovery test measures it.
            .env_remove("SWITCHBOARD_LEASE_SECS")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (address_tx, address) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut address_tx = Some(address_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if let Some(found) = listening_address(&line) {
                    if let Some(tx) = address_tx.take() {
                        let _ = tx.send(found.to_owned());
                    }
                }
            }
        });
        let address = tokio::time::timeout(Duration::from_secs(60), address)
            .await
            .unwrap_or_else(|_| panic!("no `listening` line within 60 s; see {}", log.display()))
            .unwrap_or_else(|_| panic!("exited before listening; see {}", log.display()));
        Proc {
            child,
            base: format!("http://{address}"),
        }
    }

    async fn ready(&self, http: &reqwest::Client) {
        let within = Duration::from_secs(60);
        eventually(within, Duration::from_millis(50), || async {
            match http.get(format!("{}/readyz", self.base)).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                _ => Err(format!("{} never got ready", self.base)),
            }
        })
        .await
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; its status.
    async fn wait(mut self) -> std::process::ExitStatus {
        eventually(Duration::from_secs(60), Duration::from_millis(50), || {
            let status = self.child.try_wait().unwrap();
            async move { status.ok_or_else(|| "process did not exit".to_owned()) }
        })
        .await
    }
}

/// The address in the `listening` line `serve` logs once it is bound.
fn listening_address(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once(": listening address=")?;
    rest.split_whitespace().next()
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scenario's world: its own database, fake Twilio, flows folder and log file.
struct Scenario {
    db: Db,
    twilio: FakeTwilio,
    flows: tempfile::TempDir,
    logs: tempfile::TempDir,
    http: reqwest::Client,
}

impl Scenario {
    /// `None` (skipped, with a visible line) without `DATABASE_URL`.
    /// `twilio_extra`: more `twilio:` lines for the echo bot.
    async fn new(twilio_extra: &str) -> Option<Scenario> {
        let db = Db::fresh().await?;
        let twilio = FakeTwilio::start().await;
        let flows = tempfile::tempdir().unwrap();
        write_flows_with(flows.path(), &twilio.url(), twilio_extra);
        Some(Scenario {
            db,
            twilio,
            flows,
            logs: tempfile::tempdir().unwrap(),
            http: reqwest::Client::new(),
        })
    }

    /// A `serve` process, listening but not yet ready.
    async fn spawn(&self) -> Proc {
        let log = self.logs.path().join("log");
        Proc::spawn(&self.db.url, self.flows.path(), &log, &["serve"]).await
    }

    /// A `serve` process answering `/readyz`.
    async fn serve(&self) -> Proc {
        let process = self.spawn().await;
        process.ready(&self.http).await;
        process
    }

    async fn verify(&self, contacts: &[String]) -> usize {
        verify(&self.db, &self.twilio, contacts).await
    }

    async fn finish(self) {
        self.db.drop().await;
    }
}

/// A message from `contact` to `bot` as Twilio would post it: the webhook's
/// path, the form body and its signature over [`PUBLIC_URL`].
fn signed_message(bot: &str, contact: &str, sid: &str, text: &str) -> (String, String, String) {
    let path = format!("/webhooks/twilio/{bot}");
    let params = [
        ("MessageSid", sid),
        ("AccountSid", DEFAULT_ACCOUNT_SID),
        ("From", contact),
        ("To", "whatsapp:+14155238886"),
        ("Body", text),
    ];
    let (body, signature) =
        webhook::signed_form(DEFAULT_AUTH_TOKEN, &format!("{PUBLIC_URL}{path}"), &params);
    (path, body, signature)
}

/// Posts one signed message, retrying (same MessageSid, as Twilio does) on any
/// answer but 200, across the instances in `bases` (a load balancer's failover).
async fn post(
    http: &reqwest::Client,
    bases: &[String],
    first: usize,
    contact: &str,
    sid: &str,
    text: &str,
) {
    let (path, body, signature) = signed_message(BOT, contact, sid, text);
    let mut instances = bases.iter().cycle().skip(first % bases.len());
    let within = Duration::from_secs(120);
    eventually(within, Duration::from_millis(100), || {
        let url = format!("{}{path}", instances.next().unwrap());
        let (body, signature) = (body.clone(), signature.clone());
        async move {
            // Not `webhook::post_signed`: a refused connection (outage) is retried here.
            let answer = http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", signature)
                .body(body)
                .send()
                .await;
            match answer {
                Ok(r) if r.status() == 200 => return Ok(()),
                Ok(r) => {
                    assert_eq!(r.status(), 503, "only outages may refuse a webhook");
                    REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(_) => {}
            }
            Err(format!("message {sid} never accepted"))
        }
    })
    .await
}

/// `contacts` × [`MESSAGES`], contacts concurrently, each contact's in order,
/// spread over `bases`; returns the contacts.
async fn load(
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    contacts: usize,
    tag: &'static str,
) -> Vec<String> {
    let list: Vec<String> = (0..contacts)
        .map(|i| format!("whatsapp:+1{tag}{i:07}"))
        .collect();
    futures::stream::iter(list.clone().into_iter().enumerate())
        .map(|(n, contact)| {
            let http = http.clone();
            let bases = bases.clone();
            async move {
                for m in 1..=MESSAGES {
                    let sid = format!("SM{:032x}", rand::random::<u128>());
                    post(&http, &bases, n + m, &contact, &sid, &format!("m{m}")).await;
                }
            }
        })
        .buffer_unordered(48)
        .collect::<Vec<()>>()
        .await;
    list
}

/// The replies each contact must get, in order.
fn expected() -> Vec<String> {
    std::iter::once("ready".to_owned())
        .chain((2..=MESSAGES).map(|m| format!("echo m{m}")))
        .collect()
}

/// Waits until nothing is queued or sending, then checks every contact got its
/// replies in order; returns the number of duplicate sends (a reply sent again
/// right after itself).
async fn verify(db: &Db, twilio: &FakeTwilio, contacts: &[String]) -> usize {
    eventually(
        Duration::from_secs(120),
        Duration::from_millis(100),
        || async {
            let pending = db
                .scalar("SELECT count(*) FROM outbox WHERE status IN ('queued', 'sending')")
                .await;
            match pending {
                0 => Ok(()),
                _ => Err(format!("the outbox never drained ({pending} rows left)")),
            }
        },
    )
    .await;
    assert_eq!(
        db.scalar("SELECT count(*) FROM outbox WHERE status = 'failed'")
            .await,
        0
    );
    let mut by_contact: HashMap<String, Vec<String>> = HashMap::new();
    for m in twilio.received().into_iter().filter(|m| m.accepted()) {
        by_contact.entry(m.to).or_default().push(m.body);
    }
    let want = expected();
    let mut duplicates = 0;
    for contact in contacts {
        let mut got = by_contact.remove(contact).unwrap_or_default();
        let before = got.len();
        got.dedup();
        duplicates += before - got.len();
        assert_eq!(got, want, "replies of {contact}");
    }
    duplicates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_the_load_exactly_once_in_order() {
    let _serial = SERIAL.lock().await;
    let Some(s) = Scenario::new("").await else {
        return;
    };
    let a = s.serve().await;
    let b = s.serve().await;
    let started = Instant::now();
    let bases = Arc::new(vec![a.base.clone(), b.base.clone()]);
    let contacts = load(s.http.clone(), bases, 1000, "21").await;
    let duplicates = s.verify(&contacts).await;
    eprintln!(
        "two instances: {} messages accepted and {} replies sent in {:?}",
        contacts.len() * MESSAGES,
        contacts.len() * MESSAGES,
        started.elapsed()
    );
    assert_eq!(duplicates, 0, "no crash, so no duplicate");
    drop((a, b));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_burst_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(s) = Scenario::new("").await else {
        return;
    };
    // Slow answers keep sends in flight when the kill lands.
    s.twilio.set_latency(Duration::from_millis(30));
    let a = s.serve().await;
    let b = s.serve().await;
    let bases = Arc::new(vec![a.base.clone(), b.base.clone()]);
    let loader = tokio::spawn(load(s.http.clone(), bases, 300, "31"));
    // Kill once replies are flowing.
    s.twilio.wait_for(200, Duration::from_secs(60)).await;
    let mut a = a;
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let restarted = s.serve().await;
    let contacts = loader.await.unwrap();
    let duplicates = s.verify(&contacts).await;
    eprintln!("kill -9: {duplicates} duplicate sends");
    // Only the sends `a` had in flight can go out twice: at most its concurrency.
    let in_flight = switchboard::SenderConfig::default().concurrency;
    assert!(
        duplicates <= in_flight,
        "{duplicates} duplicates, more than the {in_flight} that could be in flight"
    );
    drop((b, restarted));
    s.finish().await;
}

/// SPEC §7: after `kill -9` of a sender, the replies it had claimed go out again
/// within 10 s (the processes run with the default lease). It prints the time
/// from the kill to each resend, the figure of docs/reliability.md
/// (`cargo test --test processes kill_9_claimed -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_claimed_replies_are_resent_within_10_s() {
    const CONTACTS: usize = 5;
    let _serial = SERIAL.lock().await;
    let Some(s) = Scenario::new("").await else {
        return;
    };
    // The first sends are never answered: in flight when their sender dies.
    for _ in 0..CONTACTS {
        s.twilio.push(fake_twilio::FakeReply::hang());
    }
    let a = s.serve().await;
    let contacts: Vec<String> = (0..CONTACTS)
        .map(|i| format!("whatsapp:+191{i:07}"))
        .collect();
    for contact in &contacts {
        let sid = format!("SM{:032x}", rand::random::<u128>());
        post(
            &s.http,
            std::slice::from_ref(&a.base),
            0,
            contact,
            &sid,
            "hi",
        )
        .await;
    }
    s.twilio.wait_for(CONTACTS, Duration::from_secs(30)).await;

    // A second instance runs beside `a` for longer than the default lease (6 s)
    // and shorter than the request timeout (15 s, after which `a` would retry):
    // while `a` lives its claims are renewed, so `b` takes none of them over.
    let b = s.serve().await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(
        s.twilio.received().len(),
        CONTACTS,
        "a live sender's claims were taken over"
    );

    let mut a = a;
    let killed = Instant::now();
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let deadline = killed + Duration::from_secs(30);
    while s.twilio.received().len() < 2 * CONTACTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resends: Vec<Duration> = s.twilio.received()[CONTACTS..]
        .iter()
        .map(|m| m.at.duration_since(killed))
        .collect();
    eprintln!("kill -9: claimed replies resent {resends:?} after the kill");
    assert_eq!(resends.len(), CONTACTS, "every claimed reply resent once");
    let slowest = resends.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_secs(10),
        "resent {slowest:?} after the kill; SPEC §7 allows 10 s"
    );
    let mut sent: Vec<String> = s.twilio.received()[CONTACTS..]
        .iter()
        .filter(|m| m.accepted())
        .map(|m| m.to.clone())
        .collect();
    sent.sort();
    assert_eq!(sent, contacts, "one reply to each contact");
    assert_eq!(s.verify(&[]).await, 0);
    drop(b);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_load_exits_cleanly_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(s) = Scenario::new("").await else {
        return;
    };
    s.twilio.set_latency(Duration::from_millis(20));
    let a = s.serve().await;
    let bases = Arc::new(vec![a.base.clone()]);
    let loader = tokio::spawn(load(s.http.clone(), bases, 200, "41"));
    s.twilio.wait_for(150, Duration::from_secs(60)).await;
    a.signal("TERM");
    let status = a.wait().await;
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    loader.abort();
    // Whatever the stopped server left queued, the next one sends.
    let b = s.serve().await;
    assert_eq!(s.verify(&[]).await, 0);
    let accepted = s.db.scalar("SELECT count(*) FROM inbound_messages").await;
    let sent = s.twilio.received().iter().filter(|m| m.accepted()).count() as i64;
    // Each accepted message has exactly one reply: nothing lost, nothing twice.
    assert_eq!(sent, accepted, "replies sent vs messages accepted");
    drop(b);
    s.finish().await;
}

/// The same load on one instance: every reply exactly once and in order. It also
/// prints the time taken, the one-instance figure of docs/reliability.md
/// (`cargo test --test processes one_instance -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_instance_sends_every_reply_once_in_order() {
    let _serial = SERIAL.lock().await;
    let Some(s) = Scenario::new("").await else {
        return;
    };
    let a = s.serve().await;
    let started = Instant::now();
    let contacts = load(s.http.clone(), Arc::new(vec![a.base.clone()]), 1000, "51").await;
    assert_eq!(s.verify(&contacts).await, 0);
    eprintln!(
        "one instance: {} messages in {:?}",
        contacts.len() * MESSAGES,
        started.elapsed()
    );
    drop(a);
    s.finish().await;
}

/// Refuses new connections to the scenario's database and ends the current ones:
/// to Switchboard, the same as a Postgres restart, without stopping the server the
/// rest of the test suite shares.
async fn outage(db: &Db, down: bool) {
    let allow = if down { "false" } else { "true" };
    sqlx::query(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS {allow}",
        db.name
    ))
    .execute(&db.admin)
    .await
    .unwrap();
    if down {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&db.name)
            .execute(&db.admin)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_during_load_refuses_then_recovers_losing_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(s) = Scenario::new("").await else {
        return;
    };
    s.twilio.set_latency(Duration::from_millis(10));
    let a = s.serve().await;
    let refused_before = REFUSED.load(std::sync::atomic::Ordering::Relaxed);
    let bases = Arc::new(vec![a.base.clone()]);
    let loader = tokio::spawn(load(s.http.clone(), bases, 200, "61"));
    s.twilio.wait_for(100, Duration::from_secs(60)).await;

    outage(&s.db, true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = REFUSED.load(std::sync::atomic::Ordering::Relaxed) - refused_before;
    outage(&s.db, false).await;
    let back = Instant::now();
    let contacts = loader.await.unwrap();
    let duplicates = s.verify(&contacts).await;
    eprintln!(
        "outage: {refused} webhooks refused with 503, {duplicates} duplicates, drained {:?} after the database came back",
        back.elapsed()
    );
    assert!(refused > 0, "webhooks during the outage must answer 503");
    // A send Twilio accepted whose completion could not be recorded is sent again
    // after its lease: the documented window, at most the sends in flight.
    assert!(duplicates <= 256, "{duplicates} duplicates");
    drop(a);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twilio_failing_for_a_stretch_is_retried_within_the_rate_limit() {
    let _serial = SERIAL.lock().await;
    let Some(s) = Scenario::new("  max_per_second: 40\n").await else {
        return;
    };
    for i in 0..40 {
        s.twilio.push(if i % 2 == 0 {
            fake_twilio::FakeReply::status(500)
        } else {
            fake_twilio::FakeReply::too_many(Duration::from_secs(1))
        });
    }
    let a = s.serve().await;
    let b = s.serve().await;
    let bases = Arc::new(vec![a.base.clone(), b.base.clone()]);
    let contacts = load(s.http.clone(), bases, 60, "71").await;
    let duplicates = s.verify(&contacts).await;
    assert_eq!(duplicates, 0, "a refused send was not created at Twilio");
    let received = s.twilio.received();
    assert!(received.iter().filter(|m| m.answered_status == 500).count() >= 20);
    assert!(received.iter().filter(|m| m.answered_status == 429).count() >= 20);
    // Every request counts against the limit, refused ones included.
    let times: Vec<Instant> = received.iter().map(|m| m.at).collect();
    let worst = webhook::busiest_second(&times);
    assert!(worst <= 40, "{worst} requests in one second, limit 40");
    drop((a, b));
    s.finish().await;
}

/// Stops and starts the machine's Postgres cluster (`pg_ctlcluster`) while load
/// runs. It takes the database away from everything else too, so it runs only when
/// `SWITCHBOARD_TEST_PG_RESTART=1` (CI sets it; the test binaries run one after the
/// other there, and this file's scenarios one at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_during_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    if std::env::var("SWITCHBOARD_TEST_PG_RESTART").as_deref() != Ok("1") {
        eprintln!("\nNOTE: SWITCHBOARD_TEST_PG_RESTART is not 1: the Postgres restart test was SKIPPED.\n");
        return;
    }
    let Some(s) = Scenario::new("").await else {
        return;
    };
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("pg_ctlcluster's /etc/postgresql")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .expect("a Postgres cluster version");
    let cluster = |action: &str| {
        let status = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", action])
            .args(if action == "stop" {
                &["-m", "fast"][..]
            } else {
                &[][..]
            })
            .status()
            .expect("run pg_ctlcluster");
        assert!(status.success(), "pg_ctlcluster {action} failed");
    };
    s.twilio.set_latency(Duration::from_millis(10));
    let a = s.serve().await;
    let refused_before = REFUSED.load(std::sync::atomic::Ordering::Relaxed);
    let bases = Arc::new(vec![a.base.clone()]);
    let loader = tokio::spawn(load(s.http.clone(), bases, 200, "81"));
    s.twilio.wait_for(100, Duration::from_secs(60)).await;

    cluster("stop");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = REFUSED.load(std::sync::atomic::Ordering::Relaxed) - refused_before;
    cluster("start");
    let back = Instant::now();
    // The first webhook answered 200 after the restart.
    let probe = format!("whatsapp:+1819{:07}", rand::random::<u32>() % 10_000_000);
    let sid = format!("SM{:032x}", rand::random::<u128>());
    post(
        &s.http,
        std::slice::from_ref(&a.base),
        0,
        &probe,
        &sid,
        "hi",
    )
    .await;
    let recovered = back.elapsed();
    let contacts = loader.await.unwrap();
    let duplicates = s.verify(&contacts).await;
    eprintln!(
        "postgres restart: {refused} webhooks refused with 503 while it was down, \
         accepting again {recovered:?} after the start command returned, {duplicates} duplicates"
    );
    assert!(
        refused > 0,
        "webhooks while Postgres is down must answer 503"
    );
    assert!(duplicates <= 256, "{duplicates} duplicates");
    drop(a);
    s.finish().await;
}

/// A database for a scenario that does not depend on the store: the scenario's
/// Postgres database when `DATABASE_URL` is set, else SQLite in `dir`.
async fn any_database(dir: &Path) -> (Option<Db>, String) {
    match Db::fresh().await {
        Some(db) => {
            let url = db.url.clone();
            (Some(db), url)
        }
        None => (
            None,
            format!("sqlite://{}", dir.join("db.sqlite").display()),
        ),
    }
}

/// Half a request: the request line and one header, never the blank line.
const HALF_A_HEADER: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_within_10_s_with_a_stuck_client_and_a_stuck_send() {
    use tokio::io::AsyncWriteExt;
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (db, url) = any_database(dir.path()).await;
    let twilio = FakeTwilio::start().await;
    twilio.push(fake_twilio::FakeReply::hang());
    let flows = dir.path().join("flows");
    write_flows_with(&flows, &twilio.url(), "");
    let http = reqwest::Client::new();
    let log = dir.path().join("log");
    let server = Proc::spawn(&url, &flows, &log, &["serve"]).await;
    server.ready(&http).await;
    // A send Twilio never answers, and a client that never finishes its request.
    let sid = format!("SM{:032x}", rand::random::<u128>());
    post(
        &http,
        std::slice::from_ref(&server.base),
        0,
        "whatsapp:+15550000001",
        &sid,
        "hi",
    )
    .await;
    twilio.wait_for(1, Duration::from_secs(30)).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut stuck = tokio::net::TcpStream::connect(&address).await.unwrap();
    stuck.write_all(HALF_A_HEADER).await.unwrap();

    let signalled = Instant::now();
    server.signal("TERM");
    let status = server.wait().await;
    let took = signalled.elapsed();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        took < Duration::from_secs(10),
        "SIGTERM took {took:?}\n{log}"
    );
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{log}");
    drop(stuck);
    if let Some(db) = db {
        db.drop().await;
    }
}

/// A bot whose start node is a script that logs the message as it came, with
/// `log` and `print`.
fn write_logging_bot(dir: &Path, api_base: &str) {
    write_flows_with(dir, api_base, "");
    let bot = dir.join(BOT);
    std::fs::remove_file(bot.join("nodes.yaml")).unwrap();
    std::fs::write(
        bot.join("hello.rhai"),
        "fn start() {\n    log(message.text);\n    print(message.text);\n    say(\"ok\");\n}\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_escape_what_came_from_outside_and_hash_contacts() {
    use sha2::Digest;
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (db, url) = any_database(dir.path()).await;
    let twilio = FakeTwilio::start().await;
    let flows = dir.path().join("flows");
    write_logging_bot(&flows, &twilio.url());
    let http = reqwest::Client::new();
    let log = dir.path().join("log");
    let server = Proc::spawn_with_env(
        &url,
        &flows,
        &log,
        &["serve", "--dry-run"],
        &[("RUST_LOG", "info")],
    )
    .await;
    server.ready(&http).await;
    let contact = "whatsapp:+15557654321";
    let sid = format!("SM{:032x}", rand::random::<u128>());
    let body = "a\nFORGED b\x1b[31m\r\u{85}";
    post(
        &http,
        std::slice::from_ref(&server.base),
        0,
        contact,
        &sid,
        body,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("dry-run: not calling Twilio") {
            break text;
        }
        assert!(Instant::now() < deadline, "no dry-run send logged:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(server);

    // Every line is one event: none starts with text from the message.
    for line in text.lines() {
        assert!(!line.starts_with("FORGED"), "a forged line:\n{text}");
    }
    assert!(
        !text.contains('\x1b'),
        "an escape byte in the log:\n{text:?}"
    );
    assert!(!text.contains('\r') && !text.contains('\u{85}'), "{text:?}");
    assert_eq!(
        text.matches(r"a\nFORGED b\u{1b}[31m").count(),
        2,
        "script log and print:\n{text}"
    );
    // Contacts appear as `c:` + 8 hex digits of the address's SHA-256.
    let digest = sha2::Sha256::digest(contact.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    assert!(text.contains(&format!("contact=c:{hash}")), "{text}");
    assert!(
        !text.contains("7654321"),
        "the number is in the log:\n{text}"
    );
    if let Some(db) = db {
        db.drop().await;
    }
}

const ADMIN_TOKEN: &str = "process-admin-token";

/// A `serve` process with the admin API on (token [`ADMIN_TOKEN`]), ready.
async fn serve_with_api(s: &Scenario) -> Proc {
    let log = s.logs.path().join("log");
    let process = Proc::spawn_with_env(
        &s.db.url,
        s.flows.path(),
        &log,
        &["serve"],
        &[("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .await;
    process.ready(&s.http).await;
    process
}

/// Posts one signed message to `bot` at `base`; answers how long the 200 took.
async fn post_to(
    http: &reqwest::Client,
    base: &str,
    bot: &str,
    contact: &str,
    text: &str,
) -> Duration {
    let sid = format!("SM{:032x}", rand::random::<u128>());
    let (path, body, signature) = signed_message(bot, contact, &sid, text);
    let started = Instant::now();
    let answer = http
        .post(format!("{base}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    started.elapsed()
}

/// The `p`th percentile of `values` (sorted in place).
fn percentile(values: &mut [Duration], p: usize) -> Duration {
    values.sort_unstable();
    values[(values.len() * p / 100).min(values.len() - 1)]
}

/// SPEC §9.3, replies first: while a broadcast's messages wait (held at the
/// scheduler's high-water mark of 10,000, drained at the bot's
/// `max_per_second`), a contact who writes is answered at once, not after
/// them. Prints the reply latencies for docs/performance.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replies_come_first_while_10000_broadcast_messages_wait() {
    const CONTACTS: usize = 12_000;
    const WAITING: i64 = 10_000;
    const WRITERS: usize = 20;
    let _serial = SERIAL.lock().await;
    let Some(s) = Scenario::new("  max_per_second: 20\n").await else {
        return;
    };
    let a = serve_with_api(&s).await;
    let listed: Vec<serde_json::Value> = (0..CONTACTS)
        .map(|i| serde_json::json!({ "to": format!("+1931{i:07}") }))
        .collect();
    let started = Instant::now();
    let accepted = s
        .http
        .post(format!("{}/api/bots/{BOT}/broadcasts", a.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"node": "hello", "contacts": listed}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let accepted_in = started.elapsed();
    let id = accepted.json::<serde_json::Value>().await.unwrap()["id"].clone();
    const BULK: &str = "SELECT count(*) FROM outbox WHERE status = 'queued' AND bulk = 1";
    eventually(
        Duration::from_secs(240),
        Duration::from_millis(200),
        || async {
            let waiting = s.db.scalar(BULK).await;
            if waiting >= WAITING {
                Ok(())
            } else {
                Err(format!("only {waiting} broadcast messages wait"))
            }
        },
    )
    .await;
    let queued_in = started.elapsed();

    let broadcast_sent = |twilio: &FakeTwilio| {
        twilio
            .received()
            .iter()
            .filter(|m| m.to.starts_with("+1931"))
            .count()
    };
    let mut webhook = Vec::new();
    let mut reply = Vec::new();
    for i in 0..WRITERS {
        let writer = format!("whatsapp:+1932{i:07}");
        let before = broadcast_sent(&s.twilio);
        let posted = Instant::now();
        webhook.push(post_to(&s.http, &a.base, BOT, &writer, "hi").await);
        let answered = eventually(Duration::from_secs(60), Duration::from_millis(5), || {
            let found = s.twilio.received().into_iter().find(|m| m.to == writer);
            let missing = format!("no reply to {writer}");
            async move { found.ok_or(missing) }
        })
        .await;
        assert_eq!(answered.body, "ready");
        reply.push(answered.at.duration_since(posted));
        let overtaken = broadcast_sent(&s.twilio) - before;
        assert!(
            overtaken < 1_000,
            "{overtaken} broadcast messages went before writer {i}'s reply"
        );
    }
    // The scheduler held the rest of the broadcast back.
    let waiting = s.db.scalar(BULK).await;
    assert!(
        waiting <= WAITING + 64,
        "{waiting} broadcast messages queued"
    );
    let pending =
        s.db.scalar("SELECT count(*) FROM starts WHERE status = 'scheduled'")
            .await;
    assert!(pending > 0, "every contact was started at once");
    eprintln!(
        "replies first: broadcast of {CONTACTS} accepted in {accepted_in:?}, {WAITING} queued \
         after {queued_in:?}; with them waiting, {WRITERS} writers: webhook p50 {:?} max {:?}, \
         reply (webhook to Twilio) p50 {:?} max {:?}",
        percentile(&mut webhook, 50),
        percentile(&mut webhook, 100),
        percentile(&mut reply, 50),
        percentile(&mut reply, 100),
    );
    let cancelled = s
        .http
        .delete(format!("{}/api/broadcasts/{id}", a.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 204);
    drop(a);
    s.finish().await;
}

/// A bot whose question waits 8 seconds for an answer, and a reminder node the
/// start API may begin at.
fn write_reminder_bot(dir: &Path, api_base: &str) {
    let bot = dir.join("remind");
    std::fs::create_dir_all(&bot).unwrap();
    std::fs::write(
        bot.join("bot.yaml"),
        format!(
            "name: Remind\nstart: ask\nsession_timeout: 1h\nerror_reply: oops\noutbound: [reminder]\ntwilio:\n  account_sid: {DEFAULT_ACCOUNT_SID}\n  auth_token: {DEFAULT_AUTH_TOKEN}\n  from: \"+14155238886\"\n  api_base: {api_base}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        bot.join("nodes.yaml"),
        "ask:\n  say: Are you coming?\n  options:\n    - label: Yes\n      say: See you.\n  timeout: 8s\n  on_timeout: nudge\n\nnudge:\n  say: Still there?\n\nreminder:\n  say: \"Reminder for {{ name }}\"\n",
    )
    .unwrap();
}

/// SPEC §9.1, §9.2: a scheduled start and a pending timeout are durable: both
/// instances stop before either is due, two new ones start, and each fires
/// exactly once, about on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_start_and_a_timeout_survive_a_restart_and_fire_once() {
    let _serial = SERIAL.lock().await;
    let Some(s) = Scenario::new("").await else {
        return;
    };
    write_reminder_bot(s.flows.path(), &s.twilio.url());
    let a = serve_with_api(&s).await;
    let b = serve_with_api(&s).await;
    let waiting = "+19410000001";
    post_to(&s.http, &a.base, "remind", waiting, "hi").await;
    let timer_due = Instant::now() + Duration::from_secs(8);
    s.twilio.wait_for(1, Duration::from_secs(30)).await;
    let reminded = "+19410000002";
    let at = chrono::Utc::now() + chrono::Duration::seconds(8);
    let start_due = Instant::now() + Duration::from_secs(8);
    let scheduled = s
        .http
        .post(format!("{}/api/bots/remind/conversations", b.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({
            "to": reminded, "node": "reminder", "vars": {"name": "Ada"},
            "at": at.to_rfc3339(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(scheduled.status(), 202, "{:?}", scheduled.text().await);

    for old in [a, b] {
        old.signal("TERM");
        assert!(old.wait().await.success());
    }
    assert_eq!(
        s.twilio.received().len(),
        1,
        "nothing fired before its time"
    );
    let c = serve_with_api(&s).await;
    let d = serve_with_api(&s).await;
    s.twilio.wait_for(3, Duration::from_secs(30)).await;
    // Long enough for a second firing to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = s.twilio.received();
    let to = |contact: &str| -> Vec<_> { received.iter().filter(|m| m.to == contact).collect() };
    let nudges = to(waiting);
    assert_eq!(nudges.len(), 2, "the question, then one nudge: {nudges:?}");
    assert_eq!(nudges[1].body, "Still there?");
    let reminders = to(reminded);
    assert_eq!(reminders.len(), 1, "one reminder: {reminders:?}");
    assert_eq!(reminders[0].body, "Reminder for Ada");
    eprintln!(
        "after a restart: the timeout fired {:?} after its time, the start {:?} after its time",
        nudges[1].at.saturating_duration_since(timer_due),
        reminders[0].at.saturating_duration_since(start_due),
    );
    drop((c, d));
    s.finish().await;
}
