//! The inbox's routes (SPEC §10.3, §10.2): the list of handed-off
//! conversations, one conversation's page, and its two forms, answer and
//! hand back, each checked like every console form (session, CSRF token,
//! origin) and run through `inbound` as the API runs them.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use serde::Deserialize;

use super::{authorized, enabled, error_page, form, page, query, shown, viewer, Answer};
use crate::console::{Console, ConsoleError, InboxNote, InboxQuery, Session};
use crate::http::handoff::check_text;
use crate::http::outbound::valid_address;
use crate::http::AppState;
use crate::inbound::PersonRefused;

/// The fields of the inbox's forms.
#[derive(Deserialize)]
pub(super) struct InboxForm {
    #[serde(default)]
    csrf: String,
    /// Answer: the person's message.
    #[serde(default)]
    text: String,
    /// Hand back: the node to enter; empty ends the conversation.
    #[serde(default)]
    node: String,
}

#[derive(Deserialize, Default)]
pub(super) struct DoneQuery {
    done: Option<String>,
}

/// `GET /console/inbox`.
pub(super) async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<InboxQuery>, QueryRejection>,
) -> Answer {
    let (console, session) = viewer(&app, &headers, "/inbox")?;
    let q = query(&console, &session, q)?;
    shown(&console, &session, console.inbox_page(&session, &q).await)
}

/// `GET /console/inbox/{bot}/{contact}`.
pub(super) async fn conversation(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((bot, contact)): Path<(String, String)>,
    q: Result<Query<DoneQuery>, QueryRejection>,
) -> Answer {
    let (console, session) = viewer(&app, &headers, "/inbox")?;
    let q = query(&console, &session, q)?;
    let page = console
        .inbox_conversation_page(&session, &bot, &contact, q.done.as_deref())
        .await;
    shown(&console, &session, page)
}

/// The bot a form names, and a contact that can be one; else the error page.
fn checked(
    app: &AppState,
    console: &Console,
    session: &Session,
    bot: &str,
    contact: &str,
) -> Result<std::sync::Arc<crate::flow::Bot>, axum::response::Response> {
    if !valid_address(contact) {
        return Err(error_page(
            console,
            Some(session),
            ConsoleError::BadInput(
                "that is not a contact's address: follow the inbox's links".into(),
            ),
        ));
    }
    app.registry.get(bot).ok_or_else(|| {
        error_page(
            console,
            Some(session),
            ConsoleError::NotFound(format!(
                "no bot `{}` is loaded",
                bot.chars().take(64).collect::<String>()
            )),
        )
    })
}

/// A refused answer or hand-back as a page: 409 with what to do.
fn refused(
    console: &Console,
    session: &Session,
    refusal: PersonRefused,
) -> axum::response::Response {
    match refusal {
        PersonRefused::Store(error) => error_page(console, Some(session), error.into()),
        PersonRefused::UnknownContact => error_page(
            console,
            Some(session),
            ConsoleError::NotFound(refusal.to_string()),
        ),
        other => page(
            StatusCode::CONFLICT,
            console.error_page(Some(session), "Not done", &other.to_string()),
        ),
    }
}

/// Back to the conversation's inbox page, saying what was done.
fn back(console: &Console, bot: &str, contact: &str, done: InboxNote) -> Answer {
    Ok(Redirect::to(&format!(
        "{}/inbox/{}/{}?done={}",
        console.base(),
        crate::handoff::path_segment(bot),
        crate::handoff::path_segment(contact),
        done.as_str()
    ))
    .into_response())
}

/// `POST /console/inbox/{bot}/{contact}/answer`.
pub(super) async fn answer(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((bot, contact)): Path<(String, String)>,
    body: Result<Form<InboxForm>, FormRejection>,
) -> Answer {
    let f = form(enabled(&app)?, body)?;
    let (console, session) = authorized(&app, &headers, &f.csrf)?;
    let loaded = checked(&app, &console, &session, &bot, &contact)?;
    let text = f.text.replace("\r\n", "\n");
    if text.trim().is_empty() {
        return Err(error_page(
            &console,
            Some(&session),
            ConsoleError::BadInput("the message is empty: write something to send".into()),
        ));
    }
    if let Err(problem) = check_text(&text) {
        return Err(error_page(
            &console,
            Some(&session),
            ConsoleError::BadInput(problem.to_string()),
        ));
    }
    app.inbound
        .person_answer(loaded, &contact, text, Vec::new())
        .await
        .map_err(|refusal| refused(&console, &session, refusal))?;
    back(&console, &bot, &contact, InboxNote::Sent)
}

/// `POST /console/inbox/{bot}/{contact}/release`.
pub(super) async fn release(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((bot, contact)): Path<(String, String)>,
    body: Result<Form<InboxForm>, FormRejection>,
) -> Answer {
    let f = form(enabled(&app)?, body)?;
    let (console, session) = authorized(&app, &headers, &f.csrf)?;
    let loaded = checked(&app, &console, &session, &bot, &contact)?;
    let node = Some(f.node.trim().to_owned()).filter(|n| !n.is_empty());
    if let Some(node) = &node {
        if loaded.node(node).is_none() {
            return Err(error_page(
                &console,
                Some(&session),
                ConsoleError::NotFound(format!(
                    "bot `{bot}` has no node `{}`",
                    node.chars().take(64).collect::<String>()
                )),
            ));
        }
    }
    app.inbound
        .release(loaded, &contact, node)
        .await
        .map_err(|refusal| refused(&console, &session, refusal))?;
    back(&console, &bot, &contact, InboxNote::Released)
}
