//! The SQLite store: the embedded default, one process.

use super::StoreError;

#[derive(Clone)]
pub(super) struct SqliteStore {
    pub(super) pool: sqlx::SqlitePool,
}

impl SqliteStore {
    pub(super) async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        let _ = url;
        todo!("store helper")
    }
}
