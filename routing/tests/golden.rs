//! Golden tests: `testdata/<case>.in.yaml` (Kubernetes objects as `kubectl
//! apply -f` reads them, plus test-only documents) -> `testdata/<case>.out.yaml`
//! (the diagnostics, the redacted route table and, for every request of the
//! case's `RequestTable`, what the gateway would do with it).
//!
//! They prove that translation, path normalization, route selection and
//! rewrites give the results a Kubeflow/Istio user expects, and, for every
//! request, that the compiled [`Matcher`] selects exactly what the reference
//! [`naive::select`] scan selects.
//!
//! Test-only documents in a `.in.yaml` (removed before the rest is read with
//! [`Resources::add_yaml`]):
//! * `kind: RequestTable` with `requests: [{port, host, path, method?, scheme?,
//!   headers?}]`; `host` is the Host header as sent, `path` the raw request
//!   target (query included).
//! * `kind: TestGatewayIdentity` with `namespace` and `labels`: the gateway
//!   instance the table is built for (default: [`GatewayIdentity::default`]).
//! * `kind: TestFile` with `name` and `content`: another file, read with
//!   `add_yaml` as is (e.g. one with a YAML syntax error).
//!
//! Run with `PORTICO_BLESS=1` to rewrite the `.out.yaml` files; review the diff.
//! Refused when `CI` is set: a blessing run cannot fail.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use portico_routing::naive;
use portico_routing::request::host_of;
use portico_routing::rewrite::{self, RedirectRequest};
use portico_routing::table::{ListenerProtocol, RouteAction, RouteTable};
use portico_routing::{GatewayIdentity, Matcher, RequestView, Resources, normalize, translate};
use serde::{Deserialize, Serialize};

const BLESS_ENV: &str = "PORTICO_BLESS";

/// One request of a `RequestTable`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    port: u16,
    /// The Host header as sent.
    host: String,
    /// The raw request target.
    path: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct RequestTable {
    requests: Vec<TestRequest>,
}

#[derive(Debug, Deserialize)]
struct TestGatewayIdentity {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct TestFile {
    name: String,
    content: String,
}

/// The `.out.yaml` document.
#[derive(Serialize)]
struct Golden {
    diagnostics: Vec<String>,
    table: RouteTable,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    requests: Vec<Outcome>,
}

/// What the gateway does with one request.
#[derive(Default, Serialize)]
struct Outcome {
    /// The request, on one line.
    request: String,
    /// The status the gateway answers itself with (404, 400, a redirect or a
    /// direct response); absent when the request is forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// Why the request target was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vhost: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<String>,
    /// `VirtualService ns/name http[i] match[j]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    /// Redirect `Location`.
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<String>,
    /// Direct response body.
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    /// Path and query forwarded upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_path: Option<String>,
    /// `rewrite.authority`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_authority: Option<String>,
    /// `host:port (weight)` of each destination.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    destinations: Vec<String>,
}

/// The documents of a case, split into objects and test-only parts.
struct Case {
    objects: String,
    extra_files: Vec<TestFile>,
    identity: GatewayIdentity,
    requests: Vec<TestRequest>,
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("testdata")
}

fn parse_case(yaml: &str, file: &str) -> Case {
    let mut objects = Vec::new();
    let mut case = Case {
        objects: String::new(),
        extra_files: Vec::new(),
        identity: GatewayIdentity::default(),
        requests: vec![],
    };
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: invalid YAML: {e}"));
        match value.get("kind").and_then(serde_yaml::Value::as_str) {
            Some("RequestTable") => {
                let table: RequestTable =
                    serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{file}: bad RequestTable: {e}"));
                case.requests.extend(table.requests);
            }
            Some("TestGatewayIdentity") => {
                let identity: TestGatewayIdentity =
                    serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{file}: bad TestGatewayIdentity: {e}"));
                let default = GatewayIdentity::default();
                case.identity = GatewayIdentity {
                    name: identity.name.unwrap_or(default.name),
                    namespace: identity.namespace.unwrap_or(default.namespace),
                    labels: identity.labels,
                };
            }
            Some("TestFile") => {
                case.extra_files
                    .push(serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{file}: bad TestFile: {e}")));
            }
            _ if value.is_null() => {}
            _ => objects.push(serde_yaml::to_string(&value).unwrap_or_else(|e| panic!("{file}: {e}"))),
        }
    }
    case.objects = objects.join("---\n");
    case
}

/// Runs one case and renders its `.out.yaml`.
fn run_case(file: &str, yaml: &str) -> String {
    let case = parse_case(yaml, file);
    let mut resources = Resources::default();
    let mut diagnostics = resources.add_yaml(&case.objects, file);
    for extra in &case.extra_files {
        diagnostics.extend(resources.add_yaml(&extra.content, &extra.name));
    }
    let (table, translate_diagnostics) = translate(&resources, &case.identity);
    diagnostics.extend(translate_diagnostics);
    let matcher = Matcher::new(table.clone());
    assert_eq!(matcher.to_table(), table, "{file}: the matcher holds the table");
    let requests = case.requests.iter().map(|request| outcome(file, &matcher, &table, request)).collect();
    let golden = Golden {
        diagnostics: diagnostics.iter().map(ToString::to_string).collect(),
        table: table.redacted(),
        requests,
    };
    let body = serde_yaml::to_string(&golden).unwrap_or_else(|e| panic!("{file}: cannot serialize: {e}"));
    format!("# Generated by routing/tests/golden.rs from {file}; re-bless with {BLESS_ENV}=1.\n{body}")
}

fn outcome(file: &str, matcher: &Matcher, table: &RouteTable, request: &TestRequest) -> Outcome {
    let https_listener =
        table.listeners.iter().any(|l| l.port == request.port && l.protocol == ListenerProtocol::Https);
    let scheme = request.scheme.clone().unwrap_or_else(|| if https_listener { "https" } else { "http" }.to_string());
    let method = request.method.clone().unwrap_or_else(|| "GET".to_string());
    let mut line = format!("{method} {scheme} :{} Host={} {}", request.port, request.host, request.path);
    for (name, value) in &request.headers {
        let _ = write!(line, " [{name}: {value}]");
    }
    let mut out = Outcome { request: line, ..Outcome::default() };

    let target = match normalize(&request.path, table.path_normalization.into()) {
        Ok(target) => target,
        Err(error) => {
            out.status = Some(400);
            out.error = Some(error.to_string());
            return out;
        }
    };
    let mut headers = http::HeaderMap::new();
    for (name, value) in &request.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("{file}: {name:?}: {e}"));
        let value = http::HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{file}: {value:?}: {e}"));
        headers.append(name, value);
    }
    let host = host_of(&request.host);
    let view = RequestView {
        port: request.port,
        scheme: &scheme,
        method: &method,
        authority: &request.host,
        host: &host,
        path: &target.path,
        query: target.query.as_deref(),
        headers: &headers,
    };
    let selection = matcher.select(&view);
    let reference = naive::select(table, &view);
    let as_scanned = selection.map(|s| {
        let route = s.route.map(|r| (r.route.name.clone(), r.match_index));
        (s.listener.name.clone(), s.virtual_host.name.clone(), route)
    });
    let scanned = reference.map(|(l, v, route)| {
        let listener = &table.listeners[l];
        let host = &listener.virtual_hosts[v];
        (listener.name.clone(), host.name.clone(), route.map(|(r, m)| (host.routes[r].name.clone(), m)))
    });
    assert_eq!(as_scanned, scanned, "{file}: Matcher and naive::select disagree on {:?}", out.request);
    if let (Some(chosen), Some((l, v, Some((r, _))))) = (selection.and_then(|s| s.route), reference) {
        assert_eq!(**chosen.route, table.listeners[l].virtual_hosts[v].routes[r], "{file}: {:?}", out.request);
    }

    let Some(selection) = selection else {
        out.status = Some(404);
        return out;
    };
    out.vhost = Some(selection.virtual_host.name.clone());
    if selection.virtual_host.https_redirect {
        out.status = Some(301);
        out.location = Some(rewrite::https_location(&request.host, &target.path_and_query()));
        return out;
    }
    let Some(matched) = selection.route else {
        out.status = Some(404);
        return out;
    };
    let route = matched.route;
    out.route = Some(route.name.clone());
    let provenance = &route.provenance;
    let mut rule = format!("{} http[{}]", provenance.virtual_service, provenance.rule_index);
    if let Some(index) = matched.match_index {
        let _ = write!(rule, " match[{index}]");
    }
    out.rule = Some(rule);
    let matched_entry = matched.match_index.map(|index| &route.matches[index]);
    match &route.action {
        RouteAction::Forward(forward) => {
            let path = rewrite::rewritten_path(&target.path, matched_entry, &forward.rewrite);
            out.upstream_path = Some(match &target.query {
                Some(query) => format!("{path}?{query}"),
                None => path.into_owned(),
            });
            out.upstream_authority = forward.rewrite.authority.clone();
            out.destinations =
                forward.destinations.iter().map(|d| format!("{}:{} ({})", d.host, d.port, d.weight)).collect();
        }
        RouteAction::Redirect(redirect) => {
            out.status = Some(redirect.status);
            let redirect_request = RedirectRequest {
                scheme: &scheme,
                authority: &request.host,
                listener_port: request.port,
                path: &target.path,
                query: target.query.as_deref(),
            };
            out.location = Some(rewrite::redirect_location(redirect, &redirect_request));
        }
        RouteAction::DirectResponse(direct) => {
            out.status = Some(direct.status);
            out.body = (!direct.body.is_empty()).then(|| direct.body.clone());
        }
    }
    out
}

/// A line diff (longest common subsequence), `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "{:>5} - {}", i + 1, a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "{:>5} + {}", j + 1, b[j]);
            j += 1;
        }
    }
    out
}

#[test]
fn golden_files() {
    let bless = std::env::var_os(BLESS_ENV).is_some_and(|v| v != "0" && !v.is_empty());
    // Blessing rewrites the expectations and so always passes: on CI that
    // would hide every regression.
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !(bless && ci),
        "{BLESS_ENV} is refused when CI is set: a blessing run rewrites the golden files and cannot fail"
    );
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no golden cases in {}", testdata().display());

    let mut failures = Vec::new();
    for input in &inputs {
        let name = input.file_name().expect("file name").to_string_lossy().into_owned();
        let yaml = std::fs::read_to_string(input).expect("readable input");
        let actual = run_case(&name, &yaml);
        let output = input.with_file_name(name.replace(".in.yaml", ".out.yaml"));
        if bless {
            std::fs::write(&output, &actual).expect("writable output");
            continue;
        }
        match std::fs::read_to_string(&output) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "== {name}: output differs from {}\n-- diff (- expected, + actual):\n{}\n-- expected:\n{expected}\n-- actual:\n{actual}",
                output.display(),
                diff(&expected, &actual),
            )),
            Err(error) => failures.push(format!("== {name}: cannot read {}: {error}\n-- actual:\n{actual}", output.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed; if the change is intended, re-run with {BLESS_ENV}=1 and review the diff.\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_documented_case_exists() {
    let cases = [
        "actions",
        "annotations",
        "catch_all_rules",
        "creation_order",
        "dashboard_catch_all",
        "diagnostics",
        "endpoints",
        "gateway_binding",
        "host_precedence",
        "kubeflow_notebook",
        "match_kinds",
        "normalization",
        "rewrites",
        "sample_virtualservice",
    ];
    for case in cases {
        let input = testdata().join(format!("{case}.in.yaml"));
        assert!(input.is_file(), "missing golden case {}", input.display());
        let yaml = std::fs::read_to_string(&input).expect("readable input");
        let parsed = parse_case(&yaml, case);
        assert!(!parsed.requests.is_empty(), "{case} has no RequestTable");
    }
}

#[test]
fn diff_shows_changed_lines() {
    let shown = diff("a\nb\nc\n", "a\nx\nc\nd\n");
    assert_eq!(shown, "    2 - b\n    2 + x\n    4 + d\n");
}
