//! The route index's share of JupyterHub's routes: ChpRoute objects as
//! route table pieces, the same for every gateway table. Each watch event
//! changes the pieces of its one route ([`RouteSet`]); the build loop
//! merges them into every table's delta, and a new table gets them all.

use std::collections::HashMap;
use std::sync::Arc;

use kube::ResourceExt;
use portico_api::chp::ChpRoute;
use portico_chp::{Layout, LayoutSettings, RoutePath, RouteSet, Target};
use portico_routing::parts::TableDelta;

use super::objects::from_object;
use super::propagation::version_number;

/// The ChpRoutes of one namespace, as pieces.
pub struct ChpTable {
    set: RouteSet,
    host_routing: bool,
    /// `--chp-default-target`: the `/` route while no object claims `/`.
    default: Option<(RoutePath, Target)>,
    /// Object name -> route key (a deleted object's key, and a renamed key's).
    keys: HashMap<String, String>,
    /// Pieces changed since the last [`ChpTable::take_delta`].
    delta: TableDelta,
    /// Objects changed since the last [`ChpTable::take_published`]: name,
    /// resourceVersion (`None`: gone).
    changed: Vec<(String, Option<u64>)>,
}

impl ChpTable {
    pub fn new(layout: &LayoutSettings, host_routing: bool, default_target: Option<Target>) -> Self {
        // The listener and its `*` virtual host serve from the first step.
        let mut delta = Layout::new(layout).skeleton();
        let mut set = RouteSet::new(Layout::new(layout));
        let default = default_target.and_then(|target| Some((RoutePath::parse("/", host_routing).ok()?, target)));
        if let Some((root, target)) = &default {
            set.upsert(&mut delta, root.clone(), target.clone());
        }
        Self { set, host_routing, default, keys: HashMap::new(), delta, changed: Vec::new() }
    }

    /// Routes served.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// An object was added or changed.
    pub fn upsert(&mut self, object: &ChpRoute) {
        let name = object.name_any();
        let version = version_number(object.resource_version().as_deref());
        match from_object(object, self.host_routing) {
            Ok(route) => {
                if let Some(previous) = self.keys.get(&name)
                    && *previous != route.path.key
                {
                    let previous = previous.clone();
                    self.release(&previous);
                }
                self.keys.insert(name.clone(), route.path.key.clone());
                self.set.upsert(&mut self.delta, route.path, route.target);
            }
            Err(error) => {
                // Written around the API (kubectl): skipped, never half-served.
                tracing::warn!(chp_route = %name, %error, "ChpRoute skipped");
                self.unserve(&name);
            }
        }
        self.changed.push((name, Some(version)));
    }

    /// An object was deleted.
    pub fn remove(&mut self, name: &str) {
        self.unserve(name);
        self.changed.push((name.to_string(), None));
    }

    /// Stops serving the route of object `name`, if any (`/` goes back to
    /// the default target, if there is one).
    fn unserve(&mut self, name: &str) {
        if let Some(key) = self.keys.remove(name) {
            self.release(&key);
        }
    }

    /// No object claims route `key` any more.
    fn release(&mut self, key: &str) {
        match &self.default {
            Some((root, target)) if root.key == key => self.set.upsert(&mut self.delta, root.clone(), target.clone()),
            _ => {
                self.set.remove(&mut self.delta, key);
            }
        }
    }

    /// The watch listed everything again: deletions may have been missed.
    pub fn replace(&mut self, objects: &[Arc<ChpRoute>]) {
        let listed: HashMap<String, &Arc<ChpRoute>> = objects.iter().map(|o| (o.name_any(), o)).collect();
        let gone: Vec<String> = self.keys.keys().filter(|name| !listed.contains_key(*name)).cloned().collect();
        for name in gone {
            self.remove(&name);
        }
        for object in listed.values() {
            self.upsert(object);
        }
    }

    /// The pieces changed since last time.
    pub fn take_delta(&mut self) -> TableDelta {
        std::mem::take(&mut self.delta)
    }

    /// The objects changed since last time.
    pub fn take_changed(&mut self) -> Vec<(String, Option<u64>)> {
        std::mem::take(&mut self.changed)
    }

    /// Every piece (a new table's).
    pub fn full_state(&self) -> TableDelta {
        self.set.full_state()
    }
}

#[cfg(test)]
mod tests {
    use portico_api::chp::ChpRouteSpec;
    use serde_json::Map;

    use super::*;

    fn object(name: &str, path: &str, port: u16, version: &str) -> Arc<ChpRoute> {
        let spec = ChpRouteSpec {
            path: path.to_string(),
            target: format!("http://10.0.0.5:{port}"),
            data: Map::new(),
            added_unix_ms: 1,
        };
        let mut object = ChpRoute::new(name, spec);
        object.metadata.resource_version = Some(version.to_string());
        Arc::new(object)
    }

    #[test]
    fn each_event_changes_its_own_route_and_a_relist_drops_the_missed_deletions() {
        let mut table = ChpTable::new(&LayoutSettings::on_port(8000), false, None);
        assert_eq!(table.take_delta().listeners.len(), 1, "the listener from the start");
        table.upsert(&object("a", "/user/a", 1, "5"));
        table.upsert(&object("b", "/user/b", 2, "6"));
        let delta = table.take_delta();
        assert_eq!(delta.routes.len(), 2);
        assert_eq!(table.take_changed(), vec![("a".into(), Some(5)), ("b".into(), Some(6))]);
        table.replace(&[object("b", "/user/b", 2, "6")]);
        let delta = table.take_delta();
        assert_eq!(delta.routes.values().filter(|piece| piece.is_none()).count(), 1, "a is gone");
        assert_eq!(table.len(), 1);
        let bad = object("c", "/user/../c", 3, "7");
        table.upsert(&bad);
        assert_eq!(table.len(), 1, "a bad object is not served");
        assert_eq!(table.full_state().routes.len(), 2, "the health check and b");
    }

    #[test]
    fn the_default_target_serves_root_while_no_object_claims_it() {
        let default = Target::parse("http://hub:8081").unwrap();
        let mut table = ChpTable::new(&LayoutSettings::on_port(8000), false, Some(default.clone()));
        let root_piece =
            |delta: &TableDelta| delta.routes.iter().find(|(name, _)| name.ends_with("/chp:/")).map(|(_, p)| p.clone());
        let target_of =
            |piece: Option<Option<portico_routing::parts::Placed<Arc<portico_routing::table::Route>>>>| match &piece
                .flatten()?
                .value
                .action
            {
                portico_routing::table::RouteAction::Forward(forward) => Some(forward.destinations[0].port),
                _ => None,
            };
        assert_eq!(target_of(root_piece(&table.take_delta())), Some(8081), "served from the start");
        table.upsert(&object("hub", "/", 9000, "3"));
        assert_eq!(target_of(root_piece(&table.take_delta())), Some(9000), "the hub's own route wins");
        table.remove("hub");
        assert_eq!(target_of(root_piece(&table.take_delta())), Some(8081), "and the default comes back");
        assert_eq!(table.len(), 1);
    }
}
