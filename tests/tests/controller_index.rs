//! The route index of a running controller, with Kubeflow's settings from
//! the environment: Gateways, the VirtualServices the reconciler writes and
//! EndpointSlices become numbered snapshots at `/debug/snapshot`.

use std::time::Duration;

use portico_api::istio::VirtualService;
use portico_e2e::kube_wait::wait_until;
use portico_e2e::notebooks::{apply, get_json, notebook_yaml};
use portico_e2e::{Controller, TestNamespace};
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn kubeflow_settings_from_the_environment_and_the_route_index() {
    let namespace = TestNamespace::create("ctl-index");
    let ns = namespace.name();
    let plane = namespace.plane();
    let gateway = format!("{ns}/kubeflow-gateway");
    let controller = Controller::start_with_env(
        ns,
        &[],
        &[("ISTIO_GATEWAY", &gateway), ("ISTIO_HOST", "notebooks.example.com"), ("CLUSTER_DOMAIN", "corp.internal")],
    );
    let client = plane.client().await;
    let first = controller.snapshot();
    assert!(first["version"].as_u64() >= Some(1), "ready means a first snapshot: {first}");
    assert_eq!(first["routes"], 0);

    apply(
        plane,
        &format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: kubeflow-gateway, namespace: {ns}}}\n\
             spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n"
        ),
    );
    apply(plane, &notebook_yaml(ns, "indexed", &[]));
    let vs = wait_until(
        "the VirtualService",
        SETTLE,
        || async { get_json::<VirtualService>(&client, ns, &format!("notebook-{ns}-indexed")).await },
        || controller.log_tail(),
    )
    .await;
    assert_eq!(vs["spec"]["hosts"], json!(["notebooks.example.com"]));
    assert_eq!(vs["spec"]["gateways"], json!([gateway]));
    assert_eq!(
        vs["spec"]["http"][0]["route"][0]["destination"]["host"],
        "indexed.".to_string() + ns + ".svc.corp.internal"
    );

    // An EndpointSlice (no controller-manager makes one): data only, nothing
    // connects to it.
    apply(
        plane,
        &format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: indexed-abc\n  namespace: {ns}\n  \
             labels: {{kubernetes.io/service-name: indexed}}\naddressType: IPv4\n\
             ports: [{{name: http-indexed, port: 8888, protocol: TCP}}]\n\
             endpoints: [{{addresses: [192.0.2.10], conditions: {{ready: true}}}}]\n"
        ),
    );
    let snapshot = wait_until(
        "a snapshot with the notebook's route and its endpoints",
        SETTLE,
        || async {
            let snapshot = controller.snapshot();
            (snapshot["routes"] == 1 && snapshot["gateways"][0]["clusters"] == 1).then_some(snapshot)
        },
        || format!("snapshot: {}\nlog:\n{}", controller.snapshot(), controller.log_tail()),
    )
    .await;
    assert!(snapshot["version"].as_u64() > first["version"].as_u64(), "{snapshot}");
    assert_eq!(snapshot["diagnostics"], 0, "{snapshot}");
    assert_eq!(snapshot["gateways"][0]["virtualHosts"], 1, "{snapshot}");
    let version = controller.metric("portico_controller_snapshot_version").expect("the version is exported");
    assert!(version >= snapshot["version"].as_f64().unwrap_or(f64::MAX), "{version} vs {snapshot}");

    // Deleting the Gateway unbinds the route, with a diagnostic naming it.
    plane.kubectl_ok(&["delete", "gateway", "kubeflow-gateway", "-n", ns]);
    let after = wait_until(
        "the route gone with its Gateway",
        SETTLE,
        || async {
            let snapshot = controller.snapshot();
            (snapshot["routes"] == 0).then_some(snapshot)
        },
        || controller.log_tail(),
    )
    .await;
    let diagnostics = after["gateways"][0]["diagnostics"].to_string();
    assert!(diagnostics.contains(&format!("Gateway {gateway} not found")), "{after}");
}
