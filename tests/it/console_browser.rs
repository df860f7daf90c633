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

/// A help desk on WhatsApp: its menu is sent as buttons, and one of them hands
/// the conversation to a person.
fn write_desk(flows: &std::path::Path, api_base: &str) {
    let dir = flows.join("desk");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bot.yaml"),
        format!(
            "name: Help Desk\nsession_timeout: 1h\nhandoff_timeout: 8h\ntwilio:\n  \
             account_sid: AC00000000000000000000000000000000\n  auth_token: test-token\n  \
             from: \"whatsapp:+14155238886\"\n  api_base: {api_base}\n  \
             content_api_base: {api_base}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("nodes.yaml"),
        "main:\n  say: Hi! How can we help?\n  style: buttons\n  options:\n\
         \x20   - label: Opening hours\n      say: We open 9 to 5.\n      goto: main\n\
         \x20   - label: Talk to a person\n      say: Connecting you to our team.\n      \
         handoff: support\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_from_the_inbox_and_hand_back_in_a_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = crate::support::db::TestDb::sqlite().await;
    let app = TestApp::spawn_with_bots(&db, Default::default(), write_desk).await;
    // A contact taps through the buttons to a person.
    let amina = new_contact();
    for text in ["hi", "Talk to a person"] {
        let sid = new_sid();
        let response = app
            .post_signed("desk", &amina, &sid, &[("Body", text)])
            .await;
        assert_eq!(response.status(), 200);
    }
    let menu = app
        .twilio
        .wait_for(2, std::time::Duration::from_secs(10))
        .await;
    assert!(
        menu[0].content_sid.is_some(),
        "the menu went as buttons: {:?}",
        menu[0]
    );
    // Something on the broadcasts and scheduled starts pages too.
    let later = (chrono::Utc::now() + chrono::Duration::hours(3)).to_rfc3339();
    for (path, body) in [
        (
            "/api/bots/shop/broadcasts",
            serde_json::json!({"node": "browse", "at": later,
                "contacts": [{"to": "+15550100001"}, {"to": "+15550100002"}]}),
        ),
        (
            "/api/bots/shop/conversations",
            serde_json::json!({"node": "browse", "to": "+15550100003", "at": later}),
        ),
    ] {
        let response = app
            .http
            .post(app.url(path))
            .bearer_auth(super::console::TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{path}");
    }

    browser.goto(&app.url("/console/signin")).await;
    browser.type_into("#token", super::console::TOKEN).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("Test Shop").await;

    // The inbox lists her, waiting; her page shows what she said.
    browser.goto(&app.url("/console/inbox")).await;
    let text = browser.wait_for_text(&amina).await;
    assert!(
        text.contains("support") && text.contains("waiting"),
        "{text}"
    );
    browser.screenshot(&shots().join("console-inbox.png")).await;
    browser.click("table a[href*='/console/inbox/desk/']").await;
    browser.wait_for_text("Since the handoff").await;

    // Answer her: the message goes to Twilio in the person's words.
    browser
        .type_into("form.answer textarea", "Hello Amina, this is Sam.")
        .await;
    browser.click("form.answer button").await;
    browser
        .wait_for_text("Message queued for the contact.")
        .await;
    let sent = app
        .twilio
        .wait_for(3, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(sent[2].to, amina);
    assert_eq!(sent[2].body, "Hello Amina, this is Sam.");
    browser.wait_for_text("Hello Amina, this is Sam.").await;
    browser
        .screenshot(&shots().join("console-inbox-answer.png"))
        .await;

    // Hand her back to the bot's menu: she gets it, and the inbox is empty.
    browser.click("form.release button").await;
    browser.wait_for_text("Handed back to the bot.").await;
    let sent = app
        .twilio
        .wait_for(4, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(sent[3].to, amina);
    assert!(sent[3].content_sid.is_some(), "the menu again, as buttons");
    browser.goto(&app.url("/console/inbox")).await;
    browser
        .wait_for_text("Nobody is waiting for a person")
        .await;

    // The broadcasts and scheduled starts pages.
    browser.goto(&app.url("/console/broadcasts?bot=shop")).await;
    let text = browser.wait_for_text("browse").await;
    assert!(text.contains('2'), "{text}");
    browser
        .screenshot(&shots().join("console-broadcasts.png"))
        .await;
    browser.goto(&app.url("/console/scheduled?bot=shop")).await;
    browser.wait_for_text("+15550100003").await;
    browser
        .screenshot(&shots().join("console-scheduled.png"))
        .await;
    browser.quit().await;
}
