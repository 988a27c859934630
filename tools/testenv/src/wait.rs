//! Waiting for a condition by polling it against a deadline, never by fixed sleeps.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long [`wait_for`] polls a condition before failing the test.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns `Some`, for at most [`WAIT_TIMEOUT`].
///
/// # Panics
/// When the deadline passes; the message says what was awaited.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT_TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
