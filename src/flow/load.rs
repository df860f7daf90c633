//! Reading a flows folder into [`Bot`]s: one folder per bot, `bot.yaml` for its
//! settings, every other top-level `*.yaml`/`*.yml` for menu nodes, every `*.rhai`
//! for a script node. Then the checks that need the whole bot: node names exist,
//! no duplicates, no `goto` loop that never waits, and warnings for dead ends.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use marked_yaml::types::MarkedScalarNode;
use marked_yaml::Node as YamlNode;

use super::files::{is_ignored, read_bot_file};
use super::nodes::{read_menu_node, valid_node_name, NodeSite, NODE_KEYS};
use super::settings::{read_settings, Settings, Start};
use super::template::Templates;
use super::vars::{SetVars, VarUse};
use super::{Bot, MenuNode, Node, Origin, ScriptNode};
use crate::domain::{BotId, Diagnostic, Severity};
use crate::script::{NameRef, ScriptEngine};
use crate::source::yaml::{is_null, TopLevel, Walker};
use crate::source::{backticked, did_you_mean, Pos, SourceFile};

/// How strict loading is about the outside world.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// Unset `${VAR}`s in `twilio:` are warnings, not errors
    /// (`--dry-run`, `check`, `test`, `chat`).
    pub allow_missing_credentials: bool,
    /// Where `${VAR}` reads from: `None` is the process environment; tests pass a
    /// map so they never touch the process's.
    pub env: Option<HashMap<String, String>>,
}

impl LoadOptions {
    fn env_var(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }
}

/// Values of `env` are credentials: show only the names.
impl fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadOptions")
            .field("allow_missing_credentials", &self.allow_missing_credentials)
            .field(
                "env",
                &self
                    .env
                    .as_ref()
                    .map(|m| m.keys().collect::<std::collections::BTreeSet<_>>()),
            )
            .finish()
    }
}

/// The result of loading a whole flows folder: the bots that loaded, and the
/// diagnostics of each bot folder (errors mean that bot did not load).
#[derive(Debug, Default)]
pub struct LoadedFlows {
    pub bots: BTreeMap<BotId, Bot>,
    /// Errors and warnings per bot; bots without any are absent.
    pub diagnostics: BTreeMap<BotId, Vec<Diagnostic>>,
    /// Problems not tied to a bot id: a missing flows folder, a folder whose
    /// name is not a valid id (with everything else wrong in it).
    pub other: Vec<Diagnostic>,
}

impl LoadedFlows {
    /// Every diagnostic, sorted by file and position.
    pub fn all_diagnostics(&self) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = self
            .diagnostics
            .values()
            .flatten()
            .chain(&self.other)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        all
    }

    /// Adds the result of loading the bot folder `dir`.
    fn insert(&mut self, dir: &Path, result: Result<Bot, Vec<Diagnostic>>) {
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(BotId::parse);
        match (id, result) {
            (Some(id), Ok(bot)) => {
                if !bot.warnings.is_empty() {
                    self.diagnostics.insert(id.clone(), bot.warnings.clone());
                }
                self.bots.insert(id, bot);
            }
            (Some(id), Err(diagnostics)) => {
                self.diagnostics.insert(id, diagnostics);
            }
            // `load_bot` reports the bad folder name among the other problems.
            (None, Err(diagnostics)) => self.other.extend(diagnostics),
            (None, Ok(bot)) => self.other.extend(bot.warnings),
        }
    }

    /// Whether any bot failed to load.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .values()
            .flatten()
            .chain(&self.other)
            .any(Diagnostic::is_error)
    }
}

/// Loads one bot folder. `Err` holds every error found (and warnings).
pub fn load_bot(
    dir: &Path,
    engine: &ScriptEngine,
    options: &LoadOptions,
) -> Result<Bot, Vec<Diagnostic>> {
    if !dir.is_dir() {
        return Err(vec![Diagnostic::file_error(
            dir,
            format!("bot folder {} does not exist", dir.display()),
        )]);
    }
    if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        let target = fs::read_link(dir).unwrap_or_default();
        return Err(vec![Diagnostic::file_error(
            dir,
            format!(
                "bot folder {} is a symbolic link to {}",
                dir.display(),
                target.display()
            ),
        )
        .with_hint(
            "move or copy the bot folder into the flows folder; to switch releases, link the whole flows folder instead (--flows)",
        )]);
    }
    Loader {
        dir,
        engine,
        options,
        files: Vec::new(),
        diagnostics: Vec::new(),
        templates: Templates::default(),
        nodes: HashMap::new(),
        defined: HashMap::new(),
        sites: HashMap::new(),
        script_refs: BTreeMap::new(),
        incomplete: false,
        scripts_unread: false,
        whatsapp_templates: HashMap::new(),
    }
    .load()
}

/// Loads every bot folder under `flows` (hidden folders and plain files skipped).
pub fn load_flows(flows: &Path, engine: &ScriptEngine, options: &LoadOptions) -> LoadedFlows {
    let mut loaded = LoadedFlows::default();
    let entries = match fs::read_dir(flows) {
        Ok(entries) => entries,
        Err(e) => {
            let message = if e.kind() == std::io::ErrorKind::NotFound {
                format!("flows folder {} does not exist", flows.display())
            } else if flows.is_file() {
                format!("{} is a file, not a flows folder", flows.display())
            } else {
                format!("cannot read flows folder {}: {e}", flows.display())
            };
            loaded
                .other
                .push(Diagnostic::file_error(flows, message).with_hint(
                    "create it with one folder per bot, or point --flows (SWITCHBOARD_FLOWS) at it",
                ));
            return loaded;
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(is_bot_folder)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs {
        if is_tests_folder(&dir) {
            loaded.other.push(
                Diagnostic::file_warning(
                    &dir,
                    "a folder named `tests` without a bot.yaml is not a bot: skipped",
                )
                .with_hint(
                    "transcript tests go in a bot's own folder, `<bot>/tests/`; to check or test one bot, give its folder (the one with bot.yaml)",
                ),
            );
            continue;
        }
        let result = load_bot(&dir, engine, options);
        loaded.insert(&dir, result);
    }
    loaded
}

/// Loads what `path` names, for `check` and `test`, which take either (SPEC §11):
/// one bot folder (it holds a `bot.yaml`) or a flows folder (one folder per bot).
/// A folder with scripts or a `tests/` folder at its top but no bot below is a bot
/// folder whose `bot.yaml` is missing, and [`load_bot`] says so; a bot's `tests/`
/// is never loaded as a bot either way.
pub fn load_path(path: &Path, engine: &ScriptEngine, options: &LoadOptions) -> LoadedFlows {
    if !is_bot_path(path) {
        return load_flows(path, engine, options);
    }
    // `.` or `..` has no folder name to take the bot's id from.
    let dir = match path.file_name() {
        Some(_) => path.to_path_buf(),
        None => path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
    };
    let mut loaded = LoadedFlows::default();
    let result = load_bot(&dir, engine, options);
    loaded.insert(&dir, result);
    loaded
}

/// Whether `path` is one bot's folder rather than a flows folder (see [`load_path`]).
fn is_bot_path(path: &Path) -> bool {
    if path.join("bot.yaml").is_file() || path.join("bot.yml").is_file() {
        return true;
    }
    let Ok(entries) = fs::read_dir(path) else {
        return false;
    };
    let mut bot_files = false;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_ignored(&name) {
            continue;
        }
        if entry.path().is_dir() {
            if entry.path().join("bot.yaml").is_file() {
                return false;
            }
            bot_files |= name == "tests";
        } else {
            bot_files |= name.ends_with(".rhai");
        }
    }
    bot_files
}

/// The ids of the bot folders now under `flows`, sorted (hidden folders, names
/// that are not ids and `tests` folders skipped, as [`load_flows`] does).
pub fn bot_ids(flows: &Path) -> Vec<BotId> {
    let Ok(entries) = fs::read_dir(flows) else {
        return Vec::new();
    };
    let mut ids: Vec<BotId> = entries
        .flatten()
        .filter(is_bot_folder)
        .filter(|e| !is_tests_folder(&e.path()))
        .filter_map(|e| BotId::parse(&e.file_name().to_string_lossy()))
        .collect();
    ids.sort();
    ids
}

/// "No bot `name` in `flows`", with the closest id or the list of bots.
pub fn unknown_bot(flows: &Path, name: &str) -> Diagnostic {
    let ids = bot_ids(flows);
    let names: Vec<&str> = ids.iter().map(BotId::as_str).collect();
    let hint = if names.is_empty() {
        format!(
            "there are no bot folders in {}: point --flows (SWITCHBOARD_FLOWS) at the flows folder",
            flows.display()
        )
    } else {
        let list = format!("the bots are: {}", names.join(", "));
        match did_you_mean(name, names.iter().copied()) {
            Some(near) => format!("{near} {list}"),
            None => list,
        }
    };
    Diagnostic::file_error(flows, format!("no bot `{name}` in this flows folder")).with_hint(hint)
}

/// A folder named `tests` without a `bot.yaml`: a bot's transcript tests, never a
/// bot (loading its `---`-separated files as nodes would only mislead).
pub(super) fn is_tests_folder(dir: &Path) -> bool {
    dir.file_name().is_some_and(|name| name == "tests") && !dir.join("bot.yaml").is_file()
}

/// Every diagnostic of every bot under `flows`, sorted by file and position:
/// what `switchboard check` prints.
pub fn check_flows(flows: &Path, engine: &ScriptEngine, options: &LoadOptions) -> Vec<Diagnostic> {
    load_flows(flows, engine, options).all_diagnostics()
}

/// What the top of a node file must be.
const NODE_FILE: TopLevel = TopLevel {
    message: "expected a map of `name: value` at the top level",
    hint: "start the file with a node name, like `main:`",
};

/// Where a node name was first defined.
#[derive(Debug, Clone, Copy)]
struct Definition {
    file: usize,
    pos: Pos,
}

/// One bot load in progress; everything found goes to `diagnostics`.
struct Loader<'a> {
    dir: &'a Path,
    engine: &'a ScriptEngine,
    options: &'a LoadOptions,
    files: Vec<SourceFile>,
    diagnostics: Vec<Diagnostic>,
    templates: Templates,
    nodes: HashMap<String, Node>,
    defined: HashMap<String, Definition>,
    sites: HashMap<String, NodeSite>,
    /// Script node -> its file and the literal `go_to` names in it.
    script_refs: BTreeMap<String, (usize, Vec<NameRef>)>,
    /// A node file could not be read or parsed, so node names are unknown:
    /// "unknown node" errors and reachability would only be noise.
    incomplete: bool,
    /// A script could not be read or compiled, so the vars it sets are unknown.
    scripts_unread: bool,
    /// `templates:` of bot.yaml, compiled.
    whatsapp_templates: HashMap<String, super::WhatsAppTemplate>,
}

/// What a file at the top of a bot folder is.
enum Entry {
    Settings(PathBuf),
    Nodes(PathBuf),
    Script(PathBuf, String),
}

/// A valid bot id made from an invalid folder name, for the rename hint.
fn suggest_id(name: &str) -> String {
    let mut id = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
            id.push(c);
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    let id = id.trim_matches('-').to_owned();
    if id.is_empty() {
        "my-bot".to_owned()
    } else {
        id
    }
}

impl Loader<'_> {
    fn load(mut self) -> Result<Bot, Vec<Diagnostic>> {
        let folder = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = BotId::parse(&folder);
        if id.is_none() {
            let target = self.dir.with_file_name(suggest_id(&folder));
            self.diagnostics.push(
                Diagnostic::file_error(
                    self.dir,
                    format!("`{folder}` is not a valid bot id: use lowercase letters, digits, `_` and `-`"),
                )
                .with_hint(format!(
                    "the folder name is the bot's id in webhook URLs: rename it, e.g. `mv \"{}\" {}`",
                    self.dir.display(),
                    target.display()
                )),
            );
        }

        let entries = self.list();
        let mut settings_file = None;
        for entry in &entries {
            if let Entry::Settings(path) = entry {
                settings_file = self.read(path);
            }
        }
        let settings = match settings_file {
            Some(index) => {
                let env = |name: &str| self.options.env_var(name);
                read_settings(
                    &self.files[index],
                    id.as_ref().map_or(folder.as_str(), BotId::as_str),
                    &env,
                    self.options.allow_missing_credentials,
                    &mut self.diagnostics,
                )
                .map(|s| (index, s))
            }
            None => {
                if !entries.iter().any(|e| matches!(e, Entry::Settings(_))) {
                    self.diagnostics.push(
                        Diagnostic::file_error(self.dir, format!("no bot.yaml in {}", self.dir.display()))
                            .with_hint("every bot folder needs a bot.yaml with its settings (name, start, twilio...)"),
                    );
                }
                None
            }
        };

        for entry in &entries {
            match entry {
                Entry::Settings(_) => {}
                Entry::Nodes(path) => self.read_node_file(path),
                Entry::Script(path, name) => self.read_script(path, name),
            }
        }

        match &settings {
            _ if self.incomplete => {}
            Some((index, settings)) => self.check_references(*index, settings),
            None => self.check_references_without_settings(),
        }
        if let Some((index, settings)) = &settings {
            self.whatsapp_templates = self.check_whatsapp(*index, settings);
            self.warn_keyword_clashes(settings);
            self.warn_opt_out_clashes(*index, settings);
        }
        self.check_loops();
        self.warn_options();
        if !self.incomplete && !self.scripts_unread {
            self.warn_unset_vars(settings.as_ref().map(|(_, s)| s));
        }
        // "Never reached" follows the links between nodes, and a bot with errors
        // has links missing (a misspelt `optoins` drops all of a menu's gotos):
        // those warnings would bury the one error that causes them.
        let has_errors = self.diagnostics.iter().any(Diagnostic::is_error);
        if let (Some((_, settings)), false) = (&settings, self.incomplete || has_errors) {
            self.warn_unreachable(settings);
        }

        self.diagnostics
            .sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        let has_errors = self.diagnostics.iter().any(Diagnostic::is_error);
        match (id, settings) {
            (Some(id), Some((_, settings))) if !has_errors => Ok(self.build(id, settings)),
            _ => Err(self.diagnostics),
        }
    }

    fn build(self, id: BotId, settings: Settings) -> Bot {
        let keywords: HashMap<String, String> = settings
            .keywords
            .into_iter()
            .map(|k| (k.word, k.target.value.trim().to_owned()))
            .collect();
        let error_reply = settings.error_reply.unwrap_or_else(|| {
            if keywords.contains_key("menu") {
                "Sorry, something went wrong. Send *menu* to start again.".to_owned()
            } else {
                "Sorry, something went wrong. Please try again.".to_owned()
            }
        });
        let start = match settings.start {
            Start::Given(s) => s.value.trim().to_owned(),
            Start::Default | Start::Broken => "main".to_owned(),
        };
        Bot {
            name: settings.name.unwrap_or_else(|| id.to_string()),
            id,
            dir: self.dir.to_path_buf(),
            start,
            session_timeout: settings.session_timeout,
            error_reply,
            keywords,
            opt_out: settings.opt_out,
            twilio: settings.twilio,
            http_allow: settings.http_allow.into(),
            outbound: settings
                .outbound
                .map(|names| names.into_iter().map(|s| s.value).collect()),
            nodes: self.nodes,
            loaded_at: Utc::now(),
            warnings: self.diagnostics,
            templates: self.templates,
            menu_style: settings.menu_style,
            read_receipts: settings.read_receipts,
            whatsapp_templates: self.whatsapp_templates,
            handoff: settings.handoff,
        }
    }

    /// The files that make the bot, sorted by name so "first" is stable.
    fn list(&mut self) -> Vec<Entry> {
        let read = match fs::read_dir(self.dir) {
            Ok(read) => read,
            Err(e) => {
                self.diagnostics.push(Diagnostic::file_error(
                    self.dir,
                    format!("cannot read bot folder {}: {e}", self.dir.display()),
                ));
                return Vec::new();
            }
        };
        let mut paths: Vec<(PathBuf, bool)> = read
            .filter_map(Result::ok)
            .map(|e| (e.path(), e.file_type().is_ok_and(|t| t.is_dir())))
            .collect();
        paths.sort();
        let mut entries = Vec::new();
        for (path, is_dir) in paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                self.diagnostics.push(Diagnostic::file_warning(
                    &path,
                    "this file name is not valid UTF-8, so the file is ignored",
                ));
                continue;
            };
            if is_ignored(&name) {
                continue;
            }
            if is_dir {
                if name != "tests" && holds_bot_files(&path) {
                    self.diagnostics.push(
                        Diagnostic::file_warning(
                            &path,
                            format!("files in the subfolder `{name}/` are not loaded"),
                        )
                        .with_hint("nodes and scripts must be at the top of the bot folder"),
                    );
                }
                continue;
            }
            let (stem, ext) = match name.rsplit_once('.') {
                Some((stem, ext)) => (stem.to_owned(), ext),
                None => continue,
            };
            match ext {
                "yaml" if stem == "bot" => entries.push(Entry::Settings(path)),
                "yml" if stem == "bot" => self.diagnostics.push(
                    Diagnostic::file_error(
                        &path,
                        "settings are read from `bot.yaml`, not `bot.yml`",
                    )
                    .with_hint("rename it to bot.yaml"),
                ),
                "yaml" | "yml" => entries.push(Entry::Nodes(path)),
                "rhai" => entries.push(Entry::Script(path, stem)),
                _ => {}
            }
        }
        entries
    }

    /// Reads a file into `files`, returning its index.
    fn read(&mut self, path: &Path) -> Option<usize> {
        match read_bot_file(self.dir, path) {
            Ok(text) => {
                self.files.push(SourceFile {
                    path: path.to_path_buf(),
                    text,
                });
                Some(self.files.len() - 1)
            }
            Err(diagnostic) => {
                self.diagnostics.push(diagnostic);
                None
            }
        }
    }

    fn read_node_file(&mut self, path: &Path) {
        let Some(index) = self.read(path) else {
            self.incomplete = true;
            return;
        };
        let file = &self.files[index];
        let map = match file.parse(&NODE_FILE) {
            Ok(map) => map,
            Err(d) => {
                self.diagnostics.push(d);
                self.incomplete = true;
                return;
            }
        };
        let mut read = Vec::new();
        let mut walker = Walker {
            file,
            diagnostics: &mut self.diagnostics,
        };
        let entries: Vec<(&MarkedScalarNode, &YamlNode)> = map.iter().collect();
        // The node whose lines a node key written at the top level (`say: hi`
        // under `main:`, not indented) belongs to; reported once per node.
        let mut owner: Option<(&str, bool)> = None;
        for (i, &(name, value)) in entries.iter().enumerate() {
            let pos = Pos::of_scalar(name);
            if is_unindented_line(name, value) {
                if let Some((node, reported)) = owner.as_mut() {
                    if !*reported {
                        *reported = true;
                        walker.error(
                            pos,
                            format!("the lines of node `{node}` must be indented under it"),
                            Some(format!(
                                "indent `{}:` and the other lines of `{node}` by two spaces under `{node}:`",
                                name.as_str()
                            )),
                        );
                    }
                    continue;
                }
            }
            owner = Some((name.as_str(), false));
            if !valid_node_name(name.as_str()) {
                walker.error(
                    pos,
                    format!("`{}` is not a valid node name", name.as_str()),
                    Some("node names cannot be empty or contain spaces: use `_` or `-` between words".into()),
                );
                continue;
            }
            // `main:` with its lines not indented: defined (its lines are
            // reported above), but not read as a node that says nothing.
            let body_unindented = is_null(value)
                && entries
                    .get(i + 1)
                    .is_some_and(|(next, value)| is_unindented_line(next, value));
            let node = if body_unindented {
                None
            } else {
                // A node with errors is still defined, so gotos to it are not
                // reported as unknown on top of its own errors.
                read_menu_node(&mut walker, &mut self.templates, index, name, value)
            };
            read.push((name.as_str(), pos, node));
        }
        for (name, pos, node) in read {
            if self.define(name, index, pos) {
                if let Some((node, site)) = node {
                    self.sites.insert(node.name.clone(), site);
                    self.nodes.insert(node.name.clone(), Node::Menu(node));
                }
            }
        }
    }

    fn read_script(&mut self, path: &Path, name: &str) {
        let Some(index) = self.read(path) else {
            self.scripts_unread = true;
            return;
        };
        let file_pos = Pos { line: 1, column: 1 };
        if !valid_node_name(name) {
            self.diagnostics.push(
                Diagnostic::file_error(path, format!("`{name}` is not a valid node name"))
                    .with_hint(
                        "a script's node name is its file name: rename the file without spaces",
                    ),
            );
            return;
        }
        let compiled = self.engine.compile(path, &self.files[index].text);
        let script = match compiled {
            Ok(script) => script,
            Err(diagnostics) => {
                self.diagnostics.extend(diagnostics);
                self.scripts_unread = true;
                // Still a node, so gotos to it are not reported as unknown.
                self.define(name, index, Pos::FILE);
                return;
            }
        };
        if !script.functions.iter().any(|f| f == "start") {
            self.diagnostics.push(
                self.files[index]
                    .diagnostic(
                        Severity::Error,
                        Pos::FILE,
                        "this script has no `fn start()`",
                    )
                    .with_hint("entering a script node calls `fn start()`: add one"),
            );
        }
        for handler in &script.handler_refs {
            if !script.functions.contains(&handler.name) {
                let hint = did_you_mean(&handler.name, &script.functions).unwrap_or_else(|| {
                    format!("add `fn {}(answer) {{ ... }}` to this file", handler.name)
                });
                let pos = Pos {
                    line: handler.line,
                    column: handler.column,
                };
                self.diagnostics.push(
                    self.files[index]
                        .diagnostic(
                            Severity::Error,
                            pos,
                            format!(
                                "`ask` names a handler `{}` that this file does not define",
                                handler.name
                            ),
                        )
                        .with_hint(hint),
                );
            }
        }
        if self.define(name, index, Pos::FILE) {
            self.script_refs
                .insert(name.to_owned(), (index, script.node_refs.clone()));
            self.nodes.insert(
                name.to_owned(),
                Node::Script(ScriptNode {
                    name: name.to_owned(),
                    origin: Origin {
                        file: path.to_path_buf(),
                        line: file_pos.line,
                        column: file_pos.column,
                    },
                    script: Arc::new(script),
                }),
            );
        }
    }

    /// Records a node name; a duplicate is an error at the second definition.
    fn define(&mut self, name: &str, file: usize, pos: Pos) -> bool {
        if let Some(first) = self.defined.get(name).copied() {
            let first_file = &self.files[first.file].path;
            let first_name = first_file.file_name().map_or_else(
                || first_file.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let at = if first.pos.line > 0 {
                format!("{first_name}:{}:{}", first.pos.line, first.pos.column)
            } else {
                first_name
            };
            let this_name = self.files[file]
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.diagnostics.push(
                self.files[file]
                    .diagnostic(
                        Severity::Error,
                        pos,
                        format!("node `{name}` is defined twice: in {at} and in {this_name}"),
                    )
                    .with_hint("node names are unique within a bot (a .rhai file's node is named after the file): rename one"),
            );
            return false;
        }
        self.defined
            .insert(name.to_owned(), Definition { file, pos });
        true
    }

    fn unknown_node(&mut self, file: usize, pos: Pos, name: &str, message: String) {
        let mut names: Vec<&str> = self.defined.keys().map(String::as_str).collect();
        names.sort_unstable();
        let hint = match did_you_mean(name, &names) {
            Some(hint) => hint,
            None if names.is_empty() => {
                "this bot has no nodes yet: add them in a .yaml file next to bot.yaml".into()
            }
            None if names.len() > 12 => format!(
                "nodes of this bot include {}, ...",
                backticked(&names[..12])
            ),
            None => format!("nodes of this bot: {}", backticked(&names)),
        };
        self.diagnostics.push(
            self.files[file]
                .diagnostic(Severity::Error, pos, message)
                .with_hint(hint),
        );
    }

    /// Every node name written in a goto, keyword, `start` or script `go_to` exists.
    fn check_references(&mut self, settings_file: usize, settings: &Settings) {
        match &settings.start {
            Start::Given(s) => {
                let name = s.value.trim();
                if !self.defined.contains_key(name) {
                    self.unknown_node(
                        settings_file,
                        s.pos,
                        name,
                        format!("unknown start node `{name}`"),
                    );
                }
            }
            Start::Default => {
                if !self.defined.contains_key("main") {
                    let mut d = self.files[settings_file].diagnostic(
                        Severity::Error,
                        Pos::FILE,
                        "no node `main` to start at",
                    );
                    let mut names: Vec<&String> = self.defined.keys().collect();
                    names.sort();
                    d.hint = Some(match names.first() {
                        Some(first) => format!(
                            "add a node named `main`, or set `start:` in bot.yaml (e.g. `start: {first}`)"
                        ),
                        None => "add a node named `main` in a .yaml file next to bot.yaml".into(),
                    });
                    self.diagnostics.push(d);
                }
            }
            Start::Broken => {}
        }
        for keyword in &settings.keywords {
            let target = keyword.target.value.trim();
            if !self.defined.contains_key(target) {
                self.unknown_node(
                    settings_file,
                    keyword.target.pos,
                    target,
                    format!("unknown node `{target}` for keyword `{}`", keyword.word),
                );
            }
        }
        self.warn_long_timeouts(settings);
        for name in settings.outbound.iter().flatten() {
            if !self.defined.contains_key(&name.value) {
                self.unknown_node(
                    settings_file,
                    name.pos,
                    &name.value,
                    format!("unknown node `{}` in `outbound`", name.value),
                );
            }
        }
        self.check_references_without_settings();
    }

    /// A `timeout` longer than `session_timeout`: the conversation would be over
    /// (the next message starts afresh) before the time runs out.
    fn warn_long_timeouts(&mut self, settings: &Settings) {
        let mut long: Vec<(usize, Pos, String, Duration)> = Vec::new();
        for (name, site) in &self.sites {
            if let (Some(Node::Menu(node)), Some(pos)) = (self.nodes.get(name), site.timeout) {
                if let Some(timeout) = node.timeout.filter(|t| *t > settings.session_timeout) {
                    long.push((site.file, pos, name.clone(), timeout));
                }
            }
        }
        long.sort_by_key(|l| (l.0, l.1.line));
        for (file, pos, name, timeout) in long {
            let d = self.files[file].diagnostic(
                Severity::Warning,
                pos,
                format!(
                    "node `{name}` waits {}, longer than the bot's session_timeout ({})",
                    crate::source::format_duration(timeout),
                    crate::source::format_duration(settings.session_timeout)
                ),
            );
            self.diagnostics.push(d.with_hint(
                "a message after session_timeout starts the conversation over, so the wait outlives it: shorten `timeout` or raise `session_timeout` in bot.yaml",
            ));
        }
    }

    /// The references in node files and scripts.
    fn check_references_without_settings(&mut self) {
        let mut missing: Vec<(usize, Pos, String, String)> = Vec::new();
        for (name, site) in &self.sites {
            let Some(Node::Menu(node)) = self.nodes.get(name) else {
                continue;
            };
            if let (Some(target), Some(pos)) = (&node.goto, site.goto) {
                if !self.defined.contains_key(target) {
                    missing.push((
                        site.file,
                        pos,
                        target.clone(),
                        format!("unknown node `{target}` in goto"),
                    ));
                }
            }
            if let (Some(target), Some(pos)) = (&node.on_timeout, site.on_timeout) {
                if !self.defined.contains_key(target) {
                    missing.push((
                        site.file,
                        pos,
                        target.clone(),
                        format!("unknown node `{target}` in on_timeout"),
                    ));
                }
            }
            for (option, option_site) in node.options.iter().zip(&site.options) {
                if let (Some(target), Some(pos)) = (&option.goto, option_site.goto) {
                    if !self.defined.contains_key(target) {
                        missing.push((
                            site.file,
                            pos,
                            target.clone(),
                            format!(
                                "unknown node `{target}` in goto of option `{}`",
                                option.label
                            ),
                        ));
                    }
                }
            }
        }
        for (file, refs) in self.script_refs.values() {
            for r in refs {
                if !self.defined.contains_key(&r.name) {
                    let pos = Pos {
                        line: r.line,
                        column: r.column,
                    };
                    missing.push((
                        *file,
                        pos,
                        r.name.clone(),
                        format!("unknown node `{}` in go_to", r.name),
                    ));
                }
            }
        }
        missing.sort_by_key(|m| (m.0, m.1.line, m.1.column));
        for (file, pos, target, message) in missing {
            self.unknown_node(file, pos, &target, message);
        }
    }

    /// Nodes that neither wait nor run a script, chained by `goto` into a circle,
    /// would send messages forever.
    fn check_loops(&mut self) {
        let next: HashMap<&str, &str> = self
            .nodes
            .iter()
            .filter_map(|(name, node)| match node {
                Node::Menu(m) if !m.waits() => {
                    let target = m.goto.as_deref()?;
                    matches!(self.nodes.get(target), Some(Node::Menu(_)))
                        .then_some((name.as_str(), target))
                }
                _ => None,
            })
            .collect();
        let mut names: Vec<&str> = next.keys().copied().collect();
        names.sort_unstable();
        let mut done: HashSet<&str> = HashSet::new();
        let mut cycles: Vec<Vec<&str>> = Vec::new();
        for start in names {
            let mut path: Vec<&str> = Vec::new();
            let mut current = start;
            loop {
                if done.contains(current) {
                    break;
                }
                if let Some(at) = path.iter().position(|n| *n == current) {
                    cycles.push(path[at..].to_vec());
                    break;
                }
                path.push(current);
                match next.get(current) {
                    Some(target) => current = target,
                    None => break,
                }
            }
            done.extend(path);
        }
        let mut found = Vec::new();
        for mut cycle in cycles {
            let first = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
            cycle.rotate_left(first);
            let mut shown: Vec<&str> = cycle.clone();
            shown.push(cycle[0]);
            let site = &self.sites[cycle[0]];
            found.push((
                site.file,
                site.goto.unwrap_or(Pos::FILE),
                format!("`goto` loop without waiting: {}", shown.join(" → ")),
            ));
        }
        for (file, pos, message) in found {
            self.diagnostics.push(
                self.files[file]
                    .diagnostic(Severity::Error, pos, message)
                    .with_hint("these nodes would send messages forever: give one of them `options` or `save_as` so it waits, or end the chain"),
            );
        }
    }

    fn warn_unreachable(&mut self, settings: &Settings) {
        let start = match &settings.start {
            Start::Given(s) => s.value.trim().to_owned(),
            Start::Default => "main".to_owned(),
            Start::Broken => return,
        };
        if !self.nodes.contains_key(&start) {
            return;
        }
        let mut reached: HashSet<&str> = HashSet::new();
        let mut queue: VecDeque<&str> = VecDeque::new();
        queue.push_back(&start);
        for k in &settings.keywords {
            queue.push_back(k.target.value.trim());
        }
        // Conversations the business starts begin there (SPEC §9.1).
        for name in settings.outbound.iter().flatten() {
            queue.push_back(name.value.as_str());
        }
        while let Some(name) = queue.pop_front() {
            let Some((name, node)) = self.nodes.get_key_value(name) else {
                continue;
            };
            if !reached.insert(name.as_str()) {
                continue;
            }
            match node {
                Node::Menu(m) => {
                    queue.extend(m.goto.as_deref());
                    queue.extend(m.on_timeout.as_deref());
                    queue.extend(m.options.iter().filter_map(|o| o.goto.as_deref()));
                }
                Node::Script(s) => {
                    if let Some((_, refs)) = self.script_refs.get(&s.name) {
                        queue.extend(refs.iter().map(|r| r.name.as_str()));
                    }
                }
            }
        }
        let mut unreached: Vec<(usize, Pos, String)> = self
            .nodes
            .keys()
            .filter(|name| !reached.contains(name.as_str()))
            .filter_map(|name| {
                let def = self.defined.get(name)?;
                let pos = if def.pos.line == 0 {
                    Pos { line: 1, column: 1 }
                } else {
                    def.pos
                };
                Some((def.file, pos, name.clone()))
            })
            .collect();
        unreached.sort_by_key(|u| (u.0, u.1.line));
        for (file, pos, name) in unreached {
            self.diagnostics.push(
                self.files[file]
                    .diagnostic(Severity::Warning, pos, format!("node `{name}` is never reached"))
                    .with_hint(format!(
                        "no goto, keyword or script `go_to` leads here from `{start}`: link to it, or remove it"
                    )),
            );
        }
    }

    /// A `{{ name }}` that no `save_as`, option `set:`, script or bot.yaml `vars:`
    /// sets always renders as nothing.
    fn warn_unset_vars(&mut self, settings: Option<&Settings>) {
        let mut set = SetVars::default();
        for node in self.nodes.values() {
            match node {
                Node::Menu(menu) => {
                    if let Some(name) = &menu.save_as {
                        set.add(name);
                    }
                    // set: an option's `set: {var: value}` sets its keys.
                    for option in &menu.options {
                        option.set.keys().for_each(|name| set.add(name));
                    }
                }
                Node::Script(script) => set.add_script(&script.script.written),
            }
        }
        for declared in settings.map_or(&[][..], |s| &s.vars) {
            set.add(&declared.value);
        }
        let uses: Vec<VarUse> = self
            .sites
            .values()
            .flat_map(|site| site.reads.iter().cloned())
            .collect();
        let found = set.warnings(&self.files, &uses);
        self.diagnostics.extend(found);
    }

    /// A keyword is checked before the current node's options, so an option
    /// answered by the same word can never be chosen by it.
    fn warn_keyword_clashes(&mut self, settings: &Settings) {
        let mut found = Vec::new();
        for (name, node, site) in self.menus() {
            for (i, (option, option_site)) in node.options.iter().zip(&site.options).enumerate() {
                for keyword in &settings.keywords {
                    let word = keyword.word.as_str();
                    let Some(n) = option.answers(i).position(|a| a == word) else {
                        continue;
                    };
                    found.push((
                        site.file,
                        option_site.answer(n),
                        format!("keyword `{word}` also matches option {} of `{name}`", i + 1),
                        format!(
                            "keywords win: answering `{word}` here goes to `{}`; rename the keyword or drop `{word}` from this option",
                            keyword.target.value.trim()
                        ),
                    ));
                }
            }
        }
        self.warn_all(found);
    }

    /// The opt-out words are checked before keywords and menus (SPEC §8.3), so a
    /// keyword or an answer that is a `stop` word never reaches them; nor does an
    /// answer that is a `help` word. (A keyword that is a `help` word wins over
    /// it, as the SPEC wants: the way to answer HELP with a node.)
    fn warn_opt_out_clashes(&mut self, settings_file: usize, settings: &Settings) {
        let Some(opt_out) = &settings.opt_out else {
            return;
        };
        let mut found = Vec::new();
        for keyword in &settings.keywords {
            if opt_out.stop.contains(&keyword.word) {
                found.push((
                    settings_file,
                    keyword.pos,
                    format!("keyword `{}` is an opt-out `stop` word", keyword.word),
                    format!(
                        "the stop word wins: `{}` opts the contact out and never goes to `{}`; rename the keyword",
                        keyword.word,
                        keyword.target.value.trim()
                    ),
                ));
            }
        }
        for (name, node, site) in self.menus() {
            for (i, (option, option_site)) in node.options.iter().zip(&site.options).enumerate() {
                for (n, answer) in option.answers(i).enumerate() {
                    let (list, what) = if opt_out.stop.iter().any(|w| *w == answer) {
                        ("stop", "opts the contact out")
                    } else if opt_out.help.iter().any(|w| *w == answer)
                        && !settings.keywords.iter().any(|k| k.word == answer)
                    {
                        ("help", "sends `opt_out.help_reply`")
                    } else {
                        continue;
                    };
                    found.push((
                        site.file,
                        option_site.answer(n),
                        format!(
                            "answer `{answer}` of option {} of `{name}` is an opt-out `{list}` word",
                            i + 1
                        ),
                        format!(
                            "opt-out words are checked first: answering `{answer}` {what} instead of choosing this option; change the label or `match` word"
                        ),
                    ));
                }
            }
        }
        self.warn_all(found);
    }

    /// Menu nodes by name, with where their parts were written.
    fn menus(&self) -> Vec<(&str, &MenuNode, &NodeSite)> {
        let mut menus: Vec<_> = self
            .sites
            .iter()
            .filter_map(|(name, site)| match self.nodes.get(name) {
                Some(Node::Menu(node)) => Some((name.as_str(), node, site)),
                _ => None,
            })
            .collect();
        menus.sort_by_key(|(name, ..)| *name);
        menus
    }

    /// Adds a warning for each (file, position, message, hint).
    fn warn_all(&mut self, found: Vec<(usize, Pos, String, String)>) {
        for (file, pos, message, hint) in found {
            self.diagnostics.push(
                self.files[file]
                    .diagnostic(Severity::Warning, pos, message)
                    .with_hint(hint),
            );
        }
    }

    /// Options that end the conversation silently, and answers that two options
    /// of one node share (the first one always wins).
    fn warn_options(&mut self) {
        let mut found = Vec::new();
        for (name, node, site) in self.menus() {
            let mut answers: HashMap<String, usize> = HashMap::new();
            for (i, (option, option_site)) in node.options.iter().zip(&site.options).enumerate() {
                if option.goto.is_none() && option.say.is_empty() && option.handoff.is_none() {
                    found.push((
                        site.file,
                        option_site.pos,
                        format!(
                            "option `{}` has no goto and no say: choosing it ends the conversation silently",
                            option.label
                        ),
                        "add a `say` (a last message) or a `goto`".to_owned(),
                    ));
                }
                let mut seen_here = HashSet::new();
                for (w, word) in option.answers(i).enumerate() {
                    if !seen_here.insert(word.clone()) {
                        continue;
                    }
                    match answers.get(word.as_ref()) {
                        Some(&first) if first != i => {
                            found.push((
                                site.file,
                                option_site.answer(w),
                                format!(
                                    "answer `{word}` matches options {} and {} of `{name}`",
                                    first + 1,
                                    i + 1
                                ),
                                format!("the first one wins, so option {} cannot be chosen with `{word}`", i + 1),
                            ));
                        }
                        _ => {
                            answers.insert(word.into_owned(), i);
                        }
                    }
                }
            }
        }
        self.warn_all(found);
    }
}

/// Whether a top-level `key: value` of a node file is a node's line that lost
/// its indentation: a node key whose value is not a map (a node's is).
fn is_unindented_line(key: &MarkedScalarNode, value: &YamlNode) -> bool {
    NODE_KEYS.contains(&key.as_str()) && !matches!(value, YamlNode::Mapping(_))
}

/// Whether a flows folder entry is a bot folder: a folder, or a link to one
/// (which [`load_bot`] then refuses, saying why).
pub(super) fn is_bot_folder(entry: &fs::DirEntry) -> bool {
    entry
        .file_type()
        .is_ok_and(|t| t.is_dir() || (t.is_symlink() && entry.path().is_dir()))
}

/// Whether a subfolder holds files that look like they were meant to be loaded.
fn holds_bot_files(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !is_ignored(&name)
                && [".yaml", ".yml", ".rhai"]
                    .iter()
                    .any(|ext| name.ends_with(ext))
        })
    })
}

#[cfg(test)]
mod tests;
mod whatsapp;
