//! Menu conversations end to end: signed webhook in, replies out through the fake
//! Twilio, on both stores.

use std::time::Duration;

use crate::both_stores;
use crate::support::app::{new_contact, TestApp, WELCOME};

both_stores!(hi_gets_the_welcome_menu, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    let replies = app.replies(&contact, 1).await;
    assert_eq!(replies, vec![WELCOME]);
    let sent = app.twilio.received();
    assert_eq!(sent[0].from.as_deref(), Some("whatsapp:+14155238886"));
    assert_eq!(
        sent[0].status_callback.as_deref(),
        Some(format!("{}/webhooks/twilio/shop/status", app.base).as_str())
    );
});

both_stores!(
    options_chosen_by_number_label_and_match_word,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let contact = new_contact();
        app.say(&contact, "hi").await;
        app.say(&contact, "3").await; // by number: Hours
        app.say(&contact, "  hOURs ").await; // by label, trimmed, any case
        app.say(&contact, "BUY").await; // by match word: Browse
        let replies = app.replies(&contact, 8).await;
        let hours = "We open 9 to 5.";
        assert_eq!(
            replies,
            [
                WELCOME,
                hours,
                WELCOME,
                hours,
                WELCOME,
                "We sell hats.",
                "And scarves.",
                WELCOME
            ]
        );
        // Media goes with the first message of the node that has it.
        let hats = app
            .twilio
            .received()
            .into_iter()
            .find(|m| m.body == "We sell hats.")
            .unwrap();
        assert_eq!(hats.media, vec!["https://example.com/hats.jpg"]);
    }
);

both_stores!(
    invalid_answer_gets_invalid_text_and_stays,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let contact = new_contact();
        app.say(&contact, "hi").await;
        app.say(&contact, "7").await;
        app.say(&contact, "1").await;
        let replies = app.replies(&contact, 5).await;
        assert_eq!(replies[1], "Please reply with a number from the list.");
        assert_eq!(replies[2], "We sell hats.");
    }
);

both_stores!(save_as_validates_and_templates_fill_in, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.say(&contact, "2").await;
    app.say(&contact, "R2-D2 !!").await;
    app.say(&contact, " Zawadi ").await;
    let replies = app.replies(&contact, 5).await;
    assert_eq!(replies[1], "What's your name?");
    assert_eq!(replies[2], "Please type just your name.");
    assert_eq!(
        replies[3],
        "Nice to meet you, Zawadi! (WhatsApp says Amina)"
    );
    assert_eq!(replies[4], WELCOME);
    let state = app
        .store
        .conversation("shop", &contact)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.vars["name"], "Zawadi");
    assert_eq!(state.node.as_deref(), Some("main"));
});

both_stores!(keyword_jumps_from_mid_flow, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.say(&contact, "2").await;
    // `menu` is a keyword: it is not saved as the name.
    app.say(&contact, " MENU ").await;
    let replies = app.replies(&contact, 3).await;
    assert_eq!(replies, vec![WELCOME, "What's your name?", WELCOME]);
    let state = app
        .store
        .conversation("shop", &contact)
        .await
        .unwrap()
        .unwrap();
    assert!(!state.vars.contains_key("name"));
});

both_stores!(session_timeout_starts_over, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.say(&contact, "2").await;
    // Every send recorded first: jumping the clock would also expire the leases of
    // sends still in flight, and they would be sent twice.
    app.settled(&contact).await;
    app.clock.advance(Duration::from_secs(31 * 60));
    // Would be saved as the name if the session were still open; instead it starts
    // over and is not matched against the start node's options either.
    app.say(&contact, "1").await;
    let replies = app.replies(&contact, 3).await;
    assert_eq!(replies[2], WELCOME);
});

both_stores!(option_without_goto_ends_the_conversation, |db| async move {
    let app = TestApp::spawn(&db).await;
    let contact = new_contact();
    app.say(&contact, "hi").await;
    app.say(&contact, "4").await;
    app.say(&contact, "4").await; // a new conversation: welcome again, not "Goodbye!"
    let replies = app.replies(&contact, 3).await;
    assert_eq!(replies, vec![WELCOME, "Goodbye!", WELCOME]);
});
