//! Bounded polling: every wait in the end-to-end tests has a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often the pollers below try again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Some` or `timeout` has passed.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// [`poll`] for async checks. Each check runs under the same deadline, so a
/// check that itself hangs cannot stretch the wait.
pub async fn poll_async<T, F>(timeout: Duration, mut check: impl FnMut() -> F) -> Option<T>
where
    F: Future<Output = Option<T>>,
{
    let attempt = async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    tokio::time::timeout(timeout, attempt).await.ok()
}
