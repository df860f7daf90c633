//! Hot reload against a running server, through real file-system events (native
//! and `--watch-poll`): saves are served, broken saves keep the last good version and
//! show their errors in `/api/bots`, new folders add bots, removed ones answer 404.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::both_stores;
use crate::support::app::{new_contact, new_sid, Options, TestApp, BOT, WELCOME};

/// Long enough for a loaded CI machine; the tests stop as soon as the outcome shows.
const DEADLINE: Duration = Duration::from_secs(20);

async fn watching(db: &crate::support::db::TestDb, poll: bool) -> TestApp {
    TestApp::spawn_with(
        db,
        Options {
            run_sender: false,
            watch: true,
            watch_poll: poll,
            ..Options::default()
        },
    )
    .await
}

fn nodes_file(app: &TestApp) -> PathBuf {
    app.flows.join(BOT).join("nodes.yaml")
}

/// The shop's nodes with the welcome line replaced.
fn shop_nodes(app: &TestApp, welcome: &str) -> String {
    let current = std::fs::read_to_string(nodes_file(app)).unwrap();
    let start = current.find("  say: ").unwrap() + "  say: ".len();
    let end = start + current[start..].find('\n').unwrap();
    format!("{}{welcome}{}", &current[..start], &current[end..])
}

/// The first reply a brand-new contact gets from `bot`, or the webhook's status
/// when it is not 200.
async fn greeting(app: &TestApp, bot: &str) -> Result<String, u16> {
    let contact = new_contact();
    let response = app
        .post_signed(bot, &contact, &new_sid(), &[("Body", "hi")])
        .await;
    if response.status() != 200 {
        return Err(response.status().as_u16());
    }
    let rows = app.store.outbox_for(bot, &contact).await.unwrap();
    Ok(rows.first().map(|r| r.body.clone()).unwrap_or_default())
}

/// Polls `greeting` until `done` holds, or fails with the last answer seen.
async fn wait_for_greeting(
    app: &TestApp,
    bot: &str,
    what: &str,
    done: impl Fn(&Result<String, u16>) -> bool,
) -> Result<String, u16> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = greeting(app, bot).await;
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{what}: still {got:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for_welcome(app: &TestApp, prefix: &str) {
    wait_for_greeting(app, BOT, &format!("welcome {prefix:?}"), |got| {
        got.as_ref().is_ok_and(|body| body.starts_with(prefix))
    })
    .await
    .unwrap();
}

async fn bots(app: &TestApp) -> Vec<Value> {
    let response = app.get(&app.url("/api/bots"), Some("admin-secret")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls `/api/bots` until the entry of `bot` satisfies `done`; returns it.
async fn wait_for_status(app: &TestApp, bot: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let all = bots(app).await;
        let entry = all
            .iter()
            .find(|b| b["id"] == bot)
            .cloned()
            .unwrap_or(Value::Null);
        if done(&entry) {
            return entry;
        }
        assert!(Instant::now() < deadline, "status of {bot}: still {all:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn has_errors(entry: &Value) -> bool {
    entry["errors"].as_array().is_some_and(|e| !e.is_empty())
}

/// Writes a temp file and renames it over `path`, as many editors save.
fn save_by_rename(path: &Path, contents: &str) {
    let temp = path.with_extension("yaml.tmp");
    std::fs::write(&temp, contents).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

both_stores!(a_saved_change_is_served, |db| async move {
    let app = watching(&db, false).await;
    assert_eq!(greeting(&app, BOT).await.unwrap(), WELCOME);

    std::fs::write(nodes_file(&app), shop_nodes(&app, "Welcome v2!")).unwrap();
    wait_for_welcome(&app, "Welcome v2!\n1. Browse").await;

    save_by_rename(&nodes_file(&app), &shop_nodes(&app, "Welcome v3!"));
    wait_for_welcome(&app, "Welcome v3!\n1. Browse").await;
    // Editor leftovers beside the real file change nothing.
    std::fs::write(app.flows.join(BOT).join(".nodes.yaml.swp"), "junk").unwrap();
    std::fs::write(app.flows.join(BOT).join("nodes.yaml~"), "junk").unwrap();
    assert!(greeting(&app, BOT)
        .await
        .unwrap()
        .starts_with("Welcome v3!"));
    assert!(!has_errors(&bots(&app).await[0]));
});

both_stores!(a_broken_save_keeps_the_last_good_version, |db| async move {
    let app = watching(&db, false).await;
    let loaded_at = bots(&app).await[0]["loaded_at"].clone();

    // `main` now points at a node that does not exist (line 5, the `goto` value).
    let broken = shop_nodes(&app, "Broken!").replacen("goto: browse", "goto: nowhere", 1);
    save_by_rename(&nodes_file(&app), &broken);
    let entry = wait_for_status(&app, BOT, has_errors).await;
    let error = &entry["errors"][0];
    assert!(
        error["file"].as_str().unwrap().ends_with("shop/nodes.yaml"),
        "{error}"
    );
    assert_eq!(error["line"], 6, "{error}");
    assert_eq!(error["column"], 13, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("nowhere"),
        "{error}"
    );
    // Still serving the version loaded at startup.
    assert_eq!(entry["loaded_at"], loaded_at);
    assert_eq!(entry["nodes"], 4);
    assert_eq!(greeting(&app, BOT).await.unwrap(), WELCOME);

    // Fixing the file clears the errors and serves the fix.
    std::fs::write(
        nodes_file(&app),
        shop_nodes(&app, "Fixed!").replace("nowhere", "browse"),
    )
    .unwrap();
    let entry = wait_for_status(&app, BOT, |e| !has_errors(e) && e["loaded_at"] != loaded_at).await;
    assert_eq!(entry["errors"], serde_json::json!([]));
    assert!(greeting(&app, BOT)
        .await
        .unwrap()
        .starts_with("Fixed!\n1. Browse"));
});

both_stores!(folders_add_and_remove_bots, |db| async move {
    let app = watching(&db, false).await;
    assert_eq!(greeting(&app, "news").await, Err(404));

    // A new folder: the shop's settings under another name and greeting.
    let dir = app.flows.join("news");
    std::fs::create_dir(&dir).unwrap();
    let settings = std::fs::read_to_string(app.flows.join(BOT).join("bot.yaml")).unwrap();
    std::fs::write(dir.join("bot.yaml"), settings.replace("Test Shop", "News")).unwrap();
    std::fs::write(dir.join("nodes.yaml"), "main:\n  say: Today's news.\n").unwrap();
    let got = wait_for_greeting(&app, "news", "new bot served", |got| {
        got.as_ref().is_ok_and(|b| b == "Today's news.")
    })
    .await;
    assert_eq!(got.unwrap(), "Today's news.");
    let entry = wait_for_status(&app, "news", |e| e["name"] == "News").await;
    assert_eq!(entry["nodes"], 1);

    // Removing the folder removes the bot: 404, and gone from /api/bots.
    std::fs::remove_dir_all(&dir).unwrap();
    let got = wait_for_greeting(&app, "news", "removed bot", |got| *got == Err(404)).await;
    assert_eq!(got, Err(404));
    wait_for_status(&app, "news", Value::is_null).await;
    // The other bot is untouched.
    assert_eq!(greeting(&app, BOT).await.unwrap(), WELCOME);
});

both_stores!(a_new_folder_that_fails_shows_its_errors, |db| async move {
    let app = watching(&db, false).await;
    let dir = app.flows.join("draft");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("nodes.yaml"), "main:\n  say: Hi\n").unwrap();
    let entry = wait_for_status(&app, "draft", has_errors).await;
    assert!(entry["loaded_at"].is_null());
    assert!(
        entry["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no bot.yaml"),
        "{entry}"
    );
    assert_eq!(greeting(&app, "draft").await, Err(404));
});

both_stores!(polling_serves_a_saved_change, |db| async move {
    let app = watching(&db, true).await;
    assert_eq!(greeting(&app, BOT).await.unwrap(), WELCOME);
    std::fs::write(nodes_file(&app), shop_nodes(&app, "Polled v2!")).unwrap();
    wait_for_welcome(&app, "Polled v2!\n1. Browse").await;
    // A second save within the same second (same mtime to the poller) is seen too.
    std::fs::write(nodes_file(&app), shop_nodes(&app, "Polled v3!")).unwrap();
    wait_for_welcome(&app, "Polled v3!\n1. Browse").await;
});

both_stores!(polling_sees_new_and_removed_folders, |db| async move {
    let app = watching(&db, true).await;
    let dir = app.flows.join("news");
    std::fs::create_dir(&dir).unwrap();
    let settings = std::fs::read_to_string(app.flows.join(BOT).join("bot.yaml")).unwrap();
    std::fs::write(dir.join("bot.yaml"), settings).unwrap();
    std::fs::write(dir.join("nodes.yaml"), "main:\n  say: Polled news.\n").unwrap();
    wait_for_greeting(&app, "news", "new bot served", |got| got.is_ok())
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let got = wait_for_greeting(&app, "news", "removed bot", |got| *got == Err(404)).await;
    assert_eq!(got, Err(404));
});
