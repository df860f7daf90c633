//! Waiting for an outcome: poll with a deadline, never sleep a fixed time and hope.

use std::future::Future;
use std::time::Duration;

/// Runs `attempt` every `every` until it returns `Ok`, and returns that value. Once
/// `within` has passed, panics with the last `Err`: what was seen instead.
///
/// ```ignore
/// let rows = eventually(Duration::from_secs(15), Duration::from_millis(20), || async {
///     let rows = app.outbox(contact).await;
///     if rows.is_empty() { Err(format!("no rows yet")) } else { Ok(rows) }
/// })
/// .await;
/// ```
pub async fn eventually<T, F, Fut>(within: Duration, every: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() > deadline => {
                panic!("{seen} (waited {within:?})")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}
