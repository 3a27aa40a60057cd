//! Each route's `last_activity`, kept where the data plane can stamp it
//! without taking a lock shared with the API.
//!
//! The rule is CHP's: a route is active when it is added, when a request
//! through it completes with a status below 300 (a websocket's 101
//! included), and while bytes flow on a websocket through it. Portico
//! splices websockets without looking at their bytes, so a route with a
//! websocket open counts as active now, and the websocket's end stamps it
//! once more. That is what CHP reports for Jupyter's websockets too: Jupyter
//! Server pings every open kernel and terminal websocket (every 30 s by
//! default), and CHP counts the ping's bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use portico_chp::timestamp::now_ms;

/// Milliseconds since the epoch of the last activity, by CHP route key.
#[derive(Default)]
pub struct Activity {
    routes: RwLock<HashMap<String, Arc<RouteActivity>>>,
}

/// A websocket open through a route (a guard, not a future wrapper: it
/// rides in the splice's own task, which stays small).
pub struct OpenWebsocket(Arc<RouteActivity>);

impl Drop for OpenWebsocket {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.last.fetch_max(now_ms(), Ordering::Relaxed);
    }
}

/// One route's activity.
#[derive(Default)]
struct RouteActivity {
    /// Milliseconds since the epoch.
    last: AtomicI64,
    /// Websockets open through the route.
    open: AtomicU32,
}

impl Activity {
    /// A request through `route` ended with `status`.
    pub fn record(&self, route: &str, status: u16) {
        if !(100..300).contains(&status) {
            return;
        }
        if let Some(route) = self.find(route) {
            route.last.fetch_max(now_ms(), Ordering::Relaxed);
        }
    }

    /// A websocket through `route` opened: the route is active while the
    /// returned guard lives, and when it is dropped.
    pub fn websocket_open(&self, route: &str) -> Option<OpenWebsocket> {
        let route = self.find(route)?;
        route.open.fetch_add(1, Ordering::Relaxed);
        Some(OpenWebsocket(route))
    }

    fn find(&self, route: &str) -> Option<Arc<RouteActivity>> {
        self.routes.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(route).cloned()
    }

    /// A route added (or replaced) at `at`.
    pub fn set(&self, route: &str, at: i64) {
        let mut routes = self.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match routes.get(route) {
            Some(activity) => activity.last.store(at, Ordering::Relaxed),
            None => {
                let activity = RouteActivity { last: AtomicI64::new(at), open: AtomicU32::new(0) };
                routes.insert(route.to_string(), Arc::new(activity));
            }
        }
    }

    pub fn remove(&self, route: &str) {
        self.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(route);
    }

    /// Milliseconds since the epoch, if `route` is known: now while a
    /// websocket through it is open.
    pub fn last(&self, route: &str) -> Option<i64> {
        let route = self.find(route)?;
        if route.open.load(Ordering::Relaxed) > 0 {
            return Some(now_ms());
        }
        Some(route.last.load(Ordering::Relaxed))
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

    #[test]
    fn a_route_with_a_websocket_open_is_active() {
        let activity = Arc::new(Activity::default());
        activity.set("/user/a", 5);
        let websocket = activity.websocket_open("/user/a");
        assert!(websocket.is_some());
        assert!(activity.websocket_open("/unknown").is_none());
        let before = now_ms();
        assert!(activity.last("/user/a").unwrap() >= before, "open: active now");
        drop(websocket);
        let closed = activity.last("/user/a").unwrap();
        assert!(closed >= before, "its end is the last activity");
        assert_eq!(activity.last("/user/a"), Some(closed), "and it stays that");
    }
}
