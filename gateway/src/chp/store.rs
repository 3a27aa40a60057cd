//! The routes CHP's API manages, and their application to the serving
//! matcher.
//!
//! Every change is one [`TableDelta`] of the pieces it touches
//! ([`RouteSet`], shared with the controller's cluster mode), patched onto
//! the serving matcher through the same [`ConfigSink`] path the folder and
//! discovery sources use: no rebuild, whatever the number of routes, and
//! requests in flight keep the snapshot they started with. Changes are
//! serialized by one lock, so concurrent API calls never patch the same
//! snapshot twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use portico_chp::route::shown;
use portico_chp::timestamp::now_ms;
use portico_chp::{CheckedRoute, Layout, RouteError, RoutePath, RouteSet, Target};
use portico_routing::parts::TableDelta;
use serde_json::{Map, Value};

use super::activity::Activity;
use super::persist;
use crate::apply::ConfigSink;

/// One route as the API was given it.
#[derive(Clone, Debug)]
struct StoredRoute {
    path: RoutePath,
    /// The body as posted (target included): CHP returns it as given.
    data: Map<String, Value>,
}

struct Routes {
    by_key: BTreeMap<String, StoredRoute>,
    /// What serves them.
    set: RouteSet,
    generation: u64,
}

/// The API's routes, applied to the data plane.
pub struct RouteStore {
    host_routing: bool,
    sink: Arc<ConfigSink>,
    activity: Arc<Activity>,
    routes_file: Option<PathBuf>,
    routes: Mutex<Routes>,
}

impl RouteStore {
    pub fn new(
        layout: Layout,
        host_routing: bool,
        sink: Arc<ConfigSink>,
        activity: Arc<Activity>,
        routes_file: Option<PathBuf>,
    ) -> Self {
        let routes = Routes { by_key: BTreeMap::new(), set: RouteSet::new(layout), generation: 0 };
        Self { host_routing, sink, activity, routes_file, routes: Mutex::new(routes) }
    }

    /// Serves the listeners, the routes of `--routes-file` and `--default-target`.
    pub fn start(&self, default_target: Option<&Target>) -> anyhow::Result<()> {
        let mut routes = self.lock();
        let mut delta = routes.set.layout().skeleton();
        let saved = match &self.routes_file {
            Some(file) => persist::load(file)?,
            None => Vec::new(),
        };
        let restored = saved.len();
        for saved in saved {
            match CheckedRoute::from_data(&saved.path, saved.data, self.host_routing) {
                Ok(route) => {
                    self.activity.set(&route.path.key, saved.last_activity.unwrap_or_else(now_ms));
                    stage(&mut routes, &mut delta, route);
                }
                Err(error) => tracing::warn!(path = %saved.path, %error, "saved route skipped"),
            }
        }
        if let Some(target) = default_target {
            let data = Map::from_iter([("target".to_string(), Value::String(target.to_string()))]);
            let route = CheckedRoute::from_data("/", data, self.host_routing)?;
            self.activity.set(&route.path.key, now_ms());
            stage(&mut routes, &mut delta, route);
        }
        self.publish(&mut routes, delta);
        tracing::info!(restored, routes = routes.by_key.len(), "configurable-http-proxy routes serving");
        Ok(())
    }

    /// `POST /api/routes<path>`: adds or replaces a route.
    pub fn add(&self, raw_path: &str, body: Value) -> Result<(), RouteError> {
        let route = CheckedRoute::parse(raw_path, body, self.host_routing)?;
        let started = std::time::Instant::now();
        let key = route.path.key.clone();
        let mut routes = self.lock();
        let mut delta = TableDelta::default();
        stage(&mut routes, &mut delta, route);
        self.activity.set(&key, now_ms());
        self.publish(&mut routes, delta);
        self.save(&routes);
        tracing::info!(route = %key, elapsed_us = started.elapsed().as_micros() as u64, "route added");
        Ok(())
    }

    /// `DELETE /api/routes<path>`: whether the route existed.
    pub fn remove(&self, raw_path: &str) -> Result<bool, RouteError> {
        let path = RoutePath::parse(raw_path, self.host_routing)?;
        let mut routes = self.lock();
        if routes.by_key.remove(&path.key).is_none() {
            return Ok(false);
        }
        let mut delta = TableDelta::default();
        routes.set.remove(&mut delta, &path.key);
        self.activity.remove(&path.key);
        self.publish(&mut routes, delta);
        self.save(&routes);
        tracing::info!(route = %path.key, "route removed");
        Ok(true)
    }

    /// `GET /api/routes`: every route whose last activity is before
    /// `inactive_since` (all without it), as CHP answers.
    pub fn all(&self, inactive_since: Option<i64>) -> Map<String, Value> {
        let routes = self.lock();
        routes
            .by_key
            .values()
            .filter_map(|route| {
                let last = self.activity.last(&route.path.key);
                let keep = inactive_since.is_none_or(|since| last.is_some_and(|last| last < since));
                keep.then(|| (route.path.key.clone(), Value::Object(shown(&route.data, &route.path, last))))
            })
            .collect()
    }

    /// `GET /api/routes<path>`: one route.
    pub fn get(&self, raw_path: &str) -> Result<Option<Map<String, Value>>, RouteError> {
        let path = RoutePath::parse(raw_path, self.host_routing)?;
        let routes = self.lock();
        Ok(routes
            .by_key
            .get(&path.key)
            .map(|route| shown(&route.data, &route.path, self.activity.last(&route.path.key))))
    }

    fn publish(&self, routes: &mut Routes, delta: TableDelta) {
        routes.generation += 1;
        self.sink.apply_route_delta(format!("chp-{}", routes.generation), delta);
    }

    fn save(&self, routes: &Routes) {
        let Some(file) = &self.routes_file else { return };
        let saved: Vec<persist::SavedRoute> = routes
            .by_key
            .values()
            .map(|route| persist::SavedRoute {
                path: route.path.raw.clone(),
                data: route.data.clone(),
                last_activity: self.activity.last(&route.path.key),
            })
            .collect();
        if let Err(error) = persist::save(file, &saved) {
            tracing::error!(file = %file.display(), %error, "cannot save the routes; they serve, but a restart would lose them");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Adds a checked route's pieces to `delta` and keeps it.
fn stage(routes: &mut Routes, delta: &mut TableDelta, route: CheckedRoute) {
    let CheckedRoute { path, target, data } = route;
    routes.set.upsert(delta, path.clone(), target);
    routes.by_key.insert(path.key.clone(), StoredRoute { path, data });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pingora_http::RequestHeader;
    use serde_json::json;

    use super::*;
    use crate::chp::cli::ChpArgs;
    use crate::decision::{Decision, decide};
    use crate::metrics::Metrics;
    use crate::state::RouteState;

    fn store(flags: &[&str]) -> RouteStore {
        use clap::Parser;
        let args = ChpArgs::try_parse_from(["configurable-http-proxy", "--port", "8000"].iter().chain(flags)).unwrap();
        let settings = args.settings().unwrap();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let sink = Arc::new(ConfigSink::new(Arc::new(RouteState::new()), metrics, BTreeMap::new()));
        let store = RouteStore::new(Layout::new(&settings.layout()), settings.host_routing, sink, Arc::default(), None);
        store.start(settings.default_target.as_ref()).unwrap();
        store
    }

    /// The CHP route that serves `host` + `path`, its upstream path, or the status.
    fn route_for(store: &RouteStore, host: &str, path: &str) -> Result<(String, String), u16> {
        let mut request = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        request.insert_header("host", host).unwrap();
        match decide(store.sink.state.load(), &request, 8000, "http") {
            Decision::Forward(forward) => {
                // No rewritten path: the request's own goes upstream.
                let upstream = forward.upstream_path.clone().unwrap_or_else(|| path.to_string());
                Ok((forward.route().name.clone(), upstream))
            }
            Decision::Local { response, .. } | Decision::Respond(response) => Err(response.status),
        }
    }

    fn target(port: u16) -> Value {
        json!({"target": format!("http://127.0.0.1:{port}"), "jupyterhub": true})
    }

    #[test]
    fn the_longest_whole_segment_prefix_wins_and_the_full_path_is_forwarded() {
        let store = store(&["--default-target", "http://127.0.0.1:8081"]);
        store.add("/user/a", target(1)).unwrap();
        store.add("/user/a/proj/", target(2)).unwrap();
        store.add("/user", target(3)).unwrap();
        let route = |path| route_for(&store, "hub.example.com", path);
        assert_eq!(route("/user/a/lab?x=1"), Ok(("/user/a".into(), "/user/a/lab?x=1".into())));
        assert_eq!(route("/user/a"), Ok(("/user/a".into(), "/user/a".into())));
        assert_eq!(route("/user/a/proj/x").unwrap().0, "/user/a/proj");
        assert_eq!(route("/user/a/project").unwrap().0, "/user/a");
        assert_eq!(route("/user/ab").unwrap().0, "/user");
        assert_eq!(route("/hub/login").unwrap().0, "/");
        assert_eq!(route("/_chp_healthz"), Err(200));

        assert!(store.remove("/user/a/").unwrap());
        assert!(!store.remove("/user/a").unwrap(), "already gone");
        assert_eq!(route("/user/a/lab").unwrap().0, "/user");
        let all = store.all(None);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["/", "/user", "/user/a/proj"]);
        assert_eq!(all["/user"]["target"], "http://127.0.0.1:3");
        assert!(all["/user"]["last_activity"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn bad_input_changes_nothing() {
        let store = store(&[]);
        store.add("/user/a", target(1)).unwrap();
        let before = store.sink.state.load().version().to_string();
        assert!(matches!(store.add("/user/b", json!({"target": 7})), Err(RouteError::MissingTarget)));
        assert!(matches!(store.add("/user/b", json!([1])), Err(RouteError::NotAnObject)));
        assert!(matches!(store.add("/user/b", json!({"target": "https://x"})), Err(RouteError::Target(_))));
        assert!(matches!(store.add("/user/../b", target(1)), Err(RouteError::Path(_))));
        assert_eq!(store.sink.state.load().version(), before);
        assert_eq!(store.all(None).len(), 1);
        assert_eq!(route_for(&store, "h", "/user/b"), Err(404));
    }

    #[test]
    fn host_routes_fall_back_to_the_root_route() {
        let store = store(&["--host-routing"]);
        store.add("/", target(1)).unwrap();
        store.add("/alice.hub.test/", target(2)).unwrap();
        store.add("/alice.hub.test/user/alice", target(3)).unwrap();
        assert_eq!(route_for(&store, "alice.hub.test", "/user/alice/lab").unwrap().0, "/alice.hub.test/user/alice");
        assert_eq!(route_for(&store, "alice.hub.test:8000", "/other").unwrap().0, "/alice.hub.test");
        assert_eq!(route_for(&store, "bob.hub.test", "/user/alice/lab").unwrap().0, "/");
        assert_eq!(store.all(None)["/alice.hub.test"]["host"], "alice.hub.test");
        assert!(store.remove("/alice.hub.test").unwrap());
        assert_eq!(route_for(&store, "alice.hub.test", "/other").unwrap().0, "/");
        assert!(store.remove("/alice.hub.test/user/alice").unwrap());
        assert!(!store.sink.state.load().matcher.has_virtual_host("http.8000/alice.hub.test"));
    }

    #[test]
    fn inactive_since_keeps_routes_idle_before_it() {
        let store = store(&[]);
        store.add("/user/a", target(1)).unwrap();
        store.activity.set("/user/a", 1_000);
        store.add("/user/b", target(2)).unwrap();
        let idle = store.all(Some(2_000));
        assert_eq!(idle.keys().collect::<Vec<_>>(), ["/user/a"]);
        assert_eq!(idle["/user/a"]["last_activity"], "1970-01-01T00:00:01.000Z");
    }
}
