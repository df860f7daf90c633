//! What the process writes to its log: the tracing subscriber `switchboard` installs,
//! as text or JSON lines. Field values often come from outside (message bodies,
//! script output, Twilio's error texts), so every value is written with its control
//! characters escaped: one event is one line, and nothing in it can colour or move a
//! terminal. A contact address is logged in a field named `contact` and written as
//! a short hash of the address unless the operator asks for numbers
//! ([`LogContacts`]); the setting lives in the formatter, not in a global.

use std::fmt::{self, Write as _};
use std::io;

use sha2::{Digest, Sha256};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The field every log line that concerns a contact carries its address in.
pub const CONTACT_FIELD: &str = "contact";

/// Text lines (the default) or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How a contact address appears in the log (`--log-contacts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogContacts {
    /// `c:` and the first 8 hex digits of the address's SHA-256: lines of one
    /// contact can be found together, and the number is not shown.
    #[default]
    Hash,
    /// The address as Twilio sent it, e.g. `whatsapp:+14155550100`.
    Full,
}

impl LogContacts {
    /// `address` as this setting logs it.
    pub fn show(self, address: &str) -> String {
        match self {
            LogContacts::Full => address.to_owned(),
            LogContacts::Hash => {
                let digest = Sha256::digest(address.as_bytes());
                let mut shown = String::with_capacity(10);
                shown.push_str("c:");
                for byte in &digest[..4] {
                    let _ = write!(shown, "{byte:02x}");
                }
                shown
            }
        }
    }
}

/// How the process logs.
#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    pub format: LogFormat,
    pub contacts: LogContacts,
    /// Colour the text format (only when standard error is a terminal).
    pub ansi: bool,
}

/// The subscriber for `settings`, writing to `writer` and filtered by `filter`.
/// The binary passes standard error; tests pass a buffer.
pub fn subscriber<W>(
    settings: LogSettings,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .fmt_fields(EscapedFields {
            contacts: settings.contacts,
        });
    match settings.format {
        LogFormat::Text => Box::new(builder.with_ansi(settings.ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .event_format(JsonLines {
                    contacts: settings.contacts,
                })
                .finish(),
        ),
    }
}

/// Installs [`subscriber`] on standard error as the process's subscriber.
/// Verbosity from `RUST_LOG` (default `info`, sqlx at `warn`).
pub fn init(format: LogFormat, contacts: LogContacts) {
    use std::io::IsTerminal;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let settings = LogSettings {
        format,
        contacts,
        ansi: io::stderr().is_terminal(),
    };
    let _ = tracing::subscriber::set_global_default(subscriber(settings, filter, io::stderr));
}

/// `text` with every control character escaped (`\n`, `\r`, `\t`, else
/// `\u{..}`), and the invisible characters that reorder or break a line.
pub fn escape(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// See [`escape`].
#[derive(Debug)]
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let mut clean = 0;
        for (at, c) in text.char_indices() {
            if !needs_escape(c) {
                continue;
            }
            f.write_str(&text[clean..at])?;
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
            clean = at + c.len_utf8();
        }
        f.write_str(&text[clean..])
    }
}

/// Control characters (C0, DEL, C1), line and paragraph separators, and the
/// bidirectional overrides that make a line display as something else.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with `contact`'s number replaced by `<contact>`: Twilio's error texts
/// quote the number ("The 'To' number +1415... is not a valid phone number").
pub fn without_contact(text: &str, contact: &str) -> String {
    let number = contact.rsplit(':').next().unwrap_or(contact);
    if number.len() < 4 {
        return text.to_owned();
    }
    text.replace(contact, "<contact>")
        .replace(number, "<contact>")
}

/// The text format's fields: `name=value`, the message bare, every value escaped,
/// the `contact` field per [`LogContacts`].
struct EscapedFields {
    contacts: LogContacts,
}

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            contacts: self.contacts,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'w> {
    writer: Writer<'w>,
    contacts: LogContacts,
    result: fmt::Result,
    first: bool,
}

impl TextVisitor<'_> {
    /// Writes the separator and, but for the message, `name=`; `None` after an
    /// earlier error.
    fn start(&mut self, field: &Field) -> Option<&'static str> {
        if self.result.is_err() {
            return None;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let name = field.name();
        self.result = if name == "message" {
            self.writer.write_str(separator)
        } else {
            write!(self.writer, "{separator}{name}=")
        };
        self.result.is_ok().then_some(name)
    }

    fn write(&mut self, field: &Field, value: &str, quote: bool) {
        let Some(name) = self.start(field) else {
            return;
        };
        self.result = if name == CONTACT_FIELD {
            let shown = self.contacts.show(value);
            write!(self.writer, "{}", escape(&shown))
        } else if quote && name != "message" {
            // The quotes keep a value with spaces apart from the next field.
            write!(self.writer, "\"{}\"", escape(value))
        } else {
            write!(self.writer, "{}", escape(value))
        };
    }
}

/// Escapes what is written through it, as [`escape`] does, so a value is
/// formatted straight into the line (no string of its own per field).
struct EscapingWriter<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for EscapingWriter<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write!(self.0, "{}", escape(text))
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value, true);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == CONTACT_FIELD {
            // The whole address is needed to hash it.
            self.write(field, &format!("{value:?}"), false);
            return;
        }
        if self.start(field).is_some() {
            self.result = write!(EscapingWriter(&mut self.writer), "{value:?}");
        }
    }
}

/// The JSON format: `{"timestamp", "level", "fields": {..}, "target"}` per line,
/// the shape of tracing-subscriber's own JSON, with the `contact` field per
/// [`LogContacts`] and every control character `\u`-escaped.
struct JsonLines {
    contacts: LogContacts,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = JsonVisitor {
            fields: serde_json::Map::new(),
            contacts: self.contacts,
        };
        event.record(&mut fields);
        let meta = event.metadata();
        let line = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": meta.level().as_str(),
            "fields": fields.fields,
            "target": meta.target(),
        });
        let mut bytes = Vec::new();
        let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, EscapeAllControls);
        serde::Serialize::serialize(&line, &mut serializer).map_err(|_| fmt::Error)?;
        let text = String::from_utf8(bytes).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonVisitor {
    fields: serde_json::Map<String, serde_json::Value>,
    contacts: LogContacts,
}

impl JsonVisitor {
    fn insert(&mut self, field: &Field, value: serde_json::Value) {
        self.fields.insert(field.name().to_owned(), value);
    }
}

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        let value = if field.name() == CONTACT_FIELD {
            self.contacts.show(value)
        } else {
            value.to_owned()
        };
        self.insert(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// serde_json escapes C0 controls itself; this also escapes what [`needs_escape`]
/// names beyond them (DEL, C1, separators, bidi overrides), which JSON allows raw
/// but a terminal or a line-based tool may act on.
struct EscapeAllControls;

impl serde_json::ser::Formatter for EscapeAllControls {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut clean = 0;
        for (at, c) in fragment.char_indices() {
            if needs_escape(c) {
                writer.write_all(&fragment.as_bytes()[clean..at])?;
                write!(writer, "\\u{:04x}", u32::from(c))?;
                clean = at + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[clean..])
    }
}

/// A log writer a test reads back.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Buffer {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8(bytes).expect("log output is UTF-8")
    }
}

#[cfg(test)]
impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl<'w> MakeWriter<'w> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'w self) -> Buffer {
        self.clone()
    }
}

/// Runs `f` on this thread with the text subscriber at `debug`, contacts in full,
/// writing to a buffer: what `f` returned and what it logged.
#[cfg(test)]
pub(crate) fn capture<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buffer = Buffer::default();
    let settings = LogSettings {
        format: LogFormat::Text,
        contacts: LogContacts::Full,
        ansi: false,
    };
    let subscriber = subscriber(settings, EnvFilter::new("debug"), buffer.clone());
    let value = tracing::subscriber::with_default(subscriber, f);
    (value, buffer.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "a\nFORGED b\x1b[31m\r\u{85}\u{2028}";
    const CONTACT: &str = "whatsapp:+14155550123";

    /// The log output of one event carrying hostile text in the message and in a
    /// field, and a contact, through the subscriber the binary installs.
    fn log_one(format: LogFormat, contacts: LogContacts, ansi: bool) -> String {
        let buffer = Buffer::default();
        let settings = LogSettings {
            format,
            contacts,
            ansi,
        };
        let subscriber = subscriber(settings, EnvFilter::new("info"), buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let body = HOSTILE;
            tracing::info!(contact = CONTACT, text = %body, quoted = body, "script log: {body}");
        });
        buffer.text()
    }

    #[test]
    fn text_logs_escape_control_characters_in_every_value() {
        for ansi in [false, true] {
            let out = log_one(LogFormat::Text, LogContacts::Hash, ansi);
            assert_eq!(out.matches('\n').count(), 1, "one line: {out:?}");
            assert!(out.ends_with('\n'));
            assert!(!out.contains('\r') && !out.contains('\u{85}') && !out.contains('\u{2028}'));
            let escaped = r"a\nFORGED b\u{1b}[31m\r\u{85}\u{2028}";
            assert_eq!(out.matches(escaped).count(), 3, "{out}");
            if !ansi {
                assert!(!out.contains('\x1b'), "no colour codes: {out:?}");
            }
        }
    }

    #[test]
    fn colour_codes_only_when_asked_for() {
        assert!(log_one(LogFormat::Text, LogContacts::Hash, true).contains("\x1b["));
        assert!(!log_one(LogFormat::Text, LogContacts::Hash, false).contains('\x1b'));
    }

    #[test]
    fn json_logs_escape_control_characters_and_parse() {
        let out = log_one(LogFormat::Json, LogContacts::Hash, true);
        assert_eq!(out.matches('\n').count(), 1, "one line: {out:?}");
        assert!(!out.contains('\x1b') && !out.contains('\u{85}') && !out.contains('\u{2028}'));
        let line: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        let fields = &line["fields"];
        assert_eq!(fields["text"], HOSTILE);
        assert_eq!(fields["quoted"], HOSTILE);
        assert_eq!(fields["message"], format!("script log: {HOSTILE}"));
        assert_eq!(line["level"], "INFO");
    }

    #[test]
    fn contacts_are_hashed_unless_asked_for_in_full() {
        let hashed = LogContacts::Hash.show(CONTACT);
        assert!(hashed.starts_with("c:") && hashed.len() == 10, "{hashed}");
        assert_eq!(hashed, LogContacts::Hash.show(CONTACT), "stable");
        assert_ne!(hashed, LogContacts::Hash.show("whatsapp:+14155550124"));
        for format in [LogFormat::Text, LogFormat::Json] {
            let out = log_one(format, LogContacts::Hash, false);
            assert!(out.contains(&hashed), "{out}");
            assert!(!out.contains("4155550123"), "{out}");
            let out = log_one(format, LogContacts::Full, false);
            assert!(out.contains(CONTACT), "{out}");
        }
    }

    #[test]
    fn a_contact_is_taken_out_of_error_texts() {
        let text = "The 'To' number +14155550123 is not a valid phone number.";
        assert_eq!(
            without_contact(text, CONTACT),
            "The 'To' number <contact> is not a valid phone number."
        );
        assert_eq!(without_contact(text, "+1"), text);
    }
}
