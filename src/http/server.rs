//! Serving a router on a listener with the limits of SPEC §7: request headers
//! and bodies have deadlines, open connections are capped, and shutdown closes
//! whatever has not finished after a grace period. HTTP/1.1 only (Twilio and
//! reverse proxies speak it to us; hyper's header deadline covers only HTTP/1).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::ServerLimits;

/// How long to pause accepting after an accept error such as "too many open
/// files", so the loop does not spin while descriptors are short.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` under `limits` until `shutdown` is cancelled;
/// then stops accepting, lets requests in flight finish for at most
/// `limits.shutdown_grace`, and closes every connection still open.
///
/// Beyond `limits.max_connections`, new connections are not accepted: they wait
/// in the kernel's listen backlog until an open one closes (or the client gives
/// up), so a flood of idle clients costs no file descriptors or tasks here.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerLimits,
    shutdown: CancellationToken,
) {
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.body_timeout,
        body_deadline,
    ));
    let service = TowerToHyperService::new(router);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    if !is_connection_error(&error) {
                        tracing::warn!(%error, "could not accept a connection; pausing");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        // Replies are small and written whole: do not let Nagle delay them.
        let _ = stream.set_nodelay(true);
        let connection = http1.serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            // Errors here are the client's (reset, timeout, bad request).
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        while connections.try_join_next().is_some() {}
        let open = connections.len();
        tracing::warn!(
            open,
            "closing connections whose requests did not finish within the shutdown grace"
        );
    }
    connections.shutdown().await;
}

/// Reads the whole request body (up to [`super::body_limit`]) within
/// `timeout` of the headers, so a client that stalls mid-body is answered 408
/// and its connection closed; the handlers then get the body at once.
async fn body_deadline(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    let (parts, body) = request.into_parts();
    let limit = super::body_limit(parts.uri.path());
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) if too_large(&error) => {
            return Err(close(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ))
        }
        // The client went away or sent a malformed body.
        Ok(Err(_)) => {
            return Err(close(
                StatusCode::BAD_REQUEST,
                "could not read the request body",
            ))
        }
        Err(_) => {
            return Err(close(
                StatusCode::REQUEST_TIMEOUT,
                "request body took too long",
            ))
        }
    };
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}

fn too_large(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// An error answer after which the connection is closed (the rest of the body,
/// if any, is never read).
fn close(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONNECTION, "close")], text).into_response()
}

/// Errors of one connection (the peer reset it before we accepted), not of the
/// listener: accept the next at once.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
