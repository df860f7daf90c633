//! `{{ var }}` templates in `say`, `invalid` and `media`: compiled once per bot at
//! load (a syntax error is a load error), rendered per message. A text without
//! `{{`, `{%` or `{#` never touches the template engine.
//!
//! Rendering is bounded: it stops after [`MAX_TEMPLATE_STEPS`] engine
//! instructions (minijinja's fuel) or [`MAX_TEMPLATE_OUTPUT`] bytes of output,
//! whichever comes first, so no template can hang or exhaust the process. At
//! load the trial render with no vars finds templates that breach either on
//! their own; at run time a breach is a flow error like any other.

use std::fmt;
use std::io;

use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Map;

use crate::message::{InboundMessage, UserInfo};

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

/// What placeholders can name: every var, `user`, and `message` (SPEC §8.5).
#[derive(Debug)]
pub struct TemplateContext<'a> {
    pub vars: &'a Map<String, serde_json::Value>,
    pub user: &'a UserInfo,
    /// The message being answered; `None` where there is none (a start the
    /// business made).
    pub message: Option<&'a InboundMessage>,
}

/// `message` as templates see it: the names scripts use.
fn message_value(message: &InboundMessage) -> serde_json::Value {
    serde_json::json!({
        "text": message.text,
        "media": message.media,
        "media_types": message.media_types,
        "button": message.button,
        "payload": message.button_payload,
        "button_payload": message.button_payload,
        "latitude": message.latitude,
        "longitude": message.longitude,
        "address": message.address,
        "label": message.label,
    })
}

/// Vars at the top level, then `user`, which a var of the same name cannot hide.
impl Serialize for TemplateContext<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.vars {
            if key != "user" && key != "message" {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("user", self.user)?;
        if let Some(message) = self.message {
            map.serialize_entry("message", &message_value(message))?;
        }
        map.end()
    }
}

/// The attributes `user` has in templates.
pub(crate) const USER_FIELDS: [&str; 3] = ["name", "phone", "channel"];

/// Engine instructions one render may run (minijinja's fuel). A `say` with a
/// loop over a few hundred items uses a few thousand; the reviewer's nested
/// `range(100000)` loops would need ten billion.
pub const MAX_TEMPLATE_STEPS: u64 = 100_000;

/// Bytes one render may produce. A WhatsApp message is at most 4,096
/// characters (up to 16 KiB of UTF-8) and an SMS 1,600; 64 KiB leaves room for
/// any real message while keeping a runaway template's output small.
pub const MAX_TEMPLATE_OUTPUT: usize = 64 * 1024;

/// A text that failed to compile: the message, where in the text (byte offset),
/// and how to fix it when there is more to say than the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub message: String,
    pub offset: Option<usize>,
    pub hint: Option<String>,
}

/// A render that went past a bound.
fn too_much_work() -> String {
    format!("the template does too much work: it was stopped after {MAX_TEMPLATE_STEPS} steps")
}

fn too_much_output() -> String {
    format!(
        "the template produces too much output: it was stopped at {} KiB",
        MAX_TEMPLATE_OUTPUT / 1024
    )
}

const BOUNDS_HINT: &str = "a message is at most a few thousand characters: loop over fewer items \
     (e.g. `{% for car in cars[:20] %}`), or build long text in a script node";

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
        env.set_fuel(Some(MAX_TEMPLATE_STEPS));
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
            message: None,
        };
        match bounded_render(&template, &probe) {
            Err(Failure::Engine(e))
                if matches!(
                    e.kind(),
                    ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction
                ) =>
            {
                return Err(template_error(&e));
            }
            // The start of the text: where a loop ran out is no help.
            Err(failure @ (Failure::Fuel | Failure::Output)) => {
                return Err(TemplateError {
                    message: failure.describe(),
                    offset: None,
                    hint: Some(BOUNDS_HINT.to_owned()),
                });
            }
            // Other errors depend on vars the trial render does not have.
            Err(Failure::Engine(_)) | Ok(_) => {}
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

    /// The top-level names the template reads (`car` of `{{ car.model }}`) that
    /// it does not define itself and that are not the engine's own (`range`),
    /// each with the byte offset in [`Text::source`] of the first `{{` or `{%`
    /// that names it. Sorted by name.
    pub(crate) fn variable_uses(&self, text: &Text) -> Vec<(String, usize)> {
        let Some(name) = &text.template else {
            return Vec::new();
        };
        let Ok(template) = self.env.get_template(name) else {
            return Vec::new();
        };
        let mut roots: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|root| !self.env.globals().any(|(global, _)| global == root))
            .collect();
        roots.sort();
        roots
            .into_iter()
            .map(|root| {
                let offset = placeholder_naming(&text.source, &root).unwrap_or(0);
                (root, offset)
            })
            .collect()
    }

    pub(crate) fn render(&self, text: &Text, ctx: &TemplateContext<'_>) -> Result<String, String> {
        let Some(name) = &text.template else {
            return Ok(text.source.clone());
        };
        let template = self
            .env
            .get_template(name)
            .map_err(|_| "this text is not a template of this bot".to_owned())?;
        bounded_render(&template, ctx).map_err(|failure| failure.describe())
    }
}

/// The byte offset of the first `{{` or `{%` in `source` whose inside names `root`
/// as a variable (not as an attribute `.root`, not inside quotes). Only for the
/// position of a message: minijinja found the name, this finds where it is.
fn placeholder_naming(source: &str, root: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = source[from..].find(['{']) {
        let start = from + found;
        let rest = &source[start..];
        let close = if rest.starts_with("{{") {
            "}}"
        } else if rest.starts_with("{%") {
            "%}"
        } else {
            from = start + 1;
            continue;
        };
        let inside_end = rest[2..].find(close).map_or(rest.len(), |i| i + 2);
        if names(&rest[2..inside_end]).any(|name| name == root) {
            return Some(start);
        }
        from = start + inside_end;
    }
    None
}

/// The names written inside a placeholder, without attributes (`.model`) and
/// quoted text.
fn names(inside: &str) -> impl Iterator<Item = &str> {
    let mut names = Vec::new();
    let mut quote: Option<char> = None;
    let mut word_start: Option<usize> = None;
    let mut after_dot = false;
    for (i, c) in inside.char_indices().chain([(inside.len(), ' ')]) {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            word_start.get_or_insert(i);
            continue;
        }
        if let Some(start) = word_start.take() {
            if !after_dot {
                names.push(&inside[start..i]);
            }
        }
        if !c.is_whitespace() {
            after_dot = c == '.';
        }
        if c == '"' || c == '\'' {
            quote = Some(c);
        }
    }
    names.into_iter()
}

/// Why a render stopped.
enum Failure {
    /// Out of fuel: [`MAX_TEMPLATE_STEPS`].
    Fuel,
    /// Past [`MAX_TEMPLATE_OUTPUT`].
    Output,
    /// Any other template error.
    Engine(minijinja::Error),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Fuel => too_much_work(),
            Failure::Output => too_much_output(),
            Failure::Engine(e) => describe(e),
        }
    }
}

/// Renders into a buffer that refuses to grow past [`MAX_TEMPLATE_OUTPUT`]; the
/// environment's fuel bounds the instructions.
fn bounded_render<S: Serialize>(
    template: &minijinja::Template<'_, '_>,
    ctx: &S,
) -> Result<String, Failure> {
    let mut out = BoundedOutput::default();
    match template.render_captured_to(ctx, &mut out) {
        Ok(_) => String::from_utf8(out.bytes).map_err(|_| {
            Failure::Engine(minijinja::Error::new(
                ErrorKind::WriteFailure,
                "the output is not UTF-8",
            ))
        }),
        Err(_) if out.overflowed => Err(Failure::Output),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(Failure::Fuel),
        Err(e) => Err(Failure::Engine(e)),
    }
}

/// Output that fails a write which would take it past [`MAX_TEMPLATE_OUTPUT`],
/// before copying it, so one huge value is never buffered twice.
#[derive(Default)]
struct BoundedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_TEMPLATE_OUTPUT {
            self.overflowed = true;
            return Err(io::Error::other("template output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn template_error(e: &minijinja::Error) -> TemplateError {
    TemplateError {
        message: describe(e),
        offset: e.range().map(|r| r.start),
        hint: None,
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
                    message: None,
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

    /// The security review's template (ten billion iterations) and one value
    /// far larger than any message: both refused at load, quickly.
    #[test]
    fn runaway_templates_fail_at_load() {
        let cases = [
            (
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                "the template does too much work: it was stopped after 100000 steps",
            ),
            (
                "{% for i in range(100000) %}{% if i < 0 %}{{ i }}{% endif %}{% endfor %}",
                "the template does too much work: it was stopped after 100000 steps",
            ),
            (
                "{{ \"x\" * 10000000 }}",
                "the template produces too much output: it was stopped at 64 KiB",
            ),
            (
                "{% for i in range(1000) %}{{ \"y\" * 1000 }}{% endfor %}",
                "the template produces too much output: it was stopped at 64 KiB",
            ),
        ];
        for (source, message) in cases {
            let err = Templates::default().add(source.into()).unwrap_err();
            assert_eq!(err.message, message, "{source}");
            assert_eq!(err.offset, None, "{source}");
            assert!(err.hint.unwrap().contains("fewer items"), "{source}");
        }
    }

    /// Loops over vars are empty in the trial render: the bound holds at run
    /// time, as an error rather than a panic or a huge reply.
    #[test]
    fn runaway_renders_fail_at_run_time() {
        let mut templates = Templates::default();
        let loop_text = templates
            .add("{% for a in xs %}{% for b in xs %}{% for c in xs %}.{% endfor %}{% endfor %}{% endfor %}".into())
            .expect("compiles: `xs` is empty at load");
        let big_text = templates
            .add("{% for a in xs %}{{ a * 1000 }}{% endfor %}".into())
            .expect("compiles");
        let user = UserInfo::default();
        let many: Vec<String> = (0..1000).map(|i| format!("item{i}")).collect();
        let vars = json!({ "xs": many }).as_object().cloned().unwrap();
        let ctx = TemplateContext {
            vars: &vars,
            user: &user,
            message: None,
        };
        assert_eq!(
            templates.render(&loop_text, &ctx).unwrap_err(),
            too_much_work()
        );
        assert_eq!(
            templates.render(&big_text, &ctx).unwrap_err(),
            too_much_output()
        );
        // Just under both bounds still renders.
        let fine = templates
            .add("{% for a in xs %}{{ a }},{% endfor %}".into())
            .unwrap();
        assert_eq!(
            templates.render(&fine, &ctx).unwrap().matches(',').count(),
            1000
        );
    }

    #[test]
    fn variable_uses_name_the_placeholder() {
        let mut templates = Templates::default();
        let cases = [
            ("Hi {{ name }}!", vec![("name", 3)]),
            (
                "{{ user.name }}, {% if day %}on {{ day }}{% endif %} {{ car.model | upper }}",
                vec![("car", 53), ("day", 17), ("user", 0)],
            ),
            (
                "{{ \"name\" }} {{ x.name }} {{ name }}",
                vec![("name", 26), ("x", 13)],
            ),
            (
                "{% for c in cars %}{{ c }}{{ loop.index }}{% endfor %}{{ range(3) | length }}",
                vec![("cars", 0)],
            ),
            ("{% set n = 2 %}{{ n }}", vec![]),
        ];
        for (source, want) in cases {
            let text = templates.add(source.into()).unwrap();
            let got = templates.variable_uses(&text);
            let want: Vec<(String, usize)> =
                want.into_iter().map(|(n, o)| (n.to_owned(), o)).collect();
            assert_eq!(got, want, "{source}");
        }
    }

    #[test]
    fn variables_lists_user_attributes() {
        let mut templates = Templates::default();
        let text = templates.add("{{ user.nmae }} {{ name }}".into()).unwrap();
        assert_eq!(templates.variables(&text), ["name", "user.nmae"]);
    }
}
