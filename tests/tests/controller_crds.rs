//! The generated CRDs (`manifests/crds`, applied with `kubectl apply -k` by
//! the shared plane) on a real API server: every upstream version is served,
//! and objects written for older Istio and Kubeflow releases are accepted and
//! read back as the storage version.

use std::time::Instant;

use kube::Api;
use portico_api::istio::VirtualService;
use portico_api::notebook::Notebook;
use portico_e2e::TestNamespace;

#[tokio::test]
async fn older_api_versions_are_accepted_and_read_as_v1() {
    let started = Instant::now();
    let namespace = TestNamespace::create("crds");
    let ns = namespace.name();
    let plane = namespace.plane();
    // Applying again is a no-op: the CRDs are idempotent to apply.
    plane.apply_crds();
    let versions = plane.kubectl_ok(&["api-versions"]);
    for version in [
        "kubeflow.org/v1",
        "kubeflow.org/v1beta1",
        "kubeflow.org/v1alpha1",
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
    ] {
        assert!(versions.lines().any(|line| line == version), "{version} is not served:\n{versions}");
    }

    let mut documents = String::new();
    for (version, name) in [("v1beta1", "vs-beta"), ("v1alpha3", "vs-alpha")] {
        documents.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/{version}
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: ["*"]
  gateways: [kubeflow/kubeflow-gateway]
  http:
  - match: [{{uri: {{prefix: /{name}/}}}}]
    rewrite: {{uri: /}}
    timeout: 300s
    route: [{{destination: {{host: {name}.{ns}.svc.cluster.local, port: {{number: 80}}}}}}]
"#
        ));
    }
    for (version, name) in [("v1beta1", "nb-beta"), ("v1alpha1", "nb-alpha")] {
        documents.push_str(&format!(
            r#"---
apiVersion: kubeflow.org/{version}
kind: Notebook
metadata: {{name: {name}, namespace: {ns}}}
spec:
  template:
    spec:
      containers: [{{name: {name}, image: "kubeflownotebookswg/jupyter-scipy:v1.9.2"}}]
"#
        ));
    }
    let applied = plane.kubectl_stdin(&["apply", "-f", "-"], Some(&documents));
    for name in ["vs-beta", "vs-alpha", "nb-beta", "nb-alpha"] {
        assert!(applied.contains(&format!("/{name} created")), "{name} not created:\n{applied}");
    }

    let client = plane.client().await;
    let virtual_services: Api<VirtualService> = Api::namespaced(client.clone(), ns);
    for name in ["vs-beta", "vs-alpha"] {
        let vs = virtual_services.get(name).await.unwrap_or_else(|error| panic!("GET {name} as v1: {error}"));
        assert_eq!(vs.spec.hosts, ["*"]);
        assert_eq!(vs.spec.http[0].timeout.as_deref(), Some("300s"));
        assert_eq!(vs.spec.http[0].rewrite.as_ref().and_then(|r| r.uri.as_deref()), Some("/"));
    }
    let notebooks: Api<Notebook> = Api::namespaced(client, ns);
    for name in ["nb-beta", "nb-alpha"] {
        let notebook = notebooks.get(name).await.unwrap_or_else(|error| panic!("GET {name} as v1: {error}"));
        let pod = notebook.spec.template.spec.expect("the pod template survives");
        assert_eq!(pod.containers[0].name, name);
    }
    // And the other way round: a v1 object is served as the old versions.
    let old = plane.kubectl_ok(&["get", "notebooks.v1alpha1.kubeflow.org", "nb-beta", "-n", ns, "-o", "json"]);
    assert!(old.contains(r#""apiVersion": "kubeflow.org/v1alpha1""#), "{old}");
    eprintln!("CRDs on {}: checked in {:.1?}", plane.versions(), started.elapsed());
}
