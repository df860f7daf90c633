//! The functions a script can call, as the engine itself lists them: Rhai's
//! standard packages, the author API and the host's functions (all registered on
//! the one engine), and the few names Rhai handles itself (`Fn`, `call`,
//! `type_of`...). The compiler checks every call against them, so a call to a
//! function that does not exist fails at load, not in front of a contact.

use std::collections::HashSet;

use rhai::Engine;

use crate::source::closest;

/// Names Rhai's parser and evaluator handle themselves rather than as registered
/// functions, so the engine's list does not have them.
const KEYWORDS: [&str; 9] = [
    "Fn",
    "call",
    "curry",
    "type_of",
    "is_def_fn",
    "is_def_var",
    "is_shared",
    "print",
    "debug",
];

/// What authors used to other languages write, and Rhai's name for it. Keys are
/// lowercase without `_`, as [`normalized`] makes them; the unit test checks that
/// every target exists.
const ALIASES: [(&str, &str); 27] = [
    ("lowercase", "to_lower"),
    ("lower", "to_lower"),
    ("tolowercase", "to_lower"),
    ("downcase", "to_lower"),
    ("uppercase", "to_upper"),
    ("upper", "to_upper"),
    ("touppercase", "to_upper"),
    ("upcase", "to_upper"),
    ("length", "len"),
    ("size", "len"),
    ("count", "len"),
    ("strlen", "len"),
    ("str", "to_string"),
    ("string", "to_string"),
    ("parseinteger", "parse_int"),
    ("integer", "parse_int"),
    ("number", "parse_float"),
    ("float", "parse_float"),
    ("strip", "trim"),
    ("includes", "contains"),
    ("has", "contains"),
    ("startswith", "starts_with"),
    ("endswith", "ends_with"),
    ("indexof", "index_of"),
    ("substring", "sub_string"),
    ("substr", "sub_string"),
    ("typeof", "type_of"),
];

/// Every function name a script of this engine may call.
#[derive(Debug)]
pub(super) struct KnownFunctions {
    /// Plain names and `module::name`s.
    names: HashSet<String>,
    /// The plain names an author could have meant, sorted: no operators, no
    /// property getters (`get$len`).
    suggestions: Vec<String>,
}

impl KnownFunctions {
    /// The functions registered on `engine`, with Rhai's own keywords.
    pub fn of(engine: &Engine) -> KnownFunctions {
        let mut names: HashSet<String> = engine
            .collect_fn_metadata(
                None,
                |info| {
                    Some(if info.namespace.is_empty() {
                        info.metadata.name.to_string()
                    } else {
                        format!("{}::{}", info.namespace, info.metadata.name)
                    })
                },
                true,
            )
            .into_iter()
            .collect();
        names.extend(KEYWORDS.map(str::to_owned));
        let mut suggestions: Vec<String> = names
            .iter()
            .filter(|n| n.split("::").all(is_identifier))
            .cloned()
            .collect();
        suggestions.sort();
        KnownFunctions { names, suggestions }
    }

    /// Whether `name` (or `module::name`) is a function of the engine.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The function the author probably meant by `name`: Rhai's name for a
    /// function of another language, or the closest of the engine's functions
    /// and the script's own `script_functions`.
    pub fn suggest(&self, name: &str, script_functions: &[String]) -> Option<String> {
        let key = normalized(name);
        if let Some((_, target)) = ALIASES.iter().find(|(alias, _)| *alias == key) {
            return Some((*target).to_owned());
        }
        let candidates = self
            .suggestions
            .iter()
            .chain(script_functions)
            .map(String::as_str);
        closest(name, candidates).map(str::to_owned)
    }
}

/// `toLowerCase` and `to_lower_case` both as `tolowercase`.
fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{engine, Limits, ScriptFunctions};

    fn known() -> KnownFunctions {
        KnownFunctions::of(&engine::build(
            &Limits::default(),
            &ScriptFunctions::default(),
        ))
    }

    #[test]
    fn the_engine_lists_rhai_the_author_api_and_keywords() {
        let known = known();
        for name in [
            "to_lower",
            "len",
            "contains",
            "push",
            "parse_int",
            "say",
            "ask",
            "go_to",
            "end",
            "http_get",
            "now",
            "log",
            "Fn",
            "call",
            "type_of",
            "print",
        ] {
            assert!(known.contains(name), "{name}");
        }
        assert!(!known.contains("lowercase"));
        assert!(!known.suggestions.iter().any(|n| n.contains('$')));
    }

    #[test]
    fn every_alias_names_a_real_function() {
        let known = known();
        for (alias, target) in ALIASES {
            assert!(known.contains(target), "{alias} -> {target}");
            assert!(!known.contains(alias), "{alias} is a function itself");
            assert_eq!(normalized(alias), alias, "keys are normalized");
        }
    }

    #[test]
    fn suggestions_know_other_languages_and_typos() {
        let known = known();
        let mine = vec!["got_name".to_owned()];
        let cases = [
            ("lowercase", Some("to_lower")),
            ("toLowerCase", Some("to_lower")),
            ("to_lwer", Some("to_lower")),
            ("length", Some("len")),
            ("got_nmae", Some("got_name")),
            ("sya", Some("say")),
            ("frobnicate_everything", None),
        ];
        for (name, want) in cases {
            assert_eq!(known.suggest(name, &mine).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn host_functions_are_known_with_their_module() {
        let mut functions = ScriptFunctions::new();
        functions
            .register("crm::lookup", |_: String| Ok::<_, String>(1))
            .unwrap();
        functions
            .register("loyalty_points", |_: String| Ok::<_, String>(1))
            .unwrap();
        let known = KnownFunctions::of(&engine::build(&Limits::default(), &functions));
        assert!(known.contains("crm::lookup"));
        assert!(known.contains("loyalty_points"));
        assert!(!known.contains("lookup"));
        assert_eq!(
            known.suggest("crm::lokup", &[]).as_deref(),
            Some("crm::lookup")
        );
    }
}
