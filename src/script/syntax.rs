//! Rhai syntax errors as an author reads them: the place to fix (not where the
//! parser gave up) and a hint for the common slips.
//!
//! Rhai reports the token it could not use: a missing `;` at the start of the next
//! line, a missing `}` at a line past the end of the file, an unclosed string as
//! "Expecting ','" when a later quote closed it. [`Scan`] reads the source once
//! (strings, comments and brackets, nothing more) so each of those can be moved to
//! where the author's mistake is: the end of the statement, the `{` never closed,
//! the opening quote. Everything else keeps Rhai's position, reworded.

use rhai::{LexError, ParseError, ParseErrorType};

use super::engine::{BUILTIN_VARS, DISABLED_SYMBOLS};
use crate::domain::Diagnostic;
use crate::source::{did_you_mean, Pos, SourceFile};

/// The diagnostic for a script that does not parse.
pub(super) fn parse_error(file: &SourceFile, err: &ParseError) -> Diagnostic {
    let at = Pos {
        line: err.position().line().unwrap_or(1),
        column: err.position().position().unwrap_or(1),
    };
    let (pos, message, hint) = describe(&file.text, err.err_type(), at);
    let mut d = file.error(pos, message);
    d.hint = hint;
    d
}

/// Where the problem is, what it is and how to fix it, for a parse error Rhai
/// reported at `at`.
fn describe(source: &str, err: &ParseErrorType, at: Pos) -> (Pos, String, Option<String>) {
    let scan = Scan::new(source);
    // Rhai may report a place past the last line (a missing `}` at the end).
    let at = scan.clamp(at);
    if let Some(found) = slip(&scan, err, at) {
        return found;
    }
    let (message, hint) = reword(err);
    (at, message, hint)
}

/// The common slips, each located where the author fixes it.
fn slip(scan: &Scan, err: &ParseErrorType, at: Pos) -> Option<(Pos, String, Option<String>)> {
    // An unclosed string: Rhai names it only when its tokenizer gets that far;
    // before that, the text it swallowed confuses the parser ("Expecting ','").
    let unclosed = match err {
        ParseErrorType::BadInput(LexError::UnterminatedString) => scan.unterminated.first(),
        _ => None,
    }
    .or_else(|| scan.unterminated.iter().find(|p| p.line == at.line));
    if let Some(&open) = unclosed {
        // `ask("Name?, "got_name")`: the quote meant to open the next string
        // closed the first one; the first string is the one left open.
        let swallowed = scan
            .last_code_before(at)
            .and_then(|end| scan.string_ending_at(end))
            .filter(|s| s.line == at.line && *s != open);
        let quote = scan.char_at(open).unwrap_or('"');
        let (open, hint) = match swallowed {
            Some(first) => (
                first,
                format!("add the closing `{quote}` where this text ends: the `{quote}` after it was read as its end, so what follows is out of place"),
            ),
            None if quote == '`' => (
                open,
                "add the closing backtick (`) where the text ends".to_owned(),
            ),
            None => (
                open,
                format!("add the closing `{quote}` where the text ends (such a string ends on its own line; for text over several lines use backticks)"),
            ),
        };
        return Some((open, "this string is never closed".to_owned(), Some(hint)));
    }

    if let Some(closer) = scan.stray_closer_at(at) {
        let (close, open) = match closer {
            ')' => (")", "("),
            ']' => ("]", "["),
            _ => ("}", "{"),
        };
        return Some((
            at,
            format!("unexpected `{close}`: there is no `{open}` for it to close"),
            Some(format!("remove it, or add the `{open}` it should close")),
        ));
    }

    match err {
        ParseErrorType::MissingToken(token, _) if token == "}" => {
            let open = scan.unclosed_brace()?;
            Some((
                open,
                "this `{` is never closed".to_owned(),
                Some("add a `}` where its block ends".to_owned()),
            ))
        }
        ParseErrorType::MissingToken(token, _) if token == ";" => Some((
            scan.after_last_code_before(at),
            "missing `;` at the end of this statement".to_owned(),
            Some("add `;` here: every statement ends with one".to_owned()),
        )),
        // `say("hi";`: the arguments end where the `)` is missing.
        ParseErrorType::MissingToken(token, what)
            if token == "," && what.contains("arguments") && scan.ends_statement(at) =>
        {
            let call = what
                .rsplit_once("function call '")
                .and_then(|(_, name)| name.strip_suffix('\''))
                .map(|name| format!(" of `{name}(`"))
                .unwrap_or_default();
            Some((
                scan.after_last_code_before(at),
                format!("missing `)` to end the arguments{call}"),
                Some("add `)` here".to_owned()),
            ))
        }
        _ => None,
    }
}

/// Rhai's message in the words of our other messages, with a hint where we have one.
fn reword(err: &ParseErrorType) -> (String, Option<String>) {
    match err {
        // Disabled keywords come as one or the other, depending on where they appear.
        ParseErrorType::BadInput(LexError::ImproperSymbol(word, _))
        | ParseErrorType::Reserved(word)
            if DISABLED_SYMBOLS.contains(&word.as_str()) =>
        {
            (
                format!("`{word}` is not available in Switchboard scripts"),
                Some(if word == "eval" {
                    "write the code directly instead of building it as a string".to_owned()
                } else {
                    "each script is one file: put the functions it needs in it".to_owned()
                }),
            )
        }
        ParseErrorType::Reserved(word) if word == "goto" || word == "go" => (
            format!("`{word}` is a reserved word in Rhai"),
            Some("to move to another node write go_to(\"node\")".to_owned()),
        ),
        ParseErrorType::Reserved(word) if word == "exit" => (
            "`exit` is a reserved word in Rhai".to_owned(),
            Some("to end the conversation write end()".to_owned()),
        ),
        ParseErrorType::Reserved(word) if word == "var" => (
            "`var` is a reserved word in Rhai".to_owned(),
            Some("declare a variable with `let name = ...;`".to_owned()),
        ),
        ParseErrorType::Reserved(word) => (
            format!("`{word}` is a reserved word in Rhai"),
            Some("choose another name".to_owned()),
        ),
        ParseErrorType::VariableUndefined(name) => (
            format!("unknown variable `{name}`"),
            Some(did_you_mean(name, BUILTIN_VARS).unwrap_or_else(|| {
                format!(
                    "declare it first with `let {name} = ...;`, or keep it across messages in `vars.{name}`"
                )
            })),
        ),
        ParseErrorType::ModuleUndefined(module) => (
            format!("unknown module `{module}`"),
            Some(format!(
                "functions written `{module}::name(...)` come from the host program, and it registers no `{module}` module"
            )),
        ),
        ParseErrorType::ExprTooDeep => (
            "expression nested too deeply".to_owned(),
            Some("split it into several statements or functions".to_owned()),
        ),
        ParseErrorType::MissingToken(token, what) => {
            (format!("expected `{token}` {what}").replace('\'', "`"), None)
        }
        ParseErrorType::BadInput(LexError::UnexpectedInput(what)) => {
            (format!("unexpected `{what}`"), None)
        }
        other => (other.to_string(), None),
    }
}

/// What one pass over a script's source finds: where its code is (outside comments
/// and blank space), its string literals, and how its brackets pair up.
#[derive(Debug, Default)]
struct Scan {
    /// Every character of code (strings included), in order.
    code: Vec<(Pos, char)>,
    /// String literals, each from its opening to its closing quote.
    strings: Vec<(Pos, Pos)>,
    /// Opening quotes of strings that are never closed.
    unterminated: Vec<Pos>,
    /// `{` never closed, outermost first.
    unclosed: Vec<Pos>,
    /// The first `{` whose `}` is indented unlike the line of the `{`: when a `}`
    /// is missing, the block the author left open is the likeliest one.
    misindented: Option<Pos>,
    /// `)`, `]` and `}` that close nothing, with the character.
    stray: Vec<(Pos, char)>,
    /// How many lines the source has.
    lines: usize,
}

/// An open bracket: the character, where, and how far its line is indented.
struct Open {
    bracket: char,
    pos: Pos,
    indent: usize,
}

impl Scan {
    fn new(source: &str) -> Scan {
        let mut scan = Scan {
            lines: source.lines().count().max(1),
            ..Scan::default()
        };
        let lines: Vec<&str> = source.lines().collect();
        let indent = |line: usize| {
            lines
                .get(line - 1)
                .map_or(0, |l| l.chars().take_while(|c| c.is_whitespace()).count())
        };
        let mut open: Vec<Open> = Vec::new();
        let mut chars = Chars::new(source);
        while let Some((pos, c)) = chars.next() {
            match c {
                '/' if chars.peek() == Some('/') => chars.skip_line(),
                '/' if chars.peek() == Some('*') => {
                    chars.next();
                    chars.skip_block_comment();
                }
                '"' | '\'' => {
                    scan.code.push((pos, c));
                    match chars.quoted(c, &mut scan.code) {
                        Some(end) => scan.strings.push((pos, end)),
                        None => scan.unterminated.push(pos),
                    }
                }
                '`' => {
                    scan.code.push((pos, c));
                    match chars.backticked(&mut scan.code) {
                        Some(end) => scan.strings.push((pos, end)),
                        None => scan.unterminated.push(pos),
                    }
                }
                c if c.is_whitespace() => {}
                '{' | '(' | '[' => {
                    scan.code.push((pos, c));
                    open.push(Open {
                        bracket: c,
                        pos,
                        indent: indent(pos.line),
                    });
                }
                '}' | ')' | ']' => {
                    let first_on_line = scan.code.last().is_none_or(|(p, _)| p.line < pos.line);
                    scan.code.push((pos, c));
                    let want = match c {
                        '}' => '{',
                        ')' => '(',
                        _ => '[',
                    };
                    if !open.iter().any(|o| o.bracket == want) {
                        scan.stray.push((pos, c));
                        continue;
                    }
                    // Brackets left open inside this one are unclosed too.
                    while let Some(o) = open.pop() {
                        if o.bracket == want {
                            if c == '}'
                                && first_on_line
                                && o.indent != indent(pos.line)
                                && scan.misindented.is_none()
                            {
                                scan.misindented = Some(o.pos);
                            }
                            break;
                        }
                        if o.bracket == '{' {
                            scan.unclosed.push(o.pos);
                        }
                    }
                }
                _ => scan.code.push((pos, c)),
            }
        }
        scan.unclosed
            .extend(open.iter().filter(|o| o.bracket == '{').map(|o| o.pos));
        scan.unclosed.sort_by_key(|p| (p.line, p.column));
        scan
    }

    /// `at`, or the end of the last line of code when `at` is past the last line.
    fn clamp(&self, at: Pos) -> Pos {
        if at.line <= self.lines {
            return at;
        }
        self.code
            .last()
            .map_or(Pos { line: 1, column: 1 }, |(p, _)| Pos {
                line: p.line,
                column: p.column + 1,
            })
    }

    fn last_code_before(&self, at: Pos) -> Option<Pos> {
        let i = self.index(at);
        i.checked_sub(1).map(|i| self.code[i].0)
    }

    /// Where `at` is (or would be) in [`Scan::code`].
    fn index(&self, at: Pos) -> usize {
        self.code
            .partition_point(|(p, _)| (p.line, p.column) < (at.line, at.column))
    }

    /// The code character at `at`, if any.
    fn char_at(&self, at: Pos) -> Option<char> {
        self.code
            .get(self.index(at))
            .filter(|(p, _)| *p == at)
            .map(|(_, c)| *c)
    }

    /// Just after the code that comes before `at`: where a missing `;` or `)` goes.
    fn after_last_code_before(&self, at: Pos) -> Pos {
        self.last_code_before(at).map_or(at, |p| Pos {
            line: p.line,
            column: p.column + 1,
        })
    }

    /// The opening quote of the string literal whose closing quote is at `end`.
    fn string_ending_at(&self, end: Pos) -> Option<Pos> {
        self.strings
            .iter()
            .find(|(_, e)| *e == end)
            .map(|(start, _)| *start)
    }

    /// The bracket at `at`, when it closes nothing.
    fn stray_closer_at(&self, at: Pos) -> Option<char> {
        self.stray.iter().find(|(p, _)| *p == at).map(|(_, c)| *c)
    }

    /// The `{` the author most likely left open: the innermost one never closed,
    /// unless a block inside it was closed by a `}` indented for another block
    /// (then that block is the one missing its `}`).
    fn unclosed_brace(&self) -> Option<Pos> {
        let innermost = self.unclosed.last().copied()?;
        Some(
            self.misindented
                .filter(|m| (m.line, m.column) > (innermost.line, innermost.column))
                .unwrap_or(innermost),
        )
    }

    /// Whether the token at `at` cannot continue an expression: a `;`, a `}`, or
    /// the first code of a line (the statement before it ended there).
    fn ends_statement(&self, at: Pos) -> bool {
        let first_on_line = self.last_code_before(at).is_none_or(|p| p.line < at.line);
        first_on_line || matches!(self.char_at(at), Some(';' | '}'))
    }
}

/// The characters of a source with their positions (1-based line, column in
/// characters, as Rhai counts them).
struct Chars<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    column: usize,
}

impl<'a> Chars<'a> {
    fn new(source: &'a str) -> Chars<'a> {
        Chars {
            chars: source.chars().peekable(),
            line: 1,
            column: 1,
        }
    }

    fn next(&mut self) -> Option<(Pos, char)> {
        let c = self.chars.next()?;
        let pos = Pos {
            line: self.line,
            column: self.column,
        };
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some((pos, c))
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn skip_line(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.next();
        }
    }

    /// After `/*`: Rhai's block comments nest.
    fn skip_block_comment(&mut self) {
        let mut depth = 1;
        while let Some((_, c)) = self.next() {
            match c {
                '*' if self.peek() == Some('/') => {
                    self.next();
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                '/' if self.peek() == Some('*') => {
                    self.next();
                    depth += 1;
                }
                _ => {}
            }
        }
    }

    /// After an opening `"` or `'`: the closing quote's position, or `None` when
    /// the line ends first (a `\` at the end of a line continues the string).
    fn quoted(&mut self, quote: char, code: &mut Vec<(Pos, char)>) -> Option<Pos> {
        while let Some(c) = self.peek() {
            if c == '\n' {
                return None;
            }
            let (pos, c) = self.next()?;
            code.push((pos, c));
            match c {
                '\\' => {
                    if let Some(escaped) = self.next() {
                        code.push(escaped);
                    }
                }
                c if c == quote => return Some(pos),
                _ => {}
            }
        }
        None
    }

    /// After an opening backtick: the closing one's position, or `None` at the end
    /// of the file. `${ ... }` may hold braces of its own.
    fn backticked(&mut self, code: &mut Vec<(Pos, char)>) -> Option<Pos> {
        let mut depth = 0usize;
        while let Some((pos, c)) = self.next() {
            if !c.is_whitespace() {
                code.push((pos, c));
            }
            match c {
                '$' if depth == 0 && self.peek() == Some('{') => {
                    if let Some(brace) = self.next() {
                        code.push(brace);
                    }
                    depth = 1;
                }
                '{' if depth > 0 => depth += 1,
                '}' if depth > 0 => depth -= 1,
                '`' if depth == 0 => return Some(pos),
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(source: &str) -> String {
        let engine = rhai::Engine::new();
        let mut scope = rhai::Scope::new();
        scope.push_dynamic("x", rhai::Dynamic::UNIT);
        let err = engine
            .compile_with_scope(&scope, source)
            .expect_err("does not parse");
        let file = SourceFile {
            path: "bot/order.rhai".into(),
            text: source.to_owned(),
        };
        parse_error(&file, &err).to_string()
    }

    /// The common slips, each with the exact rendering an author sees.
    #[test]
    fn common_slips_point_at_the_place_to_fix() {
        let cases = [
            (
                "missing `;`: the end of the statement, not the next line",
                "fn start() {\n    let n = 1\n    say(n);\n}\n",
                "bot/order.rhai:2:14: error: missing `;` at the end of this statement\n  \
                 |\n2 |     let n = 1\n  |              ^\n  \
                 = hint: add `;` here: every statement ends with one",
            ),
            (
                "missing `;` before a comment and a blank line",
                "fn start() {\n    let n = 1 // one\n\n    // say it\n    say(n);\n}\n",
                "bot/order.rhai:2:14: error: missing `;` at the end of this statement\n  \
                 |\n2 |     let n = 1 // one\n  |              ^\n  \
                 = hint: add `;` here: every statement ends with one",
            ),
            (
                "unclosed string",
                "fn start() {\n    say(\"hello);\n}\n",
                "bot/order.rhai:2:9: error: this string is never closed\n  \
                 |\n2 |     say(\"hello);\n  |         ^\n  \
                 = hint: add the closing `\"` where the text ends (such a string ends on its own line; for text over several lines use backticks)",
            ),
            (
                "unclosed string closed by the next one's quote",
                "fn start() {\n    ask(\"What's your name?, \"got_name\");\n}\n",
                "bot/order.rhai:2:9: error: this string is never closed\n  \
                 |\n2 |     ask(\"What's your name?, \"got_name\");\n  |         ^\n  \
                 = hint: add the closing `\"` where this text ends: the `\"` after it was read as its end, so what follows is out of place",
            ),
            (
                "unclosed backtick string",
                "fn start() {\n    say(`hi ${x}\n}\n",
                "bot/order.rhai:2:9: error: this string is never closed\n  \
                 |\n2 |     say(`hi ${x}\n  |         ^\n  \
                 = hint: add the closing backtick (`) where the text ends",
            ),
            (
                "missing `}` at the end of the file",
                "fn start() {\n    say(\"a\");\n\n\n",
                "bot/order.rhai:1:12: error: this `{` is never closed\n  \
                 |\n1 | fn start() {\n  |            ^\n  \
                 = hint: add a `}` where its block ends",
            ),
            (
                "missing `}` of an inner block, found by indentation",
                "fn start() {\n    if x {\n        say(\"a\");\n\n    say(\"b\");\n}\n",
                "bot/order.rhai:2:10: error: this `{` is never closed\n  \
                 |\n2 |     if x {\n  |          ^\n  \
                 = hint: add a `}` where its block ends",
            ),
            (
                "unexpected `)`",
                "fn start() {\n    say(\"a\"));\n}\n",
                "bot/order.rhai:2:13: error: unexpected `)`: there is no `(` for it to close\n  \
                 |\n2 |     say(\"a\"));\n  |             ^\n  \
                 = hint: remove it, or add the `(` it should close",
            ),
            (
                "unexpected `}`",
                "fn start() {\n    say(\"a\");\n}\n}\n",
                "bot/order.rhai:4:1: error: unexpected `}`: there is no `{` for it to close\n  \
                 |\n4 | }\n  | ^\n  \
                 = hint: remove it, or add the `{` it should close",
            ),
            (
                "missing `)`",
                "fn start() {\n    say(\"a\";\n}\n",
                "bot/order.rhai:2:12: error: missing `)` to end the arguments of `say(`\n  \
                 |\n2 |     say(\"a\";\n  |            ^\n  \
                 = hint: add `)` here",
            ),
        ];
        for (case, source, want) in cases {
            assert_eq!(error(source), want, "{case}");
        }
    }

    #[test]
    fn other_errors_keep_their_place_in_our_words() {
        let cases = [
            (
                "fn start() {\n    if true { say(\"a\"); } else say(\"b\");\n}\n",
                "bot/order.rhai:2:32: error: expected `{` to start a statement block",
            ),
            (
                "fn start() {\n    let a = [1, 2;\n}\n",
                "bot/order.rhai:2:18: error: expected `,` to separate the items of this array literal",
            ),
        ];
        for (source, want) in cases {
            let got = error(source);
            assert_eq!(got.lines().next(), Some(want), "{source}");
        }
    }

    /// Sources an author (or a broken editor) could save, up to the 1 MiB file
    /// limit: one pass without recursion, and the message still has a place.
    #[test]
    fn hostile_sources_are_scanned_in_one_pass() {
        let engine = crate::script::ScriptEngine::default();
        let mib = 1 << 20;
        let sources = [
            "{".repeat(mib),
            "(".repeat(mib),
            "}".repeat(mib),
            "\"".repeat(mib - 1),
            "/*".repeat(mib / 2),
            "`${".repeat(mib / 3),
            format!("fn start() {{\n{}", "say(\"a\")\n".repeat(mib / 10)),
        ];
        for source in sources {
            let errors = engine
                .compile(std::path::Path::new("bot/x.rhai"), &source)
                .expect_err("does not compile");
            let d = &errors[0];
            assert!(d.line >= 1 && d.column >= 1, "{d}");
            assert!(d.line <= source.lines().count().max(1), "{d}");
        }
    }

    #[test]
    fn the_scan_skips_comments_and_strings() {
        let scan =
            Scan::new("/* { /* ( */ */ let s = \"}\"; // {\nlet c = '{';\n`a ${ #{b: 1} } {`\n");
        assert!(scan.unclosed.is_empty(), "{scan:?}");
        assert!(scan.stray.is_empty(), "{scan:?}");
        assert!(scan.unterminated.is_empty(), "{scan:?}");
        assert_eq!(scan.strings.len(), 3);
    }
}
