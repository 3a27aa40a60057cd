//! Property tests: the [`Matcher`] selects exactly what the reference
//! ordered scan [`naive::select`] selects (same listener, virtual host,
//! route and match entry) for random route tables and random requests, and
//! path normalization leaves no ambiguous spelling behind and is
//! idempotent. Edits of a matcher are property-tested in `matcher_edits.rs`.
//!
//! [`naive::select`]: portico_routing::naive::select

#[path = "support/generators.rs"]
mod generators;

use std::sync::atomic::{AtomicUsize, Ordering};

use generators::*;
use portico_routing::table::{Listener, ListenerProtocol, RouteTable, VirtualHost};
use portico_routing::{Matcher, PathNormalization, normalize};
use proptest::prelude::*;
use proptest::sample::select;

/// Below this share of requests that select a route, the generators have
/// drifted: a matcher that matches nothing would pass.
const MIN_SELECTED_SHARE: f64 = 0.2;

fn virtual_host() -> impl Strategy<Value = VirtualHost> {
    (prop::collection::vec(select(DOMAINS), 1..3), prop::collection::vec(route(), 0..12)).prop_map(
        |(domains, routes)| VirtualHost {
            name: domains.join(","),
            domains: domains.into_iter().map(str::to_string).collect(),
            https_redirect: false,
            routes,
        },
    )
}

/// Listeners on distinct ports and virtual hosts with distinct names, as
/// `translate` makes them (pieces are named after them).
fn table() -> impl Strategy<Value = RouteTable> {
    let listener =
        (select(PORTS), prop::collection::vec(virtual_host(), 1..5)).prop_map(|(port, mut virtual_hosts)| {
            for (index, host) in virtual_hosts.iter_mut().enumerate() {
                host.name = format!("{index}:{}", host.name);
            }
            Listener {
                name: format!("http.{port}"),
                port,
                protocol: ListenerProtocol::Http,
                tls: vec![],
                error_pages: None,
                virtual_hosts,
            }
        });
    prop::collection::vec(listener, 1..4).prop_map(|mut listeners| {
        let mut ports = std::collections::HashSet::new();
        listeners.retain(|listener| ports.insert(listener.port));
        RouteTable { listeners, ..RouteTable::default() }
    })
}

#[test]
fn compiled_matcher_selects_what_the_ordered_scan_selects() {
    static REQUESTS: AtomicUsize = AtomicUsize::new(0);
    static SELECTED: AtomicUsize = AtomicUsize::new(0);
    let config = ProptestConfig { cases: 2000, ..ProptestConfig::default() };
    proptest!(config, |(table in table(), requests in prop::collection::vec(request(), 1..16))| {
        let matcher = Matcher::new(table.clone());
        prop_assert_eq!(&matcher.to_table(), &table);
        let aimed = aimed_requests(&table, &requests);
        for request in requests.iter().chain(&aimed) {
            let selected = assert_selects_like_naive(&table, &matcher, request)?;
            REQUESTS.fetch_add(1, Ordering::Relaxed);
            SELECTED.fetch_add(usize::from(selected), Ordering::Relaxed);
        }
    });
    let (requests, selected) = (REQUESTS.load(Ordering::Relaxed), SELECTED.load(Ordering::Relaxed));
    let share = selected as f64 / requests.max(1) as f64;
    assert!(share >= MIN_SELECTED_SHARE, "only {selected} of {requests} requests selected a route");
}

/// Tokens of request targets: separators, dot segments (plain and
/// encoded), encoded slashes and backslashes, escapes of unreserved and
/// reserved characters, a query.
const TARGET_TOKENS: &[&str] =
    &["/", "//", ".", "..", "a", "B", "%2e", "%2E", "%2F", "%2f", "%5C", "%41", "%7e", "%25", "%3F", "?", "~", "-"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn merge_slashes_leaves_one_unambiguous_idempotent_path(
        tokens in prop::collection::vec(select(TARGET_TOKENS), 0..14),
    ) {
        let target = format!("/{}", tokens.concat());
        let Ok(normalized) = normalize(&target, PathNormalization::MergeSlashes) else {
            // Refusing is always allowed (`..` above the root and the like).
            return Ok(());
        };
        let path = normalized.path.as_str();
        prop_assert!(path.starts_with('/'), "{:?} -> {:?}", target, path);
        for ambiguous in ["//", "/./", "/../"] {
            prop_assert!(!path.contains(ambiguous), "{:?} -> {:?} contains {:?}", target, path, ambiguous);
        }
        prop_assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{:?} -> {:?}", target, path);
        // Decoded unreserved characters never stay encoded.
        for escape in ["%2E", "%41", "%7E", "%2e", "%7e"] {
            prop_assert!(!path.contains(escape), "{:?} -> {:?} keeps {:?}", target, path, escape);
        }
        let again = normalize(&normalized.path_and_query(), PathNormalization::MergeSlashes);
        prop_assert_eq!(again.as_ref(), Ok(&normalized), "{:?} is not idempotent", target);
    }
}
