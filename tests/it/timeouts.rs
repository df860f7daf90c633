//! SPEC §9.2, waiting with a time limit, end to end: a menu's `timeout` and
//! `on_timeout`, a script `ask` with a timeout, an answer cancelling the
//! timer, a pending timer surviving a restart, and two instances firing it once.

use std::path::Path;
use std::time::Duration;

use crate::both_stores;
use crate::support::app::{new_contact, Options, TestApp};
use crate::support::db::TestDb;
use crate::support::eventually;

const HOUR: Duration = Duration::from_secs(60 * 60);
const BOT: &str = "dentist";
const ASK_DAY: &str = "Hi! Which day suits you?";
const NUDGE: &str = "Still there? Send a day to book.";

/// A bot whose first node waits 2 hours for a day, and a script whose `ask`
/// waits an hour.
fn write_dentist(flows: &Path, api_base: &str) {
    let dir = flows.join(BOT);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bot.yaml"),
        format!(
            "session_timeout: 1d\nkeywords:\n  quiz: quiz\ntwilio:\n  \
             account_sid: AC00000000000000000000000000000000\n  auth_token: test-token\n  \
             from: \"whatsapp:+14155238886\"\n  api_base: {api_base}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("nodes.yaml"),
        format!(
            "main:\n  say: \"{ASK_DAY}\"\n  save_as: day\n  timeout: 2h\n  on_timeout: nudge\n  goto: booked\n\
             booked:\n  say: \"Booked for {{{{ day }}}}.\"\n\
             nudge:\n  say: \"{NUDGE}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("quiz.rhai"),
        r#"fn start() { ask("Ready?", "ready", #{ timeout: "1h", on_timeout: "no_answer" }); }
fn ready(answer) { say("Go!"); }
fn no_answer() { say("Maybe later."); }
"#,
    )
    .unwrap();
}

async fn spawn(db: &TestDb) -> TestApp {
    TestApp::spawn_with_bots(db, Options::default(), write_dentist).await
}

/// Sends `text` from `contact` to the dentist bot.
async fn say(app: &TestApp, contact: &str, text: &str) {
    let sid = crate::support::app::new_sid();
    let response = app.post_signed(BOT, contact, &sid, &[("Body", text)]).await;
    assert_eq!(response.status(), 200, "webhook for {text:?}");
}

/// The dentist bot's outbox bodies for `contact`, once there are `n`.
async fn bodies(app: &TestApp, contact: &str, n: usize) -> Vec<String> {
    eventually(
        Duration::from_secs(15),
        Duration::from_millis(20),
        || async {
            let rows = app.store.outbox_for(BOT, contact).await.unwrap();
            let got: Vec<String> = rows.into_iter().map(|r| r.body).collect();
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!("expected {n} rows for {contact}, got {got:#?}"))
            }
        },
    )
    .await
}

both_stores!(a_wait_that_runs_out_enters_on_timeout, |db| async move {
    let app = spawn(&db).await;
    let contact = new_contact();
    say(&app, &contact, "hi").await;
    assert_eq!(bodies(&app, &contact, 1).await, [ASK_DAY]);
    assert!(app.store.next_timeout_due().await.unwrap().is_some());
    app.clock.advance(3 * HOUR);
    assert_eq!(bodies(&app, &contact, 2).await, [ASK_DAY, NUDGE]);
    let state = app
        .store
        .conversation(BOT, &contact)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.node, None,
        "nudge waits for nothing: the conversation ended"
    );
    assert_eq!(app.store.next_timeout_due().await.unwrap(), None);
    app.replies(&contact, 2).await;
});

both_stores!(an_answer_cancels_the_timeout, |db| async move {
    let app = spawn(&db).await;
    let (answered, silent) = (new_contact(), new_contact());
    say(&app, &answered, "hi").await;
    say(&app, &answered, "Monday").await;
    assert_eq!(
        bodies(&app, &answered, 2).await,
        [ASK_DAY, "Booked for Monday."]
    );
    assert_eq!(
        app.store.next_timeout_due().await.unwrap(),
        None,
        "the answer took the timer away"
    );
    // A contact who does not answer: once their wait ran out, the answered
    // one's would have too.
    say(&app, &silent, "hi").await;
    app.clock.advance(3 * HOUR);
    assert_eq!(bodies(&app, &silent, 2).await, [ASK_DAY, NUDGE]);
    assert_eq!(app.store.outbox_for(BOT, &answered).await.unwrap().len(), 2);
});

both_stores!(
    a_script_ask_with_a_timeout_calls_its_function,
    |db| async move {
        let app = spawn(&db).await;
        let contact = new_contact();
        say(&app, &contact, "quiz").await;
        assert_eq!(bodies(&app, &contact, 1).await, ["Ready?"]);
        app.clock.advance(2 * HOUR);
        assert_eq!(bodies(&app, &contact, 2).await, ["Ready?", "Maybe later."]);
        // Answered in time, the handler runs and no timer is left.
        let quick = new_contact();
        say(&app, &quick, "quiz").await;
        say(&app, &quick, "yes").await;
        assert_eq!(bodies(&app, &quick, 2).await, ["Ready?", "Go!"]);
        assert_eq!(app.store.next_timeout_due().await.unwrap(), None);
    }
);

both_stores!(a_pending_timeout_survives_a_restart, |db| async move {
    let app = spawn(&db).await;
    let contact = new_contact();
    say(&app, &contact, "hi").await;
    bodies(&app, &contact, 1).await;
    let app = app.restart(Options::default()).await;
    app.clock.advance(3 * HOUR);
    assert_eq!(bodies(&app, &contact, 2).await, [ASK_DAY, NUDGE]);
});

/// Two instances on one Postgres database: every timer fires once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_fire_once_across_two_instances() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let one = spawn(&db).await;
    let two = spawn(&db).await;
    let contacts: Vec<String> = (0..20).map(|_| new_contact()).collect();
    for contact in &contacts {
        say(&one, contact, "hi").await;
    }
    one.clock.advance(3 * HOUR);
    two.clock.advance(3 * HOUR);
    for contact in &contacts {
        bodies(&one, contact, 2).await;
    }
    assert_eq!(one.store.next_timeout_due().await.unwrap(), None);
    for contact in &contacts {
        let rows = one.store.outbox_for(BOT, contact).await.unwrap();
        assert_eq!(rows.len(), 2, "{contact}: fired once");
    }
}
