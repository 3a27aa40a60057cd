//! Cluster mode end to end: the real API server, the controller's discovery
//! server, `portico-gateway --discovery` and `porticoctl`.
//!
//! Notebooks are applied with kubectl; their pods run on the test cluster
//! (the pod runner starts `portico-fake-notebook` in each: these tests are
//! about routing, not Jupyter), published by Kubernetes' EndpointSlice
//! controller. A VirtualService to a host with no Service reaches a fake
//! notebook through `--resolve`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use portico_e2e::notebooks::{apply, notebook_yaml};
use portico_e2e::pod_runner::{PodRunner, fake_notebooks};
use portico_e2e::porticoctl::{self, proxy_status, synced};
use portico_e2e::raw_http;
use portico_e2e::wait::poll;
use portico_e2e::{Controller, FakeNotebook, Gateway, TestNamespace, free_port};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(30);

fn gateway_yaml(ns: &str, name: &str, selector: &str, ports: &[u16]) -> String {
    let servers: Vec<String> = ports
        .iter()
        .map(|port| format!("  - port: {{number: {port}, name: http-{port}, protocol: HTTP}}\n    hosts: [\"*\"]\n"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  selector: {{{selector}}}\n  servers:\n{}",
        servers.concat()
    )
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Status of GET `path` on `address`, 0 when nothing answers.
fn status(address: SocketAddr, path: &str) -> u16 {
    raw_http::get(address, "notebooks.example.com", path).map_or(0, |r| r.status)
}

fn wait_status(address: SocketAddr, path: &str, want: u16, context: impl Fn() -> String) {
    let mut last = 0;
    let seen = poll(SETTLE, || {
        last = status(address, path);
        (last == want).then_some(())
    });
    assert!(seen.is_some(), "GET {path} on {address}: wanted {want}, last {last}\n{}", context());
}

fn wait_proxy_status(controller: &Controller, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let found = poll(SETTLE, || {
        last = proxy_status(&controller.discovery_url())?;
        accept(&last).then(|| last.clone())
    });
    found.unwrap_or_else(|| {
        panic!("proxy-status never showed {what}; last:\n{last:#}\ncontroller log:\n{}", controller.log_tail())
    })
}

fn start_gateway(controller: &Controller, name: &str, labels: &str, port: u16, resolves: &[String]) -> Gateway {
    let mut args = vec![
        "--node-name".to_string(),
        name.to_string(),
        "--gateway-labels".to_string(),
        labels.to_string(),
        "--bind".to_string(),
        format!("80=127.0.0.1:{port}"),
    ];
    for resolve in resolves {
        args.extend(["--resolve".to_string(), resolve.clone()]);
    }
    Gateway::start_discovery(&controller.discovery_url(), &args)
}

#[test]
fn notebooks_reach_the_gateways_whose_labels_their_gateway_selects() {
    let namespace = TestNamespace::create("disc-flow");
    let ns = namespace.name();
    let plane = namespace.plane();
    let istio_gateway = format!("{ns}/kubeflow-gateway");
    let controller = Controller::start_with_env(ns, &[], &[("ISTIO_GATEWAY", &istio_gateway)]);
    apply(plane, &gateway_yaml(ns, "kubeflow-gateway", "istio: ingressgateway", &[80]));
    apply(plane, &gateway_yaml(ns, "internal-gateway", "app: internal", &[80]));
    apply(
        plane,
        &format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: tools, namespace: {ns}}}\n\
             spec:\n  hosts: [\"*\"]\n  gateways: [{ns}/internal-gateway]\n  http:\n  - match: [{{uri: {{prefix: /tools/}}}}]\n    \
             route: [{{destination: {{host: tools.{ns}.svc.cluster.local, port: {{number: 80}}}}}}]\n"
        ),
    );
    let fake = FakeNotebook::start();
    let _pods = PodRunner::start_with(ns, fake_notebooks());
    let resolves = vec![format!("tools.{ns}.svc.cluster.local:80={}", fake.address())];
    let (public_port, internal_port) = (free_port(), free_port());
    let public = start_gateway(&controller, "public-gw", "istio=ingressgateway", public_port, &resolves);
    let internal = start_gateway(&controller, "internal-gw", "app=internal", internal_port, &resolves);
    let context = || format!("controller:\n{}\npublic gateway:\n{}", controller.log_tail(), public.log_tail());

    // kubectl apply a Notebook: its prefix answers through the public gateway only.
    apply(plane, &notebook_yaml(ns, "alpha", &[]));
    let path = format!("/notebook/{ns}/alpha/api/status");
    wait_status(local(public_port), &path, 200, context);
    assert_eq!(status(local(internal_port), &path), 404, "the internal gateway must not route notebooks");
    // The internal gateway's own route, and not on the public one.
    wait_status(local(internal_port), "/tools/x", 200, || internal.log_tail());
    assert_eq!(status(local(public_port), "/tools/x"), 404);

    let document =
        wait_proxy_status(&controller, "both gateways SYNCED", |s| synced(s, "public-gw") && synced(s, "internal-gw"));
    let public_status = porticoctl::gateway(&document, "public-gw").expect("public-gw is listed");
    assert_eq!(public_status["kinds"]["ROUTES"]["resources"], 2, "one virtual host, one route: {public_status:#}");
    assert_eq!(public_status["labels"]["istio"], "ingressgateway");

    // The table form, as a user sees it.
    let (ok, table, _) = porticoctl::run(&["proxy-status", "--controller", &controller.discovery_url()]);
    assert!(ok);
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "LISTENERS", "ROUTES", "ENDPOINTS", "CONTROLLER", "VERSION"] {
        assert!(header.contains(column), "{table}");
    }
    assert!(
        table.lines().any(|l| l.starts_with("public-gw.istio-system") && l.matches("SYNCED").count() == 3),
        "{table}"
    );

    let admin = public.admin_url();
    let (ok, routes, stderr) = porticoctl::run(&["proxy-config", "routes", "--admin", &admin]);
    assert!(ok, "{stderr}");
    assert!(routes.contains(&format!("/notebook/{ns}/alpha/*")), "{routes}");
    assert!(routes.contains(&format!("notebook-{ns}-alpha.{ns}")), "{routes}");

    // Delete the Notebook: the garbage collector removes the VirtualService
    // it owns, its route goes away (404), the other gateway's stays.
    plane.kubectl_ok(&["delete", "notebook", "alpha", "-n", ns, "--wait=false"]);
    wait_status(local(public_port), &path, 404, context);
    assert_eq!(status(local(internal_port), "/tools/x"), 200);
}

#[test]
fn gateways_keep_serving_without_the_controller_and_report_rejections() {
    let namespace = TestNamespace::create("disc-fail");
    let ns = namespace.name();
    let plane = namespace.plane();
    let istio_gateway = format!("{ns}/kubeflow-gateway");
    let mut controller = Controller::start_with_env(ns, &[], &[("ISTIO_GATEWAY", &istio_gateway)]);
    apply(plane, &gateway_yaml(ns, "kubeflow-gateway", "istio: ingressgateway", &[80]));
    let _pods = PodRunner::start_with(ns, fake_notebooks());
    let port = free_port();
    let gateway = start_gateway(&controller, "gw", "istio=ingressgateway", port, &[]);
    apply(plane, &notebook_yaml(ns, "beta", &[]));
    let path = format!("/notebook/{ns}/beta/api/status");
    wait_status(local(port), &path, 200, || gateway.log_tail());

    // The controller dies: the gateway keeps serving what it has, and stays ready.
    controller.kill();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert_eq!(status(local(port), &path), 200, "while the controller is down\n{}", gateway.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = raw_http::get_url(&format!("{}/healthz/ready", gateway.health_url())).map(|r| r.status).ok();
    assert_eq!(ready, Some(200));

    // Back: the gateway reconnects, resyncs, and never stopped answering.
    controller.restart();
    wait_proxy_status(&controller, "the gateway SYNCED again", |s| synced(s, "gw"));
    assert_eq!(status(local(port), &path), 200);

    // A port this gateway did not bind: the listener is rejected (NACK),
    // proxy-status says so, and the routes it had keep serving.
    apply(plane, &gateway_yaml(ns, "kubeflow-gateway", "istio: ingressgateway", &[80, 8081]));
    let document = wait_proxy_status(&controller, "a NACK of the new listener", |s| {
        porticoctl::gateway(s, "gw").is_some_and(|g| g["kinds"]["LISTENERS"]["state"] == "STALE (NACK)")
    });
    let rejected = &porticoctl::gateway(&document, "gw").expect("listed")["kinds"]["LISTENERS"]["rejected"][0];
    assert_eq!(rejected["name"], "http.8081", "{document:#}");
    let reason = rejected["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("port 8081 is not served by this gateway (it serves 80)"), "{reason}");
    assert_eq!(status(local(port), &path), 200, "the routes on port 80 keep serving");
    let (_, table, _) = porticoctl::run(&["proxy-status", "--controller", &controller.discovery_url()]);
    assert!(table.contains("STALE (NACK)") && table.contains("port 8081 is not served"), "{table}");
    let dump = gateway.config_dump();
    assert!(dump.to_string().contains("rejected (NACK)"), "the gateway shows the rejection too: {dump}");

    // Fixing the Gateway clears it.
    apply(plane, &gateway_yaml(ns, "kubeflow-gateway", "istio: ingressgateway", &[80]));
    wait_proxy_status(&controller, "SYNCED after the fix", |s| synced(s, "gw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_more_notebook_among_a_thousand_is_a_small_delta() {
    const NOTEBOOKS: usize = 1_000;
    let namespace = TestNamespace::create("disc-delta");
    let ns = namespace.name().to_string();
    let plane = namespace.plane();
    let istio_gateway = format!("{ns}/kubeflow-gateway");
    // Workloads off: only routes matter here.
    let controller =
        Controller::start_with_env(&ns, &["--manage-workloads=false"], &[("ISTIO_GATEWAY", &istio_gateway)]);
    apply(plane, &gateway_yaml(&ns, "kubeflow-gateway", "istio: ingressgateway", &[80]));
    let port = free_port();
    let gateway = start_gateway(&controller, "gw", "istio=ingressgateway", port, &[]);

    // 1,000 notebook VirtualServices, written straight to the API server.
    let client = plane.client().await;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"));
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    let vs = |i: usize| -> DynamicObject {
        let value = serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": format!("notebook-{ns}-nb{i}"), "namespace": ns},
            "spec": {"hosts": ["*"], "gateways": [istio_gateway],
                     "http": [{"match": [{"uri": {"prefix": format!("/notebook/{ns}/nb{i}/")}}],
                               "rewrite": {"uri": format!("/notebook/{ns}/nb{i}/")},
                               "route": [{"destination": {"host": format!("nb{i}.{ns}.svc.cluster.local"), "port": {"number": 80}}}],
                               "timeout": "300s"}]}
        });
        serde_json::from_value(value).expect("a VirtualService")
    };
    let created: Vec<_> = stream::iter(0..NOTEBOOKS)
        .map(|i| {
            let api = api.clone();
            let object = vs(i);
            async move { api.create(&PostParams::default(), &object).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(created.iter().all(Result::is_ok), "{:?}", created.iter().find(|r| r.is_err()));

    let full = wait_proxy_status(&controller, "1,000 routes SYNCED", |s| {
        synced(s, "gw")
            && porticoctl::gateway(s, "gw").is_some_and(|g| g["kinds"]["ROUTES"]["resources"] == NOTEBOOKS + 1)
    });
    let before = porticoctl::gateway(&full, "gw").cloned().unwrap_or_default();
    let total_before = before["totalBytes"].as_u64().unwrap_or_default();
    assert!(total_before > 200_000, "1,000 routes cost more than 200 kB in all: {before:#}");

    // One more notebook: one route on the wire, not the table.
    api.create(&PostParams::default(), &vs(NOTEBOOKS)).await.expect("creating one more");
    let after = wait_proxy_status(&controller, "1,001 routes SYNCED", |s| {
        synced(s, "gw")
            && porticoctl::gateway(s, "gw").is_some_and(|g| g["kinds"]["ROUTES"]["resources"] == NOTEBOOKS + 2)
    });
    let after = porticoctl::gateway(&after, "gw").cloned().unwrap_or_default();
    let last = after["lastResponseBytes"].as_u64().unwrap_or(u64::MAX);
    let added = after["totalBytes"].as_u64().unwrap_or_default() - total_before;
    eprintln!(
        "discovery bytes: full state of {NOTEBOOKS} notebooks {total_before}, one more notebook {last} ({added} sent)"
    );
    assert!(last < 2_048, "the delta of one notebook is {last} bytes: {after:#}");
    assert!(added < 4_096, "{added} bytes went out for one notebook: {after:#}");
    let path = format!("/notebook/{ns}/nb{NOTEBOOKS}/");
    let routes = gateway.routes();
    assert!(
        routes.contains(&path),
        "the gateway routes the new notebook: {}",
        &routes[routes.len().saturating_sub(500)..]
    );
}
