//! Unit tests of the matcher's edits; the equivalence with the ordered scan
//! is property-tested in `routing/tests/matcher_equivalence.rs`.

use std::sync::Arc;

use super::*;
use crate::table::{DirectResponse, ListenerProtocol, PathMatch, PathMatchKind, RetryPolicy, RouteAction, RouteMatch};

fn listener() -> Placed<ListenerPart> {
    Placed {
        parent: String::new(),
        order: "1".to_string(),
        value: ListenerPart {
            name: "http.80".to_string(),
            port: 80,
            protocol: ListenerProtocol::Http,
            tls: Vec::new(),
            path_normalization: PathNormalizationMode::default(),
            security: SecurityTable::default(),
            error_pages: None,
        },
    }
}

fn any_host() -> Placed<VirtualHostPart> {
    Placed {
        parent: "http.80".to_string(),
        order: "1".to_string(),
        value: VirtualHostPart { name: "*:80".to_string(), domains: vec!["*".to_string()], https_redirect: false },
    }
}

fn prefix_route(prefix: &str) -> Arc<Route> {
    Arc::new(Route {
        name: prefix.to_string(),
        provenance: Default::default(),
        matches: vec![RouteMatch {
            uri: Some(PathMatch { kind: PathMatchKind::Prefix(prefix.to_string()), ignore_case: false }),
            ..RouteMatch::default()
        }],
        action: RouteAction::DirectResponse(DirectResponse { status: 200, body: String::new() }),
        request_headers: Default::default(),
        response_headers: Default::default(),
        timeout: None,
        retries: RetryPolicy::default(),
        cors: None,
    })
}

fn view<'a>(path: &'a str, headers: &'a http::HeaderMap) -> RequestView<'a> {
    RequestView { port: 80, scheme: "http", method: "GET", authority: "a", host: "a", path, query: None, headers }
}

fn selected(matcher: &Matcher, path: &str) -> Option<String> {
    let headers = http::HeaderMap::new();
    matcher.select(&view(path, &headers))?.route.map(|r| r.route.name.clone())
}

fn tree_nodes(matcher: &Matcher) -> usize {
    matcher.listeners.iter().flat_map(|l| &l.virtual_hosts).map(|v| v.routes.tree_nodes()).sum()
}

fn notebook_prefix(i: usize) -> String {
    format!("/notebook/kubeflow-user-{:03}/nb-{i:05}/", i % 100)
}

#[test]
fn ten_thousand_routes_added_then_removed_leave_only_the_roots() {
    let mut matcher = Matcher::default();
    assert!(matcher.upsert_listener("http.80", listener()));
    assert_eq!(matcher.upsert_virtual_host("http.80/*:80", any_host()), Ok(true));
    let empty = tree_nodes(&matcher);
    assert_eq!(empty, 2, "two roots: case-sensitive and case-folding");
    let keys = crate::order_key::between("", None, 10_000).unwrap_or_default();
    for (i, order) in keys.iter().enumerate() {
        let piece = Placed {
            parent: "http.80/*:80".to_string(),
            order: order.clone(),
            value: prefix_route(&notebook_prefix(i)),
        };
        assert_eq!(matcher.upsert_route(&format!("r{i}"), piece), Ok(true));
    }
    assert_eq!(matcher.route_count(), 10_000);
    assert_eq!(selected(&matcher, "/notebook/kubeflow-user-042/nb-00042/lab").as_deref(), Some(&*notebook_prefix(42)));
    let full = matcher.clone();
    for i in 0..10_000 {
        assert!(matcher.remove_route(&format!("r{i}")));
    }
    assert_eq!(matcher.route_count(), 0);
    assert_eq!(tree_nodes(&matcher), empty);
    assert_eq!(selected(&matcher, "/notebook/kubeflow-user-042/nb-00042/lab"), None);
    // The clone taken before still serves every route.
    assert_eq!(full.route_count(), 10_000);
    assert_eq!(selected(&full, "/notebook/kubeflow-user-042/nb-00042/lab").as_deref(), Some(&*notebook_prefix(42)));
}

#[test]
fn a_child_of_an_unknown_parent_is_refused_and_the_rest_applies() {
    let mut delta = TableDelta::default();
    delta.listeners.insert("http.80".to_string(), Some(listener()));
    let mut orphan_host = any_host();
    orphan_host.parent = "http.81".to_string();
    delta.virtual_hosts.insert("http.81/*:81".to_string(), Some(orphan_host));
    delta.virtual_hosts.insert("http.80/*:80".to_string(), Some(any_host()));
    let route = |parent: &str| Placed { parent: parent.to_string(), order: "1".to_string(), value: prefix_route("/") };
    delta.routes.insert("http.80/*:80/a".to_string(), Some(route("http.80/*:80")));
    delta.routes.insert("http.81/*:81/a".to_string(), Some(route("http.81/*:81")));
    let mut matcher = Matcher::default();
    let refused = matcher.apply(&delta);
    assert_eq!(
        refused,
        vec![
            EditError::MissingListener { name: "http.81/*:81".to_string(), parent: "http.81".to_string() },
            EditError::MissingVirtualHost { name: "http.81/*:81/a".to_string(), parent: "http.81/*:81".to_string() },
        ]
    );
    assert_eq!(refused[1].to_string(), r#"route "http.81/*:81/a": its virtual host "http.81/*:81" is not known"#);
    assert_eq!(matcher.route_count(), 1);
    assert_eq!(selected(&matcher, "/x").as_deref(), Some("/"));
}

#[test]
fn removing_a_listener_removes_its_virtual_hosts_and_routes() {
    let mut matcher = Matcher::default();
    matcher.upsert_listener("http.80", listener());
    matcher.upsert_virtual_host("http.80/*:80", any_host()).ok();
    let piece = Placed { parent: "http.80/*:80".to_string(), order: "1".to_string(), value: prefix_route("/") };
    matcher.upsert_route("r", piece.clone()).ok();
    let revision = matcher.revision();
    assert_eq!(matcher.upsert_route("r", piece), Ok(false), "identical: no change");
    assert_eq!(matcher.revision(), revision);
    assert!(matcher.remove_listener("http.80"));
    assert!(!matcher.has_virtual_host("http.80/*:80"));
    assert_eq!(matcher.route_count(), 0);
    assert_eq!(matcher.to_table(), RouteTable::default());
    // Coming back, the listener is empty.
    matcher.upsert_listener("http.80", listener());
    assert_eq!(matcher.to_table().listeners[0].virtual_hosts.len(), 0);
}
