//! Settings of a running engine, as the library takes them. The CLI (`cli`) fills
//! them from flags and environment variables; embedders build them directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::Secret;

/// Everything `serve` and `send` need. `Debug` hides the database password (the
/// admin token is a [`Secret`]).
///
/// Fields may be added: start from [`Config::new`] and set the ones you need.
///
/// ```compile_fail,E0639
/// let config = switchboard::Config {
///     dry_run: true,
///     ..switchboard::Config::new("flows", "sqlite://x.db")
/// };
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The flows folder: one sub-folder per bot.
    pub flows: PathBuf,
    /// `sqlite://PATH` (created if missing) or `postgres://...`.
    pub database_url: String,
    /// The public base URL Twilio calls (`https://bots.example.com`), used to check
    /// signatures and to build `StatusCallback`. `None`: rebuilt from request headers.
    pub public_url: Option<String>,
    /// Record outgoing messages and mark them sent without calling Twilio; also lets
    /// bots without credentials load (and accept unsigned webhooks).
    pub dry_run: bool,
    /// Bearer token of `/api/*`; `None` disables the admin API (403).
    pub admin_token: Option<Secret>,
    /// Use polling instead of native file-system events to watch `flows`.
    pub watch_poll: bool,
    /// Watch `flows` and reload bots that change.
    pub watch: bool,
    /// How long a webhook may take from arrival to answer, shorter than Twilio's
    /// 15 s timeout: a step still running near it is stopped (the contact gets the
    /// bot's `error_reply`), a message still waiting for its turn answers 503.
    pub webhook_deadline: Duration,
    /// A second address serving only `/metrics`, open (no token): for a
    /// scraper on a private network. `None`: `/metrics` only with the admin token.
    pub metrics_listen: Option<SocketAddr>,
    pub sender: SenderConfig,
    /// Limits of the HTTP server [`crate::App::serve`] runs.
    pub server: ServerLimits,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("flows", &self.flows)
            .field("database_url", &redact_url(&self.database_url))
            .field("public_url", &self.public_url)
            .field("dry_run", &self.dry_run)
            .field("admin_token", &self.admin_token)
            .field("watch_poll", &self.watch_poll)
            .field("watch", &self.watch)
            .field("webhook_deadline", &self.webhook_deadline)
            .field("metrics_listen", &self.metrics_listen)
            .field("sender", &self.sender)
            .field("server", &self.server)
            .finish()
    }
}

/// `url` with its password replaced by `***` (the user-info password and any
/// `password=`-like query parameter), for logs and messages. A URL that does not
/// parse keeps only its scheme and host part.
pub fn redact_url(url: &str) -> String {
    let mut parsed = match url::Url::parse(url) {
        Ok(parsed) if !parsed.cannot_be_a_base() => parsed,
        _ => return redact_unparsed(url),
    };
    let secret_query = parsed
        .query_pairs()
        .any(|(key, _)| is_secret_parameter(&key));
    if parsed.password().is_none() && !secret_query {
        return url.to_owned();
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed
        .query_pairs()
        .any(|(key, _)| is_secret_parameter(&key))
    {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if is_secret_parameter(&key) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// `password`, `sslpassword` and the like, in any case.
fn is_secret_parameter(key: &str) -> bool {
    key.to_ascii_lowercase().ends_with("password")
}

/// [`redact_url`] for text that is not a URL: the user info and the query could
/// hold a password and cannot be told apart reliably, so both go.
fn redact_unparsed(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => format!("{scheme}://{rest}"),
    }
}

/// SPEC §7: shorter than Twilio's 15 s, with room for the answer to travel.
pub const DEFAULT_WEBHOOK_DEADLINE: Duration = Duration::from_secs(10);

impl Config {
    /// Defaults for a flows folder and database, as the CLI would set them.
    pub fn new(flows: impl Into<PathBuf>, database_url: impl Into<String>) -> Config {
        Config {
            flows: flows.into(),
            database_url: database_url.into(),
            public_url: None,
            dry_run: false,
            admin_token: None,
            watch_poll: false,
            watch: true,
            webhook_deadline: DEFAULT_WEBHOOK_DEADLINE,
            metrics_listen: None,
            sender: SenderConfig::default(),
            server: ServerLimits::default(),
        }
    }
}

/// What the HTTP server allows a client (SPEC §7), so that slow or stuck clients
/// cannot hold the process: every wait on a client has a deadline.
///
/// Fields may be added: start from [`ServerLimits::default`] and set the ones you need.
///
/// ```compile_fail,E0639
/// let limits = switchboard::ServerLimits {
///     max_connections: 10,
///     ..switchboard::ServerLimits::default()
/// };
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerLimits {
    /// A request's headers must arrive within this, or the connection is closed.
    /// It also closes a kept-alive connection idle for this long.
    pub header_timeout: Duration,
    /// A request's body must arrive within this, counted from its headers; else
    /// 408 and the connection is closed.
    pub body_timeout: Duration,
    /// Connections open at once; more wait in the kernel's listen backlog until
    /// one closes (`--max-connections`).
    pub max_connections: usize,
    /// At shutdown, how long requests in flight may take to finish before their
    /// connections are closed. With the sender's drain
    /// ([`SenderConfig::shutdown_drain`]), which runs at the same time, this keeps
    /// a stop under 10 s.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// [`SenderConfig::lease`]'s default, in seconds (also `--lease-secs`).
pub const DEFAULT_LEASE_SECS: u64 = 6;

/// How the sender drains the outbox.
///
/// Fields may be added: start from [`SenderConfig::default`] and set the ones you need.
///
/// ```compile_fail,E0639
/// let sender = switchboard::SenderConfig {
///     max_attempts: 3,
///     ..switchboard::SenderConfig::default()
/// };
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SenderConfig {
    /// Sends tried before a row is `failed` (the first one included).
    pub max_attempts: u32,
    /// First retry delay; doubled each attempt, with jitter.
    pub retry_base: Duration,
    /// Longest retry delay (before `Retry-After`, which is always honoured).
    pub retry_max: Duration,
    /// How long a claim lasts unless renewed; a live sender renews its claims
    /// every third of it, and one that died loses its rows after this.
    pub lease: Duration,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Rows claimed per query.
    pub batch: usize,
    /// How often to look for due rows without a wake-up.
    pub poll_interval: Duration,
    /// Timeout of one request to Twilio.
    pub request_timeout: Duration,
    /// Finished rows are deleted after this long.
    pub retention: Duration,
    /// At shutdown, how long sends in flight may take to finish; then they are
    /// stopped and their rows released, to be sent by the next sender (a send
    /// Twilio had already accepted is then sent twice, as after a crash).
    pub shutdown_drain: Duration,
}

impl Default for SenderConfig {
    fn default() -> SenderConfig {
        SenderConfig {
            max_attempts: 10,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            // SPEC §7: a dead sender's rows go out again within 10 s; this
            // plus one poll interval is the bound (docs/decisions.md).
            lease: Duration::from_secs(DEFAULT_LEASE_SECS),
            // Sends in flight cap the rate at concurrency / Twilio latency: 64 gave
            // 582 sends/s against a 100 ms fake (docs/performance.md, R6).
            concurrency: 256,
            batch: 64,
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(15),
            retention: Duration::from_secs(30 * 24 * 3600),
            shutdown_drain: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_every_password() {
        let cases = [
            (
                "postgres://u:hunter2@db:5432/app?password=hunter3&sslmode=require",
                "postgres://u:***@db:5432/app?password=***&sslmode=require",
            ),
            (
                "postgres://u@db/app?SSLPassword=x",
                "postgres://u@db/app?SSLPassword=***",
            ),
            ("sqlite://switchboard.db", "sqlite://switchboard.db"),
            (
                "mysql://u:hunter2@[bad/db?password=hunter3",
                "mysql://***@[bad/db",
            ),
            ("u:hunter2@db", "***"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let config = Config::new("flows", cases[0].0);
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter"), "{debug}");
    }
}
