//! Which ChpRoute versions this replica has published to its gateway
//! streams, so that the API answers a change once the gateways are being
//! sent it, as CHP answers once it routes (JupyterHub redirects the user to
//! the new route right after its `POST`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// Published object versions by object name (absent: no such object).
#[derive(Debug)]
pub struct Propagation {
    published: Mutex<HashMap<String, u64>>,
    /// Bumped after each publication that changed a ChpRoute.
    generation: watch::Sender<u64>,
}

impl Default for Propagation {
    fn default() -> Self {
        Self { published: Mutex::default(), generation: watch::channel(0).0 }
    }
}

/// What the API waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Awaited {
    /// The object at this resourceVersion (or a later one).
    Version(u64),
    /// The object gone.
    Gone,
}

impl Propagation {
    /// The build loop published these changes (name, resourceVersion or gone).
    pub fn published(&self, changes: Vec<(String, Option<u64>)>) {
        if changes.is_empty() {
            return;
        }
        let mut published = self.lock();
        for (name, version) in changes {
            match version {
                Some(version) => published.insert(name, version),
                None => published.remove(&name),
            };
        }
        drop(published);
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Waits until `name` is published as `awaited`, at most `timeout`;
    /// whether it was.
    pub async fn wait(&self, name: &str, awaited: Awaited, timeout: Duration) -> bool {
        let mut changes = self.generation.subscribe();
        let done = |published: &HashMap<String, u64>| match (awaited, published.get(name)) {
            (Awaited::Version(wanted), Some(version)) => *version >= wanted,
            (Awaited::Gone, None) => true,
            _ => false,
        };
        let wait = async {
            loop {
                changes.borrow_and_update();
                if done(&self.lock()) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && done(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.published.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A resourceVersion as a number (etcd's revisions; opaque to clients in
/// principle, so an unparsable one counts as 0, which any publication of the
/// object satisfies).
pub fn version_number(resource_version: Option<&str>) -> u64 {
    resource_version.and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_when_its_version_is_published() {
        let propagation = std::sync::Arc::new(Propagation::default());
        let publisher = propagation.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            publisher.published(vec![("a".into(), Some(7))]);
        });
        assert!(propagation.wait("a", Awaited::Version(7), Duration::from_secs(5)).await);
        assert!(!propagation.wait("a", Awaited::Gone, Duration::from_millis(20)).await);
        propagation.published(vec![("a".into(), None)]);
        assert!(propagation.wait("a", Awaited::Gone, Duration::from_millis(20)).await);
    }
}
