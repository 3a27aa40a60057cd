//! Editing a [`Matcher`] in place, piece by piece: what a [`TableDelta`]
//! does, and what the gateway's discovery receiver does resource by
//! resource so that it can refuse one resource and keep the rest.
//!
//! Every edit copies only the listener, virtual host and index nodes on its
//! path (`Arc::make_mut`), so a clone taken before it, still serving
//! requests, never sees it. Removing a parent removes its children; a child
//! whose parent is unknown is refused, not parked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::listener::{ListenerEntry, VirtualHostEntry};
use super::route_index::{PlacedRoute, RouteIndex, SortKey};
use super::{Matcher, RoutePlace};
use crate::parts::{ListenerPart, Placed, TableDelta, VirtualHostPart};
use crate::table::{Cluster, Route};
use crate::workload::WorkloadState;

/// The last revision handed out, across all matchers: equal revisions mean
/// the same history of edits, hence the same content.
static LAST_REVISION: AtomicU64 = AtomicU64::new(0);

/// The kinds of pieces a matcher holds, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PieceKind {
    Listener,
    VirtualHost,
    Route,
    Cluster,
    Workload,
}

/// Why one piece of a change was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("virtual host {name:?}: its listener {parent:?} is not known")]
    MissingListener { name: String, parent: String },
    #[error("route {name:?}: its virtual host {parent:?} is not known")]
    MissingVirtualHost { name: String, parent: String },
}

impl Matcher {
    /// Applies `delta`: removals first, then upserts parents before
    /// children (listeners, virtual hosts, routes, clusters). A piece whose
    /// parent is unknown is refused (returned) and the rest still applies.
    pub fn apply(&mut self, delta: &TableDelta) -> Vec<EditError> {
        // Children before parents: removing a parent first would walk the
        // children only to find them removed again.
        for (name, _) in delta.routes.iter().filter(|(_, piece)| piece.is_none()) {
            self.remove_route(name);
        }
        for (name, _) in delta.virtual_hosts.iter().filter(|(_, piece)| piece.is_none()) {
            self.remove_virtual_host(name);
        }
        for (name, _) in delta.listeners.iter().filter(|(_, piece)| piece.is_none()) {
            self.remove_listener(name);
        }
        for (name, _) in delta.clusters.iter().filter(|(_, piece)| piece.is_none()) {
            self.remove_cluster(name);
        }
        for (host, workload) in &delta.workloads {
            match workload {
                Some(workload) => self.upsert_workload(host, Arc::clone(workload)),
                None => self.remove_workload(host),
            };
        }
        let mut refused = Vec::new();
        for (name, listener) in delta.listeners.iter().filter_map(|(n, p)| Some((n, p.as_ref()?))) {
            self.upsert_listener(name, listener.clone());
        }
        for (name, host) in delta.virtual_hosts.iter().filter_map(|(n, p)| Some((n, p.as_ref()?))) {
            if let Err(error) = self.upsert_virtual_host(name, host.clone()) {
                refused.push(error);
            }
        }
        for (name, route) in delta.routes.iter().filter_map(|(n, p)| Some((n, p.as_ref()?))) {
            if let Err(error) = self.upsert_route(name, route.clone()) {
                refused.push(error);
            }
        }
        for (name, cluster) in delta.clusters.iter().filter_map(|(n, p)| Some((n, p.as_ref()?))) {
            self.upsert_cluster(name, Arc::clone(cluster));
        }
        refused
    }

    /// Removes every piece `keep` refuses, children before parents: what
    /// is left of a full state applied piece by piece over the serving
    /// matcher. (Upserting an identical piece changes nothing and keeps the
    /// serving copy, so a resync holds one set of routes, not two.)
    pub fn retain(&mut self, keep: impl Fn(PieceKind, &str) -> bool) {
        let gone = |kind, names: Vec<Arc<str>>| -> Vec<Arc<str>> {
            names.into_iter().filter(|name| !keep(kind, name)).collect()
        };
        for name in gone(PieceKind::Route, self.route_places.keys().cloned().collect()) {
            self.remove_route(&name);
        }
        for name in gone(PieceKind::VirtualHost, self.host_parents.keys().cloned().collect()) {
            self.remove_virtual_host(&name);
        }
        let listeners = self.listeners.iter().map(|l| Arc::clone(&l.key.name)).collect();
        for name in gone(PieceKind::Listener, listeners) {
            self.remove_listener(&name);
        }
        for name in gone(PieceKind::Cluster, self.clusters.keys().map(|n| n.as_str().into()).collect()) {
            self.remove_cluster(&name);
        }
        for name in gone(PieceKind::Workload, self.workloads.keys().map(|n| n.as_str().into()).collect()) {
            self.remove_workload(&name);
        }
    }

    /// Adds or replaces the listener `name`, keeping its virtual hosts.
    /// Returns whether anything changed.
    pub fn upsert_listener(&mut self, name: &str, piece: Placed<ListenerPart>) -> bool {
        let key = SortKey::new(&piece.order, name);
        match self.listener_position(name) {
            Some(position) => {
                let current = &self.listeners[position];
                if current.key == key && *current.part == piece.value {
                    return false;
                }
                let entry = Arc::make_mut(&mut self.listeners[position]);
                entry.part = Arc::new(piece.value);
                if entry.key != key {
                    entry.key = key;
                    self.listeners.sort_by(|a, b| a.key.cmp(&b.key));
                }
            }
            None => {
                let position = self.listeners.partition_point(|l| l.key < key);
                self.listeners.insert(position, Arc::new(ListenerEntry::new(key, piece.value)));
            }
        }
        self.touched();
        true
    }

    /// Removes the listener `name` with its virtual hosts and their routes.
    pub fn remove_listener(&mut self, name: &str) -> bool {
        let Some(position) = self.listener_position(name) else { return false };
        let entry = self.listeners.remove(position);
        for host in &entry.virtual_hosts {
            self.forget_virtual_host(host);
        }
        self.touched();
        true
    }

    /// Adds or replaces the virtual host `name` under the listener
    /// `piece.parent`, keeping its routes (also when it moves to another
    /// listener). Returns whether anything changed.
    pub fn upsert_virtual_host(&mut self, name: &str, piece: Placed<VirtualHostPart>) -> Result<bool, EditError> {
        let Some(parent_position) = self.listener_position(&piece.parent) else {
            return Err(EditError::MissingListener { name: name.to_string(), parent: piece.parent });
        };
        let key = SortKey::new(&piece.order, name);
        let routes = match self.host_parents.get(name).cloned() {
            Some(current_parent) if *current_parent == *piece.parent => {
                let listener = &self.listeners[parent_position];
                if let Some(current) = listener.position_of(name).map(|p| &listener.virtual_hosts[p])
                    && current.key == key
                    && *current.part == piece.value
                {
                    return Ok(false);
                }
                self.take_virtual_host(&current_parent, name).map(|entry| entry.routes.clone())
            }
            Some(current_parent) => self.take_virtual_host(&current_parent, name).map(|entry| entry.routes.clone()),
            None => None,
        };
        let entry = VirtualHostEntry { key, part: Arc::new(piece.value), routes: routes.unwrap_or_default() };
        Arc::make_mut(&mut self.listeners[parent_position]).put_virtual_host(Arc::new(entry));
        self.host_parents.insert(name.into(), piece.parent.as_str().into());
        self.touched();
        Ok(true)
    }

    /// Removes the virtual host `name` with its routes.
    pub fn remove_virtual_host(&mut self, name: &str) -> bool {
        let Some(parent) = self.host_parents.get(name).cloned() else { return false };
        if let Some(entry) = self.take_virtual_host(&parent, name) {
            self.forget_virtual_host(&entry);
        }
        self.host_parents.remove(name);
        self.touched();
        true
    }

    /// Adds or replaces the route `name` in the virtual host `piece.parent`
    /// at its order key. Returns whether anything changed.
    pub fn upsert_route(&mut self, name: &str, piece: Placed<Arc<Route>>) -> Result<bool, EditError> {
        // The virtual host's name as the index holds it: every route of it
        // shares that one allocation.
        let Some(virtual_host) =
            self.host_parents.get_key_value(piece.parent.as_str()).map(|(name, _)| Arc::clone(name))
        else {
            return Err(EditError::MissingVirtualHost { name: name.to_string(), parent: piece.parent });
        };
        let key = SortKey::new(&piece.order, name);
        if let Some(place) = self.route_places.get(name).cloned() {
            if *place.virtual_host == *piece.parent
                && place.key == key
                && self
                    .routes_of(&place.virtual_host)
                    .and_then(|routes| routes.get(&key))
                    .is_some_and(|current| Arc::ptr_eq(&current.route, &piece.value) || *current.route == *piece.value)
            {
                return Ok(false);
            }
            if let Some(routes) = self.routes_of_mut(&place.virtual_host) {
                routes.remove(&place.key);
            }
        }
        let placed = Arc::new(PlacedRoute { key: key.clone(), route: piece.value });
        if let Some(routes) = self.routes_of_mut(&virtual_host) {
            routes.insert(placed);
        }
        self.route_places.insert(Arc::clone(&key.name), RoutePlace { virtual_host, key });
        self.touched();
        Ok(true)
    }

    /// Removes the route `name`.
    pub fn remove_route(&mut self, name: &str) -> bool {
        let Some(place) = self.route_places.remove(name) else { return false };
        if let Some(routes) = self.routes_of_mut(&place.virtual_host) {
            routes.remove(&place.key);
        }
        self.touched();
        true
    }

    /// Adds or replaces the endpoints of cluster `name` (`host:port`).
    pub fn upsert_cluster(&mut self, name: &str, cluster: Arc<Cluster>) -> bool {
        if self.clusters.get(name).is_some_and(|current| Arc::ptr_eq(current, &cluster) || **current == *cluster) {
            return false;
        }
        self.clusters.insert(name.to_string(), cluster);
        self.touched();
        true
    }

    pub fn remove_cluster(&mut self, name: &str) -> bool {
        let removed = self.clusters.remove(name).is_some();
        if removed {
            self.touched();
        }
        removed
    }

    /// Adds or replaces what runs behind the destination `host`.
    pub fn upsert_workload(&mut self, host: &str, workload: Arc<WorkloadState>) -> bool {
        if self.workloads.get(host).is_some_and(|current| **current == *workload) {
            return false;
        }
        self.workloads.insert(host.to_string(), workload);
        self.touched();
        true
    }

    pub fn remove_workload(&mut self, host: &str) -> bool {
        let removed = self.workloads.remove(host).is_some();
        if removed {
            self.touched();
        }
        removed
    }

    /// Stamps an effective edit with a revision no other edit has.
    fn touched(&mut self) {
        self.revision = LAST_REVISION.fetch_add(1, Ordering::Relaxed) + 1;
    }

    /// Detaches the virtual host `name` from the listener `parent`.
    fn take_virtual_host(&mut self, parent: &str, name: &str) -> Option<Arc<VirtualHostEntry>> {
        let position = self.listener_position(parent)?;
        Arc::make_mut(&mut self.listeners[position]).take_virtual_host(name)
    }

    /// Drops the name index entries of a removed virtual host and its routes.
    fn forget_virtual_host(&mut self, host: &VirtualHostEntry) {
        self.host_parents.remove(&*host.key.name);
        for placed in host.routes.routes() {
            self.route_places.remove(&*placed.key.name);
        }
    }

    fn routes_of(&self, virtual_host: &str) -> Option<&RouteIndex> {
        let parent = self.host_parents.get(virtual_host)?;
        let listener = &self.listeners[self.listener_position(parent)?];
        Some(&listener.virtual_hosts[listener.position_of(virtual_host)?].routes)
    }

    /// The routes of `virtual_host`, made unique along the way (the
    /// listener and virtual host are copied if an older snapshot shares them).
    fn routes_of_mut(&mut self, virtual_host: &str) -> Option<&mut RouteIndex> {
        let parent = self.host_parents.get(virtual_host)?;
        let position = self.listener_position(parent)?;
        let listener = Arc::make_mut(&mut self.listeners[position]);
        let host = listener.position_of(virtual_host)?;
        Some(&mut Arc::make_mut(&mut listener.virtual_hosts[host]).routes)
    }
}
