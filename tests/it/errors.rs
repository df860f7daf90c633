//! Error types either print their cause or return it as `source`, never both: with
//! both, `{:#}` (how `main` prints an error) shows the cause twice. Each error is
//! made the way users meet it where possible, and its full text must still say
//! what went wrong.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use switchboard::conversation::FlowError;
use switchboard::flow::{self, Registry, WatchOptions};
use switchboard::script::{ScriptEngine, ScriptError};
use switchboard::store::StoreError;
use switchboard::{App, Config, StartError};

use crate::support::db::TestDb;

/// `error` and its causes joined by `: `, as anyhow's `{:#}` prints them; fails
/// when one of them prints the cause it also returns as `source`.
fn full_text(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut current = error;
    while let Some(source) = current.source() {
        let (outer, inner) = (current.to_string(), source.to_string());
        assert!(
            !outer.contains(&inner),
            "`{outer}` prints its source `{inner}` and also returns it"
        );
        text = format!("{text}: {inner}");
        current = source;
    }
    text
}

#[tokio::test]
async fn start_errors_print_each_cause_once() {
    let db = TestDb::sqlite().await;
    let flows = tempfile::tempdir().unwrap();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = Config::new(flows.path(), &db.url);
    config.watch = false;
    config.metrics_listen = Some(taken.local_addr().unwrap());
    let error = App::builder(config).build().await.expect_err("port taken");
    assert!(
        matches!(error, StartError::MetricsListen { .. }),
        "{error:?}"
    );
    let text = full_text(&error);
    assert!(
        text.contains("--metrics-listen") && text.contains("in use"),
        "{text}"
    );

    let config = Config::new(flows.path(), &db.url);
    let error = App::builder(config)
        .script_function("not a name", || Ok::<_, String>(1))
        .build()
        .await
        .expect_err("bad function name");
    let text = full_text(&error);
    assert!(
        text.contains("`not a name` is not a valid function name"),
        "{text}"
    );

    let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
    let text = full_text(&StartError::Io(io));
    assert!(text.contains("address in use"), "{text}");
}

#[tokio::test]
async fn store_errors_print_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("no/such/dir/x.db").display());
    let error = switchboard::store::Store::connect(&url)
        .await
        .expect_err("no such folder");
    let text = full_text(&error);
    assert!(
        text.contains("database error") && text.contains("open"),
        "{text}"
    );

    let flows = tempfile::tempdir().unwrap();
    let error = App::builder(Config::new(flows.path(), &url))
        .build()
        .await
        .expect_err("no such folder");
    assert!(full_text(&error).contains("open"), "{error}");

    let migrate = StoreError::Migrate(sqlx::migrate::MigrateError::VersionMissing(7));
    let text = full_text(&migrate);
    assert!(text.contains("migration") && text.contains('7'), "{text}");
}

#[tokio::test]
async fn flow_and_watch_errors_print_each_cause_once() {
    let script = ScriptError {
        file: PathBuf::from("flows/shop/quote.rhai"),
        line: Some(3),
        message: "too many operations".into(),
        needs_turn: false,
    };
    let text = full_text(&FlowError::from(script));
    assert!(text.contains("quote.rhai:3: too many operations"), "{text}");

    let missing = tempfile::tempdir().unwrap().path().join("gone");
    let error = flow::watch(
        &missing,
        Arc::new(Registry::new()),
        ScriptEngine::default(),
        WatchOptions::default(),
    )
    .expect_err("no such folder");
    let text = full_text(&error);
    assert!(
        text.contains("gone") && text.contains("No such file"),
        "{text}"
    );
}
