//! A fresh database per test: a SQLite file in a temp dir, or a new Postgres
//! database on the server `DATABASE_URL` points at; `both_stores!` runs a test on each.

use std::io::Write;
use std::sync::Once;

use switchboard::store::Store;

/// Defines one async test per store: `NAME::sqlite` and `NAME::postgres`.
/// The body gets `db: TestDb` (a fresh, migrated database). A test binary that
/// includes this file without the rest of `support` makes it reachable as
/// `crate::support::db`.
///
/// ```ignore
/// both_stores!(dedupe, |db| async move { let store = db.store.clone(); ... });
/// ```
#[macro_export]
macro_rules! both_stores {
    ($name:ident, |$db:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::support::db::TestDb::sqlite().await;
                $body.await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($db) = $crate::support::db::TestDb::postgres().await else {
                    return;
                };
                $body.await
            }
        }
    };
}

pub struct TestDb {
    pub url: String,
    pub store: Store,
    /// Keeps the SQLite file's folder alive.
    pub _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let store = Store::connect(&url).await.expect("open SQLite");
        store.migrate().await.expect("migrate SQLite");
        TestDb {
            url,
            store,
            _dir: Some(dir),
        }
    }

    /// `None` (after printing one visible line for the whole run) when
    /// `DATABASE_URL` is unset. Panics when it is set but Postgres is unreachable:
    /// CI must never pass without really testing Postgres.
    pub async fn postgres() -> Option<TestDb> {
        let url = fresh_postgres_url().await?;
        let store = Store::connect(&url)
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate Postgres");
        Some(TestDb {
            url,
            store,
            _dir: None,
        })
    }
}

/// Creates a new, empty database and returns its URL; `None` without `DATABASE_URL`.
pub async fn fresh_postgres_url() -> Option<String> {
    let Ok(admin_url) = std::env::var("DATABASE_URL") else {
        note_postgres_skipped();
        return None;
    };
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!("DATABASE_URL is set but Postgres is unreachable ({admin_url}): {e}")
        });
    drop_stale_databases(&mut admin).await;
    let name = format!(
        "sb_test_{}_{}_{}",
        unix_now(),
        std::process::id(),
        rand::random::<u64>() % 1_000_000_000_000
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let base = match admin_url.rfind('/') {
        Some(i) if !admin_url[..i].ends_with('/') => &admin_url[..i],
        _ => admin_url.as_str(),
    };
    Some(format!("{base}/{name}"))
}

/// Written straight to the process's stderr (not the test harness's capture), once.
fn note_postgres_skipped() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = std::io::stderr().write_all(
            b"\nNOTE: DATABASE_URL is not set: the tests on Postgres were SKIPPED (SQLite only).\n\n",
        );
    });
}

/// Drops the databases test runs left behind more than two hours ago (once per
/// run), so they do not pile up on the server. Names carry their creation time;
/// younger ones may belong to a test binary running right now, so they stay.
async fn drop_stale_databases(admin: &mut sqlx::PgConnection) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    if DONE.initialized() {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'sb\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    let cutoff = unix_now().saturating_sub(2 * 3600);
    for name in names {
        let created = name
            .strip_prefix("sb_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        // Names from before timestamps were added have a pid there: also old.
        if created.is_none_or(|t| t < cutoff) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *admin)
                .await;
        }
    }
    let _ = DONE.set(());
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
