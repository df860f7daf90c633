//! The store contract, run on SQLite and (with `DATABASE_URL`) on Postgres:
//! atomic message processing and dedupe, one contact at a time, the outbox's
//! claim / lease / retry / head-of-line rules, status callbacks, pruning.

use std::collections::{HashMap, HashSet};
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use switchboard::domain::{ConversationState, OutboxStatus, SideEffects};
use switchboard::message::Reply;
use switchboard::store::{
    Backend, ClaimRequest, Completion, InboundOutcome, NewInbound, OutboxRow, Renewal, SendResult,
    StatusUpdate, StepOutput, StepRuns, Stepped, Store, StoreOptions,
};

use crate::both_stores;

const BOT: &str = "kibo";
const LEASE: Duration = Duration::from_secs(30);

fn inbound(contact: &str, sid: &str, at: i64) -> NewInbound {
    NewInbound {
        bot: BOT.into(),
        contact: contact.into(),
        message_sid: sid.into(),
        body: format!("body of {sid}"),
        payload: json!({ "text": format!("body of {sid}"), "media": [] }),
        received_at_ms: at,
    }
}

/// A step that moves the conversation to `node` and sends `bodies`.
pub(crate) fn replying(
    node: &'static str,
    at: i64,
    bodies: &[&str],
) -> impl FnMut(Option<ConversationState>) -> Ready<StepOutput> + Send {
    let replies: Vec<Reply> = bodies.iter().map(|b| Reply::text(*b)).collect();
    move |_| {
        ready(StepOutput {
            state: ConversationState {
                node: Some(node.into()),
                handler: None,
                vars: Default::default(),
                updated_at_ms: at,
                opted_out: false,
                ..Default::default()
            },
            replies: replies.clone(),
        })
    }
}

/// Queues `bodies` as replies to a fresh message from `contact`.
async fn queue(store: &Store, contact: &str, sid: &str, at: i64, bodies: &[&str]) {
    let outcome = store
        .process_inbound(&inbound(contact, sid, at), replying("main", at, bodies))
        .await
        .expect("process_inbound");
    assert_eq!(
        outcome,
        InboundOutcome::Processed {
            replies: bodies.len()
        }
    );
}

fn claim_at(now_ms: i64) -> ClaimRequest {
    ClaimRequest {
        now_ms,
        lease: LEASE,
        limit: 100,
        bulk_limit: 100,
    }
}

fn bodies(rows: &[OutboxRow]) -> Vec<&str> {
    rows.iter().map(|r| r.body.as_str()).collect()
}

fn token(row: &OutboxRow) -> i64 {
    row.claim_token.expect("a claimed row has a token")
}

async fn send_ok(store: &Store, row: &OutboxRow, sid: &str, now_ms: i64) {
    let sent = SendResult::Sent { sid: sid.into() };
    assert!(store
        .complete_send(row.id, token(row), &sent, now_ms)
        .await
        .unwrap());
}

async fn row(store: &Store, contact: &str, index: usize) -> OutboxRow {
    store.outbox_for(BOT, contact).await.unwrap()[index].clone()
}

both_stores!(process_inbound_commits_state_and_replies, |db| async move {
    let store = &db.store;
    let msg = inbound("whatsapp:+1555", "SM1", 1_000);
    let outcome = store
        .process_inbound(&msg, |state| {
            assert_eq!(state, None, "a new contact has no conversation");
            let mut vars = serde_json::Map::new();
            vars.insert("name".into(), json!("Amina"));
            ready(StepOutput {
                state: ConversationState {
                    node: Some("ask_day".into()),
                    handler: Some("on_day".into()),
                    vars,
                    updated_at_ms: 1_000,
                    opted_out: false,
                    ..Default::default()
                },
                replies: vec![
                    Reply::text("Thanks Amina"),
                    Reply {
                        media: vec!["https://example.test/cal.png".into()],
                        ..Reply::text("Which day?")
                    },
                ],
            })
        })
        .await
        .unwrap();
    assert_eq!(outcome, InboundOutcome::Processed { replies: 2 });

    let state = store.conversation(BOT, "whatsapp:+1555").await.unwrap();
    let state = state.expect("conversation stored");
    assert_eq!(state.node.as_deref(), Some("ask_day"));
    assert_eq!(state.handler.as_deref(), Some("on_day"));
    assert_eq!(state.vars.get("name"), Some(&json!("Amina")));
    assert_eq!(state.updated_at_ms, 1_000);
    assert_eq!(store.inbound_count(BOT).await.unwrap(), 1);
    assert_eq!(store.inbound_count("other-bot").await.unwrap(), 0);

    let rows = store.outbox_for(BOT, "whatsapp:+1555").await.unwrap();
    assert_eq!(bodies(&rows), ["Thanks Amina", "Which day?"]);
    assert_eq!(rows[1].media, ["https://example.test/cal.png"]);
    for r in &rows {
        assert_eq!(r.status, OutboxStatus::Queued);
        assert_eq!(r.attempts, 0);
        assert_eq!(r.next_attempt_at_ms, 1_000);
        assert_eq!(r.contact, "whatsapp:+1555");
        assert_eq!(r.claim_token, None);
    }
    assert_eq!(rows[0].conversation_id, rows[1].conversation_id);
    assert!(rows[0].id < rows[1].id);

    // The next message sees the stored state and updates it in place.
    let msg = inbound("whatsapp:+1555", "SM2", 2_000);
    store
        .process_inbound(&msg, |state| {
            let state = state.expect("the conversation exists now");
            assert_eq!(state.node.as_deref(), Some("ask_day"));
            ready(StepOutput {
                state: ConversationState {
                    node: None,
                    updated_at_ms: 2_000,
                    ..state
                },
                replies: vec![],
            })
        })
        .await
        .unwrap();
    let state = store.conversation(BOT, "whatsapp:+1555").await.unwrap();
    let state = state.unwrap();
    assert_eq!(state.node, None);
    assert_eq!(state.vars.get("name"), Some(&json!("Amina")));
    assert_eq!(state.updated_at_ms, 2_000);
    assert_eq!(
        store.outbox_for(BOT, "whatsapp:+1555").await.unwrap().len(),
        2
    );
});

both_stores!(
    duplicate_sid_writes_nothing_and_skips_the_step,
    |db| async move {
        let store = &db.store;
        queue(store, "whatsapp:+1555", "SM1", 1_000, &["hello"]).await;

        let calls = AtomicUsize::new(0);
        let outcome = store
            .process_inbound(&inbound("whatsapp:+1555", "SM1", 2_000), |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                replying("elsewhere", 2_000, &["again"])(None)
            })
            .await
            .unwrap();
        assert_eq!(outcome, InboundOutcome::Duplicate);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "step must not run");
        assert_eq!(store.inbound_count(BOT).await.unwrap(), 1);
        assert_eq!(
            bodies(&store.outbox_for(BOT, "whatsapp:+1555").await.unwrap()),
            ["hello"]
        );
        let state = store
            .conversation(BOT, "whatsapp:+1555")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.node.as_deref(), Some("main"));
        assert_eq!(state.updated_at_ms, 1_000);

        // The same SID under another bot is another message.
        let mut other = inbound("whatsapp:+1555", "SM1", 3_000);
        other.bot = "other-bot".into();
        let outcome = store
            .process_inbound(&other, replying("main", 3_000, &[]))
            .await
            .unwrap();
        assert_eq!(outcome, InboundOutcome::Processed { replies: 0 });
    }
);

both_stores!(
    concurrent_duplicate_deliveries_are_processed_once,
    |db| async move {
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let store = db.store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .process_inbound(
                        &inbound("whatsapp:+1555", "SMdup", 1_000),
                        replying("main", 1_000, &["only once"]),
                    )
                    .await
                    .unwrap()
            }));
        }
        let mut processed = 0;
        for task in tasks {
            if task.await.unwrap() != InboundOutcome::Duplicate {
                processed += 1;
            }
        }
        assert_eq!(processed, 1);
        assert_eq!(db.store.inbound_count(BOT).await.unwrap(), 1);
        let rows = db.store.outbox_for(BOT, "whatsapp:+1555").await.unwrap();
        assert_eq!(bodies(&rows), ["only once"]);
    }
);

both_stores!(
    one_sid_from_racing_contacts_is_processed_once_and_the_rest_write_nothing,
    |db| async move {
        // The dedupe key is (bot, SID) but the lock is per contact: ten contacts
        // racing with one SID all pass the lookup, and only the writes can tell.
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = db.store.clone();
            tasks.push(tokio::spawn(async move {
                let contact = format!("whatsapp:+1555000{i}");
                let outcome = store
                    .process_inbound(&inbound(&contact, "SMsame", 1_000), |_| async {
                        tokio::task::yield_now().await;
                        replying("main", 1_000, &["hello", "again"])(None).await
                    })
                    .await
                    .unwrap();
                (contact, outcome)
            }));
        }
        let mut processed = Vec::new();
        let mut duplicates = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (contact, InboundOutcome::Duplicate) => duplicates.push(contact),
                (contact, outcome) => {
                    assert_eq!(outcome, InboundOutcome::Processed { replies: 2 });
                    processed.push(contact);
                }
            }
        }
        assert_eq!(processed.len(), 1, "exactly one delivery is processed");
        assert_eq!(db.store.inbound_count(BOT).await.unwrap(), 1);
        let rows = db.store.outbox_for(BOT, &processed[0]).await.unwrap();
        assert_eq!(bodies(&rows), ["hello", "again"]);
        for contact in &duplicates {
            assert_eq!(
                db.store.conversation(BOT, contact).await.unwrap(),
                None,
                "{contact}: a duplicate must not create a conversation"
            );
            assert!(db.store.outbox_for(BOT, contact).await.unwrap().is_empty());
        }
    }
);

/// Twenty messages from one contact at once, half through a second store (a
/// second instance), each adding 1 to a counter: lost updates or interleaved
/// steps would leave the counter short, and the replies out of step order.
/// The messages `acts` picks have an effect: with effects refused their step
/// asks for the turn, and with effects allowed it counts the effect, which
/// must happen exactly once per such message. Answers how many times the
/// steps ran, effects refused or not.
async fn twenty_at_once(
    db: &crate::support::db::TestDb,
    runs: StepRuns,
    acts: fn(usize) -> bool,
) -> usize {
    let other = Store::connect(&db.url).await.unwrap();
    let steps = Arc::new(AtomicUsize::new(0));
    let effects: Arc<Vec<AtomicUsize>> = Arc::new((0..20).map(|_| AtomicUsize::new(0)).collect());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 {
            db.store.clone()
        } else {
            other.clone()
        };
        let steps = steps.clone();
        let effects = effects.clone();
        tasks.push(tokio::spawn(async move {
            let msg = inbound("whatsapp:+1555", &format!("SM{i}"), 1_000 + i as i64);
            store
                .process_inbound_as(&msg, runs, move |state, side_effects| {
                    steps.fetch_add(1, Ordering::SeqCst);
                    let needs_turn = acts(i) && side_effects == SideEffects::Refused;
                    if acts(i) && !needs_turn {
                        effects[i].fetch_add(1, Ordering::SeqCst);
                    }
                    let mut state = state.unwrap_or_default();
                    let n = state.vars.get("n").and_then(|v| v.as_i64()).unwrap_or(0) + 1;
                    state.vars.insert("n".into(), json!(n));
                    async move {
                        // Give other tasks a chance to run mid-step.
                        tokio::task::yield_now().await;
                        if needs_turn {
                            return Stepped::NeedsTurn;
                        }
                        Stepped::Output(StepOutput {
                            state,
                            replies: vec![Reply::text(format!("n={n}"))],
                        })
                    }
                })
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(
            task.await.unwrap(),
            InboundOutcome::Processed { replies: 1 }
        );
    }

    let state = db
        .store
        .conversation(BOT, "whatsapp:+1555")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.vars.get("n"), Some(&json!(20)));
    assert_eq!(db.store.inbound_count(BOT).await.unwrap(), 20);
    // Replies were committed in step order: the outbox reads n=1..n=20 by id.
    let rows = db.store.outbox_for(BOT, "whatsapp:+1555").await.unwrap();
    let expected: Vec<String> = (1..=20).map(|n| format!("n={n}")).collect();
    assert_eq!(bodies(&rows), expected);
    // Effects once per message across instances is Postgres's promise (the
    // turn); SQLite's is one process, whose contact locks (above the store)
    // these two handles bypass, so there a message may step twice.
    for (i, count) in effects.iter().enumerate() {
        let count = count.load(Ordering::SeqCst);
        match (acts(i), db.store.backend()) {
            (false, _) => assert_eq!(count, 0, "message {i} has no effect"),
            (true, Backend::Postgres) => {
                assert_eq!(count, 1, "message {i}: its effect must happen once")
            }
            (true, Backend::Sqlite) => assert!(count >= 1, "message {i}"),
        }
    }
    steps.load(Ordering::SeqCst)
}

both_stores!(
    one_contact_is_processed_one_message_at_a_time,
    |db| async move {
        let steps = twenty_at_once(&db, StepRuns::Once, |_| true).await;
        if db.store.backend() == Backend::Postgres {
            assert_eq!(steps, 20, "the turn means no re-steps");
        }
    }
);

both_stores!(
    repeatable_steps_take_effect_one_at_a_time,
    |db| async move {
        // Without a turn, a step whose conversation another message wrote
        // first runs again (or takes the turn), so the counter still reaches 20.
        let steps = twenty_at_once(&db, StepRuns::Repeatable, |_| false).await;
        assert!(steps >= 20, "every message stepped at least once: {steps}");
    }
);

both_stores!(
    repeatable_steps_with_effects_take_the_turn_and_act_once,
    |db| async move {
        // Every third message reaches an effect: refused, it takes the turn and
        // steps again, acting exactly once, while the rest race without a turn.
        twenty_at_once(&db, StepRuns::Repeatable, |i| i % 3 == 0).await;
    }
);

both_stores!(
    repeatable_steps_take_no_turn_once_the_conversation_exists,
    |db| async move {
        // One at a time: the first message takes the turn (there is no
        // conversation to check yet), the next four none; the fifth reaches
        // an effect and takes one.
        let store = &db.store;
        for i in 0..6_usize {
            let msg = inbound("whatsapp:+1777", &format!("SMt{i}"), 1_000 + i as i64);
            let stepped = Arc::new(AtomicUsize::new(0));
            let seen = stepped.clone();
            let outcome = store
                .process_inbound_as(&msg, StepRuns::Repeatable, move |state, side_effects| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let out = if i == 5 && side_effects == SideEffects::Refused {
                        Stepped::NeedsTurn
                    } else {
                        Stepped::Output(StepOutput {
                            state: state.unwrap_or_default(),
                            replies: vec![Reply::text(format!("m{i}"))],
                        })
                    };
                    ready(out)
                })
                .await
                .unwrap();
            assert_eq!(outcome, InboundOutcome::Processed { replies: 1 });
            // SQLite steps with effects allowed: once each.
            let expected = if i == 5 && store.backend() == Backend::Postgres {
                2
            } else {
                1
            };
            assert_eq!(stepped.load(Ordering::SeqCst), expected, "message {i}");
        }
        if store.backend() == Backend::Postgres {
            let turns: i64 = sqlx::query_scalar(
                "SELECT turns FROM contact_turns WHERE contact = 'whatsapp:+1777'",
            )
            .fetch_one(&sqlx::PgPool::connect(&db.url).await.unwrap())
            .await
            .unwrap();
            assert_eq!(turns, 2, "the first message and the one with an effect");
        }
    }
);

both_stores!(claims_only_the_head_of_each_conversation, |db| async move {
    let store = &db.store;
    queue(store, "whatsapp:+1", "SMa", 1_000, &["a1", "a2", "a3"]).await;
    queue(store, "whatsapp:+2", "SMb", 1_500, &["b1"]).await;

    assert!(
        store.claim_due(claim_at(999)).await.unwrap().is_empty(),
        "not due yet"
    );

    let claimed = store.claim_due(claim_at(2_000)).await.unwrap();
    assert_eq!(bodies(&claimed), ["a1", "b1"]);
    for r in &claimed {
        assert_eq!(r.status, OutboxStatus::Sending);
        assert_eq!(r.attempts, 1);
    }
    assert!(
        store.claim_due(claim_at(2_000)).await.unwrap().is_empty(),
        "a2 waits while a1 is sending"
    );

    send_ok(store, &claimed[0], "SMout1", 2_100).await;
    let next = store.claim_due(claim_at(2_200)).await.unwrap();
    assert_eq!(bodies(&next), ["a2"]);
    send_ok(store, &next[0], "SMout2", 2_300).await;
    let next = store.claim_due(claim_at(2_400)).await.unwrap();
    assert_eq!(bodies(&next), ["a3"]);

    // The limit caps a claim.
    queue(store, "whatsapp:+3", "SMc", 3_000, &["c1"]).await;
    queue(store, "whatsapp:+4", "SMd", 3_000, &["d1"]).await;
    let limited = ClaimRequest {
        limit: 1,
        ..claim_at(3_000)
    };
    assert_eq!(bodies(&store.claim_due(limited).await.unwrap()), ["c1"]);
});

both_stores!(concurrent_claimers_never_share_a_row, |db| async move {
    // Two stores on one database stand for two instances.
    let other = Store::connect(&db.url).await.unwrap();
    let conversations = 30;
    for c in 0..conversations {
        let contact = format!("whatsapp:+{c}");
        queue(
            &db.store,
            &contact,
            &format!("SM{c}"),
            1_000,
            &["r1", "r2", "r3"],
        )
        .await;
    }
    let total = conversations * 3;

    let claimed_ids = Arc::new(Mutex::new(HashSet::new()));
    let in_flight = Arc::new(Mutex::new(HashMap::<i64, i64>::new()));
    let order = Arc::new(Mutex::new(HashMap::<i64, Vec<i64>>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut claimers = Vec::new();
    for store in [
        db.store.clone(),
        other.clone(),
        db.store.clone(),
        other.clone(),
    ] {
        let (claimed_ids, in_flight, order, done) = (
            claimed_ids.clone(),
            in_flight.clone(),
            order.clone(),
            done.clone(),
        );
        claimers.push(tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < total {
                let req = ClaimRequest {
                    limit: 4,
                    ..claim_at(10_000)
                };
                let rows = store.claim_due(req).await.unwrap();
                for r in &rows {
                    assert!(
                        claimed_ids.lock().unwrap().insert(r.id),
                        "row {} claimed twice",
                        r.id
                    );
                    let earlier = in_flight.lock().unwrap().insert(r.conversation_id, r.id);
                    assert_eq!(earlier, None, "two rows of one conversation in flight");
                    order
                        .lock()
                        .unwrap()
                        .entry(r.conversation_id)
                        .or_default()
                        .push(r.id);
                }
                for r in &rows {
                    in_flight.lock().unwrap().remove(&r.conversation_id);
                    send_ok(&store, r, &format!("SMout{}", r.id), 10_000).await;
                    done.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for claimer in claimers {
        claimer.await.unwrap();
    }

    assert_eq!(claimed_ids.lock().unwrap().len(), total);
    for (conversation, ids) in order.lock().unwrap().iter() {
        assert_eq!(ids.len(), 3, "conversation {conversation}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {ids:?}");
    }
    let depth = db.store.outbox_depth().await.unwrap();
    assert_eq!(depth.count(OutboxStatus::Sent), total as i64);
    other.close().await;
});

both_stores!(
    expired_lease_is_reclaimed_and_the_old_claim_rejected,
    |db| async move {
        let store = &db.store;
        queue(store, "whatsapp:+1", "SM1", 1_000, &["hello"]).await;

        let first = store.claim_due(claim_at(1_000)).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(
            store.claim_due(claim_at(30_999)).await.unwrap().is_empty(),
            "lease still held"
        );
        assert_eq!(store.next_due_at(true).await.unwrap(), Some(31_000));

        let second = store.claim_due(claim_at(31_000)).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].id, first[0].id);
        assert_ne!(token(&second[0]), token(&first[0]));
        assert_eq!(second[0].attempts, 2);

        // The sender that lost its lease comes back: rejected, nothing changes.
        let sent = SendResult::Sent {
            sid: "SMlate".into(),
        };
        assert!(!store
            .complete_send(first[0].id, token(&first[0]), &sent, 32_000)
            .await
            .unwrap());
        store
            .release_claim(first[0].id, token(&first[0]))
            .await
            .unwrap();
        let r = row(store, "whatsapp:+1", 0).await;
        assert_eq!(r.status, OutboxStatus::Sending);
        assert_eq!(r.claim_token, second[0].claim_token);
        assert_eq!(r.twilio_sid, None);

        send_ok(store, &second[0], "SMgood", 33_000).await;
        let r = row(store, "whatsapp:+1", 0).await;
        assert_eq!(r.status, OutboxStatus::Sent);
        assert_eq!(r.twilio_sid.as_deref(), Some("SMgood"));
        assert_eq!(r.claim_token, None);
        assert_eq!(r.updated_at_ms, 33_000);
        assert!(
            !store
                .complete_send(r.id, token(&second[0]), &sent, 34_000)
                .await
                .unwrap(),
            "a completed claim cannot complete again"
        );
        assert_eq!(store.next_due_at(true).await.unwrap(), None);
    }
);

both_stores!(
    retry_waits_for_its_time_and_keeps_the_line,
    |db| async move {
        let store = &db.store;
        queue(store, "whatsapp:+1", "SM1", 1_000, &["first", "second"]).await;
        let claimed = store.claim_due(claim_at(1_000)).await.unwrap();
        assert_eq!(bodies(&claimed), ["first"]);

        let retry = SendResult::Retry {
            next_attempt_at_ms: 5_000,
            error_code: Some(20429),
            error_message: "Too Many Requests".into(),
        };
        assert!(store
            .complete_send(claimed[0].id, token(&claimed[0]), &retry, 1_100)
            .await
            .unwrap());
        let r = row(store, "whatsapp:+1", 0).await;
        assert_eq!(r.status, OutboxStatus::Queued);
        assert_eq!(r.next_attempt_at_ms, 5_000);
        assert_eq!(r.error_code, Some(20429));
        assert_eq!(r.error_message.as_deref(), Some("Too Many Requests"));
        assert_eq!(r.claim_token, None);
        assert_eq!(r.attempts, 1);

        // "second" is due but must not overtake "first"; the sender sleeps until 5 s.
        assert!(store.claim_due(claim_at(4_999)).await.unwrap().is_empty());
        assert_eq!(store.next_due_at(true).await.unwrap(), Some(5_000));

        let again = store.claim_due(claim_at(5_000)).await.unwrap();
        assert_eq!(bodies(&again), ["first"]);
        assert_eq!(again[0].attempts, 2);
        send_ok(store, &again[0], "SMok", 5_100).await;
        let r = row(store, "whatsapp:+1", 0).await;
        assert_eq!(
            (r.error_code, r.error_message),
            (None, None),
            "a success clears the error"
        );
        assert_eq!(
            bodies(&store.claim_due(claim_at(5_200)).await.unwrap()),
            ["second"]
        );
    }
);

both_stores!(
    failure_is_final_and_unblocks_the_next_reply,
    |db| async move {
        let store = &db.store;
        queue(store, "whatsapp:+1", "SM1", 1_000, &["first", "second"]).await;
        let claimed = store.claim_due(claim_at(1_000)).await.unwrap();
        let failed = SendResult::Failed {
            error_code: Some(21211),
            error_message: "Invalid 'To' Phone Number".into(),
        };
        assert!(store
            .complete_send(claimed[0].id, token(&claimed[0]), &failed, 1_100)
            .await
            .unwrap());

        let r = row(store, "whatsapp:+1", 0).await;
        assert_eq!(r.status, OutboxStatus::Failed);
        assert_eq!(r.error_code, Some(21211));
        assert_eq!(r.claim_token, None);

        let next = store.claim_due(claim_at(1_200)).await.unwrap();
        assert_eq!(bodies(&next), ["second"]);
        send_ok(store, &next[0], "SM2", 1_300).await;
        assert!(
            store
                .claim_due(claim_at(1_000_000))
                .await
                .unwrap()
                .is_empty(),
            "a failed row is never claimed again"
        );
    }
);

both_stores!(
    renew_claims_extends_only_held_claims_and_reports_lost_ones,
    |db| async move {
        let store = &db.store;
        queue(store, "whatsapp:+1", "SM1", 1_000, &["taken"]).await;
        let taken = store.claim_due(claim_at(1_000)).await.unwrap(); // lease to 31_000
        queue(store, "whatsapp:+2", "SM2", 2_000, &["held"]).await;
        queue(store, "whatsapp:+3", "SM3", 2_000, &["done"]).await;
        let later = store.claim_due(claim_at(20_000)).await.unwrap(); // leases to 50_000
        let held = later.iter().find(|r| r.body == "held").unwrap();
        let done = later.iter().find(|r| r.body == "done").unwrap();
        // "taken" expires and another sender claims it; "done" is finished.
        let thief = store.claim_due(claim_at(31_000)).await.unwrap(); // lease to 61_000
        assert_eq!(bodies(&thief), ["taken"]);
        send_ok(store, done, "SMdone", 32_000).await;

        let claims = [
            (taken[0].id, token(&taken[0])),
            (held.id, token(held)),
            (done.id, token(done)),
        ];
        assert_eq!(
            store.renew_claims(&claims, 90_000).await.unwrap(),
            [Renewal::Lost, Renewal::Renewed, Renewal::Lost]
        );
        assert!(store.renew_claims(&[], 90_000).await.unwrap().is_empty());

        // The renewed claim holds past its old lease; the lost one was not
        // extended for the thief either, nor the finished one reopened.
        assert!(store.claim_due(claim_at(60_999)).await.unwrap().is_empty());
        let r = row(store, "whatsapp:+3", 0).await;
        assert_eq!((r.status, r.claim_token), (OutboxStatus::Sent, None));
        assert_eq!(
            bodies(&store.claim_due(claim_at(61_000)).await.unwrap()),
            ["taken"]
        );
        assert!(store.claim_due(claim_at(89_999)).await.unwrap().is_empty());
        assert_eq!(
            bodies(&store.claim_due(claim_at(90_000)).await.unwrap()),
            ["held"]
        );
    }
);

/// Renewal runs beside the sender's own completions, which lock the same rows
/// in their own order: waiting for a row lock could deadlock with one, so a
/// locked row is passed over (`Busy`) and renewed on the next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_claims_passes_over_a_row_another_transaction_holds() {
    use sqlx::Connection;
    let Some(db) = crate::support::db::TestDb::postgres().await else {
        return;
    };
    let store = &db.store;
    queue(store, "whatsapp:+1", "SM1", 1_000, &["one"]).await;
    queue(store, "whatsapp:+2", "SM2", 1_000, &["two"]).await;
    let claimed = store.claim_due(claim_at(1_000)).await.unwrap();
    let claims: Vec<(i64, i64)> = claimed.iter().map(|r| (r.id, token(r))).collect();

    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = other.begin().await.unwrap();
    sqlx::query("SELECT id FROM outbox WHERE id = $1 FOR UPDATE")
        .bind(claims[0].0)
        .execute(&mut *tx)
        .await
        .unwrap();
    let renewed = tokio::time::timeout(Duration::from_secs(5), store.renew_claims(&claims, 90_000))
        .await
        .expect("renewal must not wait for a row lock")
        .unwrap();
    assert_eq!(renewed, [Renewal::Busy, Renewal::Renewed]);
    tx.rollback().await.unwrap();
    assert_eq!(
        store.renew_claims(&claims, 90_000).await.unwrap(),
        [Renewal::Renewed, Renewal::Renewed]
    );
    assert!(store.claim_due(claim_at(89_999)).await.unwrap().is_empty());
}

both_stores!(release_claim_requeues_without_counting, |db| async move {
    let store = &db.store;
    queue(store, "whatsapp:+1", "SM1", 1_000, &["hello"]).await;
    let claimed = store.claim_due(claim_at(2_000)).await.unwrap();
    assert_eq!(claimed[0].attempts, 1);

    store
        .release_claim(claimed[0].id, token(&claimed[0]) ^ 1)
        .await
        .unwrap();
    assert_eq!(
        row(store, "whatsapp:+1", 0).await.status,
        OutboxStatus::Sending,
        "wrong token"
    );

    store
        .release_claim(claimed[0].id, token(&claimed[0]))
        .await
        .unwrap();
    let r = row(store, "whatsapp:+1", 0).await;
    assert_eq!(r.status, OutboxStatus::Queued);
    assert_eq!(r.attempts, 0);
    assert_eq!(r.claim_token, None);
    assert_eq!(
        store.next_due_at(true).await.unwrap(),
        Some(1_000),
        "due at once"
    );

    let again = store.claim_due(claim_at(2_000)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
});

both_stores!(status_callbacks_only_move_forward, |db| async move {
    let store = &db.store;
    queue(store, "whatsapp:+1", "SM1", 1_000, &["one"]).await;
    queue(store, "whatsapp:+2", "SM2", 1_000, &["two"]).await;
    for r in store.claim_due(claim_at(1_000)).await.unwrap() {
        send_ok(store, &r, &format!("SMout-{}", r.body), 1_100).await;
    }
    let update = |sid: &str, status, error_code, now_ms| StatusUpdate {
        bot: BOT.into(),
        sid: sid.into(),
        status,
        error_code,
        error_message: None,
        now_ms,
    };

    let delivered = update("SMout-one", OutboxStatus::Delivered, None, 2_000);
    assert!(store.apply_status(&delivered).await.unwrap());
    assert!(!store.apply_status(&delivered).await.unwrap(), "idempotent");
    let late_sent = update("SMout-one", OutboxStatus::Sent, None, 2_100);
    assert!(!store.apply_status(&late_sent).await.unwrap());
    let r = row(store, "whatsapp:+1", 0).await;
    assert_eq!(r.status, OutboxStatus::Delivered);
    assert_eq!(r.updated_at_ms, 2_000);

    let read = update("SMout-one", OutboxStatus::Read, None, 2_200);
    assert!(store.apply_status(&read).await.unwrap());
    let late_undelivered = update("SMout-one", OutboxStatus::Undelivered, Some(30003), 2_300);
    assert!(!store.apply_status(&late_undelivered).await.unwrap());
    let r = row(store, "whatsapp:+1", 0).await;
    assert_eq!(r.status, OutboxStatus::Read);
    assert_eq!(r.error_code, None);

    let failed = update("SMout-two", OutboxStatus::Failed, Some(30008), 2_400);
    assert!(store.apply_status(&failed).await.unwrap());
    let r = row(store, "whatsapp:+2", 0).await;
    assert_eq!(r.status, OutboxStatus::Failed);
    assert_eq!(r.error_code, Some(30008));
    let late_delivered = update("SMout-two", OutboxStatus::Delivered, None, 2_500);
    assert!(!store.apply_status(&late_delivered).await.unwrap());

    let unknown = update("SMnobody", OutboxStatus::Delivered, None, 2_600);
    assert!(!store.apply_status(&unknown).await.unwrap());
    let other_bot = StatusUpdate {
        bot: "other-bot".into(),
        ..update("SMout-one", OutboxStatus::Failed, Some(1), 2_700)
    };
    assert!(
        !store.apply_status(&other_bot).await.unwrap(),
        "SIDs are per bot"
    );
});

both_stores!(prune_deletes_only_finished_old_rows, |db| async move {
    let store = &db.store;
    // Finished long ago: one sent, one failed.
    queue(store, "whatsapp:+1", "SMold1", 1_000, &["old sent"]).await;
    queue(store, "whatsapp:+2", "SMold2", 1_000, &["old failed"]).await;
    let claimed = store.claim_due(claim_at(1_000)).await.unwrap();
    assert_eq!(bodies(&claimed), ["old sent", "old failed"]);
    send_ok(store, &claimed[0], "SMa", 2_000).await;
    let failed = SendResult::Failed {
        error_code: None,
        error_message: "no".into(),
    };
    assert!(store
        .complete_send(claimed[1].id, token(&claimed[1]), &failed, 2_000)
        .await
        .unwrap());

    // Old but unfinished: one queued, one sending. Recent: one sent.
    queue(store, "whatsapp:+3", "SMold3", 1_000, &["old queued"]).await;
    queue(store, "whatsapp:+4", "SMold4", 1_000, &["old sending"]).await;
    queue(store, "whatsapp:+5", "SMnew", 90_000, &["new sent"]).await;
    let claimed = store.claim_due(claim_at(90_000)).await.unwrap();
    assert_eq!(bodies(&claimed), ["old queued", "old sending", "new sent"]);
    store
        .release_claim(claimed[0].id, token(&claimed[0]))
        .await
        .unwrap();
    send_ok(store, &claimed[2], "SMb", 90_000).await;

    // 2 outbox rows and 4 inbound rows (SMold1..4) are older than the cut-off.
    assert_eq!(store.prune(50_000).await.unwrap(), 6);
    assert!(store
        .outbox_for(BOT, "whatsapp:+1")
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .outbox_for(BOT, "whatsapp:+2")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        row(store, "whatsapp:+3", 0).await.status,
        OutboxStatus::Queued
    );
    assert_eq!(
        row(store, "whatsapp:+4", 0).await.status,
        OutboxStatus::Sending
    );
    assert_eq!(
        row(store, "whatsapp:+5", 0).await.status,
        OutboxStatus::Sent
    );
    assert_eq!(store.inbound_count(BOT).await.unwrap(), 1);
    assert!(
        store
            .conversation(BOT, "whatsapp:+1")
            .await
            .unwrap()
            .is_some(),
        "conversations are kept"
    );
    assert_eq!(store.prune(50_000).await.unwrap(), 0);
});

both_stores!(outbox_depth_counts_every_status, |db| async move {
    let store = &db.store;
    let depth = store.outbox_depth().await.unwrap();
    assert_eq!(depth.counts.len(), OutboxStatus::ALL.len());
    assert!(depth.counts.iter().all(|(_, n)| *n == 0));

    queue(store, "whatsapp:+1", "SM1", 1_000, &["a1", "a2"]).await;
    queue(store, "whatsapp:+2", "SM2", 1_000, &["b1"]).await;
    queue(store, "whatsapp:+3", "SM3", 1_000, &["c1"]).await;
    let claimed = store.claim_due(claim_at(1_000)).await.unwrap();
    assert_eq!(bodies(&claimed), ["a1", "b1", "c1"]);
    send_ok(store, &claimed[0], "SMa1", 1_100).await;
    let failed = SendResult::Failed {
        error_code: Some(21610),
        error_message: "unsubscribed".into(),
    };
    assert!(store
        .complete_send(claimed[1].id, token(&claimed[1]), &failed, 1_100)
        .await
        .unwrap());

    let depth = store.outbox_depth().await.unwrap();
    assert_eq!(depth.count(OutboxStatus::Queued), 1);
    assert_eq!(depth.count(OutboxStatus::Sending), 1);
    assert_eq!(depth.count(OutboxStatus::Sent), 1);
    assert_eq!(depth.count(OutboxStatus::Failed), 1);
    assert_eq!(depth.count(OutboxStatus::Delivered), 0);
});

both_stores!(listen_and_notify, |db| async move {
    let listener = db.store.listen_outbox().await.unwrap();
    db.store.notify_outbox().await.unwrap();
    match db.store.backend() {
        Backend::Sqlite => assert!(listener.is_none()),
        Backend::Postgres => {
            let mut listener = listener.expect("Postgres listens");
            db.store.notify_outbox().await.unwrap();
            tokio::time::timeout(Duration::from_secs(30), listener.recv())
                .await
                .expect("a NOTIFY wakes the listener")
                .unwrap();
        }
    }
});

both_stores!(a_closed_store_reports_unavailable, |db| async move {
    db.store.ping().await.unwrap();
    db.store.close().await;
    let err = db.store.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let err = db
        .store
        .process_inbound(&inbound("whatsapp:+1", "SM1", 1), replying("main", 1, &[]))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
});

#[tokio::test]
async fn unreachable_postgres_is_an_unavailable_error_not_a_hang() {
    // Nothing listens on port 1; the pool keeps retrying until its acquire
    // timeout, shortened here to keep the test quick.
    let options = StoreOptions {
        acquire_timeout: Duration::from_millis(300),
        ..StoreOptions::default()
    };
    let err = Store::connect_with("postgres://postgres@127.0.0.1:1/none", &options)
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test]
async fn sqlite_file_is_created_by_connect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    assert!(!path.exists());
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert!(path.exists());
    queue(&store, "whatsapp:+1", "SM1", 1_000, &["hi"]).await;
    store.close().await;

    // Reopened, the data is there and migrating again is a no-op.
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.inbound_count(BOT).await.unwrap(), 1);
}

#[tokio::test]
async fn sqlite_in_memory_works_on_its_one_connection() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    queue(&store, "whatsapp:+1", "SM1", 1_000, &["hi", "there"]).await;
    let claimed = store.claim_due(claim_at(1_000)).await.unwrap();
    assert_eq!(bodies(&claimed), ["hi"]);
    assert_eq!(store.inbound_count(BOT).await.unwrap(), 1);
}

#[tokio::test]
async fn unknown_url_scheme_is_refused() {
    let err = Store::connect("mysql://localhost/x").await.err().unwrap();
    assert!(err.to_string().contains("mysql://localhost/x"), "{err}");
    assert!(!err.is_unavailable());
}

both_stores!(
    batched_completions_record_each_outcome_and_skip_lost_claims,
    |db| async move {
        let store = &db.store;
        for contact in ["whatsapp:+1", "whatsapp:+2", "whatsapp:+3", "whatsapp:+4"] {
            queue(store, contact, &format!("SM{contact}"), 1_000, &["hi"]).await;
        }
        // A previous send of +5 already finished: its stale token must not match.
        queue(store, "whatsapp:+5", "SM5", 1_000, &["hi"]).await;
        let claimed = store.claim_due(claim_at(1_000)).await.unwrap();
        assert_eq!(claimed.len(), 5);
        let by_contact: HashMap<&str, &OutboxRow> =
            claimed.iter().map(|r| (r.contact.as_str(), r)).collect();
        let completion = |contact: &str, token_of: i64, result: SendResult| Completion {
            id: by_contact[contact].id,
            claim_token: token_of,
            result,
            now_ms: 2_000,
        };
        let batch = vec![
            completion(
                "whatsapp:+1",
                token(by_contact["whatsapp:+1"]),
                SendResult::Sent { sid: "SMa".into() },
            ),
            completion(
                "whatsapp:+2",
                token(by_contact["whatsapp:+2"]),
                SendResult::Retry {
                    next_attempt_at_ms: 9_000,
                    error_code: None,
                    error_message: "Twilio answered 500".into(),
                },
            ),
            // A claim that was lost: wrong token.
            completion(
                "whatsapp:+3",
                token(by_contact["whatsapp:+3"]) ^ 1,
                SendResult::Sent { sid: "SMc".into() },
            ),
            completion(
                "whatsapp:+4",
                token(by_contact["whatsapp:+4"]),
                SendResult::Failed {
                    error_code: Some(21211),
                    error_message: "Invalid 'To' Phone Number".into(),
                },
            ),
        ];
        assert_eq!(
            store.complete_sends(&batch).await.unwrap(),
            [true, true, false, true]
        );

        let r = row(store, "whatsapp:+1", 0).await;
        assert_eq!(
            (
                r.status,
                r.twilio_sid.as_deref(),
                r.claim_token,
                r.updated_at_ms
            ),
            (OutboxStatus::Sent, Some("SMa"), None, 2_000)
        );
        let r = row(store, "whatsapp:+2", 0).await;
        assert_eq!(
            (r.status, r.next_attempt_at_ms, r.error_code, r.twilio_sid),
            (OutboxStatus::Queued, 9_000, None, None)
        );
        assert_eq!(r.error_message.as_deref(), Some("Twilio answered 500"));
        let r = row(store, "whatsapp:+3", 0).await;
        assert_eq!(
            r.status,
            OutboxStatus::Sending,
            "a lost claim changes nothing"
        );
        assert!(r.claim_token.is_some());
        let r = row(store, "whatsapp:+4", 0).await;
        assert_eq!(
            (r.status, r.error_code, r.next_attempt_at_ms),
            (OutboxStatus::Failed, Some(21211), 1_000)
        );

        // Completing +5 twice: the second batch finds its claim gone.
        let five = by_contact["whatsapp:+5"];
        let done = completion(
            "whatsapp:+5",
            token(five),
            SendResult::Sent { sid: "SMe".into() },
        );
        let again = completion(
            "whatsapp:+3",
            token(by_contact["whatsapp:+3"]),
            SendResult::Sent { sid: "SMc".into() },
        );
        assert_eq!(
            store.complete_sends(&[done.clone(), again]).await.unwrap(),
            [true, true]
        );
        assert_eq!(
            store.complete_sends(&[done.clone(), done]).await.unwrap(),
            [false, false]
        );
        assert!(store.complete_sends(&[]).await.unwrap().is_empty());
    }
);
