//! A set of CHP routes and the route table pieces that serve it: one route
//! per CHP route, one virtual host per host with host routing, and in each
//! host's virtual host a copy of `/` (CHP's trie falls back to it).
//!
//! Every change returns only the pieces it touches, as a [`TableDelta`]:
//! the gateway alone patches its matcher with it; the controller sends it
//! to every gateway replica. Neither ever rebuilds the table.

use std::collections::BTreeMap;

use portico_routing::parts::TableDelta;

use crate::pieces::Layout;
use crate::route_path::RoutePath;
use crate::target::Target;

/// The routes, by CHP key.
#[derive(Clone, Debug)]
pub struct RouteSet {
    layout: Layout,
    routes: BTreeMap<String, (RoutePath, Target)>,
    /// Routes per host (host routing): a host's virtual host lives while it has any.
    hosts: BTreeMap<String, usize>,
}

impl RouteSet {
    pub fn new(layout: Layout) -> Self {
        Self { layout, routes: BTreeMap::new(), hosts: BTreeMap::new() }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The target of route `key`.
    pub fn target(&self, key: &str) -> Option<&Target> {
        self.routes.get(key).map(|(_, target)| target)
    }

    /// Every piece: the listeners, virtual hosts and routes (a gateway's
    /// first table).
    pub fn full_state(&self) -> TableDelta {
        let mut delta = self.layout.skeleton();
        let mut copy = RouteSet::new(self.layout.clone());
        for (path, target) in self.routes.values() {
            copy.upsert(&mut delta, path.clone(), target.clone());
        }
        delta
    }

    /// Adds or replaces a route; its pieces go into `delta`.
    pub fn upsert(&mut self, delta: &mut TableDelta, path: RoutePath, target: Target) {
        let host_piece = self.layout.virtual_host_name(path.host.as_deref());
        let replaced = self.routes.contains_key(&path.key);
        if let Some(host) = &path.host
            && !replaced
        {
            let count = self.hosts.entry(host.clone()).or_default();
            *count += 1;
            if *count == 1 {
                self.layout.add_virtual_host(delta, Some(host));
                if let Some((root, root_target)) = self.routes.get("/") {
                    let (name, piece) = self.layout.route(&host_piece, root, root_target);
                    delta.routes.insert(name, Some(piece));
                }
            }
        }
        let (name, piece) = self.layout.route(&host_piece, &path, &target);
        delta.routes.insert(name, Some(piece));
        if path.key == "/" {
            for host in self.hosts.keys() {
                let piece_host = self.layout.virtual_host_name(Some(host));
                let (name, piece) = self.layout.route(&piece_host, &path, &target);
                delta.routes.insert(name, Some(piece));
            }
        }
        self.routes.insert(path.key.clone(), (path, target));
    }

    /// Removes route `key`; whether it existed. Its pieces' removal goes
    /// into `delta`.
    pub fn remove(&mut self, delta: &mut TableDelta, key: &str) -> bool {
        let Some((removed, _)) = self.routes.remove(key) else { return false };
        let host_piece = self.layout.virtual_host_name(removed.host.as_deref());
        delta.routes.insert(self.layout.route_name(&host_piece, &removed.key), None);
        if let Some(host) = &removed.host {
            let count = self.hosts.entry(host.clone()).or_default();
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.hosts.remove(host);
                self.layout.remove_virtual_host(delta, host);
            }
        }
        if removed.key == "/" {
            for host in self.hosts.keys() {
                let piece = self.layout.virtual_host_name(Some(host));
                delta.routes.insert(self.layout.route_name(&piece, "/"), None);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pieces::LayoutSettings;

    fn route(raw: &str) -> (RoutePath, Target) {
        (RoutePath::parse(raw, true).unwrap(), Target::parse("http://10.0.0.5:8888").unwrap())
    }

    #[test]
    fn a_change_touches_its_own_pieces_and_full_state_has_them_all() {
        let mut set = RouteSet::new(Layout::new(&LayoutSettings::on_port(8000)));
        let mut delta = TableDelta::default();
        let (path, target) = route("/");
        set.upsert(&mut delta, path, target);
        let mut delta = TableDelta::default();
        let (path, target) = route("/alice.hub.test/user/alice");
        set.upsert(&mut delta, path, target);
        // The route, the host's virtual host, its health check and `/` copy.
        assert_eq!(delta.virtual_hosts.len(), 1);
        assert_eq!(delta.routes.len(), 3, "{:?}", delta.routes.keys().collect::<Vec<_>>());
        let full = set.full_state();
        assert_eq!(full.routes.len(), 5, "two health checks, `/` twice, the user's route");
        let mut delta = TableDelta::default();
        assert!(set.remove(&mut delta, "/alice.hub.test/user/alice"));
        assert!(!set.remove(&mut delta, "/alice.hub.test/user/alice"));
        assert_eq!(delta.virtual_hosts.keys().collect::<Vec<_>>(), ["http.8000/alice.hub.test"]);
        assert_eq!(set.len(), 1);
    }
}
