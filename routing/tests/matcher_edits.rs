//! Property test of the matcher's edits: random sequences of listener,
//! virtual host, route and cluster upserts and removals, applied to a
//! [`Matcher`] through [`Matcher::apply`]. After each step:
//!
//! (a) the matcher's table equals assembling the same pieces from scratch
//!     ([`TableParts::assemble`], the reference);
//! (b) it selects what the ordered scan of that table selects;
//! (c) every clone taken before (an older snapshot serving requests in
//!     flight) still holds and selects exactly what it did: structural
//!     sharing never leaks an edit into an old snapshot.

#[path = "support/generators.rs"]
mod generators;

use std::sync::Arc;

use generators::*;
use portico_routing::parts::{ListenerPart, Placed, TableDelta, TableParts, VirtualHostPart};
use portico_routing::security::SecurityTable;
use portico_routing::table::{Cluster, ListenerProtocol, PathNormalizationMode, Route, RouteTable};
use portico_routing::{EditError, Matcher};
use proptest::prelude::*;
use proptest::sample::select;

/// Two listeners share port 80: the first in order serves it.
const LISTENERS: &[(&str, u16)] = &[("http.80", 80), ("http.8080", 8080), ("http.80.b", 80)];
const VIRTUAL_HOSTS: &[&str] = &["v0", "v1", "v2", "v3"];
const ROUTES: usize = 12;
/// Few keys, so that reorders and equal keys under one parent happen.
const ORDER_KEYS: &[&str] = &["1", "2", "3", "5", "8", "8V", "V", "z"];
const CLUSTERS: &[&str] = &["a:80", "b:80", "c:8080"];

/// One change to one piece.
#[derive(Clone, Debug)]
enum Edit {
    Listener(usize, Option<(&'static str, PathNormalizationMode)>),
    VirtualHost(usize, Option<(usize, &'static str, Vec<&'static str>)>),
    Route(usize, Option<(usize, &'static str, Arc<Route>)>),
    Cluster(usize, Option<bool>),
}

fn normalization() -> impl Strategy<Value = PathNormalizationMode> {
    select(&[PathNormalizationMode::MergeSlashes, PathNormalizationMode::None][..])
}

fn edit() -> impl Strategy<Value = Edit> {
    let listener = prop::option::weighted(0.7, (select(ORDER_KEYS), normalization()));
    let host = prop::option::weighted(
        0.8,
        (0..LISTENERS.len(), select(ORDER_KEYS), prop::collection::vec(select(DOMAINS), 1..3)),
    );
    let route = prop::option::weighted(0.7, (0..VIRTUAL_HOSTS.len(), select(ORDER_KEYS), route().prop_map(Arc::new)));
    prop_oneof![
        1 => (0..LISTENERS.len(), listener).prop_map(|(i, piece)| Edit::Listener(i, piece)),
        2 => (0..VIRTUAL_HOSTS.len(), host).prop_map(|(i, piece)| Edit::VirtualHost(i, piece)),
        8 => (0..ROUTES, route).prop_map(|(i, piece)| Edit::Route(i, piece)),
        1 => (0..CLUSTERS.len(), prop::option::of(any::<bool>())).prop_map(|(i, piece)| Edit::Cluster(i, piece)),
    ]
}

fn listener_piece(index: usize, order: &str, path_normalization: PathNormalizationMode) -> Placed<ListenerPart> {
    let (name, port) = LISTENERS[index];
    let value = ListenerPart {
        name: name.to_string(),
        port,
        protocol: ListenerProtocol::Http,
        tls: Vec::new(),
        path_normalization,
        security: SecurityTable::default(),
        error_pages: None,
    };
    Placed { parent: String::new(), order: order.to_string(), value }
}

/// Every listener and virtual host, so that edits find parents.
fn seed() -> TableDelta {
    let mut delta = TableDelta::default();
    for (index, (name, _)) in LISTENERS.iter().enumerate() {
        let piece = listener_piece(index, ORDER_KEYS[index], PathNormalizationMode::MergeSlashes);
        delta.listeners.insert(name.to_string(), Some(piece));
    }
    for (index, name) in VIRTUAL_HOSTS.iter().enumerate() {
        let value = VirtualHostPart {
            name: name.to_string(),
            domains: vec![DOMAINS[index].to_string()],
            https_redirect: false,
        };
        let parent = LISTENERS[index % LISTENERS.len()].0.to_string();
        delta
            .virtual_hosts
            .insert(name.to_string(), Some(Placed { parent, order: ORDER_KEYS[index].to_string(), value }));
    }
    delta
}

fn delta_of(edits: &[Edit]) -> TableDelta {
    let mut delta = TableDelta::default();
    for edit in edits {
        match edit {
            Edit::Listener(index, piece) => {
                let piece = piece.map(|(order, mode)| listener_piece(*index, order, mode));
                delta.listeners.insert(LISTENERS[*index].0.to_string(), piece);
            }
            Edit::VirtualHost(index, piece) => {
                let piece = piece.as_ref().map(|(parent, order, domains)| Placed {
                    parent: LISTENERS[*parent].0.to_string(),
                    order: order.to_string(),
                    value: VirtualHostPart {
                        name: VIRTUAL_HOSTS[*index].to_string(),
                        domains: domains.iter().map(|d| d.to_string()).collect(),
                        https_redirect: false,
                    },
                });
                delta.virtual_hosts.insert(VIRTUAL_HOSTS[*index].to_string(), piece);
            }
            Edit::Route(index, piece) => {
                let piece = piece.as_ref().map(|(parent, order, route)| Placed {
                    parent: VIRTUAL_HOSTS[*parent].to_string(),
                    order: order.to_string(),
                    value: Arc::clone(route),
                });
                delta.routes.insert(format!("r{index}"), piece);
            }
            Edit::Cluster(index, piece) => {
                let piece = piece.map(|mesh_tls| Arc::new(Cluster { endpoints: Vec::new(), mesh_tls }));
                delta.clusters.insert(CLUSTERS[*index].to_string(), piece);
            }
        }
    }
    delta
}

/// The reference: `delta` applied to plain pieces, with the matcher's rules
/// (removals first; a removed parent takes its children; a child of an
/// unknown parent is refused). Returns the refusals it expects.
fn apply_to_parts(parts: &mut TableParts, delta: &TableDelta) -> Vec<EditError> {
    for (name, _) in delta.routes.iter().filter(|(_, p)| p.is_none()) {
        parts.routes.remove(name);
    }
    let mut removed_hosts: Vec<String> =
        delta.virtual_hosts.iter().filter(|(_, p)| p.is_none()).map(|(n, _)| n.clone()).collect();
    for (name, _) in delta.listeners.iter().filter(|(_, p)| p.is_none()) {
        parts.listeners.remove(name);
        removed_hosts.extend(parts.virtual_hosts.iter().filter(|(_, h)| h.parent == *name).map(|(n, _)| n.clone()));
    }
    for name in &removed_hosts {
        parts.virtual_hosts.remove(name);
        parts.routes.retain(|_, route| route.parent != *name);
    }
    for (name, _) in delta.clusters.iter().filter(|(_, p)| p.is_none()) {
        parts.clusters.remove(name);
    }
    let mut refused = Vec::new();
    for (name, piece) in delta.listeners.iter().filter_map(|(n, p)| Some((n, p.as_ref()?))) {
        parts.listeners.insert(name.clone(), piece.clone());
    }
    for (name, piece) in delta.virtual_hosts.iter().filter_map(|(n, p)| Some((n, p.as_ref()?))) {
        if parts.listeners.contains_key(&piece.parent) {
            parts.virtual_hosts.insert(name.clone(), piece.clone());
        } else {
            refused.push(EditError::MissingListener { name: name.clone(), parent: piece.parent.clone() });
        }
    }
    for (name, piece) in delta.routes.iter().filter_map(|(n, p)| Some((n, p.as_ref()?))) {
        if parts.virtual_hosts.contains_key(&piece.parent) {
            let value = (*piece.value).clone();
            parts
                .routes
                .insert(name.clone(), Placed { parent: piece.parent.clone(), order: piece.order.clone(), value });
        } else {
            refused.push(EditError::MissingVirtualHost { name: name.clone(), parent: piece.parent.clone() });
        }
    }
    for (name, cluster) in delta.clusters.iter().filter_map(|(n, p)| Some((n, p.as_ref()?))) {
        parts.clusters.insert(name.clone(), (**cluster).clone());
    }
    refused
}

/// What `matcher` answers to each request, checked against the scan of
/// `table` on the way.
fn answers(table: &RouteTable, matcher: &Matcher, requests: &[Request]) -> Result<Vec<String>, TestCaseError> {
    requests
        .iter()
        .map(|request| {
            assert_selects_like_naive(table, matcher, request)?;
            let answer = with_view(request, |view| {
                matcher.select(view).map(|s| {
                    (
                        s.listener.name.clone(),
                        s.virtual_host.name.clone(),
                        s.route.map(|r| (r.route.name.clone(), r.match_index)),
                    )
                })
            });
            Ok(format!("{answer:?}"))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn edits_keep_the_matcher_equal_to_its_pieces_and_old_clones_unchanged(
        steps in prop::collection::vec(prop::collection::vec(edit(), 1..5), 1..24),
        requests in prop::collection::vec(request(), 8..16),
    ) {
        let mut parts = TableParts::default();
        let mut matcher = Matcher::default();
        apply_to_parts(&mut parts, &seed());
        prop_assert_eq!(matcher.apply(&seed()), vec![]);
        // (clone, its table, its answers) taken after each step.
        let mut snapshots: Vec<(Matcher, RouteTable, Vec<String>)> = Vec::new();
        for (step, edits) in steps.iter().enumerate() {
            let delta = delta_of(edits);
            let expected_refusals = apply_to_parts(&mut parts, &delta);
            prop_assert_eq!(matcher.apply(&delta), expected_refusals, "step {}: {:?}", step, edits);
            let version = step.to_string();
            matcher.set_version(version.clone());
            let table = matcher.to_table();
            prop_assert_eq!(&table, &parts.assemble(&version), "step {}: {:?}", step, edits);
            prop_assert_eq!(matcher.route_count(), table.route_count());
            let probes: Vec<Request> = requests.iter().cloned().chain(aimed_requests(&table, &requests)).collect();
            let answered = answers(&table, &matcher, &probes)?;
            for (old, old_table, old_answers) in &snapshots {
                prop_assert_eq!(&old.to_table(), old_table, "an edit leaked into an older clone");
                let probes: Vec<Request> = requests.iter().cloned().chain(aimed_requests(old_table, &requests)).collect();
                prop_assert_eq!(&answers(old_table, old, &probes)?, old_answers, "an edit leaked into an older clone");
            }
            snapshots.push((matcher.clone(), table, answered));
        }
    }
}
