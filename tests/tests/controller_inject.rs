//! Sidecar injection through the real API server: a
//! MutatingWebhookConfiguration pointing at the running controller (its
//! caBundle filled in by the controller), pods in a labelled namespace come
//! back with the sidecar and init containers, opted-out pods and other
//! namespaces are untouched, and the mesh root is published to the
//! labelled namespace.

use std::time::Duration;

use portico_e2e::injection_webhook::InjectionWebhook;
use portico_e2e::kube_plane::KubePlane;
use portico_e2e::wait::poll;
use portico_e2e::{Controller, TestNamespace};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(30);

fn pod_yaml(ns: &str, name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\n\
         spec:\n  containers:\n  - name: notebook\n    image: kubeflownotebookswg/jupyter-scipy:v1.9.2\n    \
         ports: [{{containerPort: 8888, name: notebook-port}}]\n"
    )
}

fn get_json(plane: &KubePlane, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend(args);
    all.extend(["-o", "json"]);
    serde_json::from_str(&plane.kubectl_ok(&all)).expect("kubectl -o json")
}

fn container_names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_string)).collect()
}

#[test]
fn pods_in_labelled_namespaces_get_the_sidecar() {
    let meshed = TestNamespace::create("inject-on");
    let plain = TestNamespace::create("inject-off");
    let plane = meshed.plane();
    let (ns, other) = (meshed.name(), plain.name());
    let label = format!("portico-injection-{}", std::process::id());
    plane.kubectl_ok(&["label", "namespace", ns, &format!("{label}=enabled")]);
    let webhook = InjectionWebhook::for_namespace(ns);
    let controller = Controller::start(
        ns,
        &["--webhook-config", webhook.name(), "--injection-label", &label, "--injection-resync", "1s"],
    );
    webhook.install(controller.webhook_addr().port(), &label);
    // The controller fills in the caBundle (re-asserted every --injection-resync).
    let bundled = webhook.wait_ca_bundle(Duration::from_secs(45));
    assert!(bundled, "the controller never set the caBundle; log:\n{}", controller.log_tail());

    plane.kubectl_stdin(&["apply", "-f", "-"], Some(&pod_yaml(ns, "nb-0", "app: nb")));
    let pod = get_json(plane, &["pod", "nb-0", "-n", ns]);
    assert_eq!(container_names(&pod, "containers"), vec!["notebook", "portico-sidecar"], "{pod:#}");
    assert_eq!(container_names(&pod, "initContainers"), vec!["portico-init"], "{pod:#}");
    let sidecar = &pod["spec"]["containers"][1];
    assert_eq!(sidecar["securityContext"]["runAsUser"], 1337);
    let args: Vec<&str> = sidecar["args"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert!(args.windows(2).any(|w| w == ["--app-port", "8888"]), "{args:?}");
    assert_eq!(pod["metadata"]["annotations"]["sidecar.portico.dev/status"], "injected");
    // Istio's marker, which the route index uses to choose mutual TLS per pod.
    assert_eq!(pod["metadata"]["labels"]["security.istio.io/tlsMode"], "istio", "{pod:#}");
    // The identity its sidecar will hold, which the gateway pins.
    assert_eq!(pod["metadata"]["annotations"]["sidecar.portico.dev/service-account"], "default", "{pod:#}");

    plane.kubectl_stdin(&["apply", "-f", "-"], Some(&pod_yaml(ns, "opted-out", "sidecar.istio.io/inject: \"false\"")));
    let opted_out = get_json(plane, &["pod", "opted-out", "-n", ns]);
    assert_eq!(container_names(&opted_out, "containers"), vec!["notebook"]);
    assert!(opted_out["metadata"]["labels"]["security.istio.io/tlsMode"].is_null(), "{opted_out:#}");
    plane.kubectl_stdin(&["apply", "-f", "-"], Some(&pod_yaml(other, "nb-0", "app: nb")));
    let elsewhere = get_json(plane, &["pod", "nb-0", "-n", other]);
    assert_eq!(container_names(&elsewhere, "containers"), vec!["notebook"]);

    // The root the sidecar mounts, published into the labelled namespace.
    let published = poll(SETTLE, || {
        let output =
            plane.kubectl().args(["get", "configmap", "portico-ca-root-cert", "-n", ns, "-o", "json"]).output().ok()?;
        let map: Value = serde_json::from_slice(&output.stdout).ok()?;
        map["data"]["root-cert.pem"].as_str().map(str::to_string)
    });
    let root = published.unwrap_or_else(|| panic!("no root ConfigMap in {ns}; log:\n{}", controller.log_tail()));
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");
    let none =
        plane.kubectl().args(["get", "configmap", "portico-ca-root-cert", "-n", other]).output().expect("kubectl");
    assert!(!none.status.success(), "unlabelled namespaces get no root ConfigMap");
}
