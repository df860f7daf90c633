//! A problem found in a bot's files, located by file, line and column, and printed
//! the way rustc prints its errors: location, message, source line, caret, hint.

use std::fmt;
use std::path::PathBuf;

/// Whether a [`Diagnostic`] stops a bot from loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The bot does not load (a running bot keeps its last good version).
    Error,
    /// Worth fixing, but the bot loads.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One error or warning in an author's file. `Display` prints
/// `path:line:col: error: message`, the source line with a caret, and the hint:
///
/// ```text
/// flows/kibo-auto/menus.yaml:12:13: error: unknown node `brows` in goto
///    |
/// 12 |       goto: brows
///    |             ^
///    = hint: did you mean `browse`?
/// ```
///
/// A diagnostic about a whole file or folder (a missing `bot.yaml`) has line 0 and
/// prints as `path: error: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the diagnostic is about the whole file or folder.
    pub line: usize,
    /// 1-based, in characters; 0 when unknown.
    pub column: usize,
    pub severity: Severity,
    pub message: String,
    pub hint: Option<String>,
    /// The offending line of the file, when known.
    pub source_line: Option<String>,
}

impl Diagnostic {
    /// An error at `line:column` of `file` (both 1-based, column in characters).
    pub fn error(
        file: impl Into<PathBuf>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::new(Severity::Error, file.into(), line, column, message.into())
    }

    /// A warning at `line:column` of `file`.
    pub fn warning(
        file: impl Into<PathBuf>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::new(Severity::Warning, file.into(), line, column, message.into())
    }

    /// An error about a whole file or folder, with no position in it.
    pub fn file_error(file: impl Into<PathBuf>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, file.into(), 0, 0, message.into())
    }

    /// A warning about a whole file or folder.
    pub fn file_warning(file: impl Into<PathBuf>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Warning, file.into(), 0, 0, message.into())
    }

    fn new(
        severity: Severity,
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    ) -> Diagnostic {
        Diagnostic {
            file,
            line,
            column,
            severity,
            message,
            hint: None,
            source_line: None,
        }
    }

    /// Adds the `= hint:` line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Fills [`Diagnostic::source_line`] with line [`Diagnostic::line`] of `text`,
    /// the full text of [`Diagnostic::file`].
    pub fn with_source(mut self, text: &str) -> Diagnostic {
        if self.line > 0 {
            self.source_line = text
                .lines()
                .nth(self.line - 1)
                .map(|l| l.trim_end().to_owned());
        }
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The order `switchboard check` prints in: by file, then position.
    pub fn sort_key(&self) -> (&std::path::Path, usize, usize, Severity) {
        (&self.file, self.line, self.column, self.severity)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        write!(f, ": {}: {}", self.severity, self.message)?;

        // The gutter is as wide as the line number, so `|` lines up under it.
        let width = if self.line > 0 {
            self.line.to_string().len()
        } else {
            1
        };
        let blank = " ".repeat(width);
        if let (Some(source), true) = (&self.source_line, self.line > 0) {
            write!(f, "\n{blank} |\n{:>width$} | {source}", self.line)?;
            if self.column > 0 {
                // Tabs are copied so the caret stays aligned in a terminal.
                let pad: String = source
                    .chars()
                    .chain(std::iter::repeat(' '))
                    .take(self.column - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                write!(f, "\n{blank} | {pad}^")?;
            }
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n{blank} = hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_source_caret_and_hint() {
        let text = "main:\n  options:\n    - label: Browse\n".repeat(3) + "      goto: brows\n";
        let d = Diagnostic::error(
            "flows/kibo-auto/menus.yaml",
            10,
            13,
            "unknown node `brows` in goto",
        )
        .with_hint("did you mean `browse`?")
        .with_source(&text);
        assert_eq!(
            d.to_string(),
            "flows/kibo-auto/menus.yaml:10:13: error: unknown node `brows` in goto\n   \
             |\n10 |       goto: brows\n   |             ^\n   = hint: did you mean `browse`?"
        );
    }

    #[test]
    fn display_variants() {
        let cases: Vec<(Diagnostic, &str)> = vec![
            (
                Diagnostic::warning("a.yaml", 3, 1, "unreachable").with_source("x\ny\nfoo: 1\n"),
                "a.yaml:3:1: warning: unreachable\n  |\n3 | foo: 1\n  | ^",
            ),
            (
                Diagnostic::file_error("flows/x", "no bot.yaml in flows/x").with_hint("add one"),
                "flows/x: error: no bot.yaml in flows/x\n  = hint: add one",
            ),
            (
                Diagnostic::error("a.yaml", 2, 4, "bad"),
                "a.yaml:2:4: error: bad",
            ),
            (
                Diagnostic::error("a.yaml", 1, 3, "tab").with_source("\tx: y"),
                "a.yaml:1:3: error: tab\n  |\n1 | \tx: y\n  | \t ^",
            ),
            (
                Diagnostic::error("a.yaml", 100, 2, "wide").with_source(&"a\n".repeat(100)),
                "a.yaml:100:2: error: wide\n    |\n100 | a\n    |  ^",
            ),
        ];
        for (d, want) in cases {
            assert_eq!(d.to_string(), want);
        }
    }

    #[test]
    fn source_line_past_the_end_is_none() {
        let d = Diagnostic::error("a", 5, 1, "m").with_source("one line");
        assert_eq!(d.source_line, None);
    }
}
