//! The compiled matcher: the route table indexed so that a lookup costs
//! O(path length + host labels), whatever the number of routes.
//!
//! Per listener, virtual hosts are found through a map of exact names and a
//! map of wildcard suffixes (tried longest first, one per host label). Per
//! virtual host, prefix and exact path conditions live in radix trees; every
//! other condition (regex, no path condition) is an always-candidate. The
//! candidates are then checked in route order with the very same
//! [`naive::entry_matches`] the reference scan uses, so both agree by
//! construction as long as the index never misses a candidate, which the
//! property tests check.

mod radix;

use std::collections::HashMap;

use smallvec::SmallVec;

use self::radix::{EntryRef, RadixTree};
use crate::naive::{self, SelectionIndex};
use crate::request::RequestView;
use crate::table::{Listener, PathMatchKind, Route, RouteTable, VirtualHost};

/// Marks a route without conditions in an [`EntryRef`].
const NO_CONDITIONS: u32 = u32::MAX;

/// A route table compiled for lookup. Built off the hot path, then shared
/// read-only by every request (it is `Send + Sync`).
pub struct Matcher {
    table: RouteTable,
    listeners: Vec<ListenerIndex>,
}

struct ListenerIndex {
    port: u16,
    exact: HashMap<String, usize>,
    /// `*.a.com` stored as `.a.com`.
    wildcard: HashMap<String, usize>,
    any: Option<usize>,
    virtual_hosts: Vec<RouteIndex>,
}

struct RouteIndex {
    case_sensitive: RadixTree,
    case_folding: RadixTree,
    /// Entries every request is a candidate for, in route order.
    always: Vec<EntryRef>,
}

/// The outcome of a lookup.
#[derive(Clone, Copy, Debug)]
pub struct Selection<'a> {
    pub listener: &'a Listener,
    pub virtual_host: &'a VirtualHost,
    /// `None` when the host is served but no route matched (404).
    pub route: Option<RouteSelection<'a>>,
}

/// The route that matched and which of its `match[]` entries did.
#[derive(Clone, Copy, Debug)]
pub struct RouteSelection<'a> {
    pub route: &'a Route,
    /// `None` for a route without conditions.
    pub match_index: Option<usize>,
}

impl Matcher {
    /// Compiles `table`.
    pub fn new(table: RouteTable) -> Self {
        let listeners = table.listeners.iter().map(index_listener).collect();
        Self { table, listeners }
    }

    /// The table this matcher was compiled from.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// Selects the virtual host and route for `request`; `None` when no
    /// listener or virtual host serves it.
    pub fn select(&self, request: &RequestView<'_>) -> Option<Selection<'_>> {
        let (listener, virtual_host, route) = self.select_index(request)?;
        let listener = &self.table.listeners[listener];
        let virtual_host = &listener.virtual_hosts[virtual_host];
        let route =
            route.map(|(route, match_index)| RouteSelection { route: &virtual_host.routes[route], match_index });
        Some(Selection { listener, virtual_host, route })
    }

    /// Like [`Matcher::select`], as indices (comparable with [`naive::select`]).
    pub fn select_index(&self, request: &RequestView<'_>) -> Option<SelectionIndex> {
        let listener_index = self.listeners.iter().position(|l| l.port == request.port)?;
        let listener = &self.listeners[listener_index];
        let vhost_index = listener.virtual_host(request.host)?;
        let routes = &self.table.listeners[listener_index].virtual_hosts[vhost_index].routes;
        let index = &listener.virtual_hosts[vhost_index];

        let mut candidates: SmallVec<[EntryRef; 16]> = SmallVec::new();
        candidates.extend_from_slice(&index.always);
        let path = request.path.as_bytes();
        index.case_sensitive.candidates(path, |entry| candidates.push(entry));
        if !index.case_folding.is_empty() {
            index.case_folding.candidates(path, |entry| candidates.push(entry));
        }
        candidates.sort_unstable();
        let route = candidates.into_iter().find_map(|(route, entry)| {
            if entry == NO_CONDITIONS {
                return Some((route as usize, None));
            }
            let condition = &routes[route as usize].matches[entry as usize];
            naive::entry_matches(condition, request).then_some((route as usize, Some(entry as usize)))
        });
        Some((listener_index, vhost_index, route))
    }
}

impl ListenerIndex {
    fn virtual_host(&self, host: &str) -> Option<usize> {
        if let Some(index) = self.exact.get(host) {
            return Some(*index);
        }
        // `a.b.c` tries `.b.c` then `.c`: the longest wildcard wins.
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            let suffix = &rest[dot..];
            if (dot > 0 || rest.len() < host.len())
                && let Some(index) = self.wildcard.get(suffix)
            {
                return Some(*index);
            }
            rest = &rest[dot + 1..];
        }
        self.any
    }
}

fn index_listener(listener: &Listener) -> ListenerIndex {
    let mut index = ListenerIndex {
        port: listener.port,
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        any: None,
        virtual_hosts: Vec::with_capacity(listener.virtual_hosts.len()),
    };
    for (position, virtual_host) in listener.virtual_hosts.iter().enumerate() {
        for domain in &virtual_host.domains {
            // First one wins, as in the ordered scan.
            if domain == "*" {
                index.any.get_or_insert(position);
            } else if let Some(suffix) = domain.strip_prefix('*') {
                index.wildcard.entry(suffix.to_string()).or_insert(position);
            } else {
                index.exact.entry(domain.clone()).or_insert(position);
            }
        }
        index.virtual_hosts.push(index_routes(&virtual_host.routes));
    }
    index
}

fn index_routes(routes: &[Route]) -> RouteIndex {
    let mut index =
        RouteIndex { case_sensitive: RadixTree::new(false), case_folding: RadixTree::new(true), always: Vec::new() };
    for (route_position, route) in routes.iter().enumerate() {
        let route_ref = u32::try_from(route_position).unwrap_or(u32::MAX - 1);
        if route.matches.is_empty() {
            index.always.push((route_ref, NO_CONDITIONS));
            continue;
        }
        for (entry_position, entry) in route.matches.iter().enumerate() {
            let entry_ref = (route_ref, u32::try_from(entry_position).unwrap_or(u32::MAX - 1));
            let tree = match &entry.uri {
                Some(uri) if uri.ignore_case => &mut index.case_folding,
                _ => &mut index.case_sensitive,
            };
            match entry.uri.as_ref().map(|uri| &uri.kind) {
                Some(PathMatchKind::Prefix(prefix)) => tree.insert_prefix(prefix, entry_ref),
                Some(PathMatchKind::Exact(exact)) => tree.insert_exact(exact, entry_ref),
                Some(PathMatchKind::Regex(_)) | None => index.always.push(entry_ref),
            }
        }
    }
    index
}
