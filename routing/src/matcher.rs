//! The matcher: everything the gateway serves, indexed so that a lookup
//! costs O(path length + host labels) and an edit O(log n + path length),
//! whatever the number of routes.
//!
//! It is persistent: listeners, virtual hosts and the per-virtual-host
//! indexes sit behind `Arc`s and `imbl` maps, and an edit copies only what
//! lies on its path (structural sharing). Cloning is a handful of reference
//! counts, so the gateway clones the serving matcher, applies a
//! [`TableDelta`] to the clone and publishes it, while requests in flight
//! keep the matcher they started with, unchanged.
//!
//! Per listener, virtual hosts are found through a map of exact names and a
//! map of wildcard suffixes (tried longest first, one per host label). Per
//! virtual host, see [`route_index`]: candidates come from radix trees and an
//! always-candidate set and are checked in route order with the very same
//! [`crate::naive::entry_matches`] the reference scan uses, so both agree by
//! construction as long as the index never misses a candidate, which the
//! property tests check.

mod edit;
mod listener;
mod radix;
mod route_index;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

pub use self::edit::{EditError, PieceKind};
use self::listener::ListenerEntry;
use self::route_index::SortKey;
use crate::parts::{ListenerPart, OrderHistory, Placed, TableDelta, TableParts, VirtualHostPart};
use crate::request::RequestView;
use crate::security::SecurityTable;
use crate::table::{Cluster, Listener, PathNormalizationMode, Route, RouteTable, VirtualHost};
use crate::workload::WorkloadState;

/// What a matcher without listeners enforces.
static NO_SECURITY: LazyLock<SecurityTable> = LazyLock::new(SecurityTable::default);

/// Every piece the gateway serves, indexed for lookup. `Send + Sync`;
/// cheap to clone, and an edit of a clone never shows in the original.
/// A persistent map read on every request, hashed with foldhash rather
/// than SipHash: its keys are the configuration's (cluster and destination
/// host names), and requests only look them up.
type RequestPathMap<V> =
    imbl::GenericHashMap<String, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

#[derive(Clone, Default)]
pub struct Matcher {
    version: String,
    /// Sorted by (order key, name).
    listeners: Vec<Arc<ListenerEntry>>,
    /// Virtual host name -> its listener's name.
    host_parents: imbl::HashMap<Arc<str>, Arc<str>>,
    /// Route name -> its virtual host's name and its key there.
    route_places: imbl::HashMap<Arc<str>, RoutePlace>,
    /// Looked up on every request (by upstream and destination host).
    clusters: RequestPathMap<Arc<Cluster>>,
    /// Destination host -> what runs there (see [`crate::workload`]).
    workloads: RequestPathMap<Arc<WorkloadState>>,
    /// Stamp of the last effective edit, unique across matchers: equal
    /// revisions mean equal content (0: never edited, empty).
    revision: u64,
}

#[derive(Clone, Debug)]
struct RoutePlace {
    virtual_host: Arc<str>,
    key: SortKey,
}

/// The outcome of a lookup.
#[derive(Clone, Copy, Debug)]
pub struct Selection<'a> {
    pub listener: &'a ListenerPart,
    pub virtual_host: &'a VirtualHostPart,
    /// `None` when the host is served but no route matched (404).
    pub route: Option<RouteSelection<'a>>,
}

/// The route that matched and which of its `match[]` entries did.
#[derive(Clone, Copy, Debug)]
pub struct RouteSelection<'a> {
    pub route: &'a Arc<Route>,
    /// `None` for a route without conditions.
    pub match_index: Option<usize>,
}

impl Matcher {
    /// A matcher serving `table` (start-up, full tables, tests).
    pub fn new(table: RouteTable) -> Self {
        let parts = TableParts::split(&table, &mut OrderHistory::default());
        let mut matcher = Matcher::default();
        // Parents come before children and every parent is in the table,
        // so nothing can be refused.
        let refused = matcher.apply(&TableDelta::everything(&parts));
        debug_assert!(refused.is_empty(), "{refused:?}");
        matcher.version = table.version;
        matcher
    }

    /// Selects the virtual host and route for `request`; `None` when no
    /// listener or virtual host serves it.
    pub fn select(&self, request: &RequestView<'_>) -> Option<Selection<'_>> {
        let listener = self.listeners.iter().find(|l| l.part.port == request.port)?;
        let virtual_host = listener.virtual_host(request.host)?;
        let route = virtual_host
            .routes
            .select(request)
            .map(|(placed, match_index)| RouteSelection { route: &placed.route, match_index });
        Some(Selection { listener: &listener.part, virtual_host: &virtual_host.part, route })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn set_version(&mut self, version: String) {
        self.version = version;
    }

    /// The stamp of the last effective edit (an upsert of an identical
    /// piece is none), unique across all matchers of the process: two
    /// matchers with the same revision hold the same pieces, so comparing
    /// a patched clone with its original costs nothing. Different
    /// revisions may still hold the same pieces ([`Matcher::same_content`]).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The first listener's mode (every listener carries the table's).
    pub fn path_normalization(&self) -> PathNormalizationMode {
        self.listeners.first().map(|l| l.part.path_normalization).unwrap_or_default()
    }

    /// The first listener's policies (every listener carries the table's).
    pub fn security(&self) -> &SecurityTable {
        self.listeners.first().map_or(&NO_SECURITY, |l| &l.part.security)
    }

    /// Endpoints of `host:port`.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    /// What runs behind the destination `host`, when the controller said.
    pub fn workload(&self, host: &str) -> Option<&Arc<WorkloadState>> {
        self.workloads.get(host)
    }

    pub fn route_count(&self) -> usize {
        self.route_places.len()
    }

    pub fn has_listener(&self, name: &str) -> bool {
        self.listener_position(name).is_some()
    }

    pub fn has_virtual_host(&self, name: &str) -> bool {
        self.host_parents.contains_key(name)
    }

    pub fn has_route(&self, name: &str) -> bool {
        self.route_places.contains_key(name)
    }

    /// Ports of the listeners, in listener order.
    pub fn listener_ports(&self) -> Vec<u16> {
        self.listeners.iter().map(|l| l.part.port).collect()
    }

    /// The listeners' parts, in order.
    pub fn listeners(&self) -> impl Iterator<Item = &Arc<ListenerPart>> {
        self.listeners.iter().map(|l| &l.part)
    }

    /// The listener piece `name`, as it would be sent.
    pub fn listener(&self, name: &str) -> Option<Placed<ListenerPart>> {
        let entry = &self.listeners[self.listener_position(name)?];
        Some(Placed { parent: String::new(), order: entry.key.order.to_string(), value: (*entry.part).clone() })
    }

    /// The virtual host piece `name`, as it would be sent.
    pub fn virtual_host(&self, name: &str) -> Option<Placed<VirtualHostPart>> {
        let parent = self.host_parents.get(name)?;
        let listener = &self.listeners[self.listener_position(parent)?];
        let entry = &listener.virtual_hosts[listener.position_of(name)?];
        Some(Placed { parent: parent.to_string(), order: entry.key.order.to_string(), value: (*entry.part).clone() })
    }

    /// The route piece `name`, as it would be sent.
    pub fn route(&self, name: &str) -> Option<Placed<Arc<Route>>> {
        let place = self.route_places.get(name)?;
        let parent = self.host_parents.get(&place.virtual_host)?;
        let listener = &self.listeners[self.listener_position(parent)?];
        let host = &listener.virtual_hosts[listener.position_of(&place.virtual_host)?];
        let placed = host.routes.get(&place.key)?;
        Some(Placed {
            parent: place.virtual_host.to_string(),
            order: place.key.order.to_string(),
            value: Arc::clone(&placed.route),
        })
    }

    /// The whole table, materialized in order (admin endpoints, tests):
    /// what [`TableParts::assemble`] makes of the same pieces.
    pub fn to_table(&self) -> RouteTable {
        let listeners = self
            .listeners
            .iter()
            .map(|listener| Listener {
                name: listener.part.name.clone(),
                port: listener.part.port,
                protocol: listener.part.protocol,
                tls: listener.part.tls.clone(),
                error_pages: listener.part.error_pages.clone(),
                virtual_hosts: listener
                    .virtual_hosts
                    .iter()
                    .map(|host| VirtualHost {
                        name: host.part.name.clone(),
                        domains: host.part.domains.clone(),
                        https_redirect: host.part.https_redirect,
                        routes: host.routes.routes().map(|placed| (*placed.route).clone()).collect(),
                    })
                    .collect(),
            })
            .collect();
        RouteTable {
            version: self.version.clone(),
            path_normalization: self.path_normalization(),
            listeners,
            clusters: self.clusters.iter().map(|(name, cluster)| (name.clone(), (**cluster).clone())).collect(),
            security: self.security().clone(),
        }
    }

    /// The clusters, by name (admin endpoints).
    pub fn clusters(&self) -> BTreeMap<&str, &Arc<Cluster>> {
        self.clusters.iter().map(|(name, cluster)| (name.as_str(), cluster)).collect()
    }

    /// Whether both serve the same pieces (the version aside). Shared parts
    /// compare by pointer, so an edited clone compares in about the size of
    /// the edit; unrelated matchers compare in O(n).
    pub fn same_content(&self, other: &Matcher) -> bool {
        let listeners_equal = self.listeners.len() == other.listeners.len()
            && self.listeners.iter().zip(&other.listeners).all(|(a, b)| {
                Arc::ptr_eq(a, b)
                    || (a.key == b.key
                        && a.part == b.part
                        && a.virtual_hosts.len() == b.virtual_hosts.len()
                        && a.virtual_hosts.iter().zip(&b.virtual_hosts).all(|(a, b)| {
                            Arc::ptr_eq(a, b) || (a.key == b.key && a.part == b.part && a.routes.same_routes(&b.routes))
                        }))
            });
        listeners_equal
            && (self.clusters.ptr_eq(&other.clusters) || self.clusters == other.clusters)
            && (self.workloads.ptr_eq(&other.workloads) || self.workloads == other.workloads)
    }

    fn listener_position(&self, name: &str) -> Option<usize> {
        self.listeners.iter().position(|l| &*l.key.name == name)
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matcher")
            .field("version", &self.version)
            .field("listeners", &self.listeners.iter().map(|l| &*l.key.name).collect::<Vec<_>>())
            .field("virtual_hosts", &self.host_parents.len())
            .field("routes", &self.route_places.len())
            .field("clusters", &self.clusters.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
