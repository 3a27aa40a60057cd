//! Property tests: the compiled [`Matcher`] selects exactly what the
//! reference ordered scan [`naive::select`] selects (same listener, virtual
//! host, route and match entry) for random route tables and random requests,
//! and path normalization leaves no ambiguous spelling behind and is
//! idempotent.
//!
//! Tables and requests are built from small pools (path segments, domains,
//! header names and values) so that requests hit prefixes, exact paths,
//! wildcard domains and conditions often, and near-misses are common too.

use std::sync::LazyLock;

use portico_routing::naive;
use portico_routing::pattern::Pattern;
use portico_routing::request::host_of;
use portico_routing::table::{
    DirectResponse, HeaderMatch, Listener, ListenerProtocol, PathMatch, PathMatchKind, Provenance, QueryParamMatch,
    RetryPolicy, Route, RouteAction, RouteMatch, RouteTable, ValueMatch, VirtualHost,
};
use portico_routing::{Matcher, PathNormalization, RequestView, normalize};
use proptest::prelude::*;
use proptest::sample::select;

/// Path segments for both route paths and request paths; `""` makes `//`
/// and trailing slashes, the upper-case ones exercise `ignoreUriCase`.
const SEGMENTS: &[&str] = &["", "a", "b", "A", "ab", "notebook", "NoteBook", "ns", "nb-1", "x.y"];
const DOMAINS: &[&str] = &["a.com", "b.a.com", "*.a.com", "*.b.a.com", "*.com", "*", "x.org", "*.org", "c.b.a.com"];
/// Request authorities, as sent: case and port variants, a trailing dot,
/// IPv6, and strings no domain covers.
const AUTHORITIES: &[&str] = &[
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
const PORTS: &[u16] = &[80, 443, 8080];
const REQUEST_PORTS: &[u16] = &[80, 443, 8080, 9090];
const VALUES: &[&str] = &["", "v", "v1", "v12", "GET", "POST", "x", "api.a.com"];
const HEADER_NAMES: &[&str] = &["x-a", "x-b", "x-c"];
const QUERIES: &[&str] = &["a=1", "b", "a=v1&b=x", "b=&a=v", "a", "c=1&a=GET"];

/// Regexes known to be valid, compiled once (compiling is the slow part).
static PATH_REGEXES: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    [".*", "/a/.*", "/[ab]+(/.*)?", "/notebook/[^/]+/[^/]+/.*", "(?i)/a.*", "/x\\.y|/a/b", "/A?", "/.*", "^.*$"]
        .iter()
        .map(|source| Pattern::new(source).expect("valid regex"))
        .collect()
});
static VALUE_REGEXES: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    ["v[0-9]+", ".*", "GET|POST", "[a-z.]+\\.com(:[0-9]+)?", "x?"]
        .iter()
        .map(|source| Pattern::new(source).expect("valid regex"))
        .collect()
});

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(select(SEGMENTS), 0..5).prop_map(|segments| format!("/{}", segments.join("/")))
}

fn path_match() -> impl Strategy<Value = PathMatch> {
    let kind = prop_oneof![
        4 => path().prop_map(PathMatchKind::Prefix),
        2 => path().prop_map(PathMatchKind::Exact),
        1 => (0..PATH_REGEXES.len()).prop_map(|i| PathMatchKind::Regex(PATH_REGEXES[i].clone())),
    ];
    (kind, prop::bool::weighted(0.25)).prop_map(|(kind, ignore_case)| PathMatch { kind, ignore_case })
}

fn value_match() -> impl Strategy<Value = ValueMatch> {
    prop_oneof![
        select(VALUES).prop_map(|v| ValueMatch::Exact(v.to_string())),
        select(VALUES).prop_map(|v| ValueMatch::Prefix(v.to_string())),
        (0..VALUE_REGEXES.len()).prop_map(|i| ValueMatch::Regex(VALUE_REGEXES[i].clone())),
    ]
}

fn route_match() -> impl Strategy<Value = RouteMatch> {
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

fn route() -> impl Strategy<Value = Route> {
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

fn table() -> impl Strategy<Value = RouteTable> {
    let listener = (select(PORTS), prop::collection::vec(virtual_host(), 1..5)).prop_map(|(port, virtual_hosts)| {
        Listener { name: format!("http.{port}"), port, protocol: ListenerProtocol::Http, tls: vec![], virtual_hosts }
    });
    prop::collection::vec(listener, 1..4).prop_map(|listeners| RouteTable { listeners, ..RouteTable::default() })
}

/// A request; owned so that [`RequestView`] can borrow from it.
#[derive(Debug, Clone)]
struct Request {
    port: u16,
    scheme: &'static str,
    method: &'static str,
    authority: &'static str,
    path: String,
    query: Option<&'static str>,
    headers: Vec<(String, String)>,
}

fn request() -> impl Strategy<Value = Request> {
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

fn assert_same_selection(table: &RouteTable, matcher: &Matcher, request: &Request) -> Result<(), TestCaseError> {
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
    prop_assert_eq!(matcher.select_index(&view), naive::select(table, &view), "request {:?}", request);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn compiled_matcher_selects_what_the_ordered_scan_selects(
        table in table(),
        requests in prop::collection::vec(request(), 1..16),
    ) {
        let matcher = Matcher::new(table.clone());
        for request in &requests {
            assert_same_selection(&table, &matcher, request)?;
        }
        // Requests aimed at the table's own paths, so that deep prefixes and
        // exact paths match (random paths rarely reach them).
        let aimed_paths = table.listeners.iter().flat_map(|listener| {
            listener.virtual_hosts.iter().flat_map(|v| &v.routes).flat_map(|r| &r.matches).filter_map(|entry| {
                match &entry.uri {
                    Some(PathMatch { kind: PathMatchKind::Prefix(p) | PathMatchKind::Exact(p), .. }) => {
                        Some((listener.port, p))
                    }
                    _ => None,
                }
            })
        });
        for ((port, path), request) in aimed_paths.take(64).zip(requests.iter().cycle()) {
            let mut aimed = request.clone();
            aimed.port = port;
            for variant in [path.clone(), format!("{path}a/b"), path.to_ascii_uppercase()] {
                aimed.path = variant;
                assert_same_selection(&table, &matcher, &aimed)?;
            }
        }
    }
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
