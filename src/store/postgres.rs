//! The Postgres store: production, shared by several instances.

use super::StoreError;

#[derive(Clone)]
pub(super) struct PgStore {
    pub(super) pool: sqlx::PgPool,
}

impl PgStore {
    pub(super) async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let _ = url;
        todo!("store helper")
    }
}
