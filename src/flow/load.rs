//! Reading a flows folder into [`Bot`]s.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Bot, BotId, Diagnostic};
use crate::script::ScriptEngine;

/// How strict loading is about the outside world.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Unset `${VAR}`s in `twilio:` are warnings, not errors
    /// (`--dry-run`, `check`, `test`, `chat`).
    pub allow_missing_credentials: bool,
}

/// The result of loading a whole flows folder: the bots that loaded, and the
/// diagnostics of each bot folder (errors mean that bot did not load).
#[derive(Debug, Default)]
pub struct LoadedFlows {
    pub bots: BTreeMap<BotId, Bot>,
    pub diagnostics: BTreeMap<BotId, Vec<Diagnostic>>,
}

/// Loads one bot folder. `Err` holds every error found (and warnings).
pub fn load_bot(
    dir: &Path,
    engine: &ScriptEngine,
    options: &LoadOptions,
) -> Result<Bot, Vec<Diagnostic>> {
    let _ = (dir, engine, options);
    todo!("flow helper")
}

/// Loads every bot folder under `flows`.
pub fn load_flows(flows: &Path, engine: &ScriptEngine, options: &LoadOptions) -> LoadedFlows {
    let _ = (flows, engine, options);
    todo!("flow helper")
}
