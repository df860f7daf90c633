//! The HTTP server's own limits (SPEC §7): header and body timeouts, the cap on
//! open connections, and a shutdown that does not wait for clients that never
//! finish a request. Raw TCP clients play the slow or stuck peers.

use std::time::Duration;

use switchboard::{App, Config, ServerLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::db::TestDb;

/// A generous bound for what the server must do "soon" (the SPEC's 10 s).
const SOON: Duration = Duration::from_secs(10);

/// Half a request: the request line and one header, never the blank line.
const HALF_A_HEADER: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";

struct Server {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
    _db: TestDb,
    _flows: tempfile::TempDir,
}

/// A server with no bots, on SQLite, with the given limits.
async fn serve(limits: ServerLimits) -> Server {
    let db = TestDb::sqlite().await;
    let flows = tempfile::tempdir().unwrap();
    let mut config = Config::new(flows.path(), &db.url);
    config.watch = false;
    config.server = limits;
    let app = App::builder(config).build().await.expect("app starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { app.serve(listener, stop, false).await.expect("serve") }
    });
    Server {
        addr,
        stop,
        task,
        _db: db,
        _flows: flows,
    }
}

/// Connects and writes `bytes`, leaving the connection open.
async fn stuck_client(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Reads until the server closes the connection; what it sent. Panics if it
/// is still open after [`SOON`].
async fn closed_by_server(mut stream: TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(SOON, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&received).into_owned()
}

/// `GET /healthz` on a fresh connection, with a deadline; its status.
async fn healthz(addr: std::net::SocketAddr, within: Duration) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(within)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let response = client.get(format!("http://{addr}/healthz")).send().await;
    response.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_header_is_closed_by_the_header_timeout() {
    let mut limits = ServerLimits::default();
    limits.header_timeout = Duration::from_millis(300);
    let server = serve(limits).await;
    let client = stuck_client(server.addr, HALF_A_HEADER).await;
    closed_by_server(client).await;
    assert_eq!(healthz(server.addr, SOON).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_comes_is_closed_by_the_body_timeout() {
    let mut limits = ServerLimits::default();
    limits.body_timeout = Duration::from_millis(300);
    let server = serve(limits).await;
    let client = stuck_client(
        server.addr,
        b"POST /webhooks/twilio/shop HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nFrom=",
    )
    .await;
    let answer = closed_by_server(client).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_until_others_close() {
    let mut limits = ServerLimits::default();
    limits.max_connections = 2;
    let server = serve(limits).await;
    let first = stuck_client(server.addr, HALF_A_HEADER).await;
    let second = stuck_client(server.addr, HALF_A_HEADER).await;
    // A third connection waits in the listen backlog: no answer while both are held.
    let waiting = tokio::spawn(healthz(server.addr, SOON * 2));
    assert_eq!(healthz(server.addr, Duration::from_secs(1)).await, None);
    assert!(!waiting.is_finished());
    drop((first, second));
    assert_eq!(waiting.await.unwrap(), Some(200));
    assert_eq!(healthz(server.addr, SOON).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_client_that_never_finishes() {
    // The default header timeout (10 s) would outlast the SPEC's bound on its own.
    let server = serve(ServerLimits::default()).await;
    let _stuck = stuck_client(server.addr, HALF_A_HEADER).await;
    assert_eq!(healthz(server.addr, SOON).await, Some(200));
    server.stop.cancel();
    tokio::time::timeout(SOON, server.task)
        .await
        .expect("serve stopped within 10 s")
        .unwrap();
}
