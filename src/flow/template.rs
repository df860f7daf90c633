//! `{{ var }}` templates in `say`, `invalid` and `media`: compiled once per bot at
//! load (a syntax error is a load error), rendered per message. A text without
//! `{{`, `{%` or `{#` never touches the template engine.

use std::fmt;

use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Map;

use crate::message::UserInfo;

/// A piece of author text that may hold `{{ }}` placeholders.
///
/// `source` is the text as written, less the trailing line break a YAML `|` block
/// leaves. Render it with [`Bot::render`](super::Bot::render).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub source: String,
    /// Name of the compiled template in the bot's [`Templates`]; `None` when the
    /// text has no placeholders and renders to itself.
    template: Option<String>,
}

impl Text {
    /// Whether rendering can change the text.
    pub fn has_placeholders(&self) -> bool {
        self.template.is_some()
    }
}

/// What placeholders can name: every var, and `user`.
pub struct TemplateContext<'a> {
    pub vars: &'a Map<String, serde_json::Value>,
    pub user: &'a UserInfo,
}

/// Vars at the top level, then `user`, which a var of the same name cannot hide.
impl Serialize for TemplateContext<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.vars {
            if key != "user" {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("user", self.user)?;
        map.end()
    }
}

/// The attributes `user` has in templates.
pub(crate) const USER_FIELDS: [&str; 3] = ["name", "phone", "channel"];

/// A text that failed to compile: the message, and where in the text (byte offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub message: String,
    pub offset: Option<usize>,
}

/// All compiled templates of one bot.
pub(crate) struct Templates {
    env: Environment<'static>,
    count: usize,
}

impl Default for Templates {
    fn default() -> Templates {
        let mut env = Environment::new();
        // A var that was never set renders as nothing, also `{{ car.model }}`.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.set_debug(false);
        env.set_formatter(format_value);
        Templates { env, count: 0 }
    }
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("count", &self.count)
            .finish()
    }
}

/// `none` prints as nothing, booleans as `true`/`false` (as scripts write them),
/// and a whole float as an integer, so a var holding `3.0` reads `3`.
fn format_value(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if value.is_none() || value.is_undefined() {
        return Ok(());
    }
    if value.kind() == ValueKind::Bool {
        let text = if value.is_true() { "true" } else { "false" };
        return out
            .write_str(text)
            .map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "could not write output"));
    }
    if value.kind() == ValueKind::Number && !value.is_integer() {
        if let Ok(f) = f64::try_from(value.clone()) {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                return write!(out, "{}", f as i64).map_err(|_| {
                    minijinja::Error::new(ErrorKind::WriteFailure, "could not write output")
                });
            }
        }
    }
    minijinja::escape_formatter(out, state, value)
}

impl Templates {
    /// Compiles `source` when it has placeholders. Unknown filters, tests and
    /// functions are found by a trial render with no vars, so they fail at load
    /// and not in front of a contact.
    pub(crate) fn add(&mut self, source: String) -> Result<Text, TemplateError> {
        if !(source.contains("{{") || source.contains("{%") || source.contains("{#")) {
            return Ok(Text {
                source,
                template: None,
            });
        }
        let name = format!("t{}", self.count);
        self.env
            .add_template_owned(name.clone(), source.clone())
            .map_err(|e| template_error(&e))?;
        let template = self
            .env
            .get_template(&name)
            .map_err(|e| template_error(&e))?;
        let probe = TemplateContext {
            vars: &Map::new(),
            user: &UserInfo::default(),
        };
        if let Err(e) = template.render(&probe) {
            if matches!(
                e.kind(),
                ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction
            ) {
                return Err(template_error(&e));
            }
        }
        self.count += 1;
        Ok(Text {
            source,
            template: Some(name),
        })
    }

    /// Names the template refers to that it does not define itself, with
    /// attribute paths (`user.name`); empty for a text without placeholders.
    pub(crate) fn variables(&self, text: &Text) -> Vec<String> {
        let Some(name) = &text.template else {
            return Vec::new();
        };
        let mut vars: Vec<String> = self
            .env
            .get_template(name)
            .map(|t| t.undeclared_variables(true).into_iter().collect())
            .unwrap_or_default();
        vars.sort();
        vars
    }

    pub(crate) fn render(&self, text: &Text, ctx: &TemplateContext<'_>) -> Result<String, String> {
        let Some(name) = &text.template else {
            return Ok(text.source.clone());
        };
        let template = self
            .env
            .get_template(name)
            .map_err(|_| "this text is not a template of this bot".to_owned())?;
        template.render(ctx).map_err(|e| describe(&e))
    }
}

fn template_error(e: &minijinja::Error) -> TemplateError {
    TemplateError {
        message: describe(e),
        offset: e.range().map(|r| r.start),
    }
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {}", e.kind(), detail),
        None => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(source: &str, vars: serde_json::Value) -> String {
        let mut templates = Templates::default();
        let text = templates.add(source.to_owned()).expect("compiles");
        let user = UserInfo {
            phone: "+14155550100".into(),
            name: "Amina".into(),
            channel: "whatsapp".into(),
        };
        let vars = vars.as_object().cloned().unwrap_or_default();
        templates
            .render(
                &text,
                &TemplateContext {
                    vars: &vars,
                    user: &user,
                },
            )
            .expect("renders")
    }

    #[test]
    fn renders_vars_and_user() {
        let cases = [
            ("Hi {{ name }}!", json!({"name": "Bo"}), "Hi Bo!"),
            ("Hi {{name}}", json!({}), "Hi "),
            (
                "{{ user.name }} {{ user.phone }} {{ user.channel }}",
                json!({}),
                "Amina +14155550100 whatsapp",
            ),
            ("{{ user.name }}", json!({"user": "shadow"}), "Amina"),
            (
                "{{ n }} {{ f }} {{ x }} {{ ok }}",
                json!({"n": 3, "f": 3.0, "x": 2.5, "ok": true}),
                "3 3 2.5 true",
            ),
            ("{{ car.model }}|{{ none }}", json!({"none": null}), "|"),
            (
                "{% if day %}on {{ day }}{% else %}soon{% endif %}",
                json!({"day": "Monday"}),
                "on Monday",
            ),
            (
                "{{ name | upper }} & <b>",
                json!({"name": "a&b"}),
                "A&B & <b>",
            ),
            ("line\n{{ a }}\n", json!({"a": 1}), "line\n1\n"),
            (
                "no placeholders {here}",
                json!({}),
                "no placeholders {here}",
            ),
        ];
        for (source, vars, want) in cases {
            assert_eq!(render(source, vars), want, "{source}");
        }
    }

    #[test]
    fn plain_text_is_not_compiled() {
        let mut templates = Templates::default();
        let text = templates.add("Hello".into()).unwrap();
        assert!(!text.has_placeholders());
        assert_eq!(templates.count, 0);
        assert!(templates.variables(&text).is_empty());
    }

    #[test]
    fn compile_errors_have_offsets() {
        let cases = [
            (
                "Hi {{ name }",
                "syntax error: unexpected `}`, expected end of variable block",
                Some(11),
            ),
            (
                "a {% if %}",
                "syntax error: unexpected end of block",
                Some(8),
            ),
            (
                "x {{ a | nosuch }}",
                "unknown filter: filter nosuch is unknown",
                Some(9),
            ),
        ];
        for (source, message, offset) in cases {
            let err = Templates::default().add(source.into()).unwrap_err();
            assert_eq!(err.message, message, "{source}");
            assert_eq!(err.offset, offset, "{source}");
        }
    }

    #[test]
    fn variables_lists_user_attributes() {
        let mut templates = Templates::default();
        let text = templates.add("{{ user.nmae }} {{ name }}".into()).unwrap();
        assert_eq!(templates.variables(&text), ["name", "user.nmae"]);
    }
}
