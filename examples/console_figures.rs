//! Figures for docs/console.md: how long the console's pages take with many
//! rows, and the query plans behind them.
//!
//! ```text
//! cargo run --release --example console_figures                 # SQLite in a temp folder
//! DATABASE_URL=postgres://... cargo run --release --example console_figures
//! cargo run --release --example console_figures -- 20000 500     # conversations, timeline
//! ```
//!
//! Fills a fresh database through the store's own write path (each message
//! one transaction, as the webhook writes it): N conversations of one message
//! and one reply each (default 100,000), and one conversation of M messages
//! (default 1,000, each with a reply). Then renders, through the console
//! itself, the conversations page (first and a deep page), a search, and the
//! long conversation's timeline; prints the median of 20 renders of each and
//! the `EXPLAIN` of every console query. On Postgres it uses a new database
//! next to the one `DATABASE_URL` names, and drops it after.

use std::future::ready;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::console::{Console, ConversationsQuery};
use switchboard::domain::{ConversationState, SystemClock};
use switchboard::flow::Registry;
use switchboard::message::Reply;
use switchboard::outbox_signal::OutboxSignal;
use switchboard::script::ScriptEngine;
use switchboard::store::{Cursor, NewInbound, StepOutput, Store};

const BOT: &str = "figures";
const RUNS: usize = 20;

async fn message(store: &Store, contact: &str, n: usize, at: i64) {
    let msg = NewInbound {
        bot: BOT.into(),
        contact: contact.into(),
        message_sid: format!("SM{n:032x}"),
        body: format!("message {n}"),
        payload: json!({ "text": format!("message {n}"), "media": [] }),
        received_at_ms: at,
    };
    store
        .process_inbound(&msg, |_| {
            ready(StepOutput {
                state: ConversationState {
                    node: Some("main".into()),
                    handler: None,
                    vars: Default::default(),
                    updated_at_ms: at,
                    ..ConversationState::default()
                },
                replies: vec![Reply::text(format!("reply to {n}"))],
            })
        })
        .await
        .expect("write a message");
}

/// The median of `RUNS` timings of `f`.
async fn median<F, Fut>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    times.sort();
    times[RUNS / 2]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let conversations: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let timeline: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);

    let dir = tempfile::tempdir().unwrap();
    let (url, admin) = match std::env::var("DATABASE_URL") {
        Ok(admin_url) => {
            let name = format!("sb_figures_{}", std::process::id());
            let base = &admin_url[..admin_url.rfind('/').unwrap()];
            (format!("{base}/{name}"), Some((admin_url, name)))
        }
        Err(_) => (
            format!("sqlite://{}", dir.path().join("figures.db").display()),
            None,
        ),
    };
    if let Some((admin_url, name)) = &admin {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
    }
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    println!("backend: {:?}", store.backend());

    let start = Instant::now();
    let t0 = 1_700_000_000_000_i64;
    for n in 0..conversations {
        message(&store, &format!("whatsapp:+1{n:010}"), n, t0 + n as i64).await;
    }
    let long = "whatsapp:+19999999999";
    for n in 0..timeline {
        message(
            &store,
            long,
            conversations + n,
            t0 + (conversations + n) as i64,
        )
        .await;
    }
    println!(
        "filled {conversations} conversations and a {timeline}-message one in {:.1?}",
        start.elapsed()
    );
    if admin.is_some() {
        // What autovacuum's analyze does after a load like this in production;
        // this machine runs Postgres with autovacuum off, and without statistics
        // the planner takes 100,000 rows for a few hundred.
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        sqlx::query("ANALYZE").execute(&mut c).await.unwrap();
    }

    let console = Arc::new(Console::new(
        "",
        store.clone(),
        Arc::new(Registry::new()),
        ScriptEngine::default(),
        Arc::new(SystemClock),
        OutboxSignal::default(),
    ));
    let session = console.sessions().start(Instant::now());

    // A cursor deep in the list: the 50,000th newest conversation or so.
    let deep = Cursor {
        at_ms: t0 + (conversations / 2) as i64,
        id: i64::MAX,
    };
    let pages: [(&str, ConversationsQuery); 3] = [
        (
            "conversations page, newest",
            ConversationsQuery {
                bot: Some(BOT.into()),
                ..Default::default()
            },
        ),
        (
            "conversations page, half way down",
            ConversationsQuery {
                bot: Some(BOT.into()),
                before: Some(format!("{}.{}", deep.at_ms, deep.id)),
                ..Default::default()
            },
        ),
        (
            "search by contact",
            ConversationsQuery {
                bot: Some(BOT.into()),
                q: Some("+10000000042".into()),
                ..Default::default()
            },
        ),
    ];
    let (c, s) = (&console, &session);
    for (name, query) in &pages {
        let time = median(move || async move {
            c.conversations_page(s, query).await.unwrap();
        })
        .await;
        let bytes = console
            .conversations_page(&session, query)
            .await
            .unwrap()
            .len();
        println!("{name}: {time:.2?} ({bytes} bytes of HTML)");
    }
    let id = store.search_conversations(BOT, long).await.unwrap()[0].id;
    let time = median(move || async move {
        c.conversation_page(s, id, None, None).await.unwrap();
    })
    .await;
    let bytes = console
        .conversation_page(&session, id, None, None)
        .await
        .unwrap()
        .len();
    println!(
        "timeline of the {timeline}-message conversation, newest page: {time:.2?} ({bytes} bytes of HTML)"
    );

    for (name, plan) in store.console_plans(BOT).await.unwrap() {
        println!("\n-- {name}\n{plan}");
    }

    store.close().await;
    if let Some((admin_url, name)) = admin {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE {name}"))
            .execute(&mut c)
            .await;
    }
}
