//! A slow conversation step must not take capacity from anyone else (SPEC §7): no
//! database connection or transaction is held while a step runs, a step past the
//! webhook's deadline is stopped like a breached limit, and a write that fails for
//! a passing reason is tried again without running the step (and its script HTTP)
//! again.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::domain::ConversationState;
use switchboard::message::Reply;
use switchboard::script::{HttpRequest, HttpResponse, ScriptHttp};
use switchboard::store::{InboundOutcome, NewInbound, StepOutput, Store};

use crate::both_stores;
use crate::support::app::{new_contact, new_sid, Options, TestApp, ACCOUNT_SID, AUTH_TOKEN, FROM};
use crate::support::db::{fresh_postgres_url, TestDb};

const SLOW: &str = "slow";
const SLOW_ERROR_REPLY: &str = "The lab system is slow today, sorry.";

/// Script HTTP whose every call waits until the test opens the gate (or the
/// call's timeout passes, as a real client would give up), counting calls.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    waiting: AtomicUsize,
    calls: AtomicUsize,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Waits until `n` calls are stuck at the gate.
    async fn until_waiting(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.waiting.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} script calls reached the gate",
                self.waiting.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl ScriptHttp for Gate {
    fn request(&self, req: &HttpRequest) -> Result<HttpResponse, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let open = self.open.lock().unwrap();
        let (open, _) = self
            .opened
            .wait_timeout_while(open, req.timeout, |open| !*open)
            .unwrap();
        let passed = *open;
        drop(open);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if passed {
            Ok(HttpResponse {
                status: 200,
                body: "{}".into(),
            })
        } else {
            Err("timed out".into())
        }
    }
}

/// The `slow` bot: every message runs a script that calls the gated host.
fn write_slow_bot(flows: &Path, twilio_url: &str) {
    let dir = flows.join(SLOW);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bot.yaml"),
        format!(
            r#"start: lookup
error_reply: "{SLOW_ERROR_REPLY}"
twilio:
  account_sid: {ACCOUNT_SID}
  auth_token: {AUTH_TOKEN}
  from: "{FROM}"
  api_base: {twilio_url}
http:
  allow: [lab.example]
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("lookup.rhai"),
        r#"fn start() {
    let answer = http_get("https://lab.example/results");
    say(`Results: ${answer.status}`);
}
"#,
    )
    .unwrap();
}

async fn spawn(db: &TestDb, gate: &Arc<Gate>, deadline: Option<Duration>) -> TestApp {
    TestApp::spawn_with_bots(
        db,
        Options {
            script_http: Some(gate.clone()),
            webhook_deadline: deadline,
            ..Options::default()
        },
        write_slow_bot,
    )
    .await
}

both_stores!(
    slow_scripts_leave_other_bots_and_readiness_alone,
    |db| async move {
        let gate = Arc::new(Gate::default());
        let app = Arc::new(spawn(&db, &gate, None).await);
        // More stuck scripts than the database pool has connections (16 on
        // Postgres): a step holding a connection would starve everyone else.
        let stuck: Vec<_> = (0..20)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move {
                    app.post_signed(SLOW, &new_contact(), &new_sid(), &[("Body", "hi")])
                        .await
                        .status()
                })
            })
            .collect();
        gate.until_waiting(20).await;

        // A menu bot on the same server answers as usual meanwhile.
        let started = Instant::now();
        let contact = new_contact();
        let answered = tokio::time::timeout(
            Duration::from_secs(1),
            app.message(&contact, &new_sid(), "hi"),
        )
        .await
        .expect("the menu bot answered within a second while scripts were stuck");
        assert_eq!(answered.status(), 200);
        let ready = tokio::time::timeout(
            Duration::from_secs(1),
            app.http.get(format!("{}/readyz", app.base)).send(),
        )
        .await
        .expect("/readyz answered within a second")
        .unwrap();
        assert_eq!(ready.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(2));

        gate.open();
        for task in stuck {
            assert_eq!(task.await.unwrap(), 200);
        }
        assert_eq!(
            gate.calls.load(Ordering::SeqCst),
            20,
            "one call per message"
        );
        assert_eq!(app.replies(&contact, 1).await.len(), 1);
    }
);

both_stores!(
    a_step_past_the_webhook_deadline_sends_the_error_reply,
    |db| async move {
        let gate = Arc::new(Gate::default());
        // 4 s: the step may use 3.2 s, which leaves the write 0.8 s, enough on a
        // loaded test machine (with 2 s the write's 0.4 s was once too little).
        let app = spawn(&db, &gate, Some(Duration::from_secs(4))).await;
        let contact = new_contact();
        let started = Instant::now();
        let response = app
            .post_signed(SLOW, &contact, &new_sid(), &[("Body", "hi")])
            .await;
        // Answered by the deadline (Twilio would have given up), not after the
        // script's own 5 s HTTP timeout.
        assert_eq!(response.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered after {:?}",
            started.elapsed()
        );
        assert_eq!(db.store.inbound_count(SLOW).await.unwrap(), 1);
        let rows = app.store.outbox_for(SLOW, &contact).await.unwrap();
        let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(bodies, [SLOW_ERROR_REPLY]);
        // The conversation was reset, as after any breached limit.
        let state = app.store.conversation(SLOW, &contact).await.unwrap();
        assert_eq!(state.and_then(|s| s.node), None);
    }
);

/// Postgres only: the database goes away from under a message while its step
/// runs (every connection of the pool is terminated). The write fails and is
/// tried again on a new connection; the step runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_tried_again_without_stepping_again() {
    let Some(url) = fresh_postgres_url().await else {
        return;
    };
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    // Connections that the step will find dead afterwards.
    for _ in 0..3 {
        store.ping().await.unwrap();
    }
    let steps = Arc::new(AtomicUsize::new(0));
    let msg = NewInbound {
        bot: "kibo".into(),
        contact: "whatsapp:+14155550100".into(),
        message_sid: new_sid(),
        body: "hi".into(),
        payload: json!({}),
        received_at_ms: 1_000,
    };
    let outcome = store
        .process_inbound(&msg, |_| {
            steps.fetch_add(1, Ordering::SeqCst);
            let url = url.clone();
            async move {
                terminate_other_connections(&url).await;
                StepOutput {
                    state: ConversationState {
                        node: Some("main".into()),
                        ..Default::default()
                    },
                    replies: vec![Reply::text("hello")],
                }
            }
        })
        .await
        .expect("the write went through after the connections came back");
    assert_eq!(outcome, InboundOutcome::Processed { replies: 1 });
    assert_eq!(steps.load(Ordering::SeqCst), 1, "the step ran once");
    assert_eq!(store.inbound_count("kibo").await.unwrap(), 1);
    let rows = store
        .outbox_for("kibo", "whatsapp:+14155550100")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

/// Ends every other session on this test's database, as a restart would.
async fn terminate_other_connections(url: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ended.is_empty(), "the store had connections to end");
}
