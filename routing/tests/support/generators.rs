//! Generators and the comparison shared by the matcher's property tests:
//! route tables, pieces and requests built from small pools (path segments,
//! domains, header names and values) so that requests hit prefixes, exact
//! paths, wildcard domains and conditions often, and near-misses are common
//! too; and the check that a [`Matcher`] selects what [`naive::select`]
//! selects.

#![allow(dead_code)] // each test crate uses part of it

use std::sync::LazyLock;

use portico_routing::naive;
use portico_routing::pattern::Pattern;
use portico_routing::request::host_of;
use portico_routing::table::{
    DirectResponse, HeaderMatch, PathMatch, PathMatchKind, Provenance, QueryParamMatch, RetryPolicy, Route,
    RouteAction, RouteMatch, RouteTable, ValueMatch,
};
use portico_routing::{Matcher, RequestView, Selection};
use proptest::prelude::*;
use proptest::sample::select;

/// Path segments for both route paths and request paths; `""` makes `//`
/// and trailing slashes, the upper-case ones exercise `ignoreUriCase`.
pub const SEGMENTS: &[&str] = &["", "a", "b", "A", "ab", "notebook", "NoteBook", "ns", "nb-1", "x.y"];
pub const DOMAINS: &[&str] = &["a.com", "b.a.com", "*.a.com", "*.b.a.com", "*.com", "*", "x.org", "*.org", "c.b.a.com"];
/// Request authorities, as sent: case and port variants, a trailing dot,
/// IPv6, and strings no domain covers.
pub const AUTHORITIES: &[&str] = &[
    "a.com",
    "A.COM:80",
    "b.a.com",
    "B.a.Com:8080",
    "c.b.a.com",
    "d.c.b.a.com",
    "x.a.com.",
    "x.org",
    "y.x.org:443",
    "com",
    "other.net",
    "[::1]:80",
    "",
    "*.a.com",
    ".a.com",
];
pub const PORTS: &[u16] = &[80, 443, 8080];
pub const REQUEST_PORTS: &[u16] = &[80, 443, 8080, 9090];
pub const VALUES: &[&str] = &["", "v", "v1", "v12", "GET", "POST", "x", "api.a.com"];
pub const HEADER_NAMES: &[&str] = &["x-a", "x-b", "x-c"];
pub const QUERIES: &[&str] = &["a=1", "b", "a=v1&b=x", "b=&a=v", "a", "c=1&a=GET"];

/// Regexes known to be valid, compiled once (compiling is the slow part).
pub static PATH_REGEXES: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    [".*", "/a/.*", "/[ab]+(/.*)?", "/notebook/[^/]+/[^/]+/.*", "(?i)/a.*", "/x\\.y|/a/b", "/A?", "/.*", "^.*$"]
        .iter()
        .map(|source| Pattern::new(source).expect("valid regex"))
        .collect()
});
pub static VALUE_REGEXES: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    ["v[0-9]+", ".*", "GET|POST", "[a-z.]+\\.com(:[0-9]+)?", "x?"]
        .iter()
        .map(|source| Pattern::new(source).expect("valid regex"))
        .collect()
});

pub fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(select(SEGMENTS), 0..5).prop_map(|segments| format!("/{}", segments.join("/")))
}

pub fn path_match() -> impl Strategy<Value = PathMatch> {
    let kind = prop_oneof![
        4 => path().prop_map(PathMatchKind::Prefix),
        2 => path().prop_map(PathMatchKind::Exact),
        1 => (0..PATH_REGEXES.len()).prop_map(|i| PathMatchKind::Regex(PATH_REGEXES[i].clone())),
    ];
    (kind, prop::bool::weighted(0.25)).prop_map(|(kind, ignore_case)| PathMatch { kind, ignore_case })
}

pub fn value_match() -> impl Strategy<Value = ValueMatch> {
    prop_oneof![
        select(VALUES).prop_map(|v| ValueMatch::Exact(v.to_string())),
        select(VALUES).prop_map(|v| ValueMatch::Prefix(v.to_string())),
        (0..VALUE_REGEXES.len()).prop_map(|i| ValueMatch::Regex(VALUE_REGEXES[i].clone())),
    ]
}

pub fn route_match() -> impl Strategy<Value = RouteMatch> {
    let header = (select(HEADER_NAMES), prop::option::of(value_match()), prop::bool::weighted(0.3))
        .prop_map(|(name, value, invert)| HeaderMatch { name: name.to_string(), value, invert });
    let query = (select(&["a", "b", "c"][..]), prop::option::of(value_match()))
        .prop_map(|(name, value)| QueryParamMatch { name: name.to_string(), value });
    (
        prop::option::weighted(0.85, path_match()),
        prop::option::weighted(0.1, value_match()),
        prop::option::weighted(0.1, value_match()),
        prop::option::weighted(0.1, value_match()),
        prop::collection::vec(header, 0..3),
        prop::collection::vec(query, 0..2),
        prop::option::weighted(0.1, select(REQUEST_PORTS)),
    )
        .prop_map(|(uri, scheme, method, authority, headers, query_params, port)| RouteMatch {
            uri,
            scheme,
            method,
            authority,
            headers,
            query_params,
            port,
        })
}

pub fn route() -> impl Strategy<Value = Route> {
    // Mostly one or two entries; sometimes none (a condition-less route).
    let matches = prop_oneof![1 => Just(Vec::new()), 8 => prop::collection::vec(route_match(), 1..4)];
    (matches, 200u16..210).prop_map(|(matches, status)| Route {
        name: format!("r{status}"),
        provenance: Provenance::default(),
        matches,
        action: RouteAction::DirectResponse(DirectResponse { status, body: String::new() }),
        request_headers: Default::default(),
        response_headers: Default::default(),
        timeout: None,
        retries: RetryPolicy::default(),
        cors: None,
    })
}

/// A request; owned so that [`RequestView`] can borrow from it.
#[derive(Debug, Clone)]
pub struct Request {
    pub port: u16,
    pub scheme: &'static str,
    pub method: &'static str,
    pub authority: &'static str,
    pub path: String,
    pub query: Option<&'static str>,
    pub headers: Vec<(String, String)>,
}

pub fn request() -> impl Strategy<Value = Request> {
    let header = (select(HEADER_NAMES), select(VALUES)).prop_map(|(n, v)| (n.to_string(), v.to_string()));
    (
        select(REQUEST_PORTS),
        select(&["http", "https"][..]),
        select(&["GET", "POST", "get", "x"][..]),
        select(AUTHORITIES),
        path(),
        prop::option::of(select(QUERIES)),
        prop::collection::vec(header, 0..4),
    )
        .prop_map(|(port, scheme, method, authority, path, query, headers)| Request {
            port,
            scheme,
            method,
            authority,
            path,
            query,
            headers,
        })
}

/// Checks that `matcher` selects what the ordered scan of `table` selects:
/// the same listener, virtual host, route (by value) and match entry.
/// Returns whether a route was selected.
pub fn assert_selects_like_naive(
    table: &RouteTable,
    matcher: &Matcher,
    request: &Request,
) -> Result<bool, TestCaseError> {
    with_view(request, |view| {
        let selected = matcher.select(view);
        let reference = naive::select(table, view);
        compare(table, request, selected, reference)
    })
}

/// Runs `f` on a view of `request`.
pub fn with_view<T>(request: &Request, f: impl FnOnce(&RequestView<'_>) -> T) -> T {
    let mut headers = http::HeaderMap::new();
    for (name, value) in &request.headers {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
            http::HeaderValue::from_str(value).expect("valid value"),
        );
    }
    let host = host_of(request.authority);
    let view = RequestView {
        port: request.port,
        scheme: request.scheme,
        method: request.method,
        authority: request.authority,
        host: &host,
        path: &request.path,
        query: request.query,
        headers: &headers,
    };
    f(&view)
}

fn compare(
    table: &RouteTable,
    request: &Request,
    selected: Option<Selection<'_>>,
    reference: Option<naive::SelectionIndex>,
) -> Result<bool, TestCaseError> {
    let (Some(selected), Some((l, v, route))) = (selected, reference) else {
        prop_assert!(
            selected.is_none() && reference.is_none(),
            "request {:?}: {:?} vs {:?}",
            request,
            selected,
            reference
        );
        return Ok(false);
    };
    let listener = &table.listeners[l];
    let virtual_host = &listener.virtual_hosts[v];
    prop_assert_eq!(&selected.listener.name, &listener.name, "request {:?}", request);
    prop_assert_eq!(&selected.virtual_host.name, &virtual_host.name, "request {:?}", request);
    match (selected.route, route) {
        (None, None) => Ok(false),
        (Some(chosen), Some((r, match_index))) => {
            prop_assert_eq!(&**chosen.route, &virtual_host.routes[r], "request {:?}", request);
            prop_assert_eq!(chosen.match_index, match_index, "request {:?}", request);
            Ok(true)
        }
        (chosen, reference) => {
            prop_assert!(false, "request {:?}: matcher {:?}, scan {:?}", request, chosen, reference);
            Ok(false)
        }
    }
}

/// Variants of `requests` aimed at the table's own paths, so that deep
/// prefixes and exact paths match (random paths rarely reach them).
pub fn aimed_requests(table: &RouteTable, requests: &[Request]) -> Vec<Request> {
    let aimed_paths = table.listeners.iter().flat_map(|listener| {
        listener.virtual_hosts.iter().flat_map(|v| &v.routes).flat_map(|r| &r.matches).filter_map(|entry| match &entry
            .uri
        {
            Some(PathMatch { kind: PathMatchKind::Prefix(p) | PathMatchKind::Exact(p), .. }) => {
                Some((listener.port, p))
            }
            _ => None,
        })
    });
    let mut aimed = Vec::new();
    for ((port, path), request) in aimed_paths.take(64).zip(requests.iter().cycle()) {
        for variant in [path.clone(), format!("{path}a/b"), path.to_ascii_uppercase()] {
            aimed.push(Request { port, path: variant, ..request.clone() });
        }
    }
    aimed
}
