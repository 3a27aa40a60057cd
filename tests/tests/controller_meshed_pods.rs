//! In a meshed namespace, mutual TLS is per pod, as in Istio: the injector
//! marks the pods it gives a sidecar (`security.istio.io/tlsMode: istio`),
//! the controller's index sees those marks, and the gateway reaches a pod
//! without one (opted out with `sidecar.istio.io/inject: "false"`, or older
//! than the namespace's label) over plain TCP instead of failing its
//! handshake with a 503.

use std::net::SocketAddr;
use std::time::Duration;

use portico_e2e::notebooks::{apply, apply_kubeflow_gateway, notebook_yaml};
use portico_e2e::raw_http;
use portico_e2e::wait::poll;
use portico_e2e::{Controller, FakeNotebook, Gateway, TestNamespace, free_port, host_address};

const SETTLE: Duration = Duration::from_secs(30);

fn pod_yaml(ns: &str, name: &str, labels: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}, annotations: {{{annotations}}}}}\n\
         spec:\n  containers: [{{name: notebook, image: jupyter, ports: [{{containerPort: 8888}}]}}]\n"
    )
}

/// The EndpointSlice the endpoints controller would write for notebook
/// `name`: one ready address, the pod as its target.
fn endpoint_slice_yaml(ns: &str, name: &str, pod: &str, address: SocketAddr) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-pods\n  namespace: {ns}\n  \
         labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\n\
         ports: [{{name: http-{name}, port: {port}, protocol: TCP}}]\n\
         endpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {pod}, namespace: {ns}}}}}]\n",
        port = address.port(),
        ip = address.ip(),
    )
}

/// Status of the notebook's `api/status` through the gateway on `port`, 0
/// when nothing answers.
fn notebook_status(port: u16, ns: &str, notebook: &str) -> u16 {
    let gateway = SocketAddr::from(([127, 0, 0, 1], port));
    raw_http::get(gateway, "nb.example.com", &format!("/notebook/{ns}/{notebook}/api/status")).map_or(0, |r| r.status)
}

#[test]
fn pods_without_a_sidecar_in_a_meshed_namespace_are_reached_without_mutual_tls() {
    let namespace = TestNamespace::create("meshpods");
    let ns = namespace.name();
    let plane = namespace.plane();
    let controller = Controller::start_with_env(ns, &[], &[("ISTIO_GATEWAY", &format!("{ns}/kubeflow-gateway"))]);
    // Pods first: an injection webhook installed by another test would
    // otherwise see them once the namespace is labelled.
    apply(plane, &pod_yaml(ns, "plain-0", "sidecar.istio.io/inject: \"false\"", ""));
    apply(plane, &pod_yaml(ns, "meshed-0", "security.istio.io/tlsMode: istio", ""));
    plane.kubectl_ok(&["label", "namespace", ns, "portico-injection=enabled"]);
    apply_kubeflow_gateway(plane, ns);
    let fake = FakeNotebook::start_on(host_address());
    for (notebook, pod) in [("plain", "plain-0"), ("meshed", "meshed-0")] {
        apply(plane, &notebook_yaml(ns, notebook, &[]));
        apply(plane, &endpoint_slice_yaml(ns, notebook, pod, fake.address()));
    }
    // No --ca-address: this gateway has no mesh certificate at all.
    let port = free_port();
    let args: Vec<String> =
        ["--node-name", "gw", "--bind", &format!("80=127.0.0.1:{port}")].iter().map(|a| a.to_string()).collect();
    let gateway = Gateway::start_discovery(&controller.discovery_url(), &args);
    let status = |notebook: &str| notebook_status(port, ns, notebook);
    let mut last = (0, 0);
    let settled = poll(SETTLE, || {
        last = (status("plain"), status("meshed"));
        (last == (200, 503)).then_some(())
    });
    assert!(
        settled.is_some(),
        "(plain, meshed) answered {last:?}, wanted (200, 503): the pod without a sidecar over plain TCP, the \
         meshed pod refused for want of a mesh certificate\ncontroller:\n{}\ngateway:\n{}",
        controller.log_tail(),
        gateway.log_tail()
    );
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a test file");
    path.display().to_string()
}

#[test]
fn a_meshed_pod_must_present_its_own_service_account() {
    let namespace = TestNamespace::create("meshsa");
    let ns = namespace.name();
    let plane = namespace.plane();
    let dir = tempfile::tempdir().expect("a temp dir");
    let controller = Controller::start_with_env(ns, &[], &[("ISTIO_GATEWAY", &format!("{ns}/kubeflow-gateway"))]);
    let root = plane.secret_value(ns, "portico-ca", "ca-cert.pem");
    // One sidecar, holding the identity of service account `notebook`, in
    // front of a fake notebook; both listen on this host's address.
    let fake = FakeNotebook::start();
    let inbound = SocketAddr::new(host_address(), free_port());
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port)).to_string();
    let mut command = std::process::Command::new(portico_e2e::binary("portico-sidecar"));
    command.args(["run", "--app-port", &fake.address().port().to_string(), "--inbound", &inbound.to_string()]);
    command.args(["--health", &local(free_port()), "--metrics", &local(free_port()), "--admin", &local(free_port())]);
    command.args(["--allow", &format!("spiffe://cluster.local/ns/{ns}/sa/gateway")]);
    command.args([
        "--ca-address",
        &format!("https://{}", controller.secure_discovery_addr()),
        "--ca-name",
        "localhost",
    ]);
    command.args(["--ca-root", &write(dir.path(), "root.pem", &root)]);
    command.args(["--token-file", &write(dir.path(), "sidecar-token", &namespace.mesh_token("notebook"))]);
    portico_e2e::process::clear_settings_env(&mut command);
    let sidecar = portico_e2e::process::ChildProcess::spawn(
        "portico-sidecar",
        command,
        &dir.path().join("sidecar.log"),
        portico_e2e::process::Stop::Kill,
    );

    // Two notebooks whose pods both point at that sidecar: the injector
    // recorded service account `notebook` for one, `someone-else` for the
    // other. Only the first may be reached.
    let injected = "security.istio.io/tlsMode: istio";
    let account = |sa: &str| format!("sidecar.portico.dev/service-account: {sa}");
    apply(plane, &pod_yaml(ns, "right-0", injected, &account("notebook")));
    apply(plane, &pod_yaml(ns, "wrong-0", injected, &account("someone-else")));
    plane.kubectl_ok(&["label", "namespace", ns, "portico-injection=enabled"]);
    apply_kubeflow_gateway(plane, ns);
    for (notebook, pod) in [("right", "right-0"), ("wrong", "wrong-0")] {
        apply(plane, &notebook_yaml(ns, notebook, &[]));
        apply(plane, &endpoint_slice_yaml(ns, notebook, pod, inbound));
    }
    let port = free_port();
    let args: Vec<String> = [
        "--node-name",
        "gw",
        "--bind",
        &format!("80=127.0.0.1:{port}"),
        "--ca-address",
        &format!("https://{}", controller.secure_discovery_addr()),
        "--ca-name",
        "localhost",
        "--ca-root",
        &write(dir.path(), "gateway-root.pem", &root),
        "--token-file",
        &write(dir.path(), "gateway-token", &namespace.mesh_token("gateway")),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let gateway = Gateway::start_discovery(&controller.discovery_url(), &args);
    let status = |notebook: &str| notebook_status(port, ns, notebook);
    let mut last = (0, 0);
    let settled = poll(SETTLE, || {
        last = (status("right"), status("wrong"));
        (last == (200, 503)).then_some(())
    });
    assert!(
        settled.is_some(),
        "(right, wrong) answered {last:?}, wanted (200, 503): a workload of the right namespace but the wrong \
         service account must not answer for a pod\ngateway:\n{}\nsidecar:\n{}",
        gateway.log_tail(),
        sidecar.log_tail(20)
    );
}
