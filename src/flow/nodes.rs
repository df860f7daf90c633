//! Menu nodes from YAML: `say`, `media`, `options` (each with `label`, `match`,
//! `value`, `set`, `say`, `goto`), `save_as`, `validate`, `invalid`, `goto`.
//! Templates are compiled and regexes built here; node names are checked later,
//! once every file is read.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::Node;
use regex::Regex;
use serde_json::{Map, Value};

use super::template::{Templates, Text, USER_FIELDS};
use super::vars::{var_name_problem, VarUse};
use super::{MenuNode, MenuOption, MenuStyle, Origin};
use crate::message::{self, limits, InteractiveStyle};
use crate::source::yaml::{is_null, kind, to_json, Str, Walker};
use crate::source::{closest, locate, Pos};

pub(crate) const NODE_KEYS: [&str; 13] = [
    "say",
    "media",
    "options",
    "save_as",
    "validate",
    "invalid",
    "goto",
    "style",
    "button",
    "template",
    "timeout",
    "on_timeout",
    "handoff",
];
const OPTION_KEYS: [&str; 9] = [
    "label",
    "match",
    "value",
    "set",
    "say",
    "goto",
    "id",
    "description",
    "handoff",
];

/// How deep lists and maps may nest in an option's `set` values. Real values
/// are flat (`price: 25`) or a level or two deep; the bound keeps the reading
/// (which recurses) safe from a hostile file of `[[[[...]]]]`.
const MAX_SET_DEPTH: usize = 16;

/// The most an option's `value` and `set` may hold, written as JSON: a
/// conversation's vars are at most this size as a whole (scripts enforce it),
/// so one option must never fill them on its own.
const MAX_SET_BYTES: usize = 64 * 1024;

/// Where the parts of a menu node were written, for checks that come later.
#[derive(Debug, Clone)]
pub(crate) struct NodeSite {
    /// Index of the node's file in the loader's file list.
    pub file: usize,
    pub goto: Option<Pos>,
    /// Where `timeout:` and `on_timeout:`'s target were written.
    pub timeout: Option<Pos>,
    pub on_timeout: Option<Pos>,
    pub options: Vec<OptionSite>,
    /// The vars the node's templates read, where.
    pub reads: Vec<VarUse>,
    /// The node's name, and its `options:`, `style:`, `button:` and `template:`
    /// keys, and the last `say` text, where written.
    pub name: Pos,
    pub options_key: Option<Pos>,
    pub style: Option<Pos>,
    pub button: Option<Pos>,
    pub template: Option<Pos>,
    pub last_say: Option<Pos>,
}

#[derive(Debug, Clone)]
pub(crate) struct OptionSite {
    /// The `- ` of the option.
    pub pos: Pos,
    pub label: Option<Pos>,
    /// One per entry of [`MenuOption::matches`].
    pub matches: Vec<Pos>,
    pub goto: Option<Pos>,
    /// The option's `value:` key, when it has one.
    pub value: Option<Pos>,
    /// The `set:` key, and each var it names with where.
    pub set: Option<Pos>,
    pub set_vars: Vec<(String, Pos)>,
    pub id: Option<Pos>,
    pub description: Option<Pos>,
}

impl OptionSite {
    /// Where the `n`-th of [`MenuOption::answers`] was written: the label for
    /// the option's number and label, the `match` entry for a match word.
    pub fn answer(&self, n: usize) -> Pos {
        match n {
            0 | 1 => self.label.unwrap_or(self.pos),
            m => self.matches[m - 2],
        }
    }
}

/// Whether a name can be a node name (or a `.rhai` file stem).
pub(crate) fn valid_node_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Reads the menu node `name: value` of file number `file_index`.
pub(crate) fn read_menu_node(
    walker: &mut Walker<'_>,
    templates: &mut Templates,
    file_index: usize,
    name: &MarkedScalarNode,
    value: &Node,
) -> Option<(MenuNode, NodeSite)> {
    let map = walker.mapping(name, value)?;
    let node_name = name.as_str();
    let context = format!("in node `{node_name}`");
    walker.check_keys(map, &NODE_KEYS, &context);

    let name_pos = Pos::of_scalar(name);
    let mut node = MenuNode {
        name: node_name.to_owned(),
        origin: Origin {
            file: walker.file.path.clone(),
            line: name_pos.line,
            column: name_pos.column,
        },
        say: Vec::new(),
        media: Vec::new(),
        options: Vec::new(),
        save_as: None,
        validate: None,
        invalid: None,
        goto: None,
        style: None,
        button: None,
        template: None,
        timeout: None,
        on_timeout: None,
        handoff: None,
    };
    let mut site = NodeSite {
        file: file_index,
        goto: None,
        timeout: None,
        on_timeout: None,
        options: Vec::new(),
        reads: Vec::new(),
        name: name_pos,
        options_key: None,
        style: None,
        button: None,
        template: None,
        last_say: None,
    };
    let mut reader = NodeReader {
        walker,
        templates,
        file: file_index,
        reads: Vec::new(),
    };
    let mut validate_key = None;
    let mut options_key = None;
    for (key, value) in map.iter() {
        match key.as_str() {
            "say" => {
                site.last_say = match value {
                    Node::Sequence(items) => items.iter().last().map(Pos::of),
                    _ => Some(Pos::of(value)),
                };
                node.say = reader.texts(key, value);
            }
            "style" => {
                if let Some(s) = reader.walker.non_empty_string(key, value) {
                    site.style = Some(s.pos);
                    node.style = reader.style(&s);
                }
            }
            "button" => {
                if let Some(s) = reader.walker.non_empty_string(key, value) {
                    site.button = Some(s.pos);
                    node.button = Some(s.value.trim().to_owned());
                }
            }
            "template" => {
                if let Some(s) = reader.walker.non_empty_string(key, value) {
                    site.template = Some(s.pos);
                    node.template = Some(s.value.trim().to_owned());
                }
            }
            "media" => node.media = reader.media(key, value),
            "invalid" => node.invalid = reader.text(key, value),
            "save_as" => {
                if let Some(s) = reader.walker.non_empty_string(key, value) {
                    node.save_as = reader.var_name(s);
                }
            }
            "validate" => {
                validate_key = Some(key);
                if let Some(s) = reader.walker.non_empty_string(key, value) {
                    node.validate = reader.regex(&s);
                }
            }
            "goto" => {
                if let Some(s) = reader.walker.non_empty_string(key, value) {
                    site.goto = Some(s.pos);
                    node.goto = Some(s.value.trim().to_owned());
                }
            }
            "timeout" => {
                if let Some(s) = reader.walker.non_empty_string(key, value) {
                    site.timeout = Some(s.pos);
                    node.timeout = reader.timeout(&s);
                }
            }
            "on_timeout" => {
                if let Some(s) = reader.walker.non_empty_string(key, value) {
                    site.on_timeout = Some(s.pos);
                    node.on_timeout = Some(s.value.trim().to_owned());
                }
            }
            "handoff" => {
                if let Some(s) = reader.walker.non_empty_string(key, value) {
                    node.handoff = reader.queue(&s);
                }
            }
            "options" => {
                options_key = Some(key);
                site.options_key = Some(Pos::of_scalar(key));
                if let Some((options, sites)) = reader.options(key, value) {
                    node.options = options;
                    site.options = sites;
                }
            }
            _ => {}
        }
    }

    let has_save_as = map.get_node("save_as").is_some();
    match (validate_key, options_key) {
        // With options, `save_as` stores the chosen option, which needs no check.
        (Some(key), Some(_)) => reader.walker.error(
            Pos::of_scalar(key),
            format!("`validate` cannot be used with `options` in node `{node_name}`"),
            Some("an answer must choose an option, so there is nothing to validate: remove `validate`; to check a typed answer, ask for it in a node of its own with `save_as` and `validate`".into()),
        ),
        (Some(key), None) if !has_save_as => reader.walker.error(
            Pos::of_scalar(key),
            format!("`validate` without `save_as` in node `{node_name}`"),
            Some("`validate` checks the answer stored by `save_as`: add `save_as: name`".into()),
        ),
        _ => {}
    }
    if let (Some(_), Some(goto)) = (options_key, site.goto) {
        reader.walker.warning(
            goto,
            format!("node `{node_name}` has both `options` and `goto`: the `goto` is never used"),
            Some("the chosen option decides where to go: give each option its own `goto`".into()),
        );
    }
    reader.check_timeout(&node, &site);
    if node.handoff.is_some() {
        // A handed-off conversation waits for a person, not for an answer or
        // a next node.
        for (other, what) in [
            ("options", "a handed-off conversation waits for a person, not for a choice: remove `options`, or put `handoff` on one of the options"),
            ("save_as", "a handed-off conversation waits for a person, not for an answer: ask in a node before, then `goto` the handoff node"),
            ("goto", "the conversation stays with a person after a handoff, so the `goto` would never run: remove it (a person hands back with the release API or the console)"),
        ] {
            if let Some((key, _)) = map.iter().find(|(k, _)| k.as_str() == other) {
                reader.walker.error(
                    Pos::of_scalar(key),
                    format!("node `{node_name}` has both `handoff` and `{other}`"),
                    Some(what.into()),
                );
            }
        }
    }
    reader.check_option_vars(&node, &site);
    check_ids(reader.walker, &node, &site);
    if let Some(style) = node.style.and_then(MenuStyle::explicit) {
        check_interactive(reader.walker, &node, &site, style, false);
    }
    if let (Some(pos), false) = (site.template, map.get_node("say").is_none()) {
        reader.walker.error(
            pos,
            format!("node `{node_name}` has both `template` and `say`"),
            Some("a template is sent instead of `say`: put the text in the template (in the Twilio console), or send it from a node of its own".into()),
        );
    }
    if node.say.is_empty()
        && node.handoff.is_none()
        && node.template.is_none()
        && node.media.is_empty()
        && options_key.is_none()
        && !has_save_as
        && node.goto.is_none()
        && map.get_node("goto").is_none()
    {
        reader.walker.warning(
            name_pos,
            format!("node `{node_name}` does nothing: it sends nothing and ends the conversation"),
            Some("give it a `say`, `options`, `save_as` or `goto`".into()),
        );
    }
    site.reads = reader.reads;
    Some((node, site))
}

struct NodeReader<'w, 'f, 't> {
    walker: &'w mut Walker<'f>,
    templates: &'t mut Templates,
    /// Index of the node's file in the loader's file list.
    file: usize,
    /// The vars the texts read so far.
    reads: Vec<VarUse>,
}

/// `id`s must fit WhatsApp's payload and tell the options apart.
fn check_ids(walker: &mut Walker<'_>, node: &MenuNode, site: &NodeSite) {
    for (i, (option, option_site)) in node.options.iter().zip(&site.options).enumerate() {
        let (Some(id), Some(pos)) = (&option.id, option_site.id) else {
            continue;
        };
        if let Some(problem) = message::id_problem(id) {
            walker.error(
                pos,
                format!("option {}: {problem}", i + 1),
                Some("an id is a short code WhatsApp returns when the option is tapped, such as `browse`".into()),
            );
        }
        let earlier = node.options[..i]
            .iter()
            .enumerate()
            .find(|(j, other)| other.payload(*j) == *id);
        if let Some((j, _)) = earlier {
            walker.error(
                pos,
                format!(
                    "option {} has the id `{id}`, which option {} already answers to",
                    i + 1,
                    j + 1
                ),
                Some("each option needs its own id: a tap must choose one option".into()),
            );
        }
    }
}

/// WhatsApp's limits on a menu sent as `style` (SPEC §8.1), each an error at
/// the place to fix. `from_bot`: the style is the bot's `menu_style`.
pub(crate) fn check_interactive(
    walker: &mut Walker<'_>,
    node: &MenuNode,
    site: &NodeSite,
    style: InteractiveStyle,
    from_bot: bool,
) {
    if node.options.is_empty() || node.template.is_some() {
        return;
    }
    let name = style.as_str();
    let node_name = &node.name;
    let why = if from_bot {
        format!(" (`menu_style: {name}` in bot.yaml)")
    } else {
        String::new()
    };
    let fix_style = if from_bot {
        format!("give node `{node_name}` its own `style: text` (or `auto`)")
    } else {
        "use `style: auto` to fall back to text when a menu does not fit".to_owned()
    };
    if node.options.len() > style.max_choices() {
        let other = match style {
            InteractiveStyle::Buttons if node.options.len() <= limits::MAX_LIST_ITEMS => {
                "`style: list`, or "
            }
            _ => "",
        };
        walker.error(
            site.options_key.unwrap_or(site.name),
            format!(
                "node `{node_name}` has {} options, but WhatsApp {name} hold at most {}{why}",
                node.options.len(),
                style.max_choices()
            ),
            Some(format!("use {other}fewer options; or {fix_style}")),
        );
    }
    for (i, (option, option_site)) in node.options.iter().zip(&site.options).enumerate() {
        let label_pos = option_site.label.unwrap_or(option_site.pos);
        if let Some(problem) = message::length_problem(
            &format!("option {}'s label", i + 1),
            &option.label,
            style.max_label(),
        ) {
            walker.error(
                label_pos,
                format!("{problem} in {name}{why}"),
                Some(format!("shorten the label; or {fix_style}")),
            );
        }
        if let (Some(description), Some(pos)) = (&option.description, option_site.description) {
            match style {
                InteractiveStyle::Buttons => walker.error(
                    pos,
                    format!(
                        "option {} has a `description`, but buttons show none{why}",
                        i + 1
                    ),
                    Some("remove it, or use `style: list`, which shows descriptions".into()),
                ),
                InteractiveStyle::List => {
                    if let Some(problem) = message::length_problem(
                        &format!("option {}'s description", i + 1),
                        description,
                        limits::MAX_DESCRIPTION,
                    ) {
                        walker.error(pos, problem, Some("shorten the description".into()));
                    }
                }
            }
        }
    }
    if let (Some(button), Some(pos)) = (&node.button, site.button) {
        match style {
            InteractiveStyle::List => {
                if let Some(problem) =
                    message::length_problem("`button`", button, limits::MAX_LIST_BUTTON)
                {
                    walker.error(pos, problem, Some("shorten the button's label".into()));
                }
            }
            InteractiveStyle::Buttons => walker.warning(
                pos,
                format!("`button` is only used by lists, and node `{node_name}` is sent as buttons{why}"),
                Some("remove `button`, or use `style: list`".into()),
            ),
        }
    }
    match node.say.last() {
        None => walker.error(
            site.style.unwrap_or(site.name),
            format!("node `{node_name}` is sent as {name}{why}, but has no `say`"),
            Some(format!(
                "WhatsApp shows {name} under a message: add `say: Please choose:`"
            )),
        ),
        Some(text) if !text.has_placeholders() => {
            if let Some(problem) = message::text_problem(&text.source) {
                walker.error(
                    site.last_say.unwrap_or(site.name),
                    format!("{problem} under {name}{why}"),
                    Some(
                        "shorten the last `say` message, or split it into a list of messages"
                            .into(),
                    ),
                );
            }
        }
        Some(_) => {}
    }
}

impl NodeReader<'_, '_, '_> {
    /// `style:` as written.
    fn style(&mut self, s: &Str) -> Option<MenuStyle> {
        let style = MenuStyle::parse(&s.value);
        if style.is_none() {
            let hint = crate::source::did_you_mean(s.value.trim(), MenuStyle::NAMES)
                .unwrap_or_else(|| {
                    format!(
                        "a menu's style is one of {}",
                        crate::source::backticked(MenuStyle::NAMES)
                    )
                });
            self.walker.error(
                s.pos,
                format!("unknown style `{}`", s.value.trim()),
                Some(hint),
            );
        }
        style
    }

    /// `handoff: sales`: a queue name; `None` after reporting a bad one.
    fn queue(&mut self, s: &Str) -> Option<String> {
        let name = s.value.trim();
        match crate::domain::Handoff::queue_problem(name) {
            None => Some(name.to_owned()),
            Some(problem) => {
                self.walker.error(
                    s.pos,
                    problem,
                    Some(crate::domain::Handoff::QUEUE_HINT.into()),
                );
                None
            }
        }
    }

    /// `timeout: 2h`; `None` after reporting a bad one.
    fn timeout(&mut self, s: &Str) -> Option<std::time::Duration> {
        match super::settings::parse_duration(&s.value) {
            Ok(d) => Some(d),
            Err(problem) => {
                self.walker.error(
                    s.pos,
                    format!("invalid timeout `{}`: {problem}", s.value),
                    Some("write a whole number and a unit: `30s`, `30m`, `2h` or `1d`".into()),
                );
                None
            }
        }
    }

    /// `timeout` only on a node that waits; `on_timeout` only with `timeout`.
    fn check_timeout(&mut self, node: &MenuNode, site: &NodeSite) {
        let name = &node.name;
        if let (Some(pos), false) = (site.timeout, node.waits()) {
            self.walker.error(
                pos,
                format!("`timeout` in node `{name}`, which does not wait for an answer"),
                Some(
                    "only a node with `options` or `save_as` waits: add one, or remove `timeout`"
                        .into(),
                ),
            );
        }
        if let (Some(pos), None) = (site.on_timeout, site.timeout) {
            self.walker.error(
                pos,
                format!("`on_timeout` without `timeout` in node `{name}`"),
                Some("say how long to wait: add `timeout: 2h` (s, m, h or d)".into()),
            );
        }
    }

    fn text(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<Text> {
        let s = self.walker.string(key, value)?;
        self.compile(key.as_str(), s)
    }

    fn texts(&mut self, key: &MarkedScalarNode, value: &Node) -> Vec<Text> {
        let strings = self.walker.strings(key, value).unwrap_or_default();
        strings
            .into_iter()
            .filter_map(|s| self.compile(key.as_str(), s))
            .collect()
    }

    fn media(&mut self, key: &MarkedScalarNode, value: &Node) -> Vec<Text> {
        let strings = self.walker.strings(key, value).unwrap_or_default();
        let mut out = Vec::with_capacity(strings.len());
        for s in strings {
            let pos = s.pos;
            let Some(text) = self.compile("media", s) else {
                continue;
            };
            if !text.has_placeholders() && !is_http_url(&text.source) {
                self.walker.error(
                    pos,
                    format!("media `{}` is not an http(s) URL", text.source),
                    Some("Twilio fetches media from a public URL such as `https://example.com/car.jpg`".into()),
                );
                continue;
            }
            out.push(text);
        }
        out
    }

    /// Compiles one author text; a YAML `|` block's final line break is dropped.
    fn compile(&mut self, what: &str, s: Str) -> Option<Text> {
        let source = s.value.trim_end_matches(['\n', '\r']).to_owned();
        match self.templates.add(source) {
            Ok(text) => {
                self.check_user_fields(&text, &s);
                for (name, offset) in self.templates.variable_uses(&text) {
                    self.reads.push(VarUse {
                        file: self.file,
                        pos: locate(&self.walker.file.text, s.pos, &s.value, offset),
                        name,
                    });
                }
                Some(text)
            }
            Err(e) => {
                let pos = match e.offset {
                    Some(offset) => locate(&self.walker.file.text, s.pos, &s.value, offset),
                    None => s.pos,
                };
                let hint = e.hint.unwrap_or_else(|| {
                    "placeholders look like `{{ name }}` or `{{ user.name }}`".into()
                });
                self.walker.error(
                    pos,
                    format!("template error in `{what}`: {}", e.message),
                    Some(hint),
                );
                None
            }
        }
    }

    fn check_user_fields(&mut self, text: &Text, s: &Str) {
        for var in self.templates.variables(text) {
            let Some(field) = var.strip_prefix("user.") else {
                continue;
            };
            if USER_FIELDS.contains(&field) {
                continue;
            }
            let offset = s.value.find(&var).unwrap_or(0);
            let pos = locate(&self.walker.file.text, s.pos, &s.value, offset);
            let hint = match closest(field, USER_FIELDS) {
                Some(best) => format!("did you mean `user.{best}`?"),
                None => "`user` has `name`, `phone` and `channel`".to_owned(),
            };
            self.walker
                .warning(pos, format!("`{var}` is always empty"), Some(hint));
        }
    }

    fn var_name(&mut self, s: Str) -> Option<String> {
        self.var_name_in(s, "save_as: user")
    }

    /// A var name written as `shown` (for the message when it is `user`).
    fn var_name_in(&mut self, s: Str, shown: &str) -> Option<String> {
        let name = s.value.trim();
        if name == "user" {
            self.walker.error(
                s.pos,
                format!("`{shown}` would hide `user` in templates"),
                Some("pick another name, such as `user_name`".into()),
            );
            return None;
        }
        if let Some((message, hint)) = var_name_problem(name) {
            self.walker.error(s.pos, message, Some(hint));
            return None;
        }
        Some(name.to_owned())
    }

    /// An option's `value:`: a number stays a number, anything else is text.
    fn option_value(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<Value> {
        let s = self.walker.non_empty_string(key, value)?;
        if self.has_template(&s, "value") {
            return None;
        }
        Some(match to_json(value) {
            Value::Number(n) => Value::Number(n),
            _ => Value::String(s.value.trim().to_owned()),
        })
    }

    /// An option's `set:`, a map of var name -> value, into `set` (and where
    /// each var was written into `sites`).
    fn set(
        &mut self,
        key: &MarkedScalarNode,
        value: &Node,
        set: &mut Map<String, Value>,
        sites: &mut Vec<(String, Pos)>,
    ) {
        let Node::Mapping(map) = value else {
            let pos = if is_null(value) {
                Pos::of_scalar(key)
            } else {
                Pos::of(value)
            };
            self.walker.error(
                pos,
                format!(
                    "`set` must be a map of `name: value` lines, found {}",
                    kind(value)
                ),
                Some("write the vars this option sets, such as `set: {price: 25}`".into()),
            );
            return;
        };
        for (name, value) in map.iter() {
            let name_pos = Pos::of_scalar(name);
            let written = Str {
                value: name.as_str().to_owned(),
                pos: name_pos,
            };
            let Some(var) = self.var_name_in(written, "set: {user: ...}") else {
                continue;
            };
            if is_null(value) {
                self.walker.error(
                    name_pos,
                    format!("`{var}` in `set` has no value"),
                    Some(format!(
                        "write the value after the `:`, such as `{var}: 25`, or `{var}: \"\"` for an empty text"
                    )),
                );
                continue;
            }
            if !self.plain_value(value) {
                continue;
            }
            sites.push((var.clone(), name_pos));
            set.insert(var, to_json(value));
        }
    }

    /// Whether a `set` value can be stored as written: no `{{ }}` in it (which
    /// would never be filled in) and not nested past [`MAX_SET_DEPTH`].
    /// Reports the first problem.
    fn plain_value(&mut self, value: &Node) -> bool {
        let mut pending = vec![(value, 1)];
        while let Some((node, depth)) = pending.pop() {
            if depth > MAX_SET_DEPTH {
                self.walker.error(
                    Pos::of(node),
                    format!("this value is nested more than {MAX_SET_DEPTH} levels deep"),
                    Some("vars set by an option are short values such as `price: 25`; build bigger data in a script node".into()),
                );
                return false;
            }
            match node {
                Node::Scalar(s) => {
                    let s = Str {
                        value: s.as_str().to_owned(),
                        pos: Pos::of(node),
                    };
                    if self.has_template(&s, "set") {
                        return false;
                    }
                }
                Node::Sequence(items) => pending.extend(items.iter().map(|i| (i, depth + 1))),
                Node::Mapping(map) => pending.extend(map.values().map(|v| (v, depth + 1))),
            }
        }
        true
    }

    /// Reports `{{ }}` in a `value` or `set` text, which is stored as written.
    fn has_template(&mut self, s: &Str, what: &str) -> bool {
        let Some(offset) = ["{{", "{%", "{#"]
            .iter()
            .filter_map(|m| s.value.find(m))
            .min()
        else {
            return false;
        };
        self.walker.error(
            locate(&self.walker.file.text, s.pos, &s.value, offset),
            format!("`{{{{ }}}}` is not filled in inside `{what}`: the text is stored as written"),
            Some("store plain values here (`price: 25`), and show vars with `{{ name }}` in a `say`; to compute a value, use a script node".into()),
        );
        true
    }

    /// After the node is read: an option's `value` is stored only by the node's
    /// `save_as`, and `set` may not fill the same var as `save_as`.
    fn check_option_vars(&mut self, node: &MenuNode, site: &NodeSite) {
        for (i, option_site) in site.options.iter().enumerate() {
            match &node.save_as {
                None => {
                    if let Some(pos) = option_site.value {
                        self.walker.warning(
                            pos,
                            format!(
                                "option {} has a `value`, but node `{}` has no `save_as`: the value is never stored",
                                i + 1,
                                node.name
                            ),
                            Some(format!(
                                "add `save_as: NAME` to node `{}` to keep the chosen option's value in `{{{{ NAME }}}}`",
                                node.name
                            )),
                        );
                    }
                }
                Some(var) => {
                    if let Some((_, pos)) = option_site.set_vars.iter().find(|(v, _)| v == var) {
                        self.walker.error(
                            *pos,
                            format!(
                                "option {} sets `{var}`, which `save_as: {var}` also sets",
                                i + 1
                            ),
                            Some(format!(
                                "to choose what `save_as` stores, write `value: ...` on the option; or rename `{var}` in `set`"
                            )),
                        );
                    }
                }
            }
        }
    }

    /// The author's regex, anchored to the whole answer.
    fn regex(&mut self, s: &Str) -> Option<Regex> {
        if let Err(e) = Regex::new(&s.value) {
            let (message, offset) = regex_problem(&e, &s.value);
            let pos = match offset {
                Some(offset) => locate(&self.walker.file.text, s.pos, &s.value, offset),
                None => s.pos,
            };
            self.walker.error(
                pos,
                format!("invalid regex in `validate`: {message}"),
                Some("the answer must match the whole pattern; in YAML, quote the pattern with '...' so `\\` stays as written".into()),
            );
            return None;
        }
        match Regex::new(&format!("^(?:{})$", s.value)) {
            Ok(re) => Some(re),
            Err(e) => {
                let (message, _) = regex_problem(&e, &s.value);
                self.walker.error(
                    s.pos,
                    format!("invalid regex in `validate`: {message}"),
                    None,
                );
                None
            }
        }
    }

    fn options(
        &mut self,
        key: &MarkedScalarNode,
        value: &Node,
    ) -> Option<(Vec<MenuOption>, Vec<OptionSite>)> {
        let Node::Sequence(items) = value else {
            self.walker.error(
                if is_null(value) {
                    Pos::of_scalar(key)
                } else {
                    Pos::of(value)
                },
                "`options` must be a list",
                Some("write each option as `- label: ...` on its own line".into()),
            );
            return None;
        };
        if items.is_empty() {
            self.walker.error(
                Pos::of_scalar(key),
                "`options` is empty",
                Some("add at least one `- label: ...`, or remove `options`".into()),
            );
            return None;
        }
        let mut options = Vec::with_capacity(items.len());
        let mut sites = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let pos = Pos::of(item);
            let Node::Mapping(map) = item else {
                let hint = match item {
                    Node::Scalar(s) => format!("write `- label: {}`", s.as_str()),
                    _ => {
                        "write `- label: ...` with an optional `goto`, `say` and `match`".to_owned()
                    }
                };
                self.walker.error(
                    pos,
                    format!("option {} must be a map with a `label`", index + 1),
                    Some(hint),
                );
                continue;
            };
            let pos = map.keys().next().map_or(pos, Pos::of_scalar);
            if let Some((option, site)) = self.option(index, pos, map) {
                options.push(option);
                sites.push(site);
            }
        }
        Some((options, sites))
    }

    fn option(
        &mut self,
        index: usize,
        pos: Pos,
        map: &MarkedMappingNode,
    ) -> Option<(MenuOption, OptionSite)> {
        let context = format!("in option {}", index + 1);
        self.walker.check_keys(map, &OPTION_KEYS, &context);
        let mut option = MenuOption {
            label: String::new(),
            matches: Vec::new(),
            value: Value::Null,
            set: Map::new(),
            say: Vec::new(),
            goto: None,
            id: None,
            description: None,
            handoff: None,
        };
        let mut site = OptionSite {
            pos,
            label: None,
            matches: Vec::new(),
            goto: None,
            value: None,
            set: None,
            set_vars: Vec::new(),
            id: None,
            description: None,
        };
        let mut stored = None;
        for (key, value) in map.iter() {
            match key.as_str() {
                "label" => {
                    if let Some(s) = self.walker.non_empty_string(key, value) {
                        site.label = Some(s.pos);
                        option.label = s.value.trim().to_owned();
                    }
                }
                "match" => {
                    for s in self.walker.strings(key, value).unwrap_or_default() {
                        let word = s.value.trim().to_lowercase();
                        if word.is_empty() {
                            self.walker.error(s.pos, "an empty `match` word", None);
                            continue;
                        }
                        option.matches.push(word);
                        site.matches.push(s.pos);
                    }
                }
                "value" => {
                    site.value = Some(Pos::of_scalar(key));
                    stored = self.option_value(key, value);
                }
                "set" => {
                    site.set = Some(Pos::of_scalar(key));
                    self.set(key, value, &mut option.set, &mut site.set_vars);
                }
                "say" => option.say = self.texts(key, value),
                "id" => {
                    if let Some(s) = self.walker.non_empty_string(key, value) {
                        site.id = Some(s.pos);
                        option.id = Some(s.value.trim().to_owned());
                    }
                }
                "description" => {
                    if let Some(s) = self.walker.non_empty_string(key, value) {
                        site.description = Some(s.pos);
                        option.description = Some(s.value.trim().to_owned());
                    }
                }
                "goto" => {
                    if let Some(s) = self.walker.non_empty_string(key, value) {
                        site.goto = Some(s.pos);
                        option.goto = Some(s.value.trim().to_owned());
                    }
                }
                "handoff" => {
                    if let Some(s) = self.walker.non_empty_string(key, value) {
                        option.handoff = self.queue(&s);
                    }
                }
                _ => {}
            }
        }
        if let (Some(goto), Some(_)) = (site.goto, &option.handoff) {
            self.walker.error(
                goto,
                format!("option {} has both `handoff` and `goto`", index + 1),
                Some("the conversation stays with a person after a handoff, so the `goto` would never run: remove one of them".into()),
            );
        }
        if let Some(key) = site.set.or(site.value) {
            let bytes = Value::Object(option.set.clone()).to_string().len()
                + stored.as_ref().map_or(0, |v: &Value| v.to_string().len());
            if bytes > MAX_SET_BYTES {
                self.walker.error(
                    key,
                    format!(
                        "option {} stores {} KiB in vars; a conversation's vars hold at most {} KiB",
                        index + 1,
                        bytes.div_ceil(1024),
                        MAX_SET_BYTES / 1024
                    ),
                    Some("keep long texts in the `say` that shows them, and store only short values".into()),
                );
            }
        }
        if map.get_node("label").is_none() {
            self.walker.error(
                pos,
                format!("option {} has no `label`", index + 1),
                Some("the label is what the contact sees: `- label: Browse cars`".into()),
            );
            return None;
        }
        if option.label.is_empty() {
            return None;
        }
        option.value = stored.unwrap_or_else(|| Value::String(option.label.clone()));
        Some((option, site))
    }
}

fn is_http_url(text: &str) -> bool {
    url::Url::parse(text)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .unwrap_or(false)
}

/// The last line of `regex`'s error (`error: unclosed group`), and the byte
/// offset in `pattern` its caret points at, when the pattern is one line.
fn regex_problem(e: &regex::Error, pattern: &str) -> (String, Option<usize>) {
    match e {
        regex::Error::Syntax(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let message = lines
                .iter()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or(text)
                .to_owned();
            // regex prints the pattern indented by 4, then a caret line under it.
            let offset = match lines.as_slice() {
                [_, shown, carets, ..]
                    if !pattern.contains('\n') && shown.get(4..) == Some(pattern) =>
                {
                    carets
                        .find('^')
                        .and_then(|col| col.checked_sub(4))
                        .and_then(|chars| pattern.char_indices().nth(chars).map(|(b, _)| b))
                }
                _ => None,
            };
            (message, offset)
        }
        regex::Error::CompiledTooBig(limit) => (
            format!("the pattern is too big (over {limit} bytes compiled)"),
            None,
        ),
        other => (other.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_problems_point_into_the_pattern() {
        let cases = [
            ("[a-z", "unclosed character class", Some(0)),
            ("ab(c", "unclosed group", Some(2)),
            (
                "a{2,1}",
                "invalid repetition count range, the start must be <= the end",
                Some(1),
            ),
        ];
        for (pattern, message, offset) in cases {
            let e = Regex::new(pattern).unwrap_err();
            assert_eq!(
                regex_problem(&e, pattern),
                (message.to_owned(), offset),
                "{pattern}"
            );
        }
    }

    #[test]
    fn names() {
        assert!(valid_node_name("test_drive"));
        assert!(valid_node_name("étape-2"));
        assert!(!valid_node_name("two words"));
        assert!(!valid_node_name(""));
        assert!(var_name_problem("day_2").is_none());
        assert!(var_name_problem("2day").is_some());
        assert!(var_name_problem("first name").is_some());
    }
}
