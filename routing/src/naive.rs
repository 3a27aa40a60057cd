//! The reference matcher: an ordered scan, exactly as the semantics read.
//!
//! It is deliberately simple and slow (O(routes)); [`crate::Matcher`] must
//! return exactly what this returns, which the property tests check.

use crate::request::RequestView;
use crate::table::{PathMatch, PathMatchKind, Route, RouteMatch, RouteTable};
use crate::translate::covers;

/// `(listener, virtual host, Some((route, match entry)))` indices; the match
/// entry is `None` for a route without conditions.
pub type SelectionIndex = (usize, usize, Option<(usize, Option<usize>)>);

/// Selects by scanning everything in order.
pub fn select(table: &RouteTable, request: &RequestView<'_>) -> Option<SelectionIndex> {
    let listener_index = table.listeners.iter().position(|l| l.port == request.port)?;
    let listener = &table.listeners[listener_index];
    let candidates =
        || listener.virtual_hosts.iter().enumerate().flat_map(|(i, v)| v.domains.iter().map(move |d| (i, d.as_str())));
    let exact = candidates().find(|(_, d)| !d.starts_with('*') && *d == request.host);
    let wildcard = candidates()
        .filter(|(_, d)| d.starts_with("*.") && covers(d, request.host))
        .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(&a.0)));
    let any = candidates().find(|(_, d)| *d == "*");
    let (vhost_index, _) = exact.or(wildcard).or(any)?;
    let routes = &listener.virtual_hosts[vhost_index].routes;
    let route = routes.iter().enumerate().find_map(|(i, route)| route_matches(route, request).map(|m| (i, m)));
    Some((listener_index, vhost_index, route))
}

/// `Some(match entry)` if `route` accepts `request`.
pub fn route_matches(route: &Route, request: &RequestView<'_>) -> Option<Option<usize>> {
    if route.matches.is_empty() {
        return Some(None);
    }
    route.matches.iter().position(|m| entry_matches(m, request)).map(Some)
}

/// Whether every condition of one `match[]` entry holds.
pub fn entry_matches(entry: &RouteMatch, request: &RequestView<'_>) -> bool {
    if entry.uri.as_ref().is_some_and(|uri| !path_matches(uri, request.path)) {
        return false;
    }
    if entry.port.is_some_and(|port| port != request.port) {
        return false;
    }
    let simple =
        [(&entry.method, request.method), (&entry.scheme, request.scheme), (&entry.authority, request.authority)];
    if simple.iter().any(|(condition, value)| condition.as_ref().is_some_and(|c| !c.matches(value))) {
        return false;
    }
    for header in &entry.headers {
        let value = request.headers.header(&header.name);
        let holds = match (&header.value, value.as_deref()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(condition), Some(value)) => condition.matches(value),
        };
        if holds == header.invert {
            return false;
        }
    }
    entry.query_params.iter().all(|param| match (request.query_param(&param.name), &param.value) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(value), Some(condition)) => condition.matches(value),
    })
}

/// Istio's path conditions on the normalized path.
pub fn path_matches(condition: &PathMatch, path: &str) -> bool {
    match (&condition.kind, condition.ignore_case) {
        (PathMatchKind::Exact(exact), false) => path == exact,
        (PathMatchKind::Exact(exact), true) => path.eq_ignore_ascii_case(exact),
        (PathMatchKind::Prefix(prefix), false) => path.starts_with(prefix.as_str()),
        (PathMatchKind::Prefix(prefix), true) => {
            path.len() >= prefix.len() && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
        (PathMatchKind::Regex(pattern), _) => pattern.is_full_match(path),
    }
}
