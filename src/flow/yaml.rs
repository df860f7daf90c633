//! Reading author YAML with positions: parsing with `marked_yaml`, and small
//! walkers that turn wrong shapes, unknown keys and bad values into
//! [`Diagnostic`]s with file, line, column and a hint.

use std::path::PathBuf;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node};

use crate::domain::{Diagnostic, Severity};

/// A position in a file, both 1-based (column in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// The whole file rather than a place in it.
    pub const FILE: Pos = Pos { line: 0, column: 0 };

    pub fn of(node: &Node) -> Pos {
        // A block map's own marker sits after its first key; the key is where
        // an author looks.
        if let Node::Mapping(map) = node {
            if let Some(key) = map.keys().next() {
                return Pos::of_scalar(key);
            }
        }
        node.span()
            .start()
            .map(|m| Pos {
                line: m.line(),
                column: m.column(),
            })
            .unwrap_or(Pos { line: 1, column: 1 })
    }

    pub fn of_scalar(node: &MarkedScalarNode) -> Pos {
        node.span()
            .start()
            .map(|m| Pos {
                line: m.line(),
                column: m.column(),
            })
            .unwrap_or(Pos { line: 1, column: 1 })
    }
}

/// One author file, kept whole so diagnostics can quote its lines.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn diagnostic(
        &self,
        severity: Severity,
        pos: Pos,
        message: impl Into<String>,
    ) -> Diagnostic {
        let d = match severity {
            Severity::Error => Diagnostic::error(&self.path, pos.line, pos.column, message),
            Severity::Warning => Diagnostic::warning(&self.path, pos.line, pos.column, message),
        };
        d.with_source(&self.text)
    }

    /// Parses the file as one YAML document whose top level is a map.
    pub fn parse(&self) -> Result<MarkedMappingNode, Diagnostic> {
        let options = LoaderOptions::default()
            .prevent_coercion(true)
            .error_on_duplicate_keys(true);
        let node = marked_yaml::parse_yaml_with_options(0, &self.text, options)
            .map_err(|e| self.load_error(e))?;
        if let Some(line) = second_document(&self.text) {
            return Err(self
                .diagnostic(
                    Severity::Error,
                    Pos { line, column: 1 },
                    "a second YAML document starts here; only the first one is read",
                )
                .with_hint("keep everything in one document: remove this `---` line"));
        }
        match node {
            Node::Mapping(map) => Ok(map),
            // `parse_yaml` only returns maps at the top level.
            other => Err(self.diagnostic(Severity::Error, Pos::of(&other), "expected a map")),
        }
    }

    fn load_error(&self, e: LoadError) -> Diagnostic {
        let at = |m: &marked_yaml::Marker| Pos {
            line: m.line(),
            column: m.column(),
        };
        const NO_ANCHORS: &str =
            "anchors (`&name`) and aliases (`*name`) are not supported: repeat the value instead";
        match e {
            LoadError::TopLevelMustBeMapping(m) | LoadError::TopLevelMustBeSequence(m) => self
                .diagnostic(
                    Severity::Error,
                    at(&m),
                    "expected a map of `name: value` at the top level",
                )
                .with_hint("start the file with a key, like `main:`"),
            LoadError::UnexpectedAnchor(m) => self
                .diagnostic(
                    Severity::Error,
                    self.sigil_before(&m, '&'),
                    "YAML anchors are not supported",
                )
                .with_hint(NO_ANCHORS),
            LoadError::MappingKeyMustBeScalar(m) => self
                .diagnostic(
                    Severity::Error,
                    at(&m),
                    "a key must be a plain name, not a list or a map",
                )
                .with_hint("quote the key if it contains `[`, `{`, `?` or `:`"),
            LoadError::UnexpectedTag(m) => self
                .diagnostic(
                    Severity::Error,
                    self.sigil_before(&m, '!'),
                    "YAML tags (`!name`) are not supported",
                )
                .with_hint("quote the value if it starts with `!`"),
            LoadError::ScanError(m, scan) => {
                let info = scan.info().to_owned();
                let d = self.diagnostic(Severity::Error, at(&m), format!("invalid YAML: {info}"));
                if info.contains("anchor") {
                    d.with_hint(NO_ANCHORS)
                } else if info.contains("tab") {
                    d.with_hint("indent with spaces, not tabs")
                } else if info.contains("quoted scalar") {
                    d.with_hint("check that every quote is closed, and use `\\\\` for a backslash in double quotes")
                } else {
                    d.with_hint("check the indentation, and quote values that contain `: `, `#` or start with a special character")
                }
            }
            LoadError::DuplicateKey(dup) => {
                let first = Pos::of_scalar(&dup.prev_key);
                self.diagnostic(
                    Severity::Error,
                    Pos::of_scalar(&dup.key),
                    format!(
                        "duplicate key `{}` (first defined at line {})",
                        dup.key.as_str(),
                        first.line
                    ),
                )
                .with_hint("remove one of them, or rename it")
            }
        }
    }
}

impl SourceFile {
    /// The `&` of an anchor or `!` of a tag on the node at `m`: the parser
    /// reports the node, the author wants the anchor or tag.
    fn sigil_before(&self, m: &marked_yaml::Marker, sigil: char) -> Pos {
        let at = Pos {
            line: m.line(),
            column: m.column(),
        };
        let end = self
            .text
            .char_indices()
            .nth(m.character())
            .map_or(self.text.len(), |(b, _)| b);
        let Some(amp) = self.text[..end].rfind(sigil) else {
            return at;
        };
        let before = &self.text[..amp];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Pos {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// The line of a `---` (or `...`) that ends the first document, if any.
fn second_document(text: &str) -> Option<usize> {
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let marker = line.starts_with("---") || line.starts_with("...");
        let bare_marker = marker && (line.len() == 3 || line[3..].starts_with([' ', '\t', '\r']));
        if bare_marker && seen_content {
            return Some(i + 1);
        }
        let trimmed = line.trim();
        if !bare_marker
            && !trimmed.is_empty()
            && !trimmed.starts_with('#')
            && !trimmed.starts_with('%')
        {
            seen_content = true;
        }
    }
    None
}

/// A string value read from YAML, with where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Str {
    pub value: String,
    pub pos: Pos,
}

/// Turns YAML nodes into values, recording every problem in one list so a load
/// reports all of them at once.
pub(crate) struct Walker<'a> {
    pub file: &'a SourceFile,
    pub diagnostics: &'a mut Vec<Diagnostic>,
}

/// A scalar written as nothing: `key:`, `key: ~`, `key: null`.
pub(crate) fn is_null(node: &Node) -> bool {
    match node {
        Node::Scalar(s) => {
            s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
        }
        _ => false,
    }
}

fn kind(node: &Node) -> &'static str {
    match node {
        _ if is_null(node) => "nothing",
        Node::Scalar(_) => "a value",
        Node::Sequence(_) => "a list",
        Node::Mapping(_) => "a map",
    }
}

impl Walker<'_> {
    pub fn error(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Error, pos, message, hint);
    }

    pub fn warning(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Warning, pos, message, hint);
    }

    fn push(
        &mut self,
        severity: Severity,
        pos: Pos,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let mut d = self.file.diagnostic(severity, pos, message);
        d.hint = hint;
        self.diagnostics.push(d);
    }

    /// Reports keys of `map` that are not in `allowed`, suggesting the closest one.
    pub fn check_keys(&mut self, map: &MarkedMappingNode, allowed: &[&str], context: &str) {
        for key in map.keys() {
            let name = key.as_str();
            if allowed.contains(&name) {
                continue;
            }
            let hint = match did_you_mean(name, allowed.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!(
                    "allowed keys {context}: {}",
                    backticked(allowed.iter().copied())
                ),
            };
            self.error(
                Pos::of_scalar(key),
                format!("unknown key `{name}` {context}"),
                Some(hint),
            );
        }
    }

    /// A string value; numbers and booleans are read as written.
    /// `None` (after reporting) for nothing, a list or a map.
    pub fn string(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<Str> {
        match value {
            Node::Scalar(s) if !is_null(value) => Some(Str {
                value: s.as_str().to_owned(),
                pos: Pos::of(value),
            }),
            _ => {
                self.wrong_type(key, value, "a text value");
                None
            }
        }
    }

    /// A string that may not be empty.
    pub fn non_empty_string(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<Str> {
        let s = self.string(key, value)?;
        if s.value.trim().is_empty() {
            self.error(
                s.pos,
                format!("`{}` is empty", key.as_str()),
                Some("write a value, or remove the key".into()),
            );
            return None;
        }
        Some(s)
    }

    /// A string or a list of strings.
    pub fn strings(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<Vec<Str>> {
        match value {
            Node::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items.iter() {
                    match item {
                        Node::Scalar(s) if !is_null(item) => out.push(Str {
                            value: s.as_str().to_owned(),
                            pos: Pos::of(item),
                        }),
                        _ => self.error(
                            Pos::of(item),
                            format!(
                                "each entry of `{}` must be a text value, found {}",
                                key.as_str(),
                                kind(item)
                            ),
                            Some(
                                "quote the text if it contains `: ` or starts with `-`, `[` or `{`"
                                    .into(),
                            ),
                        ),
                    }
                }
                Some(out)
            }
            _ => self.string(key, value).map(|s| vec![s]),
        }
    }

    pub fn mapping<'n>(
        &mut self,
        key: &MarkedScalarNode,
        value: &'n Node,
    ) -> Option<&'n MarkedMappingNode> {
        match value {
            Node::Mapping(map) => Some(map),
            _ => {
                self.wrong_type(key, value, "a map of `key: value` lines");
                None
            }
        }
    }

    fn wrong_type(&mut self, key: &MarkedScalarNode, value: &Node, expected: &str) {
        // An empty value's own position is the next key; point at this key instead.
        let pos = if is_null(value) {
            Pos::of_scalar(key)
        } else {
            Pos::of(value)
        };
        let hint = if is_null(value) {
            Some("write a value after the `:`, or remove the key".to_owned())
        } else if matches!(value, Node::Mapping(_)) && expected.starts_with("a text") {
            Some("quote the text if it contains `: `".to_owned())
        } else {
            None
        };
        self.error(
            pos,
            format!(
                "`{}` must be {expected}, found {}",
                key.as_str(),
                kind(value)
            ),
            hint,
        );
    }
}

/// The candidate closest to `name` when it is close enough to be a typo.
pub(crate) fn did_you_mean<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let lower = name.to_lowercase();
    let allowed = match lower.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// `a`, `b`, `c` for a hint.
pub(crate) fn backticked<'c>(names: impl IntoIterator<Item = &'c str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where byte `offset` of a scalar's `value` was written in the file, found by
/// looking for the text around it on the lines from the scalar's start. Quotes,
/// escapes and folding can make the value differ from the file; then the scalar's
/// own position is the best answer.
pub(crate) fn locate(file: &str, start: Pos, value: &str, offset: usize) -> Pos {
    let offset = offset.min(value.len());
    // Folding only ever joins lines, so the text is on this line or a later one.
    let first_line = start.line + value[..offset].matches('\n').count();
    let line_end = value[offset..]
        .find('\n')
        .map_or(value.len(), |i| offset + i);
    let rest = &value[offset..line_end];
    let short = &rest[..rest.char_indices().nth(8).map_or(rest.len(), |(i, _)| i)];
    for needle in [rest, short] {
        if needle.is_empty() {
            continue;
        }
        let lines = file.lines().enumerate().skip(first_line.saturating_sub(1));
        for (i, text) in lines.take(200) {
            let from = if i + 1 == start.line {
                text.char_indices()
                    .nth(start.column.saturating_sub(1))
                    .map_or(text.len(), |(b, _)| b)
            } else {
                0
            };
            if let Some(found) = text[from..].find(needle) {
                let column = text[..from + found].chars().count() + 1;
                return Pos {
                    line: i + 1,
                    column,
                };
            }
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SourceFile {
        SourceFile {
            path: "f.yaml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn parse_errors_are_located() {
        let cases = [
            (
                "a: 1\nb: [1, 2\n",
                3,
                1,
                "invalid YAML: while parsing a flow sequence, expected ',' or ']'",
            ),
            ("a: &x 1\nb: *x\n", 1, 4, "YAML anchors are not supported"),
            (
                "a:\n  b: &x\n    c: 1\n",
                2,
                6,
                "YAML anchors are not supported",
            ),
            (
                "a: *x\n",
                1,
                4,
                "invalid YAML: while parsing node, found unknown anchor",
            ),
            (
                "é: \"😀x\"\n  bad: 1\n",
                2,
                6,
                "invalid YAML: while parsing a block mapping, did not find expected key",
            ),
            (
                "a: 1\na: 2\n",
                2,
                1,
                "duplicate key `a` (first defined at line 1)",
            ),
            (
                "- 1\n",
                1,
                1,
                "expected a map of `name: value` at the top level",
            ),
            ("a: !tag x\n", 1, 4, "YAML tags (`!name`) are not supported"),
            (
                "a: 1\n---\nb: 2\n",
                2,
                1,
                "a second YAML document starts here; only the first one is read",
            ),
        ];
        for (text, line, column, message) in cases {
            let d = file(text).parse().unwrap_err();
            assert_eq!(
                (d.line, d.column, d.message.as_str()),
                (line, column, message),
                "{text:?}"
            );
            assert!(d.hint.is_some(), "{text:?}");
        }
    }

    #[test]
    fn leading_document_marker_is_fine() {
        assert!(file("# c\n---\na: 1\n").parse().is_ok());
        assert!(file("").parse().unwrap().is_empty());
    }

    #[test]
    fn did_you_mean_picks_close_names() {
        let keys = ["say", "media", "options", "goto", "save_as"];
        assert_eq!(did_you_mean("sya", keys), Some("say"));
        assert_eq!(did_you_mean("option", keys), Some("options"));
        assert_eq!(did_you_mean("Goto", keys), Some("goto"));
        assert_eq!(did_you_mean("banana", keys), None);
        assert_eq!(did_you_mean("brows", ["browse", "main"]), Some("browse"));
    }

    #[test]
    fn locate_finds_text_in_the_file() {
        let text = "a:\n  say: \"Hi {{ x }\"\n  b: |\n    one\n    two {{ y\n";
        assert_eq!(
            locate(text, Pos { line: 2, column: 8 }, "Hi {{ x }", 3),
            Pos {
                line: 2,
                column: 12
            }
        );
        assert_eq!(
            locate(text, Pos { line: 4, column: 5 }, "one\ntwo {{ y\n", 8),
            Pos { line: 5, column: 9 }
        );
        assert_eq!(
            locate(text, Pos { line: 2, column: 8 }, "zzz", 1),
            Pos { line: 2, column: 8 }
        );
    }
}
