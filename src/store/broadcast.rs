//! Broadcasts (SPEC §9.3): one `broadcasts` row and one `starts` row per
//! contact, inserted in one transaction (accepted whole or not at all); the
//! scheduler runs the starts like any other, so a broadcast's contacts are
//! started in batches, skipped with reasons, and survive restarts.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::outbound::IfActive;
use super::{record, Inner, Store, StoreError};

/// Contacts inserted per statement: large enough that 100,000 take a few
/// dozen statements, small enough to stay far below any parameter limit (the
/// contacts travel as one array or JSON text per column).
const CHUNK: usize = 5_000;

/// A broadcast to record.
#[derive(Debug, Clone)]
pub struct NewBroadcast {
    pub bot: String,
    pub node: String,
    pub if_active: IfActive,
    pub run_at_ms: i64,
    /// Each contact's address and vars.
    pub contacts: Vec<(String, Map<String, Value>)>,
    pub now_ms: i64,
}

/// Where a broadcast stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastProgress {
    pub id: i64,
    pub bot: String,
    pub node: String,
    pub total: i64,
    /// Contacts not yet run.
    pub pending: i64,
    pub started: i64,
    pub cancelled: i64,
    /// Skipped contacts by reason (`opted_out`, `active`, `outside_window`...).
    pub skipped: BTreeMap<String, i64>,
    /// Messages the started conversations queued, by how they ended so far.
    pub sent: i64,
    pub failed: i64,
    /// `running`, `done` (every contact run or skipped) or `cancelled`.
    pub status: String,
    pub created_at_ms: i64,
    /// When its contacts are due.
    pub run_at_ms: i64,
}

impl Store {
    /// Records a broadcast and one scheduled start per contact, all in one
    /// transaction; answers its id.
    pub async fn insert_broadcast(&self, new: &NewBroadcast) -> Result<i64, StoreError> {
        let total = i64::try_from(new.contacts.len()).unwrap_or(i64::MAX);
        let insert = contacts_sql(&self.inner);
        let id = on_pool!(self, |pool| {
            async {
                let mut tx = sqlx::Acquire::begin(pool).await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO broadcasts (bot, node, if_active, run_at, total, status, \
                         created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 'running', $6, $6) RETURNING id",
                )
                .bind(&new.bot)
                .bind(&new.node)
                .bind(new.if_active.as_str())
                .bind(new.run_at_ms)
                .bind(total)
                .bind(new.now_ms)
                .fetch_one(&mut *tx)
                .await?;
                for chunk in new.contacts.chunks(CHUNK) {
                    // Both backends read the contacts from one JSON array of
                    // `[to, vars]` pairs.
                    let rows: Vec<(&str, &Map<String, Value>)> =
                        chunk.iter().map(|(to, vars)| (to.as_str(), vars)).collect();
                    sqlx::query(&insert)
                        .bind(id)
                        .bind(&new.bot)
                        .bind(&new.node)
                        .bind(new.if_active.as_str())
                        .bind(new.run_at_ms)
                        .bind(new.now_ms)
                        .bind(record::to_json(&rows))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok::<_, sqlx::Error>(id)
            }
            .await
        })?;
        Ok(id)
    }

    /// A page of `bot`'s broadcasts, newest first, after `from`
    /// (`created_at`, id), each with its progress: a walk of
    /// `broadcasts_bot_created` (migrations: SQLite 0010, Postgres 0012), then
    /// [`Store::broadcast`] for each.
    pub async fn broadcasts(
        &self,
        bot: &str,
        from: super::Cursor,
        page: usize,
    ) -> Result<super::Page<BroadcastProgress>, StoreError> {
        let mut heads: Vec<(i64, i64)> = on_read_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, created_at FROM broadcasts \
                 WHERE bot = $1 AND (created_at, id) < ($2, $3) \
                 ORDER BY created_at DESC, id DESC LIMIT $4",
            )
            .bind(bot)
            .bind(from.at_ms)
            .bind(from.id)
            .bind(i64::try_from(page + 1).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await
        })?;
        let next = super::console::page_end(&mut heads, page, |(id, at_ms)| super::Cursor {
            at_ms: *at_ms,
            id: *id,
        });
        let mut rows = Vec::with_capacity(heads.len());
        for (id, _) in heads {
            // A broadcast is never deleted, so each is still there.
            rows.extend(self.broadcast(id).await?);
        }
        Ok(super::Page { rows, next })
    }

    /// A broadcast's progress; `None` for an id never given. Read on SQLite's
    /// read connections: the console lists many at once.
    pub async fn broadcast(&self, id: i64) -> Result<Option<BroadcastProgress>, StoreError> {
        type Head = (i64, String, String, i64, String, i64, i64);
        let head: Option<Head> = on_read_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, bot, node, total, status, created_at, run_at FROM broadcasts \
                 WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        let Some((id, bot, node, total, status, created_at_ms, run_at_ms)) = head else {
            return Ok(None);
        };
        let counts: Vec<(String, Option<String>, i64)> = on_read_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT status, reason, COUNT(*) FROM starts WHERE broadcast_id = $1 \
                 GROUP BY status, reason",
            )
            .bind(id)
            .fetch_all(pool)
            .await
        })?;
        // The messages its started conversations queued: a walk of
        // `outbox_broadcast`.
        let messages: Vec<(String, i64)> = on_read_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT status, COUNT(*) FROM outbox WHERE broadcast_id = $1 GROUP BY status",
            )
            .bind(id)
            .fetch_all(pool)
            .await
        })?;
        let mut progress = BroadcastProgress {
            id,
            bot,
            node,
            total,
            pending: 0,
            started: 0,
            cancelled: 0,
            skipped: BTreeMap::new(),
            sent: 0,
            failed: 0,
            status,
            created_at_ms,
            run_at_ms,
        };
        for (status, reason, n) in counts {
            match status.as_str() {
                "scheduled" | "running" => progress.pending += n,
                "started" => progress.started += n,
                "cancelled" => progress.cancelled += n,
                _ => {
                    *progress
                        .skipped
                        .entry(reason.unwrap_or_else(|| "unknown".to_owned()))
                        .or_default() += n
                }
            }
        }
        for (status, n) in messages {
            match status.as_str() {
                "sent" | "delivered" | "read" => progress.sent += n,
                "failed" | "undelivered" => progress.failed += n,
                _ => {}
            }
        }
        if progress.status == "running" && progress.pending == 0 {
            progress.status = "done".to_owned();
        }
        Ok(Some(progress))
    }

    /// Cancels what of a broadcast has not started; `false` for an id never
    /// given.
    pub async fn cancel_broadcast(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let found = on_pool!(self, |pool| {
            async {
                let mut tx = sqlx::Acquire::begin(pool).await?;
                let found = sqlx::query(
                    "UPDATE broadcasts SET status = 'cancelled', updated_at = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(
                    "UPDATE starts SET status = 'cancelled', updated_at = $2 \
                     WHERE broadcast_id = $1 AND status = 'scheduled'",
                )
                .bind(id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(found > 0)
            }
            .await
        })?;
        Ok(found)
    }
}

/// One scheduled start per contact of a chunk (`$7`, a JSON array of
/// `[to, vars]`, read the backend's way), in the array's order.
const INSERT_CONTACTS: &str = "INSERT INTO starts (broadcast_id, bot, contact, node, vars, \
         if_active, run_at, status, answer, created_at, updated_at) \
     SELECT $1, $2, CONTACT, $3, VARS, $4, $5, 'scheduled', 'scheduled', $6, $6 FROM ROWS";

/// [`INSERT_CONTACTS`] for the backend of `inner`.
fn contacts_sql(inner: &Inner) -> String {
    let (contact, vars, rows) = match inner {
        Inner::Sqlite(_) => (
            "json_extract(r.value, '$[0]')",
            "json(json_extract(r.value, '$[1]'))",
            "json_each($7) AS r ORDER BY r.key",
        ),
        Inner::Postgres(_) => (
            "r.value->>0",
            "(r.value->1)::TEXT",
            "jsonb_array_elements($7::JSONB) WITH ORDINALITY AS r(value, n) ORDER BY r.n",
        ),
    };
    INSERT_CONTACTS
        .replace("CONTACT", contact)
        .replace("VARS", vars)
        .replace("ROWS", rows)
}
