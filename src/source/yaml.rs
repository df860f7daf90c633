//! Reading author YAML with positions: parsing with `marked_yaml` (one document,
//! or several separated by `---` lines, each located in the whole file), and a
//! [`Walker`] that turns wrong shapes, unknown keys and bad values into
//! [`Diagnostic`]s with file, line, column and a hint.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Marker, Node, Span};
use serde_json::{Number, Value};

use super::{backticked, did_you_mean, Pos, SourceFile};
use crate::domain::{Diagnostic, Severity};

impl Pos {
    /// Where `node` starts; for a map, its first key.
    pub fn of(node: &Node) -> Pos {
        // A block map's own marker sits after its first key; the key is where
        // an author looks.
        if let Node::Mapping(map) = node {
            if let Some(key) = map.keys().next() {
                return Pos::of_scalar(key);
            }
        }
        node.span().start().map_or(Pos { line: 1, column: 1 }, at)
    }

    pub fn of_scalar(node: &MarkedScalarNode) -> Pos {
        node.span().start().map_or(Pos { line: 1, column: 1 }, at)
    }
}

fn at(m: &Marker) -> Pos {
    Pos {
        line: m.line(),
        column: m.column(),
    }
}

/// What a file's top level must be: the error when it is a list or a value.
pub(crate) struct TopLevel {
    pub message: &'static str,
    pub hint: &'static str,
}

impl SourceFile {
    /// Parses the file as one YAML document whose top level is a map.
    pub fn parse(&self, top: &TopLevel) -> Result<MarkedMappingNode, Diagnostic> {
        let map = self.parse_part(&self.text, Shift::default(), top)?;
        if let Some(line) = second_document(&self.text) {
            return Err(self
                .error(
                    Pos { line, column: 1 },
                    "a second YAML document starts here; only the first one is read",
                )
                .with_hint("keep everything in one document: remove this `---` line"));
        }
        Ok(map)
    }

    /// Parses the file as YAML documents separated by `---` lines, each a map
    /// located in the whole file. Documents of nothing but comments and blank
    /// lines are left out.
    pub fn parse_documents(&self, top: &TopLevel) -> Vec<Result<MarkedMappingNode, Diagnostic>> {
        let mut found = Vec::new();
        let mut shift = Shift::default();
        let mut start = 0; // byte where the current document starts
        let mut has_content = false;
        let mut line_start = 0;
        for (lines, line) in self.text.split_inclusive('\n').enumerate() {
            let line_end = line_start + line.len();
            if is_document_marker(line) {
                if has_content {
                    let part = &self.text[start..line_start];
                    found.push(self.parse_part(part, shift, top));
                }
                has_content = false;
                // A `---` line opens the next document (YAML allows it there, and a
                // comment after it stays part of it); a `...` line only ends one.
                let next = if line.starts_with("---") {
                    line_start
                } else {
                    line_end
                };
                shift = Shift {
                    lines: if next == line_start { lines } else { lines + 1 },
                    chars: shift.chars + self.text[start..next].chars().count(),
                };
                start = next;
            } else if is_content(line) {
                has_content = true;
            }
            line_start = line_end;
        }
        if has_content {
            found.push(self.parse_part(&self.text[start..], shift, top));
        }
        found
    }

    /// Parses `part`, which starts `shift` into the file, as one document.
    fn parse_part(
        &self,
        part: &str,
        shift: Shift,
        top: &TopLevel,
    ) -> Result<MarkedMappingNode, Diagnostic> {
        let options = LoaderOptions::default()
            .prevent_coercion(true)
            .error_on_duplicate_keys(true);
        match marked_yaml::parse_yaml_with_options(0, part, options) {
            Ok(mut node) => {
                shift.node(&mut node);
                match node {
                    Node::Mapping(map) => Ok(map),
                    // `parse_yaml` only returns maps at the top level.
                    other => Err(self.error(Pos::of(&other), top.message).with_hint(top.hint)),
                }
            }
            Err(e) => Err(self.load_error(shift.error(e), top)),
        }
    }

    fn load_error(&self, e: LoadError, top: &TopLevel) -> Diagnostic {
        const NO_ANCHORS: &str =
            "anchors (`&name`) and aliases (`*name`) are not supported: repeat the value instead";
        match e {
            LoadError::TopLevelMustBeMapping(m) | LoadError::TopLevelMustBeSequence(m) => {
                self.error(at(&m), top.message).with_hint(top.hint)
            }
            LoadError::UnexpectedAnchor(m) => self
                .error(self.sigil_before(&m, '&'), "YAML anchors are not supported")
                .with_hint(NO_ANCHORS),
            LoadError::MappingKeyMustBeScalar(m) => self
                .error(at(&m), "a key must be a plain name, not a list or a map")
                .with_hint("quote the key if it contains `[`, `{`, `?` or `:`"),
            LoadError::UnexpectedTag(m) => self
                .error(
                    self.sigil_before(&m, '!'),
                    "YAML tags (`!name`) are not supported",
                )
                .with_hint("quote the value if it starts with `!`"),
            LoadError::ScanError(m, scan) => {
                let info = scan.info().to_owned();
                if info.contains("tab") {
                    // The parser may stop at the line before the tab (a plain
                    // value could go on onto the next line): show the tab itself.
                    return self
                        .error(
                            self.tab_from(at(&m)),
                            "a tab is used for indentation: YAML allows only spaces",
                        )
                        .with_hint("indent with spaces, not tabs");
                }
                let d = self.error(at(&m), format!("invalid YAML: {info}"));
                if info.contains("anchor") {
                    d.with_hint(NO_ANCHORS)
                } else if info.contains("quoted scalar") {
                    d.with_hint("check that every quote is closed, and use `\\\\` for a backslash in double quotes")
                } else {
                    d.with_hint("check the indentation, and quote values that contain `: `, `#` or start with a special character")
                }
            }
            LoadError::DuplicateKey(dup) => {
                let first = Pos::of_scalar(&dup.prev_key);
                self.error(
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

    /// The first tab in the indentation of a line, from the line of `from` on;
    /// `from` itself when there is none.
    fn tab_from(&self, from: Pos) -> Pos {
        let lines = self
            .text
            .lines()
            .enumerate()
            .skip(from.line.saturating_sub(1));
        for (i, line) in lines {
            let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
            if let Some(column) = line[..indent].find('\t') {
                return Pos {
                    line: i + 1,
                    column: column + 1,
                };
            }
        }
        from
    }

    /// The `&` of an anchor or `!` of a tag on the node at `m`: the parser
    /// reports the node, the author wants the anchor or tag.
    fn sigil_before(&self, m: &Marker, sigil: char) -> Pos {
        let end = self
            .text
            .char_indices()
            .nth(m.character())
            .map_or(self.text.len(), |(b, _)| b);
        let Some(found) = self.text[..end].rfind(sigil) else {
            return at(m);
        };
        let before = &self.text[..found];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Pos {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// How far into the file a document starts: positions the parser gives within
/// the document are moved by this to be positions in the file.
#[derive(Debug, Clone, Copy, Default)]
struct Shift {
    lines: usize,
    chars: usize,
}

impl Shift {
    fn marker(self, m: &mut Marker) {
        m.set_line(m.line() + self.lines);
        m.set_character(m.character() + self.chars);
    }

    fn span(self, span: &mut Span) {
        if let Some(m) = span.start_mut() {
            self.marker(m);
        }
        if let Some(m) = span.end_mut() {
            self.marker(m);
        }
    }

    /// Moves every position in `node`; a loop, not recursion, so a deeply nested
    /// document cannot exhaust the stack here.
    fn node(self, node: &mut Node) {
        if self.lines == 0 && self.chars == 0 {
            return;
        }
        let mut pending = vec![node];
        while let Some(node) = pending.pop() {
            self.span(node.span_mut());
            match node {
                Node::Scalar(_) => {}
                Node::Sequence(items) => pending.extend(items.iter_mut()),
                Node::Mapping(map) => {
                    // Keys are immutable inside the map: take them out and back.
                    let entries: Vec<(MarkedScalarNode, Node)> = map.drain().collect();
                    for (mut key, value) in entries {
                        self.span(key.span_mut());
                        map.insert(key, value);
                    }
                    pending.extend(map.values_mut());
                }
            }
        }
    }

    fn error(self, mut e: LoadError) -> LoadError {
        match &mut e {
            LoadError::TopLevelMustBeMapping(m)
            | LoadError::TopLevelMustBeSequence(m)
            | LoadError::UnexpectedAnchor(m)
            | LoadError::MappingKeyMustBeScalar(m)
            | LoadError::UnexpectedTag(m)
            | LoadError::ScanError(m, _) => self.marker(m),
            LoadError::DuplicateKey(dup) => {
                self.span(dup.key.span_mut());
                self.span(dup.prev_key.span_mut());
            }
        }
        e
    }
}

/// A `---` or `...` line, which separates YAML documents.
fn is_document_marker(line: &str) -> bool {
    (line.starts_with("---") || line.starts_with("..."))
        && (line.len() == 3 || line[3..].starts_with([' ', '\t', '\r', '\n']))
}

/// A line that is more than blank space, a comment or a directive.
fn is_content(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('%')
}

/// The line of a `---` (or `...`) that ends the first document, if any.
fn second_document(text: &str) -> Option<usize> {
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let marker = is_document_marker(line);
        if marker && seen_content {
            return Some(i + 1);
        }
        if !marker && is_content(line) {
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

/// What a node is, for messages: "nothing", "a value", "a list" or "a map".
pub(crate) fn kind(node: &Node) -> &'static str {
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
            let hint = did_you_mean(name, allowed)
                .unwrap_or_else(|| format!("allowed keys {context}: {}", backticked(allowed)));
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
        let hint = if is_null(value) && expected.starts_with("a map") {
            Some(format!(
                "write its lines under `{}:`, indented by two spaces, or remove the key",
                key.as_str()
            ))
        } else if is_null(value) {
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

/// A YAML value as JSON: unquoted `true`, `3`, `2.5`, `~` keep their YAML types;
/// anything quoted is a string.
pub(crate) fn to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => scalar_json(s),
        Node::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

fn scalar_json(s: &MarkedScalarNode) -> Value {
    let text = s.as_str();
    if !s.may_coerce() {
        return Value::String(text.to_owned());
    }
    match text {
        "~" | "null" | "Null" | "NULL" => return Value::Null,
        _ => {}
    }
    if let Some(b) = s.as_bool() {
        return Value::Bool(b);
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: TopLevel = TopLevel {
        message: "expected a map of `name: value` at the top level",
        hint: "start the file with a key",
    };

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
            let d = file(text).parse(&TOP).unwrap_err();
            assert_eq!(
                (d.line, d.column, d.message.as_str()),
                (line, column, message),
                "{text:?}"
            );
            assert!(d.hint.is_some(), "{text:?}");
        }
    }

    /// A tab is reported on its own line, even where the parser stops at the line
    /// before it (a plain value could have gone on onto the tab's line).
    #[test]
    fn a_tab_is_reported_where_it_is() {
        let cases = [
            ("main:\n  say: hi\n\tgoto: x\n", 3, 1),
            ("main:\n\tsay: hi\n", 2, 1),
            ("main:\n  options:\n    - label: a\n  \t  goto: b\n", 4, 3),
            ("main:\n  say: |\n    x\n\tgoto: y\n", 4, 1),
        ];
        for (text, line, column) in cases {
            let d = file(text).parse(&TOP).unwrap_err();
            assert_eq!(
                (d.line, d.column, d.message.as_str(), d.hint.as_deref()),
                (
                    line,
                    column,
                    "a tab is used for indentation: YAML allows only spaces",
                    Some("indent with spaces, not tabs")
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn leading_document_marker_is_fine() {
        assert!(file("# c\n---\na: 1\n").parse(&TOP).is_ok());
        assert!(file("").parse(&TOP).unwrap().is_empty());
    }

    /// Every document of a file is located in the whole file, errors too, and
    /// the same parse errors read the same as in a one-document file.
    #[test]
    fn documents_are_located_in_the_whole_file() {
        let text = "# tests\n---\na: 1\n---  # two\nb:\n  c: \"é\"\n...\n\n# only a comment\n---\nd: 1\nd: 2\n---\ne: &x 1\n---\nf: [1\n";
        let docs = file(text).parse_documents(&TOP);
        assert_eq!(docs.len(), 5, "{docs:?}");
        let first = docs[0].as_ref().unwrap();
        assert_eq!(
            Pos::of_scalar(first.keys().next().unwrap()),
            Pos { line: 3, column: 1 }
        );
        let second = docs[1].as_ref().unwrap();
        let inner = second.get_node("b").unwrap();
        assert_eq!(Pos::of(inner), Pos { line: 6, column: 3 });
        let c = inner.as_mapping().unwrap().get_node("c").unwrap();
        assert_eq!(Pos::of(c), Pos { line: 6, column: 6 });
        let errors: Vec<(usize, usize, &str)> = docs[2..]
            .iter()
            .map(|d| {
                let d = d.as_ref().unwrap_err();
                (d.line, d.column, d.message.as_str())
            })
            .collect();
        assert_eq!(
            errors,
            [
                (12, 1, "duplicate key `d` (first defined at line 11)"),
                (14, 4, "YAML anchors are not supported"),
                (
                    17,
                    1,
                    "invalid YAML: while parsing a flow sequence, expected ',' or ']'"
                ),
            ]
        );
    }

    #[test]
    fn quoted_values_stay_text_in_json() {
        let map = file("a: {n: 7, q: \"007\", t: true, s: 'yes', z: ~}\n")
            .parse(&TOP)
            .unwrap();
        assert_eq!(
            to_json(map.get_node("a").unwrap()),
            serde_json::json!({"n": 7, "q": "007", "t": true, "s": "yes", "z": null})
        );
    }
}
