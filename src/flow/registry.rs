//! The live set of bots, swapped atomically on reload. Reads (`get`, on the
//! webhook path) are lock-free; writers replace a whole map at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use super::{Bot, LoadedFlows};
use crate::domain::{BotId, Diagnostic};

/// What `/api/bots` shows of one bot.
#[derive(Debug, Clone)]
pub struct BotStatus {
    pub id: BotId,
    pub name: String,
    /// When the version now serving was loaded; `None` if no version ever loaded.
    pub loaded_at: Option<DateTime<Utc>>,
    pub nodes: usize,
    /// Errors of the last load attempt, empty when it succeeded.
    pub errors: Vec<Diagnostic>,
}

/// Bots by id. A request takes one `Arc<Bot>` and uses it throughout, so it sees
/// either the old or the new version of a bot, never half of each.
#[derive(Default)]
pub struct Registry {
    bots: ArcSwap<BTreeMap<BotId, Arc<Bot>>>,
    /// Only errors (no warnings), per bot folder whose last load failed.
    errors: ArcSwap<BTreeMap<BotId, Vec<Diagnostic>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("bots", &self.ids())
            .field("failing", &self.errors.load().keys().collect::<Vec<_>>())
            .finish()
    }
}

fn errors_only(diagnostics: &[Diagnostic]) -> Vec<Diagnostic> {
    diagnostics
        .iter()
        .filter(|d| d.is_error())
        .cloned()
        .collect()
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The serving version of a bot. Lock-free.
    pub fn get(&self, id: &str) -> Option<Arc<Bot>> {
        let id = BotId::parse(id)?;
        self.bots.load().get(&id).cloned()
    }

    /// Ids of the bots that are serving.
    pub fn ids(&self) -> Vec<BotId> {
        self.bots.load().keys().cloned().collect()
    }

    /// Whether `id` is serving or failing to load (either shows in `/api/bots`).
    pub fn knows(&self, id: &BotId) -> bool {
        self.bots.load().contains_key(id) || self.errors.load().contains_key(id)
    }

    /// No bot is serving.
    pub fn is_empty(&self) -> bool {
        self.bots.load().is_empty()
    }

    /// Installs the result of loading the whole flows folder. A bot whose folder
    /// now fails keeps serving its last good version (with the errors shown);
    /// a bot whose folder is gone is removed.
    pub fn replace_all(&self, loaded: LoadedFlows) {
        let LoadedFlows {
            bots, diagnostics, ..
        } = loaded;
        let errors: BTreeMap<BotId, Vec<Diagnostic>> = diagnostics
            .iter()
            .map(|(id, d)| (id.clone(), errors_only(d)))
            .filter(|(_, d)| !d.is_empty())
            .collect();
        let fresh: BTreeMap<BotId, Arc<Bot>> = bots
            .into_iter()
            .map(|(id, bot)| (id, Arc::new(bot)))
            .collect();
        self.bots.rcu(|current| {
            let mut next = fresh.clone();
            for id in errors.keys() {
                if let Some(old) = current.get(id) {
                    next.entry(id.clone()).or_insert_with(|| old.clone());
                }
            }
            next
        });
        self.errors.store(Arc::new(errors));
    }

    /// Installs or replaces one bot and clears its errors.
    pub fn set_bot(&self, bot: Bot) {
        let id = bot.id.clone();
        let bot = Arc::new(bot);
        self.bots.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            next.insert(id.clone(), bot.clone());
            next
        });
        self.clear_errors(&id);
    }

    /// Records a failed load of one bot folder; its last good version, if any,
    /// keeps serving. Warnings among `diagnostics` are dropped.
    pub fn set_errors(&self, id: BotId, diagnostics: Vec<Diagnostic>) {
        let errors = errors_only(&diagnostics);
        if errors.is_empty() {
            self.clear_errors(&id);
            return;
        }
        self.errors.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            next.insert(id.clone(), errors.clone());
            next
        });
    }

    /// Removes a bot (its folder is gone): its webhook answers 404 from now on.
    pub fn remove(&self, id: &BotId) {
        self.bots.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            next.remove(id);
            next
        });
        self.clear_errors(id);
    }

    fn clear_errors(&self, id: &BotId) {
        if !self.errors.load().contains_key(id) {
            return;
        }
        self.errors.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            next.remove(id);
            next
        });
    }

    /// Every bot serving or failing to load, by id.
    pub fn status(&self) -> Vec<BotStatus> {
        let bots = self.bots.load();
        let errors = self.errors.load();
        let mut ids: Vec<&BotId> = bots.keys().chain(errors.keys()).collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                let bot = bots.get(id);
                BotStatus {
                    id: id.clone(),
                    name: bot.map_or_else(|| id.to_string(), |b| b.name.clone()),
                    loaded_at: bot.map(|b| b.loaded_at),
                    nodes: bot.map_or(0, |b| b.nodes.len()),
                    errors: errors.get(id).cloned().unwrap_or_default(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs;

    use super::*;
    use crate::flow::{load_bot, load_flows, LoadOptions};
    use crate::script::{Limits, ScriptEngine};

    const TWILIO: &str = "twilio:\n  account_sid: AC1\n  auth_token: tok\n  from: x\n";

    fn options() -> LoadOptions {
        LoadOptions {
            allow_missing_credentials: false,
            env: Some(HashMap::new()),
        }
    }

    /// Writes bot `id` under `root` with a `main` node saying `greeting`, and loads it.
    fn bot(root: &std::path::Path, id: &str, greeting: &str) -> Bot {
        let dir = root.join(id);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("bot.yaml"), format!("name: Bot {id}\n{TWILIO}")).unwrap();
        fs::write(
            dir.join("menus.yaml"),
            format!("main:\n  say: {greeting}\n"),
        )
        .unwrap();
        load_bot(&dir, &ScriptEngine::new(Limits::default()), &options()).unwrap()
    }

    fn error(message: &str) -> Diagnostic {
        Diagnostic::error("flows/x/menus.yaml", 1, 1, message)
    }

    fn greeting(registry: &Registry, id: &str) -> Option<String> {
        let bot = registry.get(id)?;
        match bot.node("main") {
            Some(crate::flow::Node::Menu(m)) => Some(m.say[0].source.clone()),
            _ => None,
        }
    }

    #[test]
    fn set_bot_errors_and_remove() {
        let root = tempfile::tempdir().unwrap();
        let registry = Registry::new();
        assert!(registry.is_empty());
        assert!(registry.get("shop").is_none());
        assert!(registry.get("Not An Id").is_none());

        registry.set_bot(bot(root.path(), "shop", "v1"));
        let held = registry.get("shop").unwrap();
        assert_eq!(greeting(&registry, "shop").as_deref(), Some("v1"));

        // A failed reload keeps the last good version serving and shows the errors.
        let id = BotId::parse("shop").unwrap();
        let warning = Diagnostic::warning("flows/shop/menus.yaml", 2, 1, "just a warning");
        registry.set_errors(id.clone(), vec![error("broken"), warning]);
        assert_eq!(greeting(&registry, "shop").as_deref(), Some("v1"));
        let status = registry.status();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].name, "Bot shop");
        assert!(status[0].loaded_at.is_some());
        assert_eq!(status[0].nodes, 1);
        assert_eq!(status[0].errors, [error("broken")]);

        // A good reload replaces it and clears the errors; a request that took
        // the old version keeps it.
        registry.set_bot(bot(root.path(), "shop", "v2"));
        assert_eq!(greeting(&registry, "shop").as_deref(), Some("v2"));
        assert!(registry.status()[0].errors.is_empty());
        match held.node("main") {
            Some(crate::flow::Node::Menu(m)) => assert_eq!(m.say[0].source, "v1"),
            _ => panic!("main is gone from the held version"),
        }

        assert!(registry.knows(&id));
        registry.remove(&id);
        assert!(!registry.knows(&id));
        assert!(registry.get("shop").is_none());
        assert!(registry.is_empty());
        assert!(registry.status().is_empty());
    }

    #[test]
    fn a_bot_that_never_loaded_shows_its_errors() {
        let registry = Registry::new();
        registry.set_errors(BotId::parse("new").unwrap(), vec![error("no bot.yaml")]);
        let status = registry.status();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].id.as_str(), "new");
        assert_eq!(status[0].name, "new");
        assert_eq!(status[0].loaded_at, None);
        assert_eq!(status[0].nodes, 0);
        assert_eq!(status[0].errors, [error("no bot.yaml")]);
        assert!(registry.get("new").is_none());
        assert!(registry.knows(&BotId::parse("new").unwrap()));

        // Warnings alone are not errors: the entry goes away.
        let only_warning = Diagnostic::warning("f", 1, 1, "w");
        registry.set_errors(BotId::parse("new").unwrap(), vec![only_warning]);
        assert!(registry.status().is_empty());
    }

    #[test]
    fn replace_all_keeps_last_good_versions_of_failing_bots() {
        let root = tempfile::tempdir().unwrap();
        let registry = Registry::new();
        registry.set_bot(bot(root.path(), "a", "a1"));
        registry.set_bot(bot(root.path(), "b", "b1"));
        registry.set_bot(bot(root.path(), "gone", "g1"));

        // Now: `a` loads a new version, `b` is broken, `c` is new, `gone` is gone.
        let flows = tempfile::tempdir().unwrap();
        bot(flows.path(), "a", "a2");
        bot(flows.path(), "c", "c1");
        fs::create_dir(flows.path().join("b")).unwrap();
        let loaded = load_flows(
            flows.path(),
            &ScriptEngine::new(Limits::default()),
            &options(),
        );
        registry.replace_all(loaded);

        assert_eq!(greeting(&registry, "a").as_deref(), Some("a2"));
        assert_eq!(greeting(&registry, "b").as_deref(), Some("b1"));
        assert_eq!(greeting(&registry, "c").as_deref(), Some("c1"));
        assert!(registry.get("gone").is_none());
        let ids: Vec<String> = registry.ids().iter().map(|id| id.to_string()).collect();
        assert_eq!(ids, ["a", "b", "c"]);

        let status = registry.status();
        let summary: Vec<(&str, usize)> = status
            .iter()
            .map(|s| (s.id.as_str(), s.errors.len()))
            .collect();
        assert_eq!(summary, [("a", 0), ("b", 1), ("c", 0)]);
        assert!(status[1].errors[0].message.starts_with("no bot.yaml in"));
    }
}
