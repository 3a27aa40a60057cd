//! Route lookup cost as the number of notebooks grows: the [`Matcher`]
//! against the naive ordered scan, for the first and the last notebook
//! route of Kubeflow-shaped tables (N Notebooks through `translate`, plus
//! the central dashboard's catch-all); the cost of one route upsert and
//! removal on a clone of a matcher holding N notebook routes (what the
//! gateway pays per notebook change); and the cost of `translate` itself
//! and of normalizing a typical notebook path.
//!
//! `cargo bench -p portico-routing --bench matcher -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use portico_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portico_api::k8s_openapi::jiff::Timestamp;
use portico_api::notebook::{Notebook, NotebookSpec};
use std::sync::Arc;

use portico_routing::parts::{OrderHistory, Placed, TableDelta, TableParts};
use portico_routing::table::{PathMatchKind, Route};
use portico_routing::{GatewayIdentity, Matcher, PathNormalization, RequestView, Resources, RouteTable};
use portico_routing::{naive, normalize, translate};

const SIZES: [usize; 3] = [10, 1_000, 10_000];
const HOST: &str = "kubeflow.example.com";

/// Kubeflow's gateway and central dashboard (the oldest objects).
const KUBEFLOW: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: kubeflow-gateway, namespace: kubeflow}
spec:
  selector: {istio: ingressgateway}
  servers:
  - hosts: ["*"]
    port: {name: http, number: 80, protocol: HTTP}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: centraldashboard, namespace: kubeflow, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  gateways: [kubeflow-gateway]
  hosts: ["*"]
  http:
  - match: [{uri: {prefix: /}}]
    rewrite: {uri: /}
    route: [{destination: {host: centraldashboard.kubeflow.svc.cluster.local, port: {number: 80}}}]
"#;

/// `notebooks` Notebooks spread over 100 profile namespaces, created one
/// second apart, plus Kubeflow's gateway and dashboard.
fn resources(notebooks: usize) -> Resources {
    let mut resources = Resources::default();
    let diagnostics = resources.add_yaml(KUBEFLOW, "kubeflow.yaml");
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    for i in 0..notebooks {
        let mut notebook = Notebook::new(&format!("nb-{i:05}"), NotebookSpec::default());
        notebook.metadata.namespace = Some(format!("kubeflow-user-{:03}", i % 100));
        let created = Timestamp::from_second(1_700_000_000 + i as i64).expect("valid timestamp");
        notebook.metadata.creation_timestamp = Some(Time(created));
        resources.notebooks.push(notebook);
    }
    resources
}

fn table(notebooks: usize) -> RouteTable {
    let (table, diagnostics) = translate(&resources(notebooks), &GatewayIdentity::default());
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    assert_eq!(table.route_count(), notebooks + 1, "one route per notebook plus the dashboard");
    table
}

/// A JupyterLab request under the first and the last notebook route.
fn first_and_last_paths(table: &RouteTable) -> [(&'static str, String); 2] {
    let routes = &table.listeners[0].virtual_hosts[0].routes;
    let path = |index: usize| match &routes[index].matches[0].uri.as_ref().expect("path condition").kind {
        PathMatchKind::Prefix(prefix) => format!("{prefix}lab"),
        other => panic!("not a notebook route: {other:?}"),
    };
    [("first", path(0)), ("last", path(routes.len() - 2))]
}

fn view<'a>(path: &'a str, headers: &'a http::HeaderMap) -> RequestView<'a> {
    RequestView { port: 80, scheme: "http", method: "GET", authority: HOST, host: HOST, path, query: None, headers }
}

fn lookup(c: &mut Criterion) {
    let headers = http::HeaderMap::new();
    let mut compiled = c.benchmark_group("select/compiled");
    let tables: Vec<(usize, RouteTable)> = SIZES.iter().map(|&n| (n, table(n))).collect();
    for (n, table) in &tables {
        let matcher = Matcher::new(table.clone());
        for (which, path) in first_and_last_paths(table) {
            let request = view(&path, &headers);
            let selected = matcher.select(&request).and_then(|selection| selection.route);
            assert!(selected.is_some_and(|r| r.route.name.contains("notebook")), "{path} must hit a notebook");
            compiled.bench_with_input(BenchmarkId::new(which, n), &request, |b, request| {
                b.iter(|| matcher.select(black_box(request)).and_then(|s| s.route).map(|r| r.match_index))
            });
        }
    }
    compiled.finish();

    let mut scan = c.benchmark_group("select/naive");
    for (n, table) in &tables {
        for (which, path) in first_and_last_paths(table) {
            let request = view(&path, &headers);
            scan.bench_with_input(BenchmarkId::new(which, n), &request, |b, request| {
                b.iter(|| naive::select(table, black_box(request)))
            });
        }
    }
    scan.finish();
}

/// One notebook route added to (then removed from) a clone of a matcher
/// holding `n` notebook routes on one virtual host, as the gateway does per
/// change: the cost must stay flat as `n` grows.
fn route_upsert(c: &mut Criterion) {
    let mut group = c.benchmark_group("edit/upsert_and_remove_route");
    for n in [1_000, 10_000, 100_000] {
        let table = table(n);
        let parts = TableParts::split(&table, &mut OrderHistory::default());
        let (_, template) = parts.routes.iter().nth(n / 2).expect("a notebook route");
        let host = template.parent.clone();
        let matcher = Matcher::new(table);
        let mut route: Route = template.value.clone();
        route.name = "new-notebook".to_string();
        if let Some(PathMatchKind::Prefix(prefix)) = route.matches[0].uri.as_mut().map(|uri| &mut uri.kind) {
            *prefix = "/notebook/kubeflow-user-042/new-notebook/".to_string();
        }
        let mut order = template.order.clone();
        order.push('V');
        let mut add = TableDelta::default();
        add.routes.insert(format!("{host}/new"), Some(Placed { parent: host.clone(), order, value: Arc::new(route) }));
        let mut remove = TableDelta::default();
        remove.routes.insert(format!("{host}/new"), None);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let mut next = matcher.clone();
                assert!(next.apply(black_box(&add)).is_empty());
                let added = next.clone();
                next.apply(black_box(&remove));
                (added, next)
            })
        });
    }
    group.finish();
}

fn translation(c: &mut Criterion) {
    let mut group = c.benchmark_group("translate");
    group.sample_size(10);
    for n in [1_000, 10_000] {
        let resources = resources(n);
        let identity = GatewayIdentity::default();
        group.bench_with_input(BenchmarkId::from_parameter(n), &resources, |b, resources| {
            b.iter(|| translate(black_box(resources), &identity))
        });
    }
    group.finish();
}

fn normalization(c: &mut Criterion) {
    let target = "/notebook/kubeflow-user-042/nb-00042/api/kernels/5b1c3a6e-9f7d-4c1b-8e2a-0d9f6c7b3e21/channels?session_id=7f3e";
    c.bench_function("normalize/notebook_path", |b| {
        b.iter(|| normalize(black_box(target), PathNormalization::MergeSlashes))
    });
}

criterion_group!(benches, lookup, route_upsert, translation, normalization);
criterion_main!(benches);
