//! The console's routes (SPEC §10.3): sign-in with the admin token into a
//! session cookie (HttpOnly, SameSite=Strict), pages behind it, and forms that
//! each carry the session's CSRF token and come from this origin. The pages
//! themselves are `console::Console`'s; this file owns what is HTTP about them:
//! cookies, redirects, the checks on every form, status codes and headers.
//!
//! A page without a session redirects to sign-in; an action (a `POST`, or the
//! simulator's version check) answers 401. Without `--admin-token` every route
//! answers 403 with a page saying how to turn the console on.

// Handlers answer `Result<Response, Response>` so the checks can use `?`; the
// error is the page sent back, built once per request, not an error passed up.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

mod inbox;

use super::AppState;
use crate::console::{
    Console, ConsoleError, ConversationsQuery, Note, OutboxQuery, Session, SESSION_LIFETIME,
};

mod broadcasts;

/// The session cookie's name.
pub const COOKIE: &str = "switchboard_console";

/// Largest form the console takes: a simulator message (16 KiB) and the rest.
pub const MAX_FORM_BYTES: usize = 20 * 1024;

/// What every console response carries: no framing, no other origin for
/// anything, no caching of pages that show contacts' messages.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, for [`super::router`] to merge.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/assets/console.css", get(stylesheet))
        .route("/console/assets/console.js", get(script))
        .route("/console/signin", get(signin_page).post(signin))
        .route("/console/signout", post(signout))
        .route("/console/bots", get(bots))
        .route("/console/bots/{bot}", get(bot))
        .route("/console/conversations", get(conversations))
        .route("/console/conversations/{id}", get(conversation))
        .route("/console/outbox", get(outbox))
        .route("/console/outbox/{id}/retry", post(retry))
        .route("/console/outbox/{id}/cancel", post(cancel))
        .route("/console/inbox", get(inbox::list))
        .route("/console/inbox/{bot}/{contact}", get(inbox::conversation))
        .route("/console/inbox/{bot}/{contact}/answer", post(inbox::answer))
        .route(
            "/console/inbox/{bot}/{contact}/release",
            post(inbox::release),
        )
        .route("/console/simulator", get(simulators))
        .route("/console/simulator/{bot}", get(simulator))
        .route("/console/simulator/{bot}/send", post(simulator_send))
        .route("/console/simulator/{bot}/reset", post(simulator_reset))
        .route("/console/simulator/{bot}/save", post(simulator_save))
        .route("/console/simulator/{bot}/version", get(simulator_version))
        .merge(broadcasts::routes())
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn(security_headers))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A page in the layout with `status`.
fn page(status: StatusCode, html: Result<String, ConsoleError>) -> Response {
    match html {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "console page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// The status a console error answers with.
fn error_status(error: &ConsoleError) -> StatusCode {
    match error {
        ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
        ConsoleError::BadInput(_) => StatusCode::BAD_REQUEST,
        ConsoleError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        ConsoleError::Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        ConsoleError::Store(_) | ConsoleError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `error` as a page: what to change for a 4xx, a generic text for a 5xx
/// (the cause goes to the log).
fn error_page(console: &Console, session: Option<&Session>, error: ConsoleError) -> Response {
    let status = error_status(&error);
    let message = if status.is_server_error() {
        match &error {
            ConsoleError::Busy(m) => m.clone(),
            ConsoleError::Store(e) if e.is_unavailable() => {
                tracing::error!(%error, "console answering 503");
                "The database cannot be reached right now; try again in a moment.".to_owned()
            }
            _ => {
                tracing::error!(%error, "console answering 500");
                "Something went wrong on the server; the log says what.".to_owned()
            }
        }
    } else {
        error.to_string()
    };
    let heading = status.canonical_reason().unwrap_or("Error");
    page(status, console.error_page(session, heading, &message))
}

/// Either a page or an error page.
fn answer(console: &Console, session: &Session, result: Result<String, ConsoleError>) -> Response {
    match result {
        Ok(html) => (StatusCode::OK, Html(html)).into_response(),
        Err(error) => error_page(console, Some(session), error),
    }
}

/// The console, when the server has an admin token; otherwise the page
/// saying how to turn it on.
fn enabled(app: &AppState) -> Result<&Arc<Console>, Response> {
    match (&app.admin_token, &app.console) {
        (Some(_), Some(console)) => Ok(console),
        (_, Some(console)) => Err(page(StatusCode::FORBIDDEN, console.disabled_page())),
        (_, None) => Err((
            StatusCode::FORBIDDEN,
            "the console is not part of this engine\n",
        )
            .into_response()),
    }
}

/// The session named by the request's cookie, if it is live.
fn session_of(console: &Console, headers: &HeaderMap) -> Option<Session> {
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())?;
    console.sessions().find(&id, Instant::now())
}

/// For a page: the console and the session, or a redirect to sign-in that
/// comes back here.
fn signed_in(
    app: &AppState,
    headers: &HeaderMap,
    here: &str,
) -> Result<(Arc<Console>, Session), Response> {
    let console = enabled(app)?;
    match session_of(console, headers) {
        Some(session) => Ok((console.clone(), session)),
        None => {
            let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
            Err(Redirect::to(&format!("{}/signin?next={next}", console.base())).into_response())
        }
    }
}

/// For an action: the console and the session, checked against the form's
/// CSRF token and the request's origin; 401 without a session, 403 for a
/// request from elsewhere.
fn authorized(
    app: &AppState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(Arc<Console>, Session), Response> {
    let console = enabled(app)?;
    let Some(session) = session_of(console, headers) else {
        return Err(page(
            StatusCode::UNAUTHORIZED,
            console.error_page(
                None,
                "Signed out",
                "Your console session has ended (or never began): sign in again, then repeat what you were doing.",
            ),
        ));
    };
    if !same_origin(app, headers) || !session.csrf_matches(csrf) {
        tracing::warn!(
            "console form refused: from another origin, or without this session's token"
        );
        return Err(page(
            StatusCode::FORBIDDEN,
            console.error_page(
                Some(&session),
                "Refused",
                "This form did not come from this console's own page (its security token or origin is wrong). Reload the page and try again.",
            ),
        ));
    }
    Ok((console.clone(), session))
}

/// Whether a form post comes from a page of this server. Browsers send
/// `Origin` with every `POST` (and `Sec-Fetch-Site`); when present they must
/// name this host, as the request's `Host`, `X-Forwarded-Host` or the public
/// URL give it. A client that sends neither (curl) still needs the token.
fn same_origin(app: &AppState, headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(authority) = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
    }) else {
        return false;
    };
    let mut ours: Vec<String> = [header::HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|name| headers.get(*name))
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    if let Some(url) = app
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
    {
        if let Some(host) = url.host_str() {
            ours.push(match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            });
        }
    }
    ours.iter().any(|o| o.eq_ignore_ascii_case(authority))
}

/// A form the browser sent, or 400/413 saying what was wrong with it.
fn form<T>(console: &Console, form: Result<Form<T>, FormRejection>) -> Result<T, Response> {
    form.map(|Form(t)| t).map_err(|rejection| {
        let status = rejection.status();
        let (status, message) = if status == StatusCode::PAYLOAD_TOO_LARGE {
            (
                status,
                format!(
                    "The form is larger than {} KiB; send less text.",
                    MAX_FORM_BYTES / 1024
                ),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                format!("The form could not be read: {}", rejection.body_text()),
            )
        };
        page(
            status,
            console.error_page(
                None,
                status.canonical_reason().unwrap_or("Bad request"),
                &message,
            ),
        )
    })
}

/// What a handler answers: a page, a redirect, or an error page (`Err`, so
/// the checks can use `?`).
type Answer = Result<Response, Response>;

/// A page's result as an answer, errors drawn in the layout.
fn shown(console: &Console, session: &Session, result: Result<String, ConsoleError>) -> Answer {
    Ok(answer(console, session, result))
}

/// For a page at `rest` under the console's base: the console and the session.
fn viewer(
    app: &AppState,
    headers: &HeaderMap,
    rest: &str,
) -> Result<(Arc<Console>, Session), Response> {
    let here = enabled(app).map(|c| format!("{}{rest}", c.base()))?;
    signed_in(app, headers, &here)
}

/// For an action: the console, the session and the form, every check passed.
fn acting(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Form<ActionForm>, FormRejection>,
) -> Result<(Arc<Console>, Session, ActionForm), Response> {
    let f = form(enabled(app)?, body)?;
    let (console, session) = authorized(app, headers, &f.csrf)?;
    Ok((console, session, f))
}

/// The fields of every console form; each action reads the ones it has.
#[derive(Deserialize)]
struct ActionForm {
    /// The session's CSRF token, on every form.
    #[serde(default)]
    csrf: String,
    /// Retry and cancel: the page to go back to.
    #[serde(default)]
    back: String,
    /// The simulator's message.
    #[serde(default)]
    text: String,
    /// Save as a test: its name, and `to` `download` or `tests` (the bot's folder).
    #[serde(default)]
    name: String,
    #[serde(default)]
    to: String,
}

/// A query string the page itself made, or a 400 page.
fn query<T>(
    console: &Console,
    session: &Session,
    query: Result<Query<T>, QueryRejection>,
) -> Result<T, Response> {
    query.map(|Query(q)| q).map_err(|_| {
        error_page(
            console,
            Some(session),
            ConsoleError::BadInput(
                "the page's address could not be read: follow the page's own links".into(),
            ),
        )
    })
}

async fn home(State(app): State<AppState>, headers: HeaderMap) -> Answer {
    let (console, _) = viewer(&app, &headers, "/")?;
    Ok(Redirect::to(&format!("{}/bots", console.base())).into_response())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", crate::console::STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", crate::console::SCRIPT)
}

#[derive(Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

async fn signin_page(
    State(app): State<AppState>,
    q: Result<Query<NextQuery>, QueryRejection>,
) -> Answer {
    let console = enabled(&app)?;
    let q = q.map(|Query(q)| q).unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        console.signin_page(None, q.next.as_deref().unwrap_or("")),
    ))
}

#[derive(Deserialize)]
struct SigninForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// Whether `path` is a page of this console (where a redirect may go).
fn console_path(console: &Console, path: &str) -> bool {
    path.starts_with(&format!("{}/", console.base()))
        && !path.contains("//")
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control())
}

async fn signin(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Form<SigninForm>, FormRejection>,
) -> Answer {
    let console = enabled(&app)?.clone();
    let f = form(&console, body)?;
    if !same_origin(&app, &headers) {
        return Err(page(
            StatusCode::FORBIDDEN,
            console.error_page(None, "Refused", "Sign in from the console's own page."),
        ));
    }
    if !super::admin::token_matches(&app, &f.token) {
        tracing::warn!("console sign-in with a wrong admin token");
        return Err(page(
            StatusCode::UNAUTHORIZED,
            console.signin_page(
                Some("That is not the admin token this server was started with."),
                &f.next,
            ),
        ));
    }
    let session = console.sessions().start(Instant::now());
    tracing::info!("console sign-in");
    let secure = app
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https:"))
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={}; Path={}; HttpOnly; SameSite=Strict; Max-Age={}{}",
        session.id,
        console.base(),
        SESSION_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let next = if console_path(&console, &f.next) {
        f.next
    } else {
        format!("{}/bots", console.base())
    };
    Ok(with_cookie(Redirect::to(&next).into_response(), &cookie))
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn signout(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Form<ActionForm>, FormRejection>,
) -> Answer {
    let (console, session, _) = acting(&app, &headers, body)?;
    console.sign_out(&session);
    let expired = format!(
        "{COOKIE}=; Path={}; HttpOnly; SameSite=Strict; Max-Age=0",
        console.base()
    );
    let to_signin = Redirect::to(&format!("{}/signin", console.base())).into_response();
    Ok(with_cookie(to_signin, &expired))
}

async fn bots(State(app): State<AppState>, headers: HeaderMap) -> Answer {
    let (console, session) = viewer(&app, &headers, "/bots")?;
    shown(&console, &session, console.bots_page(&session))
}

async fn bot(State(app): State<AppState>, headers: HeaderMap, Path(bot): Path<String>) -> Answer {
    let (console, session) = viewer(&app, &headers, "/bots")?;
    shown(&console, &session, console.bot_page(&session, &bot))
}

async fn conversations(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ConversationsQuery>, QueryRejection>,
) -> Answer {
    let (console, session) = viewer(&app, &headers, "/conversations")?;
    let q = query(&console, &session, q)?;
    shown(
        &console,
        &session,
        console.conversations_page(&session, &q).await,
    )
}

#[derive(Deserialize, Default)]
struct TimelineQuery {
    before: Option<i64>,
    note: Option<String>,
}

async fn conversation(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<TimelineQuery>, QueryRejection>,
) -> Answer {
    let (console, session) = viewer(&app, &headers, "/conversations")?;
    let (Ok(id), Ok(Query(q))) = (id.parse::<i64>(), q) else {
        return Err(error_page(
            &console,
            Some(&session),
            ConsoleError::BadInput(
                "a conversation is named by its number, with `?before=` a time in ms: follow the page's links".into(),
            ),
        ));
    };
    let page = console
        .conversation_page(&session, id, q.before, q.note.as_deref())
        .await;
    shown(&console, &session, page)
}

async fn outbox(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<OutboxQuery>, QueryRejection>,
) -> Answer {
    let (console, session) = viewer(&app, &headers, "/outbox")?;
    let q = query(&console, &session, q)?;
    shown(&console, &session, console.outbox_page(&session, &q).await)
}

/// Retry or cancel: checks, does it, goes back to the page the form was on.
async fn reply_action(
    app: AppState,
    headers: HeaderMap,
    id: String,
    body: Result<Form<ActionForm>, FormRejection>,
    retry: bool,
) -> Answer {
    let (console, session, f) = acting(&app, &headers, body)?;
    let id = action_id(&console, &session, &id, "reply")?;
    let done = if retry {
        console.retry(id).await
    } else {
        console.cancel(id).await
    };
    let note = done.map_err(|error| error_page(&console, Some(&session), error))?;
    Ok(back_to(&console, f.back, "/outbox", note))
}

/// After an action: back to `back` (a page of this console, else `fallback`
/// under the console's base), with the note saying what was done.
fn back_to(console: &Console, back: String, fallback: &str, note: Note) -> Response {
    let target = if console_path(console, &back) {
        back
    } else {
        format!("{}{fallback}", console.base())
    };
    let glue = if target.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{target}{glue}note={}", note.as_str())).into_response()
}

/// An action's `{id}`, a number, or a 400 page saying what it names.
fn action_id(console: &Console, session: &Session, id: &str, what: &str) -> Result<i64, Response> {
    id.parse::<i64>().map_err(|_| {
        error_page(
            console,
            Some(session),
            ConsoleError::BadInput(format!("a {what} is named by its number")),
        )
    })
}

async fn retry(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Form<ActionForm>, FormRejection>,
) -> Answer {
    reply_action(app, headers, id, body, true).await
}

async fn cancel(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Form<ActionForm>, FormRejection>,
) -> Answer {
    reply_action(app, headers, id, body, false).await
}

async fn simulators(State(app): State<AppState>, headers: HeaderMap) -> Answer {
    let (console, session) = viewer(&app, &headers, "/simulator")?;
    shown(&console, &session, console.simulators_page(&session))
}

async fn simulator(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(bot): Path<String>,
) -> Answer {
    let (console, session) = viewer(&app, &headers, "/simulator")?;
    shown(
        &console,
        &session,
        console.simulator_page(&session, &bot).await,
    )
}

/// Back to the simulator page of `bot` once `done` (an action on it) is.
fn to_simulator(
    console: &Console,
    session: &Session,
    bot: &str,
    done: Result<(), ConsoleError>,
) -> Answer {
    done.map_err(|error| error_page(console, Some(session), error))?;
    let bot: String = form_urlencoded::byte_serialize(bot.as_bytes()).collect();
    Ok(Redirect::to(&format!("{}/simulator/{bot}", console.base())).into_response())
}

async fn simulator_send(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(bot): Path<String>,
    body: Result<Form<ActionForm>, FormRejection>,
) -> Answer {
    let (console, session, f) = acting(&app, &headers, body)?;
    let done = if f.text.trim().is_empty() {
        Ok(())
    } else {
        console.simulator_send(&session, &bot, &f.text).await
    };
    to_simulator(&console, &session, &bot, done)
}

async fn simulator_reset(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(bot): Path<String>,
    body: Result<Form<ActionForm>, FormRejection>,
) -> Answer {
    let (console, session, _) = acting(&app, &headers, body)?;
    let done = console.simulator_reset(&session, &bot).await;
    to_simulator(&console, &session, &bot, done)
}

async fn simulator_save(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(bot): Path<String>,
    body: Result<Form<ActionForm>, FormRejection>,
) -> Answer {
    let (console, session, f) = acting(&app, &headers, body)?;
    if f.to == "tests" {
        let done = console.simulator_save(&session, &bot, &f.name).await;
        return to_simulator(&console, &session, &bot, done);
    }
    let yaml = console
        .simulator_transcript(&session, &bot, &f.name)
        .await
        .map_err(|error| error_page(&console, Some(&session), error))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/yaml; charset=utf-8".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                // The name is letters, digits, `-` and `_` (checked).
                format!("attachment; filename=\"{}.yaml\"", f.name.trim()),
            ),
        ],
        yaml,
    )
        .into_response())
}

async fn simulator_version(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(bot): Path<String>,
) -> Answer {
    let console = enabled(&app)?.clone();
    let Some(session) = session_of(&console, &headers) else {
        return Err((StatusCode::UNAUTHORIZED, "sign in again\n").into_response());
    };
    let version = console
        .simulator_version(&session, &bot)
        .await
        .map_err(|error| (error_status(&error), format!("{error}\n")).into_response())?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        version.to_string(),
    )
        .into_response())
}
