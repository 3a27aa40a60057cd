//! Each route's `last_activity`, kept where the data plane can stamp it
//! without taking a lock shared with the API.
//!
//! The rule is CHP's: a route is active when a request through it
//! completes with a status below 300 (a websocket's 101 included) and when
//! it is added. CHP also counts every byte relayed on an open websocket;
//! Portico does not yet see those (the websocket is spliced outside the
//! proxy), which JupyterHub covers: single-user servers report their own
//! activity to the hub, and the hub's `last_activity` is the later of both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use super::timestamp::now_ms;

/// Milliseconds since the epoch of the last activity, by CHP route key.
#[derive(Default)]
pub struct Activity {
    routes: RwLock<HashMap<String, Arc<AtomicI64>>>,
}

impl Activity {
    /// A request through `route` ended with `status`.
    pub fn record(&self, route: &str, status: u16) {
        if !(100..300).contains(&status) {
            return;
        }
        let routes = self.routes.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(last) = routes.get(route) {
            last.fetch_max(now_ms(), Ordering::Relaxed);
        }
    }

    /// A route added (or replaced) at `at`.
    pub fn set(&self, route: &str, at: i64) {
        let mut routes = self.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match routes.get(route) {
            Some(last) => last.store(at, Ordering::Relaxed),
            None => {
                routes.insert(route.to_string(), Arc::new(AtomicI64::new(at)));
            }
        }
    }

    pub fn remove(&self, route: &str) {
        self.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(route);
    }

    /// Milliseconds since the epoch, if `route` is known.
    pub fn last(&self, route: &str) -> Option<i64> {
        let routes = self.routes.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        routes.get(route).map(|last| last.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_successful_requests_count() {
        let activity = Activity::default();
        activity.set("/user/a", 5);
        activity.record("/user/a", 503);
        activity.record("/user/a", 404);
        assert_eq!(activity.last("/user/a"), Some(5));
        activity.record("/user/a", 101);
        assert!(activity.last("/user/a").unwrap() > 5);
        activity.record("/unknown", 200);
        assert_eq!(activity.last("/unknown"), None);
    }
}
