//! `bot.yaml`: a bot's settings, with `${VAR}` / `${VAR:-default}` filled in from
//! the environment, and every default of SPEC §3 applied.

use std::net::IpAddr;
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::Node;

use super::vars::var_name_problem;
use super::{OptOut, TwilioSettings};
use crate::domain::{Diagnostic, MessageSender, Secret};
use crate::source::yaml::{is_null, Str, TopLevel, Walker};
use crate::source::{backticked, locate, Pos, SourceFile};

const TOP_KEYS: [&str; 16] = [
    "name",
    "start",
    "session_timeout",
    "error_reply",
    "keywords",
    "opt_out",
    "twilio",
    "http",
    "vars",
    "menu_style",
    "read_receipts",
    "templates",
    "outbound",
    "handoff_timeout",
    "handoff_notify",
    "handoff_secret",
];
const TWILIO_KEYS: [&str; 8] = [
    "account_sid",
    "auth_token",
    "from",
    "messaging_service_sid",
    "api_base",
    "max_per_second",
    "content_api_base",
    "messaging_api_base",
];
const HTTP_KEYS: [&str; 1] = ["allow"];
const OPT_OUT_KEYS: [&str; 6] = [
    "stop",
    "start",
    "help",
    "stop_reply",
    "start_reply",
    "help_reply",
];

pub(crate) const DEFAULT_API_BASE: &str = "https://api.twilio.com";
pub(crate) const DEFAULT_CONTENT_API_BASE: &str = "https://content.twilio.com";
pub(crate) const DEFAULT_MESSAGING_API_BASE: &str = "https://messaging.twilio.com";
const TEMPLATE_KEYS: [&str; 2] = ["content_sid", "variables"];
pub(crate) const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// `handoff_timeout` when bot.yaml does not say (SPEC §10.2).
pub(crate) const DEFAULT_HANDOFF_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The `start:` setting, kept apart from its default so a broken value does not
/// also produce a "no node `main`" error.
#[derive(Debug, Clone)]
pub(crate) enum Start {
    Default,
    Given(Str),
    Broken,
}

/// One `keywords:` entry.
#[derive(Debug, Clone)]
pub(crate) struct Keyword {
    /// Trimmed and lowercased.
    pub word: String,
    pub pos: Pos,
    pub target: Str,
}

/// `bot.yaml`, read and checked; node names are checked later against the nodes.
#[derive(Debug)]
pub(crate) struct Settings {
    pub name: Option<String>,
    pub start: Start,
    pub session_timeout: Duration,
    pub error_reply: Option<String>,
    pub keywords: Vec<Keyword>,
    /// `None` for `opt_out: off`.
    pub opt_out: Option<OptOut>,
    pub twilio: TwilioSettings,
    pub http_allow: Vec<String>,
    /// `vars:`: vars conversations may be started with (SPEC §9.1), so templates
    /// may use them though no node or script sets them.
    pub vars: Vec<Str>,
    /// `menu_style:`, and where it was written.
    pub menu_style: super::MenuStyle,
    pub menu_style_pos: Option<Pos>,
    pub read_receipts: bool,
    /// `templates:`, as written (their variables are compiled by the loader).
    pub templates: Vec<TemplateEntry>,
    /// `outbound:`: the nodes the start API may enter (SPEC §9.1), each checked
    /// to begin with a template (§8.2); `None` when absent (any node).
    pub outbound: Option<Vec<Str>>,
    /// `handoff_timeout`, `handoff_notify` and `handoff_secret` (SPEC §10.2).
    pub handoff: super::HandoffSettings,
}

/// One `templates:` entry, as written.
#[derive(Debug, Clone)]
pub(crate) struct TemplateEntry {
    pub name: Str,
    pub content_sid: String,
    /// Placeholder key -> text, with where the text was written.
    pub variables: Vec<(String, Str)>,
}

/// What the environment holds, as the loader was told to see it.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where a string value sits, which decides what an unset `${VAR}` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Outside `twilio:`: always an error.
    General,
    /// Inside `twilio:`: an error, or a warning when credentials may be missing.
    Twilio,
}

struct Reader<'a, 'w> {
    walker: Walker<'w>,
    env: Env<'a>,
    allow_missing_credentials: bool,
    /// The bot id, to suggest variable names in hints.
    id: &'a str,
}

/// What the top of `bot.yaml` must be.
const SETTINGS_FILE: TopLevel = TopLevel {
    message: "expected a map of `name: value` at the top level",
    hint: "start the file with a setting, like `name: My bot`",
};

/// Reads `bot.yaml`. Problems go to `diagnostics`; `None` when the file is not
/// even a YAML map.
pub(crate) fn read_settings(
    file: &SourceFile,
    id: &str,
    env: Env<'_>,
    allow_missing_credentials: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Settings> {
    let map = match file.parse(&SETTINGS_FILE) {
        Ok(map) => map,
        Err(d) => {
            diagnostics.push(d);
            return None;
        }
    };
    let mut reader = Reader {
        walker: Walker { file, diagnostics },
        env,
        allow_missing_credentials,
        id,
    };
    Some(reader.settings(&map))
}

impl Reader<'_, '_> {
    fn settings(&mut self, map: &MarkedMappingNode) -> Settings {
        self.walker.check_keys(map, &TOP_KEYS, "in bot.yaml");
        let mut settings = Settings {
            name: None,
            start: Start::Default,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            error_reply: None,
            keywords: Vec::new(),
            opt_out: Some(OptOut::default()),
            twilio: TwilioSettings {
                account_sid: None,
                auth_token: None,
                sender: None,
                api_base: DEFAULT_API_BASE.to_owned(),
                content_api_base: String::new(),
                messaging_api_base: String::new(),
                max_per_second: None,
            },
            http_allow: Vec::new(),
            vars: Vec::new(),
            menu_style: super::MenuStyle::Text,
            menu_style_pos: None,
            read_receipts: false,
            templates: Vec::new(),
            outbound: None,
            handoff: super::HandoffSettings::default(),
        };
        let mut handoff_notify: Option<Str> = None;
        let mut handoff_secret: Option<Str> = None;
        settings.twilio.content_api_base = DEFAULT_CONTENT_API_BASE.to_owned();
        settings.twilio.messaging_api_base = DEFAULT_MESSAGING_API_BASE.to_owned();
        let mut twilio_key = None;
        for (key, value) in map.iter() {
            match key.as_str() {
                "name" => settings.name = self.text(key, value).map(|s| s.value),
                "start" => {
                    settings.start = match self.text(key, value) {
                        Some(s) => Start::Given(s),
                        None => Start::Broken,
                    }
                }
                "session_timeout" => {
                    if let Some(s) = self.text(key, value) {
                        if let Some(timeout) = self.duration(&s) {
                            settings.session_timeout = timeout;
                        }
                    }
                }
                "error_reply" => settings.error_reply = self.text(key, value).map(|s| s.value),
                "keywords" => settings.keywords = self.keywords(key, value),
                "opt_out" => settings.opt_out = self.opt_out(key, value),
                "twilio" => {
                    twilio_key = Some(Pos::of_scalar(key));
                    if let Some(twilio) = self.walker.mapping(key, value) {
                        settings.twilio = self.twilio(twilio);
                    }
                }
                "http" => settings.http_allow = self.http(key, value),
                "vars" => settings.vars = self.vars(key, value),
                "menu_style" => {
                    if let Some(s) = self.text(key, value) {
                        settings.menu_style_pos = Some(s.pos);
                        match super::MenuStyle::parse(&s.value) {
                            Some(style) => settings.menu_style = style,
                            None => {
                                let hint = crate::source::did_you_mean(
                                    s.value.trim(),
                                    super::MenuStyle::NAMES,
                                )
                                .unwrap_or_else(|| {
                                    format!(
                                        "menu_style is one of {}",
                                        backticked(super::MenuStyle::NAMES)
                                    )
                                });
                                self.walker.error(
                                    s.pos,
                                    format!("unknown menu_style `{}`", s.value.trim()),
                                    Some(hint),
                                );
                            }
                        }
                    }
                }
                "read_receipts" => {
                    if let Some(s) = self.text(key, value) {
                        match s.value.trim().to_lowercase().as_str() {
                            "true" | "yes" | "on" => settings.read_receipts = true,
                            "false" | "no" | "off" => settings.read_receipts = false,
                            other => self.walker.error(
                                s.pos,
                                format!("`read_receipts` must be `true` or `false`, found `{other}`"),
                                Some("write `read_receipts: true` to mark each WhatsApp message read".into()),
                            ),
                        }
                    }
                }
                "templates" => settings.templates = self.templates(key, value),
                "outbound" => settings.outbound = Some(self.node_list(key, value)),
                "handoff_timeout" => {
                    if let Some(s) = self.text(key, value) {
                        match parse_duration(&s.value) {
                            Ok(timeout) => settings.handoff.timeout = timeout,
                            Err(problem) => self.walker.error(
                                s.pos,
                                format!("invalid handoff_timeout `{}`: {problem}", s.value),
                                Some("write a whole number and a unit: `30m`, `4h` or `1d`".into()),
                            ),
                        }
                    }
                }
                "handoff_notify" => {
                    if let Some(s) = self.text(key, value) {
                        if notify_url_ok(&s.value) {
                            handoff_notify = Some(s);
                        } else {
                            self.walker.error(
                                s.pos,
                                format!("handoff_notify `{}` is not an http(s) URL", s.value),
                                Some("write the full address that receives the notifications, such as `https://example.com/switchboard/handoff`".into()),
                            );
                        }
                    }
                }
                "handoff_secret" => handoff_secret = self.text(key, value),
                _ => {}
            }
        }
        match (handoff_notify, handoff_secret) {
            (Some(url), Some(secret)) => {
                settings.handoff.notify = Some((url.value.trim().to_owned(), Secret::new(secret.value)));
            }
            (Some(url), None) => self.walker.error(
                url.pos,
                "handoff_notify without handoff_secret",
                Some("notifications are signed so the receiver can trust them: add `handoff_secret: ${HANDOFF_SECRET}` (a long random string, from the environment)".into()),
            ),
            (None, Some(secret)) => self.walker.warning(
                secret.pos,
                "handoff_secret without handoff_notify: nothing is signed with it",
                Some("add `handoff_notify: https://...`, or remove `handoff_secret`".into()),
            ),
            (None, None) => {}
        }
        match twilio_key {
            Some(pos) => self.check_credentials(pos, map, &settings.twilio),
            None => {
                let hint = format!(
                    "add `twilio:` with `account_sid: ${{{p}_ACCOUNT_SID}}`, `auth_token: ${{{p}_AUTH_TOKEN}}` \
                     and `from: \"whatsapp:+1...\"`",
                    p = self.var_prefix()
                );
                if self.allow_missing_credentials {
                    self.walker.warning(
                        Pos::FILE,
                        "no `twilio:` section: this bot can only run with --dry-run",
                        Some(hint),
                    );
                } else {
                    self.walker.error(
                        Pos::FILE,
                        "no `twilio:` section: this bot has no credentials to send messages with",
                        Some(format!("{hint}, or run with --dry-run")),
                    );
                }
            }
        }
        settings
    }

    /// `KIBO_AUTO_TWILIO` for bot `kibo-auto`.
    fn var_prefix(&self) -> String {
        format!("{}_TWILIO", self.id.to_uppercase().replace('-', "_"))
    }

    /// A non-empty string with `${VAR}`s filled in; `None` after reporting.
    fn text(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<Str> {
        self.interpolated(key, value, Section::General)
    }

    fn interpolated(
        &mut self,
        key: &MarkedScalarNode,
        value: &Node,
        section: Section,
    ) -> Option<Str> {
        let raw = self.walker.non_empty_string(key, value)?;
        self.fill(&raw, key.as_str(), section)
    }

    fn fill(&mut self, raw: &Str, what: &str, section: Section) -> Option<Str> {
        match interpolate(&raw.value, self.env) {
            Ok(value) => Some(Str {
                value,
                pos: raw.pos,
            }),
            Err(errors) => {
                for e in errors {
                    self.interpolation_error(raw, what, section, e);
                }
                None
            }
        }
    }

    fn interpolation_error(
        &mut self,
        raw: &Str,
        what: &str,
        section: Section,
        e: InterpolationError,
    ) {
        let file_text = &self.walker.file.text;
        match e {
            InterpolationError::Syntax {
                offset,
                message,
                hint,
            } => {
                let pos = locate(file_text, raw.pos, &raw.value, offset);
                self.walker.error(pos, message, Some(hint));
            }
            InterpolationError::Unset { var, offset } => {
                let pos = locate(file_text, raw.pos, &raw.value, offset);
                match section {
                    Section::Twilio if self.allow_missing_credentials => self.walker.warning(
                        pos,
                        format!("{var} is not set: `twilio.{what}` stays empty, so this bot can only run with --dry-run"),
                        None,
                    ),
                    Section::Twilio => self.walker.error(
                        pos,
                        format!("{var} is not set: export it, or run with --dry-run"),
                        Some(format!("or give it a default: `${{{var}:-value}}`")),
                    ),
                    Section::General => self.walker.error(
                        pos,
                        format!("{var} is not set (used in `{what}`)"),
                        Some(format!("export it, or give it a default: `${{{var}:-value}}`")),
                    ),
                }
            }
        }
    }

    fn duration(&mut self, s: &Str) -> Option<Duration> {
        match parse_duration(&s.value) {
            Ok(d) => Some(d),
            Err(problem) => {
                self.walker.error(
                    s.pos,
                    format!("invalid session_timeout `{}`: {problem}", s.value),
                    Some("write a whole number and a unit: `30s`, `30m`, `2h` or `1d`".into()),
                );
                None
            }
        }
    }

    fn keywords(&mut self, key: &MarkedScalarNode, value: &Node) -> Vec<Keyword> {
        let Some(map) = self.walker.mapping(key, value) else {
            return Vec::new();
        };
        let mut out: Vec<Keyword> = Vec::new();
        for (word, target) in map.iter() {
            let pos = Pos::of_scalar(word);
            let normalized = word.as_str().trim().to_lowercase();
            if normalized.is_empty() {
                self.walker.error(pos, "a keyword cannot be empty", None);
                continue;
            }
            if let Some(first) = out.iter().find(|k| k.word == normalized) {
                let line = first.pos.line;
                self.walker.error(
                    pos,
                    format!("keyword `{normalized}` is listed twice (first at line {line})"),
                    Some("keywords are compared trimmed and case-insensitive: keep one".into()),
                );
                continue;
            }
            if let Some(target) = self.interpolated(word, target, Section::General) {
                out.push(Keyword {
                    word: normalized,
                    pos,
                    target,
                });
            }
        }
        out
    }

    /// `opt_out: off`, or a map of the words and replies to change (SPEC §8.3);
    /// what is not given keeps its default.
    fn opt_out(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<OptOut> {
        const HINT: &str = "write `opt_out: off` to turn STOP, START and HELP handling off, \
                            or set some of `stop`, `start`, `help`, `stop_reply`, `start_reply`, \
                            `help_reply` under `opt_out:`";
        let mut opt_out = OptOut::default();
        if let Node::Scalar(word) = value {
            if !is_null(value) {
                match word.as_str().trim().to_lowercase().as_str() {
                    "off" | "false" | "no" => return None,
                    "on" | "true" | "yes" => {}
                    other => self.walker.error(
                        Pos::of(value),
                        format!("`opt_out` must be `off` or a map of settings, found `{other}`"),
                        Some(HINT.to_owned()),
                    ),
                }
                return Some(opt_out);
            }
        }
        let Some(map) = self.walker.mapping(key, value) else {
            return Some(opt_out);
        };
        self.walker.check_keys(map, &OPT_OUT_KEYS, "in `opt_out:`");
        // Where each word was first listed, to report a word in two lists.
        let mut listed: Vec<(String, &'static str, Pos)> = Vec::new();
        for (key, value) in map.iter() {
            match key.as_str() {
                "stop" => opt_out.stop = self.opt_out_words(key, value, "stop", &mut listed),
                "start" => opt_out.start = self.opt_out_words(key, value, "start", &mut listed),
                "help" => opt_out.help = self.opt_out_words(key, value, "help", &mut listed),
                reply @ ("stop_reply" | "start_reply" | "help_reply") => {
                    // Nothing, or an empty text, means: send no reply.
                    let text = if is_null(value) {
                        String::new()
                    } else {
                        match self.walker.string(key, value) {
                            Some(raw) => match self.fill(&raw, reply, Section::General) {
                                Some(s) => s.value,
                                None => continue,
                            },
                            None => continue,
                        }
                    };
                    match reply {
                        "stop_reply" => opt_out.stop_reply = text,
                        "start_reply" => opt_out.start_reply = text,
                        _ => opt_out.help_reply = text,
                    }
                }
                _ => {}
            }
        }
        // A written word may also be in a list left at its defaults.
        let defaults = OptOut::default();
        for (word, list, pos) in &listed {
            let lists = [
                ("stop", &defaults.stop),
                ("start", &defaults.start),
                ("help", &defaults.help),
            ];
            for (other, words) in lists {
                if other != *list && map.get_node(other).is_none() && words.contains(word) {
                    self.walker.error(
                        *pos,
                        format!("`{word}` is also one of the default `opt_out.{other}` words"),
                        Some(format!(
                            "a word can only do one thing: write `{other}:` under `opt_out:` with the words you want there"
                        )),
                    );
                }
            }
        }
        Some(opt_out)
    }

    /// One list of opt-out words, trimmed and lowercased. A word already in
    /// another list (`listed`) is an error: a message cannot both opt out and in.
    fn opt_out_words(
        &mut self,
        key: &MarkedScalarNode,
        value: &Node,
        list: &'static str,
        listed: &mut Vec<(String, &'static str, Pos)>,
    ) -> Vec<String> {
        let mut words = Vec::new();
        for raw in self.walker.strings(key, value).unwrap_or_default() {
            let Some(s) = self.fill(&raw, list, Section::General) else {
                continue;
            };
            let word = s.value.trim().to_lowercase();
            if word.is_empty() {
                self.walker.error(
                    s.pos,
                    format!("an empty word in `opt_out.{list}`"),
                    Some("write a word, like `STOP`, or remove the entry".into()),
                );
                continue;
            }
            match listed.iter().find(|(w, _, _)| *w == word) {
                Some((_, other, first)) if *other != list => {
                    let (other, line) = (*other, first.line);
                    self.walker.error(
                        s.pos,
                        format!("`{word}` is in both `opt_out.{other}` (line {line}) and `opt_out.{list}`"),
                        Some("a word can only do one thing: keep it in one of the lists".into()),
                    );
                    continue;
                }
                Some(_) => {}
                None => listed.push((word.clone(), list, s.pos)),
            }
            if !words.contains(&word) {
                words.push(word);
            }
        }
        words
    }

    fn twilio(&mut self, map: &MarkedMappingNode) -> TwilioSettings {
        self.walker.check_keys(map, &TWILIO_KEYS, "in `twilio:`");
        let mut twilio = TwilioSettings {
            account_sid: None,
            auth_token: None,
            sender: None,
            api_base: DEFAULT_API_BASE.to_owned(),
            content_api_base: DEFAULT_CONTENT_API_BASE.to_owned(),
            messaging_api_base: DEFAULT_MESSAGING_API_BASE.to_owned(),
            max_per_second: None,
        };
        let mut from_key: Option<&MarkedScalarNode> = None;
        for (key, value) in map.iter() {
            match key.as_str() {
                "account_sid" => {
                    twilio.account_sid = self
                        .interpolated(key, value, Section::Twilio)
                        .map(|s| s.value)
                }
                "auth_token" => {
                    twilio.auth_token = self
                        .interpolated(key, value, Section::Twilio)
                        .map(|s| Secret::new(s.value))
                }
                "from" | "messaging_service_sid" => {
                    if let Some(first) = from_key {
                        self.walker.error(
                            Pos::of_scalar(key),
                            format!("`{}` and `{}` are both set", first.as_str(), key.as_str()),
                            Some("keep one: Twilio sends either from a number (`from`) or through a messaging service (`messaging_service_sid`)".into()),
                        );
                        continue;
                    }
                    from_key = Some(key);
                    let sender = self.interpolated(key, value, Section::Twilio);
                    twilio.sender = sender.map(|s| match key.as_str() {
                        "from" => MessageSender::From(s.value),
                        _ => MessageSender::MessagingService(s.value),
                    });
                }
                base @ ("api_base" | "content_api_base" | "messaging_api_base") => {
                    if let Some(s) = self.interpolated(key, value, Section::Twilio) {
                        match parse_api_base(&s.value) {
                            Ok(url) => match base {
                                "api_base" => twilio.api_base = url,
                                "content_api_base" => twilio.content_api_base = url,
                                _ => twilio.messaging_api_base = url,
                            },
                            Err(problem) => self.walker.error(
                                s.pos,
                                format!("invalid api_base `{}`: {problem}", s.value),
                                Some(format!("write an http(s) URL such as `{DEFAULT_API_BASE}`")),
                            ),
                        }
                    }
                }
                "max_per_second" => {
                    if let Some(s) = self.interpolated(key, value, Section::Twilio) {
                        match s.value.trim().parse::<u32>() {
                            Ok(n) if n > 0 => twilio.max_per_second = Some(n),
                            _ => self.walker.error(
                                s.pos,
                                format!(
                                    "max_per_second must be a whole number above 0, found `{}`",
                                    s.value
                                ),
                                Some(
                                    "for example `max_per_second: 20`, or remove it for no limit"
                                        .into(),
                                ),
                            ),
                        }
                    }
                }
                _ => {}
            }
        }
        twilio
    }

    /// Reports credentials that were not written at all (an unset `${VAR}` was
    /// reported where it was written).
    fn check_credentials(&mut self, pos: Pos, top: &MarkedMappingNode, twilio: &TwilioSettings) {
        // A `twilio:` that is not a map was reported already.
        let Some(section) = top.get_mapping("twilio") else {
            return;
        };
        let written = |key: &str| section.get_node(key).is_some();
        let prefix = self.var_prefix();
        let missing = [
            (
                "account_sid",
                twilio.account_sid.is_none() && !written("account_sid"),
                format!("add `account_sid: ${{{prefix}_ACCOUNT_SID}}` under `twilio:`"),
            ),
            (
                "auth_token",
                twilio.auth_token.is_none() && !written("auth_token"),
                format!("add `auth_token: ${{{prefix}_AUTH_TOKEN}}` under `twilio:`"),
            ),
            (
                "from",
                twilio.sender.is_none() && !written("from") && !written("messaging_service_sid"),
                "add `from: \"whatsapp:+1...\"` (or `messaging_service_sid: MG...`) under `twilio:`".to_owned(),
            ),
        ];
        for (field, is_missing, hint) in missing {
            if !is_missing {
                continue;
            }
            if self.allow_missing_credentials {
                self.walker.warning(
                    pos,
                    format!("no `twilio.{field}`: this bot can only run with --dry-run"),
                    Some(hint),
                );
            } else {
                self.walker.error(
                    pos,
                    format!("no `twilio.{field}`: this bot cannot send messages"),
                    Some(format!("{hint}, or run with --dry-run")),
                );
            }
        }
    }

    /// `templates:`: name -> `{content_sid, variables}` (SPEC §8.2).
    fn templates(&mut self, key: &MarkedScalarNode, value: &Node) -> Vec<TemplateEntry> {
        let Some(map) = self.walker.mapping(key, value) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, body) in map.iter() {
            let name_str = Str {
                value: name.as_str().trim().to_owned(),
                pos: Pos::of_scalar(name),
            };
            let Some(fields) = self.walker.mapping(name, body) else {
                continue;
            };
            self.walker.check_keys(
                fields,
                &TEMPLATE_KEYS,
                &format!("in template `{}`", name_str.value),
            );
            let mut entry = TemplateEntry {
                name: name_str,
                content_sid: String::new(),
                variables: Vec::new(),
            };
            for (field, value) in fields.iter() {
                match field.as_str() {
                    "content_sid" => {
                        let Some(s) = self.text(field, value) else {
                            continue;
                        };
                        let sid = s.value.trim();
                        let valid = sid.len() == 34
                            && sid.starts_with("HX")
                            && sid[2..].bytes().all(|b| b.is_ascii_hexdigit());
                        if !valid {
                            self.walker.error(
                                s.pos,
                                format!("`{sid}` is not a Content SID"),
                                Some("copy the template's SID from the Twilio console (Content Template Builder): `HX` and 32 hex digits".into()),
                            );
                            continue;
                        }
                        entry.content_sid = sid.to_owned();
                    }
                    "variables" => {
                        let Some(vars) = self.walker.mapping(field, value) else {
                            continue;
                        };
                        for (k, v) in vars.iter() {
                            let Some(text) = self.walker.string(k, v) else {
                                continue;
                            };
                            entry.variables.push((k.as_str().trim().to_owned(), text));
                        }
                    }
                    _ => {}
                }
            }
            if fields.get_node("content_sid").is_none() {
                self.walker.error(
                    entry.name.pos,
                    format!("template `{}` has no `content_sid`", entry.name.value),
                    Some("add `content_sid: HX...`, the approved template's SID from the Twilio console".into()),
                );
                continue;
            }
            if !entry.content_sid.is_empty() {
                out.push(entry);
            }
        }
        out
    }

    /// `vars: [name, ...]`: each a name templates can use.
    fn vars(&mut self, key: &MarkedScalarNode, value: &Node) -> Vec<Str> {
        if let Node::Mapping(_) = value {
            self.walker.error(
                Pos::of_scalar(key),
                "`vars` must be a list of names, found a map",
                Some("write the names in brackets: `vars: [name, day]`".into()),
            );
            return Vec::new();
        }
        let mut names = Vec::new();
        for s in self.walker.strings(key, value).unwrap_or_default() {
            let name = s.value.trim();
            if let Some((message, hint)) = var_name_problem(name) {
                self.walker.error(s.pos, message, Some(hint));
                continue;
            }
            names.push(Str {
                value: name.to_owned(),
                pos: s.pos,
            });
        }
        names
    }

    /// A list of node names (`outbound:`), trimmed; checked against the nodes later.
    fn node_list(&mut self, key: &MarkedScalarNode, value: &Node) -> Vec<Str> {
        if let Node::Mapping(_) = value {
            self.walker.error(
                Pos::of_scalar(key),
                format!(
                    "`{}` must be a list of node names, found a map",
                    key.as_str()
                ),
                Some(format!(
                    "write the names in brackets: `{}: [reminder, follow_up]`",
                    key.as_str()
                )),
            );
            return Vec::new();
        }
        self.walker
            .strings(key, value)
            .unwrap_or_default()
            .into_iter()
            .map(|s| Str {
                value: s.value.trim().to_owned(),
                pos: s.pos,
            })
            .collect()
    }

    fn http(&mut self, key: &MarkedScalarNode, value: &Node) -> Vec<String> {
        let Some(map) = self.walker.mapping(key, value) else {
            return Vec::new();
        };
        self.walker.check_keys(map, &HTTP_KEYS, "in `http:`");
        let Some((allow_key, allow)) = map.iter().find(|(k, _)| k.as_str() == "allow") else {
            return Vec::new();
        };
        let Some(entries) = self.walker.strings(allow_key, allow) else {
            return Vec::new();
        };
        let mut hosts = Vec::new();
        for raw in entries {
            let Some(s) = self.fill(&raw, "allow", Section::General) else {
                continue;
            };
            match parse_host(&s.value) {
                Ok(host) => hosts.push(host),
                Err(hint) => self.walker.error(
                    s.pos,
                    format!("`{}` is not a host name or IP address", s.value),
                    Some(hint),
                ),
            }
        }
        hosts
    }
}

/// A problem with one `${...}` in a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterpolationError {
    /// `${VAR}` with VAR unset or empty, and no default. `offset` is the byte
    /// offset of the `$`.
    Unset { var: String, offset: usize },
    Syntax {
        offset: usize,
        message: String,
        hint: String,
    },
}

/// Fills `${VAR}` and `${VAR:-default}` (the default when VAR is unset or empty);
/// `$${` is a literal `${`.
pub(crate) fn interpolate(raw: &str, env: Env<'_>) -> Result<String, Vec<InterpolationError>> {
    let mut out = String::with_capacity(raw.len());
    let mut errors = Vec::new();
    let mut rest = raw;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            offset += i + 3;
            rest = escaped;
            continue;
        }
        if !after.starts_with("${") {
            out.push('$');
            offset += i + 1;
            rest = &after[1..];
            continue;
        }
        let at = offset + i;
        let Some(close) = after.find('}') else {
            errors.push(InterpolationError::Syntax {
                offset: at,
                message: "`${` is not closed".into(),
                hint: "write `${NAME}` or `${NAME:-default}`; `$${` is a literal `${`".into(),
            });
            return Err(errors);
        };
        let inner = &after[2..close];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            errors.push(InterpolationError::Syntax {
                offset: at,
                message: format!("`${{{inner}}}` is not a valid variable reference"),
                hint: "variable names are letters, digits and `_`; a default is written `${NAME:-value}`".into(),
            });
        } else {
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => errors.push(InterpolationError::Unset {
                    var: name.to_owned(),
                    offset: at,
                }),
            }
        }
        offset += i + close + 1;
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// `30s`, `30m`, `2h`, `1d` (also `timeout:` in nodes and scripts' `ask`).
pub(crate) use crate::source::parse_duration;

/// Whether `handoff_notify` is an absolute http or https URL with a host.
fn notify_url_ok(text: &str) -> bool {
    url::Url::parse(text.trim())
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .unwrap_or(false)
}

/// An http(s) URL without a trailing slash.
fn parse_api_base(text: &str) -> Result<String, &'static str> {
    let url = url::Url::parse(text).map_err(|_| "it is not a URL")?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("it must start with http:// or https://");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("it cannot have a query or fragment");
    }
    Ok(text.trim().trim_end_matches('/').to_owned())
}

/// A host name or IP address for `http.allow`, lowercased; the error is a hint.
fn parse_host(text: &str) -> Result<String, String> {
    let text = text.trim();
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(ip.to_string());
    }
    if let Ok(url) = url::Url::parse(text) {
        if let Some(host) = url.host_str() {
            return Err(format!("write just the host: `{host}`"));
        }
    }
    if let Some((host, port)) = text.rsplit_once(':') {
        if port.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "write just the host, `{host}`: every port of an allowed host is allowed"
            ));
        }
    }
    let valid = !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "write a host name like `api.example.com` or an IP address; allowed characters: {}",
            backticked(["a-z", "0-9", "-", "."])
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn interpolation() {
        let env = env_of(&[("A", "alpha"), ("EMPTY", ""), ("B_2", "b")]);
        let lookup = |name: &str| env.get(name).cloned();
        let ok = [
            ("plain", "plain"),
            ("${A}", "alpha"),
            ("x-${A}-${B_2}-y", "x-alpha-b-y"),
            ("${MISSING:-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${A:-dflt}", "alpha"),
            ("${MISSING:-}", ""),
            ("$${A} costs $5", "${A} costs $5"),
            ("$", "$"),
        ];
        for (raw, want) in ok {
            assert_eq!(interpolate(raw, &lookup).as_deref(), Ok(want), "{raw}");
        }
        let unset = |var: &str, offset| InterpolationError::Unset {
            var: var.into(),
            offset,
        };
        assert_eq!(
            interpolate("${MISSING}", &lookup),
            Err(vec![unset("MISSING", 0)])
        );
        assert_eq!(
            interpolate("a ${EMPTY} ${NO}", &lookup),
            Err(vec![unset("EMPTY", 2), unset("NO", 11)])
        );
        let syntax_offset = |raw| match interpolate(raw, &lookup) {
            Err(errors) => match &errors[..] {
                [InterpolationError::Syntax { offset, .. }] => *offset,
                other => panic!("{raw}: {other:?}"),
            },
            Ok(v) => panic!("{raw}: {v}"),
        };
        assert_eq!(syntax_offset("ab ${A"), 3);
        assert_eq!(syntax_offset("${A-x}"), 0);
        assert_eq!(syntax_offset("x ${}"), 2);
        assert_eq!(syntax_offset("${ A }"), 0);
    }

    #[test]
    fn durations() {
        let ok = [
            ("30s", 30),
            ("30m", 1800),
            ("2h", 7200),
            ("1d", 86400),
            (" 5m ", 300),
        ];
        for (text, secs) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        let bad = [
            ("30", "the unit is missing"),
            ("30 m", "expected a whole number before the unit"),
            ("1w", "the unit must be s, m, h or d"),
            ("1.5h", "expected a whole number before the unit"),
            ("0m", "it must be more than zero"),
            ("m", "expected a whole number before the unit"),
        ];
        for (text, problem) in bad {
            assert_eq!(parse_duration(text), Err(problem), "{text}");
        }
    }

    #[test]
    fn api_bases() {
        assert_eq!(
            parse_api_base("https://api.twilio.com/").as_deref(),
            Ok("https://api.twilio.com")
        );
        assert_eq!(
            parse_api_base("http://127.0.0.1:9000").as_deref(),
            Ok("http://127.0.0.1:9000")
        );
        assert!(parse_api_base("api.twilio.com").is_err());
        assert!(parse_api_base("ftp://x.example").is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("API.Example.com").as_deref(),
            Ok("api.example.com")
        );
        assert_eq!(parse_host("10.0.0.1").as_deref(), Ok("10.0.0.1"));
        assert_eq!(parse_host("[::1]").as_deref(), Ok("::1"));
        assert_eq!(
            parse_host("https://api.x.example/v1"),
            Err("write just the host: `api.x.example`".into())
        );
        assert!(parse_host("api.x.example:8080")
            .unwrap_err()
            .contains("every port"));
        assert!(parse_host("bad host").is_err());
    }
}
