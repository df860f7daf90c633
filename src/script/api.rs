//! The author API: the functions a script calls (`say`, `ask`, `go_to`, `end`, `handoff`,
//! `http_get`, `http_post`, `now`, `log`). Each works on the running call's
//! [`CallState`]; none does I/O except through the host's [`super::ScriptHttp`].

use std::time::Instant;

use chrono::SecondsFormat;
use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext, Position};
use serde_json::Value;
use url::{Host, Url};

use super::call::{Call, CallState};
use super::{AskTimeout, HttpRequest, Next};
use crate::message::{Choice, Interactive, InteractiveStyle, Reply, TemplateSend};
use crate::source::did_you_mean;

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

/// Registers every author function on `engine`.
pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("say", |ctx: NativeCallContext, text: Dynamic| {
            say(&ctx, text, None)
        })
        .register_fn(
            "say",
            |ctx: NativeCallContext, text: Dynamic, media: Dynamic| say(&ctx, text, Some(media)),
        )
        .register_fn("ask", ask)
        .register_fn(
            "ask_buttons",
            |ctx: NativeCallContext, text: Dynamic, choices: Dynamic, handler: Dynamic| {
                ask_menu(
                    &ctx,
                    InteractiveStyle::Buttons,
                    text,
                    None,
                    choices,
                    handler,
                )
            },
        )
        .register_fn(
            "ask_list",
            |ctx: NativeCallContext,
             text: Dynamic,
             button: Dynamic,
             choices: Dynamic,
             handler: Dynamic| {
                ask_menu(
                    &ctx,
                    InteractiveStyle::List,
                    text,
                    Some(button),
                    choices,
                    handler,
                )
            },
        )
        .register_fn("say_template", |ctx: NativeCallContext, name: Dynamic| {
            say_template(&ctx, name, None)
        })
        .register_fn(
            "say_template",
            |ctx: NativeCallContext, name: Dynamic, variables: Dynamic| {
                say_template(&ctx, name, Some(variables))
            },
        )
        .register_fn(
            "ask",
            |ctx: NativeCallContext, question: Dynamic, handler: Dynamic, options: rhai::Map| {
                ask_with(&ctx, question, handler, &options)
            },
        )
        .register_fn("go_to", go_to)
        .register_fn("end", end)
        .register_fn("handoff", handoff)
        .register_fn("http_get", |ctx: NativeCallContext, url: &str| {
            http(&ctx, "GET", url, None)
        })
        .register_fn(
            "http_post",
            |ctx: NativeCallContext, url: &str, body: Dynamic| {
                let json: Value = rhai::serde::from_dynamic(&body).map_err(|e| {
                    error(format!("http_post: the body cannot be sent as JSON: {e}"))
                })?;
                http(&ctx, "POST", url, Some(json))
            },
        )
        .register_fn("now", now)
        .register_fn("log", log);
}

fn error(message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        message.into().into(),
        Position::NONE,
    ))
}

/// Runs `f` on the running call's state.
fn with_state<T>(ctx: &NativeCallContext, f: impl FnOnce(&CallState) -> Result<T>) -> Result<T> {
    let call = Call::from_tag(ctx.tag()).ok_or_else(|| {
        error(format!(
            "{}() can only be used inside a function of the script",
            ctx.fn_name()
        ))
    })?;
    f(&call)
}

/// The text form of a value an author passes to `say`/`ask`: strings as they are,
/// other values (numbers, maps...) as printed; `()` is almost always an unset
/// variable, so it is an error rather than an empty message.
fn text_of(value: Dynamic, function: &str) -> Result<String> {
    if value.is_unit() {
        return Err(error(format!(
            "{function}(): the text is `()` (nothing): is the variable set?"
        )));
    }
    Ok(if value.is_string() {
        value.into_string().unwrap_or_default()
    } else {
        value.to_string()
    })
}

fn send(state: &CallState, reply: Reply) -> Result<()> {
    let mut effects = state.effects();
    if effects.replies.len() >= state.limits.max_replies {
        return Err(error(format!(
            "too many messages in one go (limit {}): is say() or ask() in a loop?",
            state.limits.max_replies
        )));
    }
    effects.replies.push(reply);
    Ok(())
}

fn say(ctx: &NativeCallContext, text: Dynamic, media: Option<Dynamic>) -> Result<()> {
    let text = text_of(text, "say")?;
    let media = match media {
        None => Vec::new(),
        Some(url) if url.is_string() => vec![url.into_string().unwrap_or_default()],
        Some(other) => {
            return Err(error(format!(
                "say(text, media_url): the media URL must be a string, not {}",
                other.type_name()
            )))
        }
    };
    with_state(ctx, |state| {
        send(
            state,
            Reply {
                media,
                ..Reply::text(text)
            },
        )
    })
}

/// Records the call's decision; a second one is an error.
fn decide(
    ctx: &NativeCallContext,
    state: &CallState,
    next: Next,
    function: &'static str,
) -> Result<()> {
    let mut effects = state.effects();
    if let Some((_, earlier, pos)) = &effects.next {
        let line = pos
            .line()
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        return Err(error(format!(
            "{function}() called after {earlier}(){line}: call only one of ask, go_to, end and handoff per message — add `return` after the first",
        )));
    }
    effects.next = Some((next, function, ctx.call_position()));
    Ok(())
}

fn ask(ctx: NativeCallContext, question: Dynamic, handler: Dynamic) -> Result<()> {
    ask_with(&ctx, question, handler, &rhai::Map::new())
}

/// `ask` with its options map: `timeout` (a duration such as `"2h"`) and
/// `on_timeout` (a function of this script, called with no arguments).
fn ask_timeout(state: &CallState, options: &rhai::Map) -> Result<Option<AskTimeout>> {
    const USAGE: &str =
        r#"write ask(question, "handler", #{ timeout: "2h", on_timeout: "no_answer" })"#;
    if let Some(key) = options
        .keys()
        .find(|k| !matches!(k.as_str(), "timeout" | "on_timeout"))
    {
        return Err(error(format!(
            "ask(): unknown option `{key}`: the options are `timeout` and `on_timeout`; {USAGE}"
        )));
    }
    let text = |key: &str| -> Result<Option<String>> {
        match options.get(key) {
            None => Ok(None),
            Some(value) => value.clone().into_string().map(Some).map_err(|_| {
                error(format!(
                    "ask(): `{key}` must be a string in quotes; {USAGE}"
                ))
            }),
        }
    };
    let on_timeout = text("on_timeout")?;
    let Some(timeout) = text("timeout")? else {
        if on_timeout.is_some() {
            return Err(error(format!(
                "ask(): `on_timeout` without `timeout`: say how long to wait; {USAGE}"
            )));
        }
        return Ok(None);
    };
    let after = crate::source::parse_duration(&timeout).map_err(|problem| {
        error(format!(
            "ask(): invalid timeout `{timeout}`: {problem}; write `30s`, `30m`, `2h` or `1d`"
        ))
    })?;
    if let Some(function) = &on_timeout {
        if !state.script.functions.contains(function) {
            let mut message =
                format!("ask(): there is no `fn {function}()` in this script for `on_timeout`");
            if let Some(hint) = did_you_mean(function, &state.script.functions) {
                message.push_str(&format!("; {hint}"));
            }
            return Err(error(message));
        }
    }
    Ok(Some(AskTimeout { after, on_timeout }))
}

fn ask_with(
    ctx: &NativeCallContext,
    question: Dynamic,
    handler: Dynamic,
    options: &rhai::Map,
) -> Result<()> {
    let question = text_of(question, "ask")?;
    let Ok(handler) = handler.into_string() else {
        return Err(error(
            "ask(question, \"handler\"): the handler must be a function name in quotes",
        ));
    };
    with_state(ctx, |state| {
        check_handler(state, &handler)?;
        let timeout = ask_timeout(state, options)?;
        decide(ctx, state, Next::Ask(handler), "ask")?;
        state.effects().timeout = timeout;
        send(state, Reply::text(question))
    })
}

/// `ask_buttons(text, choices, "handler")` and `ask_list(text, button, choices,
/// "handler")` (SPEC §8.1): the question as buttons or a list, its numbered
/// text as the fallback.
fn ask_menu(
    ctx: &NativeCallContext,
    style: InteractiveStyle,
    text: Dynamic,
    button: Option<Dynamic>,
    choices: Dynamic,
    handler: Dynamic,
) -> Result<()> {
    let function = match style {
        InteractiveStyle::Buttons => "ask_buttons",
        InteractiveStyle::List => "ask_list",
    };
    let text = text_of(text, function)?;
    let button = button.map(|b| text_of(b, function)).transpose()?;
    let choices = choices_of(choices, function)?;
    let Ok(handler) = handler.into_string() else {
        return Err(error(format!(
            "{function}(): the handler must be a function name in quotes"
        )));
    };
    let menu = Interactive {
        style,
        text,
        button,
        choices,
    };
    if let Some(problem) = menu.problem() {
        return Err(error(format!("{function}(): {problem}")));
    }
    let fallback = if menu.text.is_empty() {
        menu.numbered_list()
    } else {
        format!("{}\n{}", menu.text, menu.numbered_list())
    };
    with_state(ctx, |state| {
        check_handler(state, &handler)?;
        decide(ctx, state, Next::Ask(handler), function)?;
        send(state, Reply::interactive(menu, fallback))
    })
}

/// The choices of `ask_buttons`/`ask_list`: each a label, or a map with
/// `label` and optional `id` and `description`; an id defaults to the number.
fn choices_of(choices: Dynamic, function: &str) -> Result<Vec<Choice>> {
    let Some(items) = choices.clone().try_cast::<rhai::Array>() else {
        return Err(error(format!(
            "{function}(): the choices must be a list, like [\"Yes\", \"No\"], not {}",
            choices.type_name()
        )));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let number = (i + 1).to_string();
        if item.is_string() {
            out.push(Choice {
                label: item.into_string().unwrap_or_default(),
                id: number,
                description: None,
            });
            continue;
        }
        let Some(map) = item.clone().try_cast::<rhai::Map>() else {
            return Err(error(format!(
                "{function}(): choice {} must be a label or #{{label, id, description}}, not {}",
                i + 1,
                item.type_name()
            )));
        };
        let field = |key: &str| -> Option<String> {
            map.get(key).filter(|v| !v.is_unit()).map(|v| {
                if v.is_string() {
                    v.clone().into_string().unwrap_or_default()
                } else {
                    v.to_string()
                }
            })
        };
        let Some(label) = field("label") else {
            return Err(error(format!(
                "{function}(): choice {} has no `label`",
                i + 1
            )));
        };
        out.push(Choice {
            label,
            id: field("id").unwrap_or(number),
            description: field("description"),
        });
    }
    Ok(out)
}

/// `say_template(name)` / `say_template(name, #{...})` (SPEC §8.2). The
/// conversation, which knows the bot's templates, fills in the rest.
fn say_template(ctx: &NativeCallContext, name: Dynamic, variables: Option<Dynamic>) -> Result<()> {
    let name =
        match name.into_string() {
            Ok(name) if !name.trim().is_empty() => name.trim().to_owned(),
            _ => return Err(error(
                "say_template(\"name\"): the name must be a template name from bot.yaml, in quotes",
            )),
        };
    let mut values = std::collections::BTreeMap::new();
    if let Some(variables) = variables {
        let Some(map) = variables.clone().try_cast::<rhai::Map>() else {
            return Err(error(format!(
                "say_template(name, variables): the variables must be a map like #{{ \"1\": \"Amina\" }}, not {}",
                variables.type_name()
            )));
        };
        for (key, value) in map {
            let value = if value.is_string() {
                value.into_string().unwrap_or_default()
            } else {
                value.to_string()
            };
            values.insert(key.to_string(), value);
        }
    }
    with_state(ctx, |state| {
        send(
            state,
            Reply::template(TemplateSend {
                name,
                content_sid: String::new(),
                variables: values,
            }),
        )
    })
}

/// An `ask`'s handler must be a function of the script taking the answer.
fn check_handler(state: &CallState, handler: &str) -> Result<()> {
    if state.script.has_handler(handler) {
        return Ok(());
    }
    let mut message = if state.script.functions.iter().any(|f| f == handler) {
        format!("ask(): `fn {handler}` must take exactly one parameter (the answer): `fn {handler}(answer)`")
    } else {
        format!("ask(): there is no `fn {handler}` in this script")
    };
    if let Some(hint) = did_you_mean(handler, &state.script.functions) {
        message.push_str(&format!("; {hint}"));
    }
    Err(error(message))
}

fn go_to(ctx: NativeCallContext, node: Dynamic) -> Result<()> {
    let node = match node.into_string() {
        Ok(node) if !node.trim().is_empty() => node,
        _ => {
            return Err(error(
                "go_to(\"node\"): the node must be a node name in quotes",
            ))
        }
    };
    with_state(&ctx, |state| decide(&ctx, state, Next::GoTo(node), "go_to"))
}

/// `handoff("sales")` (SPEC §10.2): once the function returns, the
/// conversation goes to a person in that queue.
fn handoff(ctx: NativeCallContext, queue: Dynamic) -> Result<()> {
    let queue = match queue.into_string() {
        Ok(queue) => queue.trim().to_owned(),
        Err(_) => return Err(error(
            "handoff(\"queue\"): the queue must be a name in quotes, such as handoff(\"sales\")",
        )),
    };
    if let Some(problem) = crate::domain::Handoff::queue_problem(&queue) {
        return Err(error(format!(
            "handoff(): {problem} ({})",
            crate::domain::Handoff::QUEUE_HINT
        )));
    }
    with_state(&ctx, |state| {
        decide(&ctx, state, Next::Handoff(queue), "handoff")
    })
}

fn end(ctx: NativeCallContext) -> Result<()> {
    with_state(&ctx, |state| decide(&ctx, state, Next::End, "end"))
}

fn now(ctx: NativeCallContext) -> Result<String> {
    with_state(&ctx, |state| {
        Ok(state.clock.now().to_rfc3339_opts(SecondsFormat::Secs, true))
    })
}

fn log(ctx: NativeCallContext, text: Dynamic) -> Result<()> {
    with_state(&ctx, |state| {
        state.may_act(ctx.call_position())?;
        tracing::info!(
            bot = state.bot.as_str(),
            contact = state.contact.as_str(),
            file = %state.file().display(),
            line = ctx.call_position().line(),
            "script log: {text}"
        );
        Ok(())
    })
}

/// `http_get`/`http_post`: allow-list, call budget, the host's HTTP, the result map.
fn http(
    ctx: &NativeCallContext,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<rhai::Map> {
    let function = if method == "GET" {
        "http_get"
    } else {
        "http_post"
    };
    let parsed = Url::parse(url)
        .map_err(|e| error(format!("{function}(): `{url}` is not a valid URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(error(format!(
            "{function}(): only http and https URLs can be called, not `{}`",
            parsed.scheme()
        )));
    }
    let Some(host) = parsed.host() else {
        return Err(error(format!("{function}(): `{url}` has no host")));
    };
    with_state(ctx, |state| {
        if !host_allowed(&host, &state.http_allow) {
            let host = match &host {
                Host::Ipv6(ip) => ip.to_string(),
                other => other.to_string(),
            };
            return Err(error(format!(
                "host `{host}` is not allowed: add it to http.allow in bot.yaml"
            )));
        }
        state.may_act(ctx.call_position())?;
        {
            let mut effects = state.effects();
            if effects.http_calls >= state.limits.max_http_calls {
                return Err(error(format!(
                    "too many HTTP calls in one go (limit {})",
                    state.limits.max_http_calls
                )));
            }
            effects.http_calls += 1;
        }

        let Some(timeout) = state.http_timeout() else {
            return Err(error(super::call::DEADLINE_MESSAGE.to_owned()));
        };
        let request = HttpRequest {
            method: method.to_owned(),
            url: url.to_owned(),
            body,
            timeout,
            max_body_bytes: state.limits.max_string_size,
        };
        let started = Instant::now();
        let result = state.http.request(&request);
        let elapsed = started.elapsed();
        state.effects().http_time += elapsed;

        // The URL's query string may hold an API key: keep it out of logs and errors.
        let shown = without_query(&parsed);
        let response = result.map_err(|e| error(format!("{method} {shown} failed: {e}")))?;
        tracing::debug!(
            bot = state.bot.as_str(),
            contact = state.contact.as_str(),
            method,
            url = %shown,
            status = response.status,
            elapsed_ms = elapsed.as_millis() as u64,
            "script http call"
        );
        if response.body.len() > state.limits.max_string_size {
            return Err(error(format!(
                "{method} {shown}: the response body is {} bytes, over the limit of {} bytes",
                response.body.len(),
                state.limits.max_string_size
            )));
        }

        let json = serde_json::from_str::<Value>(&response.body)
            .ok()
            .and_then(|v| rhai::serde::to_dynamic(v).ok())
            .unwrap_or(Dynamic::UNIT);
        let mut map = rhai::Map::new();
        map.insert("status".into(), Dynamic::from_int(response.status.into()));
        map.insert("body".into(), response.body.into());
        map.insert("json".into(), json);
        Ok(map)
    })
}

/// Whether `host` is listed in `allow`: names case-insensitively, IP addresses by
/// value (`[::1]` and `::1` are the same entry), any port.
pub(super) fn host_allowed(host: &Host<&str>, allow: &[String]) -> bool {
    allow.iter().any(|entry| {
        let entry = entry.trim();
        let bare = entry
            .strip_prefix('[')
            .and_then(|e| e.strip_suffix(']'))
            .unwrap_or(entry);
        match host {
            Host::Domain(name) => name.eq_ignore_ascii_case(bare),
            Host::Ipv4(ip) => bare.parse::<std::net::Ipv4Addr>().is_ok_and(|e| e == *ip),
            Host::Ipv6(ip) => bare.parse::<std::net::Ipv6Addr>().is_ok_and(|e| e == *ip),
        }
    })
}

fn without_query(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(url: &str, allow: &[&str]) -> bool {
        let url = Url::parse(url).unwrap();
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        host_allowed(&url.host().unwrap(), &allow)
    }

    #[test]
    fn hosts_match_exactly_on_any_port() {
        assert!(allowed("https://api.example.com/x", &["api.example.com"]));
        assert!(allowed(
            "http://API.Example.com:8080/x",
            &["api.example.com"]
        ));
        assert!(allowed(
            "https://api.example.com/",
            &["other.com", " API.example.com "]
        ));
        assert!(!allowed(
            "https://sub.api.example.com/",
            &["api.example.com"]
        ));
        assert!(!allowed("https://example.com/", &["api.example.com"]));
        assert!(!allowed(
            "https://api.example.com.evil.org/",
            &["api.example.com"]
        ));
        assert!(!allowed("https://api.example.com/", &[]));
    }

    #[test]
    fn ip_addresses_match_by_value() {
        assert!(allowed("http://127.0.0.1:3000/", &["127.0.0.1"]));
        assert!(!allowed("http://127.0.0.2/", &["127.0.0.1"]));
        assert!(allowed("http://[::1]:3000/", &["::1"]));
        assert!(allowed("http://[::1]/", &["[::1]"]));
        assert!(allowed("http://[0:0::1]/", &["::1"]));
        assert!(!allowed("http://[::2]/", &["::1"]));
    }

    #[test]
    fn shown_urls_lose_their_query_and_credentials() {
        let url = Url::parse("https://user:pw@api.example.com/cars?key=secret#x").unwrap();
        assert_eq!(without_query(&url), "https://api.example.com/cars");
    }
}
