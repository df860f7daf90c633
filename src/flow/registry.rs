//! The live set of bots, swapped atomically on reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use super::{Bot, BotId, Diagnostic};

/// What `/api/bots` shows of one bot.
#[derive(Debug, Clone)]
pub struct BotStatus {
    pub id: BotId,
    pub name: String,
    pub loaded_at: Option<DateTime<Utc>>,
    pub nodes: usize,
    pub errors: Vec<Diagnostic>,
}

/// Bots by id. A request takes one `Arc<Bot>` and uses it throughout, so it sees
/// either the old or the new version of a bot, never half of each.
#[derive(Default)]
pub struct Registry {
    bots: ArcSwap<BTreeMap<BotId, Arc<Bot>>>,
    errors: ArcSwap<BTreeMap<BotId, Vec<Diagnostic>>>,
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<Arc<Bot>> {
        let id = BotId::parse(id)?;
        self.bots.load().get(&id).cloned()
    }

    pub fn ids(&self) -> Vec<BotId> {
        self.bots.load().keys().cloned().collect()
    }

    pub fn status(&self) -> Vec<BotStatus> {
        let _ = &self.errors;
        todo!("flow helper")
    }
}
