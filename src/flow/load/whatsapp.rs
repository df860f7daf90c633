//! The whole-bot checks of SPEC §8: `menu_style` from bot.yaml applied to the
//! menus without a `style` of their own, `templates:` compiled, and `template:`
//! nodes naming a template that exists.

use std::collections::HashMap;

use super::Loader;
use crate::domain::Severity;
use crate::flow::nodes::check_interactive;
use crate::flow::settings::Settings;
use crate::flow::{Node, WhatsAppTemplate};
use crate::source::yaml::Walker;
use crate::source::{backticked, closest};

impl Loader<'_> {
    /// Runs the checks and returns the bot's templates by name.
    pub(super) fn check_whatsapp(
        &mut self,
        settings_file: usize,
        settings: &Settings,
    ) -> HashMap<String, WhatsAppTemplate> {
        if let Some(style) = settings.menu_style.explicit() {
            let mut names: Vec<String> = self.sites.keys().cloned().collect();
            names.sort();
            for name in names {
                let (Some(Node::Menu(node)), Some(site)) =
                    (self.nodes.get(&name), self.sites.get(&name))
                else {
                    continue;
                };
                if node.style.is_some() {
                    continue;
                }
                let mut walker = Walker {
                    file: &self.files[site.file],
                    diagnostics: &mut self.diagnostics,
                };
                check_interactive(&mut walker, node, site, style, true);
            }
        }
        let templates = self.compile_templates(settings_file, settings);
        self.check_template_names(&templates);
        self.check_outbound(settings_file, settings);
        templates
    }

    /// `outbound:` nodes must exist, and should begin with a template: a
    /// conversation the business starts reaches a WhatsApp contact outside the
    /// 24-hour window only with one (SPEC §8.2).
    fn check_outbound(&mut self, settings_file: usize, settings: &Settings) {
        let mut found = Vec::new();
        for target in settings.outbound.iter().flatten() {
            let name = target.value.as_str();
            let starts_free_form = match self.nodes.get(name) {
                // Reported with the other unknown node names (`unknown_node`).
                None => continue,
                Some(Node::Menu(menu)) => menu.template.is_none(),
                Some(Node::Script(script)) => script.script.template_refs.is_empty(),
            };
            if starts_free_form {
                found.push((
                    Severity::Warning,
                    target.pos,
                    format!("outbound node `{name}` sends free-form text without beginning with a template"),
                    "outside the 24-hour window WhatsApp only delivers templates: begin it with `template: NAME` (or `say_template(\"NAME\")` in a script)".to_owned(),
                ));
            }
        }
        for (severity, pos, message, hint) in found {
            self.diagnostics.push(
                self.files[settings_file]
                    .diagnostic(severity, pos, message)
                    .with_hint(hint),
            );
        }
    }

    fn compile_templates(
        &mut self,
        settings_file: usize,
        settings: &Settings,
    ) -> HashMap<String, WhatsAppTemplate> {
        let mut out = HashMap::new();
        for entry in &settings.templates {
            let mut variables = Vec::with_capacity(entry.variables.len());
            for (key, text) in &entry.variables {
                if key.is_empty()
                    || key.chars().count() > 16
                    || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.diagnostics.push(
                        self.files[settings_file]
                            .diagnostic(
                                Severity::Error,
                                text.pos,
                                format!("`{key}` cannot be a template variable's key"),
                            )
                            .with_hint("Twilio's keys are the placeholders' names: `\"1\"`, `\"2\"`... (letters, digits and `_`, at most 16)"),
                    );
                    continue;
                }
                match self.templates.add(text.value.clone()) {
                    Ok(compiled) => variables.push((key.clone(), compiled)),
                    Err(e) => self.diagnostics.push(
                        self.files[settings_file]
                            .diagnostic(
                                Severity::Error,
                                text.pos,
                                format!("template error in variable `{key}`: {}", e.message),
                            )
                            .with_hint(e.hint.unwrap_or_else(|| {
                                "placeholders look like `{{ name }}`".to_owned()
                            })),
                    ),
                }
            }
            out.insert(
                entry.name.value.clone(),
                WhatsAppTemplate {
                    name: entry.name.value.clone(),
                    content_sid: entry.content_sid.clone(),
                    variables,
                },
            );
        }
        out
    }

    /// A `template:` node and a literal `say_template("...")` must name an
    /// entry of `templates:`.
    fn check_template_names(&mut self, templates: &HashMap<String, WhatsAppTemplate>) {
        let mut names: Vec<&String> = templates.keys().collect();
        names.sort();
        let mut found = Vec::new();
        for (_, node, site) in self.menus() {
            let (Some(template), Some(pos)) = (&node.template, site.template) else {
                continue;
            };
            if templates.contains_key(template) {
                continue;
            }
            let hint = match closest(template, &names) {
                Some(best) => format!("did you mean `{best}`?"),
                None if names.is_empty() => format!(
                    "add it to bot.yaml: `templates:` then `{template}:` with `content_sid: HX...`"
                ),
                None => format!("bot.yaml defines {}", backticked(&names)),
            };
            found.push((site.file, pos, template.clone(), hint));
        }
        for (name, (file, _)) in &self.script_refs {
            let Some(Node::Script(script)) = self.nodes.get(name) else {
                continue;
            };
            for r in &script.script.template_refs {
                if templates.contains_key(&r.name) {
                    continue;
                }
                let hint = match closest(&r.name, &names) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => "add it to bot.yaml under `templates:`, with its `content_sid: HX...`"
                        .to_owned(),
                };
                let pos = crate::source::Pos {
                    line: r.line,
                    column: r.column,
                };
                found.push((*file, pos, r.name.clone(), hint));
            }
        }
        for (file, pos, template, hint) in found {
            self.diagnostics.push(
                self.files[file]
                    .diagnostic(
                        Severity::Error,
                        pos,
                        format!("unknown template `{template}`"),
                    )
                    .with_hint(hint),
            );
        }
    }
}
