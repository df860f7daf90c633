//! An author's source file (a bot's YAML, a script, a transcript test) and the
//! tools every reader of one shares: the text kept whole so a [`Diagnostic`] can
//! quote its line, positions in it, the one "did you mean" rule, and
//! [`yaml`]: parsing with positions and turning wrong shapes into diagnostics.
//!
//! Nothing here reads files (`flow::files` does, within its bounds) or knows what
//! a bot, a node or a test is.

pub(crate) mod yaml;

use std::path::PathBuf;
use std::time::Duration;

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
}

/// One author file, kept whole so diagnostics can quote its lines.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// A diagnostic at `pos` of this file, quoting its line.
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

    /// An error at `pos` of this file, quoting its line.
    pub fn error(&self, pos: Pos, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Severity::Error, pos, message)
    }
}

/// The candidate closest to `name` when it is close enough to be a typo, for
/// every "did you mean" hint (YAML keys, node names, script functions and
/// variables, test keys).
///
/// The rule: case is ignored, and the distance is the optimal string alignment
/// distance (one edit inserts, deletes or replaces a character, or swaps two
/// neighbours). A name of up to 4 characters may be 1 edit away, up to 8
/// characters 2 edits, a longer one 3: short names get fewer edits, since two
/// edits turn most short words into any other. The nearest candidate wins, ties
/// go to the first in alphabetical order.
pub(crate) fn closest<I>(name: &str, candidates: I) -> Option<I::Item>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let lower = name.to_lowercase();
    let allowed = match lower.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(&lower, &c.as_ref().to_lowercase()), c))
        .filter(|(d, _)| *d <= allowed)
        .min_by(|(d1, c1), (d2, c2)| (d1, c1.as_ref()).cmp(&(d2, c2.as_ref())))
        .map(|(_, c)| c)
}

/// The hint `did you mean `x`?` for the [`closest`] candidate, when there is one.
pub(crate) fn did_you_mean<I>(name: &str, candidates: I) -> Option<String>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    closest(name, candidates).map(|c| format!("did you mean `{}`?", c.as_ref()))
}

/// `a`, `b`, `c` for a hint.
pub(crate) fn backticked<I>(names: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    names
        .into_iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where byte `offset` of a value that starts at `start` was written in `file`,
/// found by looking for the text around it on the lines from the value's start.
/// Quotes, escapes and folding can make the value differ from the file; then the
/// value's own position is the best answer.
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

/// A duration as authors write it: `30s`, `30m`, `2h`, `1d` (`session_timeout`,
/// `timeout:`, the `timeout` of a script's `ask`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    let text = text.trim();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        "" => return Err("the unit is missing"),
        _ => return Err("the unit must be s, m, h or d"),
    };
    let amount: u64 = digits
        .parse()
        .map_err(|_| "expected a whole number before the unit")?;
    if amount == 0 {
        return Err("it must be more than zero");
    }
    amount
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or("it is too long")
}

/// `2h`, `90m`, `1d`: a duration as an author writes it (see [`parse_duration`]).
pub(crate) fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_picks_close_names() {
        let keys = ["say", "media", "options", "goto", "save_as"];
        assert_eq!(closest("sya", keys), Some("say"));
        assert_eq!(closest("option", keys), Some("options"));
        assert_eq!(closest("Goto", keys), Some("goto"));
        assert_eq!(closest("banana", keys), None);
        assert_eq!(closest("brows", ["browse", "main"]), Some("browse"));
        // Short names get one edit, longer ones two, long ones three.
        assert_eq!(closest("bt", ["bot"]), Some("bot"));
        assert_eq!(closest("xt", ["bot"]), None);
        assert_eq!(closest("nmae", ["name"]), Some("name"));
        assert_eq!(closest("nmeo", ["name"]), None);
        assert_eq!(
            closest("sesion_timeot", ["session_timeout"]),
            Some("session_timeout")
        );
        // Ties go to the first in alphabetical order, whatever the given order.
        assert_eq!(closest("cat", ["hat", "bat"]), Some("bat"));
    }

    #[test]
    fn did_you_mean_takes_owned_names_too() {
        let fns: Vec<String> = ["got_day", "got_name", "start"].map(String::from).to_vec();
        assert_eq!(
            did_you_mean("got_dya", &fns).as_deref(),
            Some("did you mean `got_day`?")
        );
        assert_eq!(
            did_you_mean("got_nme", &fns).as_deref(),
            Some("did you mean `got_name`?")
        );
        assert_eq!(
            did_you_mean("strat", &fns).as_deref(),
            Some("did you mean `start`?")
        );
        assert_eq!(did_you_mean("checkout", &fns), None);
        assert_eq!(did_you_mean("x", Vec::<String>::new()), None);
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
