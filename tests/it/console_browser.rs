//! The console in a real browser (headless chromium through chromedriver):
//! sign in, open a conversation's timeline, retry a failed reply, chat in the
//! simulator and see the notice when the bot reloads, on a laptop-sized and a
//! phone-sized window. Screenshots go to `SWITCHBOARD_SCREENSHOTS` (a folder)
//! when set, else to the target's temp folder; docs/console-*.png came from here.

use std::path::PathBuf;

use crate::support::app::{new_contact, new_sid, TestApp};
use crate::support::browser::Browser;
use crate::support::fake_twilio::FakeReply;

fn shots() -> PathBuf {
    std::env::var_os("SWITCHBOARD_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_timeline_retry_and_simulator_in_a_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = crate::support::db::TestDb::sqlite().await;
    let app = TestApp::spawn(&db).await;
    // Some history: one contact served, one whose reply Twilio refused.
    let (alice, bob) = (new_contact(), new_contact());
    assert_eq!(app.message(&alice, &new_sid(), "hello").await.status(), 200);
    app.replies(&alice, 1).await;
    app.twilio
        .push(FakeReply::error(400, 21211, "Invalid 'To' Phone Number"));
    assert_eq!(
        app.message(&bob, &new_sid(), "hi there").await.status(),
        200
    );
    app.settled(&bob).await;

    // Sign in: the console sends us to the sign-in page first.
    browser.goto(&app.url("/console/")).await;
    browser.wait_for_text("Admin token").await;
    assert!(browser.url().await.contains("/console/signin"));
    browser.type_into("#token", "wrong").await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("not the admin token").await;
    browser.type_into("#token", super::console::TOKEN).await;
    browser.click("form button[type=submit]").await;
    let text = browser.wait_for_text("Test Shop").await;
    assert!(text.contains("loaded"), "{text}");
    browser.screenshot(&shots().join("console-bots.png")).await;

    // The diagram.
    browser.goto(&app.url("/console/bots/shop")).await;
    browser.find("svg.diagram").await;
    browser
        .screenshot(&shots().join("console-diagram.png"))
        .await;

    // Conversations, then Bob's timeline with the failed reply.
    browser
        .goto(&app.url("/console/conversations?bot=shop"))
        .await;
    browser.wait_for_text(&alice).await;
    browser
        .click(&format!(
            "a[href$='/console/conversations/{}']",
            conversation_of(&app, &bob).await
        ))
        .await;
    let text = browser.wait_for_text("21211").await;
    assert!(text.contains("hi there"), "{text}");
    assert!(text.contains("failed"), "{text}");
    browser
        .screenshot(&shots().join("console-timeline.png"))
        .await;

    // Retry it: the page says so without a reload, and the reply goes out.
    browser.click("li.msg.out form button").await;
    browser.wait_for_text("queued again").await;
    let sent = app.replies(&bob, 1).await;
    assert_eq!(sent.len(), 1);

    // The simulator: a conversation typed into the page.
    browser.goto(&app.url("/console/simulator/shop")).await;
    for (say, expect) in [
        ("hi", "Welcome to the shop!"),
        ("2", "What's your name?"),
        ("Zed", "Nice to meet you, Zed!"),
    ] {
        browser.type_into("form.send input[name=text]", say).await;
        browser.click("form.send button").await;
        browser.wait_for_text(expect).await;
    }
    let text = browser.body_text().await;
    assert!(
        text.contains("\"name\": \"Zed\""),
        "vars beside the chat: {text}"
    );
    browser
        .screenshot(&shots().join("console-simulator.png"))
        .await;

    // Saving the bot's files shows a notice without touching the page.
    let nodes = app.flows.join("shop/nodes.yaml");
    let yaml = std::fs::read_to_string(&nodes).unwrap();
    std::fs::write(&nodes, yaml.replace("Welcome to the shop!", "Hello again!")).unwrap();
    std::fs::write(app.flows.join("shop/extra.yaml"), "other:\n  say: x\n").unwrap();
    browser.wait_for_text("shop was reloaded").await;

    // A phone-sized window.
    browser.resize(390, 844).await;
    browser
        .goto(&app.url("/console/conversations?bot=shop"))
        .await;
    browser.wait_for_text(&bob).await;
    browser.screenshot(&shots().join("console-phone.png")).await;
    browser.quit().await;
}

async fn conversation_of(app: &TestApp, contact: &str) -> i64 {
    app.store
        .search_conversations(crate::support::app::BOT, contact)
        .await
        .unwrap()[0]
        .id
}
