//! Shared test helpers.

pub mod app;
pub mod db;
pub mod fake_twilio;
pub mod webhook;

/// Defines one async test per store: `NAME::sqlite` and `NAME::postgres`.
/// The body gets `db: db::TestDb` (a fresh, migrated database).
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
