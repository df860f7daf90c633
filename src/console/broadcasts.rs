//! The console's broadcasts and scheduled starts pages (SPEC §10.3): a bot's
//! broadcasts, newest first, with their progress and a cancel button; its
//! pending starts of its own, due first, each with a cancel button. Reads go
//! through `store/` (indexed walks that stop after a page), actions through
//! the same store calls as the API (`DELETE /api/broadcasts/{id}`,
//! `DELETE /api/scheduled/{id}`).

use minijinja::context;
use serde::Serialize;

use super::{parse_cursor, when, Console, ConsoleError, Note, Session};
use crate::store::{BroadcastProgress, CancelStart, Cursor, StartRow};

/// Broadcasts per page: each shows its progress, a few counts per broadcast.
pub const BROADCASTS_PAGE: usize = 20;
/// Scheduled starts per page.
pub const SCHEDULED_PAGE: usize = 50;

/// What the broadcasts page's query string may ask.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct BroadcastsQuery {
    pub bot: Option<String>,
    pub before: Option<String>,
    pub note: Option<String>,
}

/// What the scheduled starts page's query string may ask.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ScheduledQuery {
    pub bot: Option<String>,
    pub after: Option<String>,
    pub note: Option<String>,
}

#[derive(Serialize)]
struct BroadcastView {
    id: i64,
    node: String,
    status: String,
    status_class: &'static str,
    total: i64,
    pending: i64,
    started: i64,
    sent: i64,
    failed: i64,
    cancelled: i64,
    skipped: i64,
    /// `reason: count` for each reason contacts were skipped.
    skipped_reasons: Vec<String>,
    created_at: String,
    run_at: String,
    can_cancel: bool,
}

fn broadcast_view(b: BroadcastProgress) -> BroadcastView {
    let status_class = match b.status.as_str() {
        "done" => "ok",
        "cancelled" => "bad",
        _ => "pending",
    };
    BroadcastView {
        can_cancel: b.status == "running",
        skipped: b.skipped.values().sum(),
        skipped_reasons: b
            .skipped
            .iter()
            .map(|(reason, n)| format!("{}: {n}", reason.replace('_', " ")))
            .collect(),
        id: b.id,
        node: b.node,
        status: b.status,
        status_class,
        total: b.total,
        pending: b.pending,
        started: b.started,
        sent: b.sent,
        failed: b.failed,
        cancelled: b.cancelled,
        created_at: when(b.created_at_ms),
        run_at: when(b.run_at_ms),
    }
}

#[derive(Serialize)]
struct StartView {
    id: i64,
    contact: String,
    node: String,
    vars: String,
    run_at: String,
    if_active: &'static str,
    created_at: String,
}

fn start_view(s: StartRow) -> StartView {
    StartView {
        id: s.id,
        contact: s.contact,
        node: s.node,
        vars: serde_json::to_string(&s.vars).unwrap_or_default(),
        run_at: when(s.run_at_ms),
        if_active: s.if_active.as_str(),
        created_at: when(s.created_at_ms),
    }
}

impl Console {
    /// A bot's broadcasts, newest first, with their progress.
    pub async fn broadcasts_page(
        &self,
        session: &Session,
        query: &BroadcastsQuery,
    ) -> Result<String, ConsoleError> {
        let (bot, bots) = self.chosen_bot(query.bot.as_deref())?;
        let from = parse_cursor(query.before.as_deref(), Cursor::NEWEST)?;
        let page = if bot.is_empty() {
            Default::default()
        } else {
            self.store.broadcasts(&bot, from, BROADCASTS_PAGE).await?
        };
        let here = format!("{}/broadcasts?bot={bot}", self.base);
        self.page(
            Some(session),
            "Broadcasts",
            "broadcasts",
            query.note.as_deref(),
            "broadcasts.html",
            context! {
                bot => &bot,
                bots => bots,
                here => here,
                rows => page.rows.into_iter().map(broadcast_view).collect::<Vec<_>>(),
                next => page.next.map(|c| c.to_string()),
            },
        )
    }

    /// Cancels what of broadcast `id` has not started.
    pub async fn cancel_broadcast(&self, id: i64) -> Result<Note, ConsoleError> {
        let now_ms = self.clock.now().timestamp_millis();
        if self.store.cancel_broadcast(id, now_ms).await? {
            tracing::info!(broadcast_id = id, "broadcast cancelled from the console");
            Ok(Note::BroadcastCancelled)
        } else {
            Err(ConsoleError::NotFound(format!(
                "there is no broadcast {id}"
            )))
        }
    }

    /// A bot's pending starts of its own, due first.
    pub async fn scheduled_page(
        &self,
        session: &Session,
        query: &ScheduledQuery,
    ) -> Result<String, ConsoleError> {
        let (bot, bots) = self.chosen_bot(query.bot.as_deref())?;
        let from = parse_cursor(query.after.as_deref(), Cursor::OLDEST)?;
        let page = if bot.is_empty() {
            Default::default()
        } else {
            self.store
                .scheduled_page(&bot, from, SCHEDULED_PAGE)
                .await?
        };
        let here = format!("{}/scheduled?bot={bot}", self.base);
        self.page(
            Some(session),
            "Scheduled starts",
            "scheduled",
            query.note.as_deref(),
            "scheduled.html",
            context! {
                bot => &bot,
                bots => bots,
                here => here,
                rows => page.rows.into_iter().map(start_view).collect::<Vec<_>>(),
                next => page.next.map(|c| c.to_string()),
            },
        )
    }

    /// Cancels scheduled start `id`, unless it ran.
    pub async fn cancel_scheduled(&self, id: i64) -> Result<Note, ConsoleError> {
        let now_ms = self.clock.now().timestamp_millis();
        match self.store.cancel_start(id, now_ms).await? {
            CancelStart::Cancelled => {
                tracing::info!(start_id = id, "scheduled start cancelled from the console");
                Ok(Note::StartCancelled)
            }
            CancelStart::Ran(_) => Ok(Note::StartNotCancelled),
            CancelStart::NotFound => Err(ConsoleError::NotFound(format!(
                "there is no scheduled start {id}"
            ))),
        }
    }
}
