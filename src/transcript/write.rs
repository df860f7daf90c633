//! Writing a conversation down as a transcript test (SPEC §3), for `chat`'s
//! `/save`: each step's message and every reply `{exact: ...}`, and the script
//! HTTP answers seen as the test's `http:` stubs. Every text is written as a YAML
//! double-quoted string with its special characters escaped, so the file reads
//! back exactly as the conversation went, whatever was typed or answered.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::parse_stubs;
use crate::script::HttpResponse;

/// One message of the conversation and what the bot did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedStep {
    /// What the contact typed.
    pub user: String,
    /// The reply bodies, in order.
    pub replies: Vec<String>,
    /// The flow failed on this message (the replies are the error reply).
    pub error: Option<String>,
}

/// One script HTTP call made during the conversation and its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    /// `GET` or `POST`.
    pub method: String,
    pub url: String,
    /// The response, or why the call failed.
    pub answer: Result<HttpResponse, String>,
}

impl RecordedCall {
    /// `"GET https://..."`, the key of a stub.
    fn key(&self) -> String {
        format!("{} {}", self.method, self.url)
    }
}

/// The test file for a conversation: `name`, the steps, the stubs. `origin` says
/// in the opening comment where it came from (e.g. "switchboard chat shop").
pub fn write_test(
    name: &str,
    origin: &str,
    steps: &[RecordedStep],
    calls: &[RecordedCall],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Recorded with `{origin}`. Each `bot:` lists every reply exactly; to check\n\
         # less, write a plain text (the reply contains it) or {{regex: ...}} instead.\n\
         # See docs/transcript-tests.md."
    );
    let _ = writeln!(out, "name: {}", quoted(name));
    out.push_str("steps:\n");
    for step in steps {
        let _ = writeln!(out, "  - user: {}", quoted(&step.user));
        match step.replies.as_slice() {
            [] => out.push_str("    bot: []\n"),
            [one] => {
                let _ = writeln!(out, "    bot: {{exact: {}}}", quoted(one));
            }
            many => {
                out.push_str("    bot:\n");
                for reply in many {
                    let _ = writeln!(out, "      - {{exact: {}}}", quoted(reply));
                }
            }
        }
        if let Some(error) = &step.error {
            out.push_str(
                "    # The flow failed on this message and the contact got the error reply:\n",
            );
            for line in error.lines() {
                let _ = writeln!(out, "    #   {line}");
            }
        }
    }
    write_stubs(&mut out, calls);
    out
}

/// The `http:` section: one stub per call, with the first answer seen; a call
/// that failed gets a comment instead (a stub always answers). With no stub to
/// write, the comments stand alone: an empty `http:` would not read back.
fn write_stubs(out: &mut String, calls: &[RecordedCall]) {
    let mut keys: Vec<String> = Vec::new();
    for call in calls {
        let key = call.key();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut lines = Vec::new();
    let mut stubs = 0;
    for key in keys {
        let answers: Vec<&Result<HttpResponse, String>> = calls
            .iter()
            .filter(|c| c.key() == key)
            .map(|c| &c.answer)
            .collect();
        if let Some(why) = answers.iter().find_map(|a| a.as_ref().err()) {
            lines.push(format!(
                "# {key} failed during the chat ({}).",
                one_line(why)
            ));
            lines.push(format!(
                "# A test needs an answer for every call (a stub cannot fail): add one under `http:`, e.g. {}: {{status: 503, body: \"\"}}",
                quoted(&key)
            ));
        }
        let mut answered = answers.iter().filter_map(|a| a.as_ref().ok());
        if let Some(response) = answered.next() {
            if answered.any(|r| r != response) {
                lines.push(format!(
                    "# {key} answered differently later in the chat; a stub gives every call this first answer."
                ));
            }
            lines.push(format!("{}: {}", quoted(&key), stub(&key, response)));
            stubs += 1;
        }
    }
    let indent = if stubs > 0 {
        out.push_str("http:\n");
        "  "
    } else {
        ""
    };
    for line in lines {
        let _ = writeln!(out, "{indent}{line}");
    }
}

/// `{status: 200, json: ...}` when the body is JSON that reads back as the same
/// text, else `{status: 200, body: "..."}` with the body exactly.
fn stub(key: &str, response: &HttpResponse) -> String {
    let status = response.status;
    if let Ok(value) = serde_json::from_str::<Value>(&response.body) {
        let candidate = format!("{{status: {status}, json: {}}}", flow_value(&value));
        let reads_back = parse_stubs(
            Path::new("recorded"),
            &format!("{}: {candidate}\n", quoted(key)),
        )
        .is_ok_and(|stubs| stubs.first().is_some_and(|(_, r)| r == response));
        if reads_back {
            return candidate;
        }
    }
    format!("{{status: {status}, body: {}}}", quoted(&response.body))
}

/// `value` as YAML flow (JSON-like) text, every string quoted.
fn flow_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quoted(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(flow_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", quoted(k), flow_value(v)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
    }
}

/// `text` on one line, for a comment.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` as a YAML double-quoted string on one line: `"` and `\` escaped, line
/// breaks and every character YAML does not allow raw written as escapes.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{9f}').contains(&c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::transcript::{parse_tests, Expect};

    const HOSTILE: &str =
        "a \"quote\" \\ back\nslash\r\t tab \u{0}\u{7}\u{1b}[31m \u{7f}\u{85}\u{9f}\u{a0} \u{2028}\u{2029}\u{feff}\u{fffe} é 🚗 #not a comment\n---\n... : - [x] {y} &a *b !t %p @q `r` ~";

    #[test]
    fn any_text_reads_back_exactly() {
        let steps = [
            RecordedStep {
                user: HOSTILE.into(),
                replies: vec![HOSTILE.into()],
                error: None,
            },
            RecordedStep {
                user: "yes".into(),
                replies: vec!["1".into(), "null".into(), String::new()],
                error: Some("flows/b/x.rhai:3: boom\nsecond line".into()),
            },
            RecordedStep {
                user: String::new(),
                replies: vec![],
                error: None,
            },
        ];
        let text = write_test(HOSTILE, "switchboard chat b", &steps, &[]);
        let tests = parse_tests(Path::new("saved.yaml"), &text)
            .unwrap_or_else(|d| panic!("{d:#?}\n{text}"));
        assert_eq!(tests.len(), 1, "{text}");
        let test = &tests[0];
        assert_eq!(test.name, HOSTILE.trim());
        assert_eq!(test.steps.len(), 3);
        for (step, want) in test.steps.iter().zip(&steps) {
            assert_eq!(step.user.text, want.user, "{text}");
            let got: Vec<String> = step
                .bot
                .as_ref()
                .unwrap()
                .iter()
                .map(|e| match e {
                    Expect::Exact(s) => s.clone(),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(got, want.replies, "{text}");
            assert!(step.vars.is_none() && step.node.is_none());
        }
        assert!(text.contains("    #   second line\n"), "{text}");
    }

    fn call(method: &str, url: &str, answer: Result<HttpResponse, String>) -> RecordedCall {
        RecordedCall {
            method: method.into(),
            url: url.into(),
            answer,
        }
    }

    fn ok(body: &str) -> Result<HttpResponse, String> {
        Ok(HttpResponse {
            status: 200,
            body: body.into(),
        })
    }

    #[test]
    fn stubs_read_back_as_the_answers_the_chat_saw() {
        let compact = json!([{"name": "tea", "n": 1.5, "x": null, "s": HOSTILE}]).to_string();
        // YAML numbers this big come back as floats: written as the body instead.
        let big = r#"{"id":18446744073709551615}"#;
        let calls = [
            call("GET", "https://api.example/stock", ok(&compact)),
            call("GET", "https://api.example/stock", ok("[]")),
            call(
                "POST",
                "https://api.example/order",
                ok("{ \"spaced\": true }"),
            ),
            call("GET", "https://api.example/text", ok(HOSTILE)),
            call("GET", "https://api.example/big", ok(big)),
            call(
                "GET",
                "https://api.example/down",
                Err("could not connect\n(refused)".into()),
            ),
        ];
        let steps = [RecordedStep {
            user: "hi".into(),
            replies: vec!["ok".into()],
            error: None,
        }];
        let text = write_test("t", "switchboard chat b", &steps, &calls);
        let tests = parse_tests(Path::new("saved.yaml"), &text)
            .unwrap_or_else(|d| panic!("{d:#?}\n{text}"));
        let http = &tests[0].http;
        let body = |key: &str| {
            http.iter()
                .find(|(k, _)| k == key)
                .map(|(_, r)| r.body.clone())
                .unwrap_or_else(|| panic!("no {key} in\n{text}"))
        };
        assert_eq!(http.len(), 4, "{text}");
        assert_eq!(body("GET https://api.example/big"), big);
        assert_eq!(body("GET https://api.example/stock"), compact);
        assert_eq!(
            body("POST https://api.example/order"),
            "{ \"spaced\": true }"
        );
        assert_eq!(body("GET https://api.example/text"), HOSTILE);
        // Readable JSON where it reads back the same; the exact body otherwise.
        assert!(
            text.contains("\"GET https://api.example/stock\": {status: 200, json: [{"),
            "{text}"
        );
        assert!(
            text.contains("\"POST https://api.example/order\": {status: 200, body: "),
            "{text}"
        );
        assert!(
            text.contains("# GET https://api.example/stock answered differently later"),
            "{text}"
        );
        assert!(
            text.contains("  # GET https://api.example/down failed during the chat (could not connect (refused)).\n  # A test needs an answer for every call (a stub cannot fail): add one under `http:`, e.g. \"GET https://api.example/down\": {status: 503, body: \"\"}\n"),
            "{text}"
        );

        // Only failed calls: no `http:` (empty, it would not read back), just the note.
        let text = write_test("t", "switchboard chat b", &steps, &calls[5..]);
        let tests = parse_tests(Path::new("saved.yaml"), &text)
            .unwrap_or_else(|d| panic!("{d:#?}\n{text}"));
        assert!(tests[0].http.is_empty());
        assert!(!text.contains("http:\n"), "{text}");
        assert!(
            text.ends_with("e.g. \"GET https://api.example/down\": {status: 503, body: \"\"}\n"),
            "{text}"
        );
    }
}
