//! Menu nodes from YAML: `say`, `media`, `options`, `save_as`, `validate`,
//! `invalid`, `goto`. Templates are compiled and regexes built here; node names
//! are checked later, once every file is read.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::Node;
use regex::Regex;

use super::template::{Templates, Text, USER_FIELDS};
use super::vars::{var_name_problem, VarUse};
use super::{MenuNode, MenuOption, Origin};
use crate::source::yaml::{is_null, Str, Walker};
use crate::source::{closest, locate, Pos};

pub(crate) const NODE_KEYS: [&str; 7] = [
    "say", "media", "options", "save_as", "validate", "invalid", "goto",
];
const OPTION_KEYS: [&str; 4] = ["label", "match", "say", "goto"];

/// Where the parts of a menu node were written, for checks that come later.
#[derive(Debug, Clone)]
pub(crate) struct NodeSite {
    /// Index of the node's file in the loader's file list.
    pub file: usize,
    pub goto: Option<Pos>,
    pub options: Vec<OptionSite>,
    /// The vars the node's templates read, where.
    pub reads: Vec<VarUse>,
}

#[derive(Debug, Clone)]
pub(crate) struct OptionSite {
    /// The `- ` of the option.
    pub pos: Pos,
    pub label: Option<Pos>,
    /// One per entry of [`MenuOption::matches`].
    pub matches: Vec<Pos>,
    pub goto: Option<Pos>,
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
    };
    let mut site = NodeSite {
        file: file_index,
        goto: None,
        options: Vec::new(),
        reads: Vec::new(),
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
            "say" => node.say = reader.texts(key, value),
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
            "options" => {
                options_key = Some(key);
                if let Some((options, sites)) = reader.options(key, value) {
                    node.options = options;
                    site.options = sites;
                }
            }
            _ => {}
        }
    }

    let has_save_as = map.get_node("save_as").is_some();
    if let (Some(key), false) = (validate_key, has_save_as) {
        reader.walker.error(
            Pos::of_scalar(key),
            format!("`validate` without `save_as` in node `{node_name}`"),
            Some("`validate` checks the answer stored by `save_as`: add `save_as: name`".into()),
        );
    }
    // Both are allowed (an answer that chooses an option wins; any other answer is
    // validated and saved), but it is rarely what the author meant.
    if let (Some(key), true) = (options_key, has_save_as) {
        reader.walker.warning(
            Pos::of_scalar(key),
            format!("node `{node_name}` has both `options` and `save_as`"),
            Some("an answer that matches no option is saved: if you meant a menu or a question, split it into two nodes".into()),
        );
    }
    if let (Some(_), Some(goto), false) = (options_key, site.goto, has_save_as) {
        reader.walker.warning(
            goto,
            format!("node `{node_name}` has both `options` and `goto`: the `goto` is never used"),
            Some("the chosen option decides where to go: give each option its own `goto`".into()),
        );
    }
    if node.say.is_empty()
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

impl NodeReader<'_, '_, '_> {
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
        let name = s.value.trim();
        if name == "user" {
            self.walker.error(
                s.pos,
                "`save_as: user` would hide `user` in templates",
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
            say: Vec::new(),
            goto: None,
        };
        let mut site = OptionSite {
            pos,
            label: None,
            matches: Vec::new(),
            goto: None,
        };
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
                "say" => option.say = self.texts(key, value),
                "goto" => {
                    if let Some(s) = self.walker.non_empty_string(key, value) {
                        site.goto = Some(s.pos);
                        option.goto = Some(s.value.trim().to_owned());
                    }
                }
                _ => {}
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
