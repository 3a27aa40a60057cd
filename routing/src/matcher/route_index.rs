//! One virtual host's routes, in order and indexed by path, as persistent
//! structures: inserting or removing a route costs O(log n + path length)
//! and a clone (an older snapshot) never sees the edit.
//!
//! Prefix and exact path conditions live in radix trees (one case-sensitive,
//! one case-folding for `ignoreUriCase`); every other condition (regex, no
//! path condition) is an always-candidate. A lookup collects the candidates,
//! sorts them by route order and match entry, and returns the first that
//! [`naive::entry_matches`] accepts: exactly what the ordered scan returns,
//! as long as the index never misses a candidate.

use std::cmp::Ordering;
use std::sync::Arc;

use imbl::OrdMap;
use smallvec::SmallVec;

use super::radix::{PathKind, RadixTree};
use crate::naive;
use crate::request::RequestView;
use crate::table::{PathMatchKind, Route};

/// Marks the entry of a route without conditions.
pub(super) const NO_CONDITIONS: u32 = u32::MAX;

/// A piece's place among its siblings: its order key, then its name (order
/// keys are unique within a parent; the name only makes a duplicate sort
/// the way [`crate::parts::TableParts::assemble`] sorts it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SortKey {
    pub order: Arc<str>,
    pub name: Arc<str>,
}

impl SortKey {
    pub fn new(order: &str, name: &str) -> Self {
        Self { order: order.into(), name: name.into() }
    }
}

/// A route with its place: what every index entry points at.
#[derive(Debug)]
pub(crate) struct PlacedRoute {
    pub key: SortKey,
    pub route: Arc<Route>,
}

impl PartialEq for PlacedRoute {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && (Arc::ptr_eq(&self.route, &other.route) || self.route == other.route)
    }
}

/// One `match[]` entry of a route (or [`NO_CONDITIONS`]) in an index.
#[derive(Clone, Debug)]
pub(crate) struct EntryRef {
    pub route: Arc<PlacedRoute>,
    pub index: u32,
}

impl EntryRef {
    pub fn id(&self) -> (&SortKey, u32) {
        (&self.route.key, self.index)
    }
}

/// The routes of one virtual host, indexed for lookup.
#[derive(Clone, Debug)]
pub(crate) struct RouteIndex {
    routes: OrdMap<SortKey, Arc<PlacedRoute>>,
    case_sensitive: RadixTree,
    case_folding: RadixTree,
    /// Entries every request is a candidate for, in route order.
    always: OrdMap<(SortKey, u32), Arc<PlacedRoute>>,
}

impl Default for RouteIndex {
    fn default() -> Self {
        Self {
            routes: OrdMap::new(),
            case_sensitive: RadixTree::new(false),
            case_folding: RadixTree::new(true),
            always: OrdMap::new(),
        }
    }
}

/// Where one `match[]` entry is indexed.
enum Slot<'a> {
    Tree { fold_case: bool, kind: PathKind, key: &'a str },
    Always,
}

impl RouteIndex {
    /// The routes in order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<PlacedRoute>> {
        self.routes.values()
    }

    pub fn get(&self, key: &SortKey) -> Option<&Arc<PlacedRoute>> {
        self.routes.get(key)
    }

    /// Adds `placed` (replacing a route with the same key).
    pub fn insert(&mut self, placed: Arc<PlacedRoute>) {
        self.remove(&placed.key);
        self.routes.insert(placed.key.clone(), Arc::clone(&placed));
        for (index, slot) in slots(&placed.route) {
            match slot {
                Slot::Tree { fold_case, kind, key } => {
                    let entry = EntryRef { route: Arc::clone(&placed), index };
                    self.tree_mut(fold_case).insert(kind, key, entry);
                }
                Slot::Always => {
                    self.always.insert((placed.key.clone(), index), Arc::clone(&placed));
                }
            }
        }
    }

    /// Removes the route at `key` and every entry of it.
    pub fn remove(&mut self, key: &SortKey) -> Option<Arc<PlacedRoute>> {
        let placed = self.routes.remove(key)?;
        for (index, slot) in slots(&placed.route) {
            match slot {
                Slot::Tree { fold_case, kind, key: path } => {
                    self.tree_mut(fold_case).remove(kind, path, (key, index));
                }
                Slot::Always => {
                    self.always.remove(&(key.clone(), index));
                }
            }
        }
        Some(placed)
    }

    /// The first route in order that accepts `request`, and which of its
    /// `match[]` entries did (`None` for a route without conditions).
    pub fn select<'a>(&'a self, request: &RequestView<'_>) -> Option<(&'a Arc<PlacedRoute>, Option<usize>)> {
        let mut candidates: SmallVec<[(&'a Arc<PlacedRoute>, u32); 16]> = SmallVec::new();
        if !self.always.is_empty() {
            candidates.extend(self.always.iter().map(|((_, index), placed)| (placed, *index)));
        }
        let path = request.path.as_bytes();
        self.case_sensitive.candidates(path, |entry| candidates.push((&entry.route, entry.index)));
        if !self.case_folding.is_empty() {
            self.case_folding.candidates(path, |entry| candidates.push((&entry.route, entry.index)));
        }
        candidates.sort_unstable_by(compare);
        candidates.into_iter().find_map(|(placed, index)| {
            if index == NO_CONDITIONS {
                return Some((placed, None));
            }
            let condition = placed.route.matches.get(index as usize)?;
            naive::entry_matches(condition, request).then_some((placed, Some(index as usize)))
        })
    }

    /// Whether both hold the same routes in the same places.
    pub fn same_routes(&self, other: &RouteIndex) -> bool {
        self.routes.ptr_eq(&other.routes) || self.routes == other.routes
    }

    fn tree_mut(&mut self, fold_case: bool) -> &mut RadixTree {
        if fold_case { &mut self.case_folding } else { &mut self.case_sensitive }
    }

    /// Number of radix tree nodes, roots included.
    #[cfg(test)]
    pub fn tree_nodes(&self) -> usize {
        self.case_sensitive.node_count() + self.case_folding.node_count()
    }
}

fn compare(a: &(&Arc<PlacedRoute>, u32), b: &(&Arc<PlacedRoute>, u32)) -> Ordering {
    a.0.key.cmp(&b.0.key).then(a.1.cmp(&b.1))
}

/// Where each `match[]` entry of `route` is indexed.
fn slots(route: &Route) -> impl Iterator<Item = (u32, Slot<'_>)> {
    let no_conditions = route.matches.is_empty().then_some((NO_CONDITIONS, Slot::Always));
    let entries = route.matches.iter().enumerate().map(|(position, entry)| {
        // Positions beyond u32 cannot occur (a route holds a handful); the
        // saturation only keeps this total.
        let index = u32::try_from(position).unwrap_or(NO_CONDITIONS - 1);
        let slot = match &entry.uri {
            Some(uri) => match &uri.kind {
                PathMatchKind::Prefix(key) => Slot::Tree { fold_case: uri.ignore_case, kind: PathKind::Prefix, key },
                PathMatchKind::Exact(key) => Slot::Tree { fold_case: uri.ignore_case, kind: PathKind::Exact, key },
                PathMatchKind::Regex(_) => Slot::Always,
            },
            None => Slot::Always,
        };
        (index, slot)
    });
    no_conditions.into_iter().chain(entries)
}

/// An entry for a condition-less route named `name`, for the radix tests.
#[cfg(test)]
pub(super) fn test_entry(name: &str, index: u32) -> EntryRef {
    let route = Route {
        name: name.to_string(),
        provenance: Default::default(),
        matches: Vec::new(),
        action: crate::table::RouteAction::DirectResponse(crate::table::DirectResponse {
            status: 200,
            body: String::new(),
        }),
        request_headers: Default::default(),
        response_headers: Default::default(),
        timeout: None,
        retries: Default::default(),
        cors: None,
    };
    EntryRef { route: Arc::new(PlacedRoute { key: SortKey::new("1", name), route: Arc::new(route) }), index }
}
