//! The vars check: a `{{ name }}` that nothing in the bot sets always renders as
//! nothing ("All booked! , we'll see you..."), so `check` warns about it at the
//! `{{`, with the closest var that is set.
//!
//! A var is set by a menu node's `save_as`, an option's `set:`, a script's
//! assignment (`vars.x = ...`, see `script::WrittenVars`), or declared in bot.yaml
//! `vars: [...]` for conversations the business starts with vars (SPEC §9.1).
//! `user` and `message` are built in.

use std::collections::BTreeSet;

use crate::domain::{Diagnostic, Severity};
use crate::script::WrittenVars;
use crate::source::{closest, Pos, SourceFile};

/// Names templates have without anyone setting them.
const BUILT_IN: [&str; 2] = ["user", "message"];

/// Where a template reads a var: the `{{` (or `{%`) that names it.
#[derive(Debug, Clone)]
pub(crate) struct VarUse {
    /// Index of the file in the loader's file list.
    pub file: usize,
    pub pos: Pos,
    pub name: String,
}

/// The vars something in a bot sets.
#[derive(Debug, Default)]
pub(crate) struct SetVars {
    names: BTreeSet<String>,
    /// A script sets vars by computed names, so any var may be set.
    any: bool,
}

impl SetVars {
    pub fn add(&mut self, name: impl Into<String>) {
        self.names.insert(name.into());
    }

    pub fn add_script(&mut self, written: &WrittenVars) {
        self.names.extend(written.names.iter().cloned());
        self.any |= written.computed;
    }

    /// A warning for each of `uses` that reads a var nothing sets.
    pub fn warnings(&self, files: &[SourceFile], uses: &[VarUse]) -> Vec<Diagnostic> {
        if self.any {
            return Vec::new();
        }
        uses.iter()
            .filter(|u| !BUILT_IN.contains(&u.name.as_str()) && !self.names.contains(&u.name))
            .map(|u| {
                let name = &u.name;
                let hint = match closest(name, &self.names) {
                    Some(best) if best.eq_ignore_ascii_case(name) => {
                        format!("did you mean `{best}`? Names are case-sensitive")
                    }
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!(
                        "set it with `save_as: {name}`, an option's `set:`, or `vars.{name} = ...` in a script; \
                         if conversations are started with it, list it in bot.yaml: `vars: [{name}]`"
                    ),
                };
                files[u.file]
                    .diagnostic(
                        Severity::Warning,
                        u.pos,
                        format!("`{name}` is always empty: nothing in this bot sets it"),
                    )
                    .with_hint(hint)
            })
            .collect()
    }
}

/// Whether a name can be a var: templates must be able to name it.
pub(crate) fn valid_var_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why `name` cannot be a var (message and hint), if it cannot.
pub(crate) fn var_name_problem(name: &str) -> Option<(String, String)> {
    if BUILT_IN.contains(&name) {
        return Some((
            format!("`{name}` is built in, so it cannot be a var"),
            format!("pick another name, such as `{name}_name`"),
        ));
    }
    if !valid_var_name(name) {
        return Some((
            format!("`{name}` is not a valid variable name"),
            "use letters, digits and `_`, not starting with a digit, so `{{ name }}` can show it"
                .to_owned(),
        ));
    }
    None
}
