//! Menu conversations end to end: signed webhook in, replies out through the fake
//! Twilio, on both stores.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::both_stores;
use crate::support::app::{new_contact, new_sid, Options, TestApp, BOT, WELCOME};

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

/// A salon bot beside the shop (same Twilio settings) that remembers choices
/// with `save_as` on menus and `set` on options (SPEC §11).
const SALON: &str = "salon";

fn write_salon_bot(flows: &Path) {
    let dir = flows.join(SALON);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(flows.join(BOT).join("bot.yaml"), dir.join("bot.yaml")).unwrap();
    std::fs::write(
        dir.join("nodes.yaml"),
        r#"main:
  say: Welcome to Shear Joy! Which service?
  save_as: service
  options:
    - label: Haircut
      match: [cut, trim]
      set: {price: 25}
      goto: day
    - label: Colour
      value: hair colour
      set: {price: 60}
      goto: day
  invalid: Please reply 1 or 2.

day:
  say: "{{ service }} it is (${{ price }}). Which day?"
  save_as: day
  options:
    - label: Tuesday
      goto: booked
    - label: Saturday
      goto: booked

booked:
  say: "All booked! See you on {{ day }} for your {{ service }}."
"#,
    )
    .unwrap();
}

/// The vars stored with the contact's salon conversation.
async fn salon_vars(app: &TestApp, contact: &str) -> serde_json::Value {
    let state = app.store.conversation(SALON, contact).await.unwrap();
    serde_json::Value::Object(state.expect("a stored conversation").vars)
}

const SALON_WELCOME: &str = "Welcome to Shear Joy! Which service?\n1. Haircut\n2. Colour";

both_stores!(
    save_as_on_a_menu_remembers_the_chosen_option,
    |db| async move {
        let app =
            TestApp::spawn_with_bots(&db, Options::default(), |flows, _| write_salon_bot(flows))
                .await;
        let send = |contact: String, text: &'static str| {
            let app = &app;
            async move {
                let response = app
                    .post_signed(SALON, &contact, &new_sid(), &[("Body", text)])
                    .await;
                assert_eq!(response.status(), 200, "webhook for {text:?}");
            }
        };
        // (answer to the first menu: by number, by label, by `match` word; the
        // service it stands for; the price its option sets)
        let cases = [
            ("1", "Haircut", 25, "Tuesday"),
            ("colour", "hair colour", 60, "Saturday"),
            (" CUT ", "Haircut", 25, "2"),
        ];
        for (answer, service, price, day) in cases {
            let contact = new_contact();
            send(contact.clone(), "hi").await;
            send(contact.clone(), "perm").await; // chooses nothing: retried, not saved
            assert_eq!(salon_vars(&app, &contact).await, json!({}), "{answer:?}");
            send(contact.clone(), answer).await;
            send(contact.clone(), day).await;
            let replies = app.replies(&contact, 4).await;
            let day = if day == "2" { "Saturday" } else { day };
            assert_eq!(
                replies,
                [
                    SALON_WELCOME.to_owned(),
                    "Please reply 1 or 2.".to_owned(),
                    format!("{service} it is (${price}). Which day?\n1. Tuesday\n2. Saturday"),
                    format!("All booked! See you on {day} for your {service}."),
                ],
                "{answer:?}"
            );
            assert_eq!(
                salon_vars(&app, &contact).await,
                json!({"service": service, "price": price, "day": day}),
                "{answer:?}"
            );
        }
    }
);
