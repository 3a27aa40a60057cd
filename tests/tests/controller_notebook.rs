//! The Notebook reconciler against a real kube-apiserver: what Kubeflow's
//! notebook-controller would create, field for field, and how it reacts to
//! annotations, drift, bad input and the notebook pod.
//!
//! Each test has its own namespace and its own controller confined to it
//! (`--watch-namespace`). No controller-manager runs: the tests create the
//! pod and set StatefulSet status themselves.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;

use portico_api::istio::VirtualService;
use portico_api::notebook::Notebook;
use portico_e2e::kube_wait::{wait_object, wait_until};
use portico_e2e::notebooks::{
    apply, apply_example_profile, example_notebook_yaml, expected_owner, get_json, notebook_events, notebook_yaml,
};
use portico_e2e::pod_runner::{PodRunner, fake_notebooks};
use portico_e2e::{Controller, TestNamespace};
use serde_json::{Value, json};

/// Bound on every wait for the controller to act.
const SETTLE: Duration = Duration::from_secs(30);
/// Bound on a pod going from created to Ready on the test cluster.
const POD_START: Duration = Duration::from_secs(120);

/// The apiVersion Kubeflow's notebook-controller writes its VirtualServices
/// with, and reads them back at: a fact about Kubeflow, copied from its
/// source, not from Portico's output. kubeflow/notebooks, branch
/// notebooks-v1, components/notebook-controller/controllers/notebook_controller.go,
/// `generateVirtualService(s)`: `vsvc.SetAPIVersion("networking.istio.io/v1alpha3")`
/// (also `reconcileVirtualService`'s `foundVirtual` and `SetupWithManager`'s watch).
/// Portico writes v1, the storage version (README, "Running the controller");
/// what Kubeflow's clients read at this version must be what Kubeflow writes.
const KUBEFLOW_VIRTUAL_SERVICE_API_VERSION: &str = "networking.istio.io/v1alpha3";

/// The VirtualService spec Kubeflow's `generateVirtualService` writes.
fn kubeflow_virtual_service_spec(namespace: &str, name: &str, rewrite: &str, headers: Value) -> Value {
    let prefix = format!("/notebook/{namespace}/{name}/");
    json!({
        "hosts": ["*"],
        "gateways": ["kubeflow/kubeflow-gateway"],
        "http": [{
            "match": [{"uri": {"prefix": prefix}}],
            "rewrite": {"uri": rewrite},
            "headers": {"request": {"set": headers}},
            "route": [{"destination": {"host": format!("{name}.{namespace}.svc.cluster.local"), "port": {"number": 80}}}],
        }],
    })
}

async fn wait_virtual_service(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    what: &str,
    accept: impl Fn(&Value) -> bool,
    controller: &Controller,
) -> Value {
    let vs_name = format!("notebook-{namespace}-{name}");
    wait_until(
        what,
        SETTLE,
        || async {
            let vs = get_json::<VirtualService>(client, namespace, &vs_name).await?;
            accept(&vs).then_some(vs)
        },
        || format!("controller log:\n{}", controller.log_tail()),
    )
    .await
}

#[tokio::test]
async fn the_kubeflow_example_gets_exactly_kubeflows_objects() {
    let namespace = TestNamespace::create("ctl-example");
    let ns = namespace.name();
    let plane = namespace.plane();
    let controller = Controller::start(ns, &[]);
    let client = plane.client().await;
    apply(plane, &example_notebook_yaml(ns));
    let name = "my-notebook";
    let prefix = format!("/notebook/{ns}/{name}/");

    // The StatefulSet is written last.
    wait_until(
        "the example's StatefulSet",
        SETTLE,
        || async { get_json::<StatefulSet>(&client, ns, name).await },
        || controller.log_tail(),
    )
    .await;
    let vs = wait_virtual_service(&client, ns, name, "the example's VirtualService", |_| true, &controller).await;
    let notebook = get_json::<Notebook>(&client, ns, name).await.expect("the Notebook exists");
    assert_eq!(vs["apiVersion"], "networking.istio.io/v1");
    assert_eq!(vs["metadata"]["name"], format!("notebook-{ns}-{name}"));
    // Read the way Kubeflow's own controller and UIs read it: at
    // Kubeflow's version, the object is exactly Kubeflow's.
    let kubeflow_path =
        format!("/apis/{KUBEFLOW_VIRTUAL_SERVICE_API_VERSION}/namespaces/{ns}/virtualservices/notebook-{ns}-{name}");
    let as_kubeflow: Value = serde_json::from_str(&plane.kubectl_ok(&["get", "--raw", &kubeflow_path]))
        .unwrap_or_else(|error| panic!("GET {kubeflow_path}: not JSON: {error}"));
    assert_eq!(as_kubeflow["apiVersion"], KUBEFLOW_VIRTUAL_SERVICE_API_VERSION);
    assert_eq!(as_kubeflow["spec"], kubeflow_virtual_service_spec(ns, name, &prefix, json!({})));
    assert_eq!(as_kubeflow["metadata"]["ownerReferences"], expected_owner(&notebook));
    assert_eq!(vs["metadata"]["ownerReferences"], expected_owner(&notebook));
    assert_eq!(vs["spec"], kubeflow_virtual_service_spec(ns, name, &prefix, json!({})));
    let route = &vs["spec"]["http"][0];
    assert!(route.get("timeout").is_none() && route.get("retries").is_none(), "no timeout, no retries: {route}");

    let service = get_json::<Service>(&client, ns, name).await.expect("the Service exists");
    assert_eq!(service["metadata"]["ownerReferences"], expected_owner(&notebook));
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["selector"], json!({"statefulset": name}));
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": format!("http-{name}"), "port": 80, "targetPort": 8888, "protocol": "TCP"}])
    );

    let set = get_json::<StatefulSet>(&client, ns, name).await.expect("the StatefulSet exists");
    assert_eq!(set["metadata"]["ownerReferences"], expected_owner(&notebook));
    let spec = &set["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["selector"], json!({"matchLabels": {"statefulset": name}}));
    assert_eq!(
        spec["template"]["metadata"]["labels"],
        json!({"app": name, "statefulset": name, "notebook-name": name})
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"], json!({"fsGroup": 100}));
    assert_eq!(pod["serviceAccountName"], "default-editor", "the Notebook's pod spec is kept");
    let container = &pod["containers"][0];
    assert_eq!(container["name"], name);
    assert_eq!(container["image"], "kubeflownotebookswg/jupyter-scipy:v1.9.2");
    assert_eq!(container["workingDir"], "/home/jovyan");
    assert_eq!(container["env"], json!([{"name": "NB_PREFIX", "value": format!("/notebook/{ns}/{name}")}]));
    assert_eq!(container["ports"], json!([{"containerPort": 8888, "name": "notebook-port", "protocol": "TCP"}]));
    assert_eq!(container["volumeMounts"][1], json!({"mountPath": "/home/jovyan", "name": "my-notebook-workspace"}));
    // Annotations that mention "notebook" (server-type, creator) stay off the pod.
    assert!(spec["template"]["metadata"].get("annotations").is_none(), "{}", spec["template"]["metadata"]);

    // Status before there is any pod: Kubeflow's empty status.
    let notebooks: Api<Notebook> = Api::namespaced(client.clone(), ns);
    wait_object(
        &notebooks,
        name,
        "an empty status",
        SETTLE,
        |nb| nb?.status.as_ref().map(|s| assert_eq!((s.ready_replicas, s.conditions.len()), (0, 0))),
        || controller.log_tail(),
    )
    .await;
    assert_eq!(controller.metric(&format!("notebook_create_total{{namespace=\"{ns}\"}}")), Some(1.0));
    assert_eq!(controller.metric("portico_controller_leader"), Some(1.0));

    // The StatefulSet controller makes the pod, the scheduler places it,
    // kwok gives it an IP and the pod runner runs it (a fake notebook
    // server: this test is about status, not Jupyter) and marks it Ready.
    apply_example_profile(plane, ns);
    let _pods = PodRunner::start_with(ns, fake_notebooks());
    let status = wait_object(
        &notebooks,
        name,
        "the status mirrored from the StatefulSet and the pod",
        POD_START,
        |nb| nb?.status.clone().filter(|s| s.ready_replicas == 1 && !s.conditions.is_empty()),
        || controller.log_tail(),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods.get(&format!("{name}-0")).await.expect("the notebook's pod");
    let pod = serde_json::to_value(&pod).expect("a pod serializes");
    let status = serde_json::to_value(&status).expect("a status serializes");
    // Kubeflow's mirror: the container's state and the pod's Ready condition.
    assert_eq!(status["containerState"], pod["status"]["containerStatuses"][0]["state"], "{status:#}");
    assert!(status["containerState"]["running"]["startedAt"].is_string(), "{status:#}");
    let ready = status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready");
    assert_eq!(ready.map(|c| &c["status"]), Some(&json!("True")), "{status:#}");
    let running = format!("notebook_running{{namespace=\"{ns}\"}}");
    wait_until(
        "notebook_running counts the ready notebook",
        SETTLE,
        || async { (controller.metric(&running) == Some(1.0)).then_some(()) },
        || controller.metrics_text(),
    )
    .await;
}

#[tokio::test]
async fn annotations_change_the_virtual_service() {
    let namespace = TestNamespace::create("ctl-annotations");
    let ns = namespace.name();
    let plane = namespace.plane();
    let controller = Controller::start(ns, &[]);
    let client = plane.client().await;
    let name = "rstudio";
    let prefix = format!("/notebook/{ns}/{name}/");
    apply(plane, &notebook_yaml(ns, name, &[]));
    wait_virtual_service(&client, ns, name, "the VirtualService", |_| true, &controller).await;

    let headers = format!(r#"{{"X-RStudio-Root-Path":"{prefix}"}}"#);
    plane.kubectl_ok(&[
        "annotate",
        "notebook",
        name,
        "-n",
        ns,
        "notebooks.kubeflow.org/http-rewrite-uri=/",
        &format!("notebooks.kubeflow.org/http-headers-request-set={headers}"),
    ]);
    let expected = kubeflow_virtual_service_spec(ns, name, "/", json!({"X-RStudio-Root-Path": prefix}));
    wait_virtual_service(
        &client,
        ns,
        name,
        "rewrite / and the RStudio header",
        |vs| vs["spec"] == expected,
        &controller,
    )
    .await;

    plane.kubectl_ok(&[
        "annotate",
        "notebook",
        name,
        "-n",
        ns,
        "notebooks.kubeflow.org/http-rewrite-uri-",
        "notebooks.kubeflow.org/http-headers-request-set-",
    ]);
    let expected = kubeflow_virtual_service_spec(ns, name, &prefix, json!({}));
    wait_virtual_service(
        &client,
        ns,
        name,
        "back to Kubeflow's defaults once the annotations are gone",
        |vs| vs["spec"] == expected,
        &controller,
    )
    .await;
}

#[tokio::test]
async fn the_stop_annotation_scales_the_stateful_set_to_zero_and_back() {
    let namespace = TestNamespace::create("ctl-stop");
    let ns = namespace.name();
    let plane = namespace.plane();
    let controller = Controller::start(ns, &[]);
    let client = plane.client().await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let name = "sleepy";
    apply(plane, &notebook_yaml(ns, name, &[]));
    let replicas =
        |want: i32| move |set: Option<&StatefulSet>| (set?.spec.as_ref()?.replicas == Some(want)).then_some(());
    wait_object(&sets, name, "1 replica", SETTLE, replicas(1), || controller.log_tail()).await;

    plane.kubectl_ok(&["annotate", "notebook", name, "-n", ns, "kubeflow-resource-stopped=2026-01-01T00:00:00Z"]);
    wait_object(&sets, name, "0 replicas while stopped", SETTLE, replicas(0), || controller.log_tail()).await;

    plane.kubectl_ok(&["annotate", "notebook", name, "-n", ns, "kubeflow-resource-stopped-"]);
    wait_object(&sets, name, "1 replica after the restart", SETTLE, replicas(1), || controller.log_tail()).await;
}

#[tokio::test]
async fn hand_edits_of_derived_objects_are_reverted() {
    let namespace = TestNamespace::create("ctl-drift");
    let ns = namespace.name();
    let plane = namespace.plane();
    let controller = Controller::start(ns, &[]);
    let client = plane.client().await;
    let name = "steady";
    let prefix = format!("/notebook/{ns}/{name}/");
    apply(plane, &notebook_yaml(ns, name, &[]));
    let expected = kubeflow_virtual_service_spec(ns, name, &prefix, json!({}));
    let original = wait_virtual_service(&client, ns, name, "the VirtualService", |_| true, &controller).await;
    assert_eq!(original["spec"], expected);

    // A hand edit with kubectl: another route, another destination, a timeout.
    let vs_name = format!("notebook-{ns}-{name}");
    let drift = r#"{"spec":{"hosts":["evil.example.com"],"http":[{"match":[{"uri":{"prefix":"/"}}],"timeout":"300s","route":[{"destination":{"host":"evil.example.com"}}]}]}}"#;
    plane.kubectl_ok(&["patch", "virtualservice", &vs_name, "-n", ns, "--type=merge", "-p", drift]);
    wait_virtual_service(
        &client,
        ns,
        name,
        "the hand-edited VirtualService reverted",
        |vs| vs["spec"] == expected,
        &controller,
    )
    .await;

    // A deleted VirtualService comes back (no garbage collector runs here,
    // and the controller does not wait for one).
    let uid = original["metadata"]["uid"].clone();
    plane.kubectl_ok(&["delete", "virtualservice", &vs_name, "-n", ns]);
    wait_virtual_service(
        &client,
        ns,
        name,
        "the deleted VirtualService re-created",
        |vs| vs["metadata"]["uid"] != uid && vs["spec"] == expected,
        &controller,
    )
    .await;

    // The same for the Service and the StatefulSet.
    plane.kubectl_ok(&[
        "patch",
        "service",
        name,
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"statefulset":"other"}}}"#,
    ]);
    plane.kubectl_ok(&["scale", "statefulset", name, "-n", ns, "--replicas=3"]);
    wait_until(
        "the Service selector and the StatefulSet replicas reverted",
        SETTLE,
        || async {
            let service = get_json::<Service>(&client, ns, name).await?;
            let set = get_json::<StatefulSet>(&client, ns, name).await?;
            (service["spec"]["selector"] == json!({"statefulset": name}) && set["spec"]["replicas"] == 1).then_some(())
        },
        || controller.log_tail(),
    )
    .await;
}

#[tokio::test]
async fn invalid_headers_json_gives_a_warning_event_and_no_headers() {
    let namespace = TestNamespace::create("ctl-headers");
    let ns = namespace.name();
    let plane = namespace.plane();
    let controller = Controller::start(ns, &[]);
    let client = plane.client().await;
    let name = "badheaders";
    let prefix = format!("/notebook/{ns}/{name}/");
    apply(plane, &notebook_yaml(ns, name, &[("notebooks.kubeflow.org/http-headers-request-set", "{not json")]));
    let expected = kubeflow_virtual_service_spec(ns, name, &prefix, json!({}));
    let vs = wait_virtual_service(&client, ns, name, "the VirtualService", |_| true, &controller).await;
    assert_eq!(vs["spec"], expected, "an empty header map, as Kubeflow");

    let events = wait_until(
        "a Warning Event about the annotation",
        SETTLE,
        || async {
            let events = notebook_events(&client, ns, name).await;
            events.iter().any(|(kind, reason, _)| kind == "Warning" && reason == "InvalidAnnotation").then_some(events)
        },
        || controller.log_tail(),
    )
    .await;
    let (_, _, note) = events.iter().find(|(_, reason, _)| reason == "InvalidAnnotation").expect("found above");
    assert!(note.contains("http-headers-request-set"), "the Event names the annotation: {note}");
}

#[tokio::test]
async fn a_notebook_without_containers_gets_a_condition_and_the_controller_carries_on() {
    let namespace = TestNamespace::create("ctl-invalid");
    let ns = namespace.name();
    let plane = namespace.plane();
    let mut controller = Controller::start(ns, &[]);
    let client = plane.client().await;
    let notebooks: Api<Notebook> = Api::namespaced(client.clone(), ns);
    let bad = format!(
        "apiVersion: kubeflow.org/v1\nkind: Notebook\nmetadata: {{name: empty, namespace: {ns}}}\n\
         spec: {{template: {{spec: {{containers: []}}}}}}\n"
    );
    apply(plane, &bad);
    let condition = wait_object(
        &notebooks,
        "empty",
        "a Degraded condition",
        SETTLE,
        |nb| nb?.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Degraded").cloned(),
        || controller.log_tail(),
    )
    .await;
    assert_eq!(condition.status.as_deref(), Some("True"));
    assert_eq!(condition.reason.as_deref(), Some("InvalidSpec"));
    assert!(condition.message.as_deref().unwrap_or("").contains("containers"), "{condition:?}");
    wait_until(
        "a Warning Event InvalidSpec",
        SETTLE,
        || async {
            let events = notebook_events(&client, ns, "empty").await;
            events.iter().any(|(kind, reason, _)| kind == "Warning" && reason == "InvalidSpec").then_some(())
        },
        || controller.log_tail(),
    )
    .await;
    assert!(get_json::<VirtualService>(&client, ns, &format!("notebook-{ns}-empty")).await.is_none());
    assert!(get_json::<StatefulSet>(&client, ns, "empty").await.is_none());

    // Still serving, and still reconciling other Notebooks.
    apply(plane, &notebook_yaml(ns, "fine", &[]));
    wait_virtual_service(&client, ns, "fine", "a valid Notebook next to the bad one", |_| true, &controller).await;
    assert!(controller.is_running(), "the controller exited:\n{}", controller.log_tail());
    assert_eq!(controller.get_status("/healthz"), Some(200));
    // No hot loop: the bad Notebook is rechecked slowly, not retried with backoff.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attempts = controller.log().matches("invalid notebook; not creating its objects").count();
    assert!(
        attempts <= 4,
        "the invalid Notebook was reconciled {attempts} times in seconds:\n{}",
        controller.log_tail()
    );
    assert_eq!(controller.metric("portico_controller_reconcile_errors_total{error=\"apply\"}"), None);

    // Fixed, it is run like any other, and the condition is gone.
    apply(plane, &notebook_yaml(ns, "empty", &[]));
    wait_virtual_service(&client, ns, "empty", "the fixed Notebook's VirtualService", |_| true, &controller).await;
    wait_object(
        &notebooks,
        "empty",
        "the Degraded condition cleared",
        SETTLE,
        |nb| nb?.status.as_ref().filter(|s| s.conditions.iter().all(|c| c.type_ != "Degraded")).map(|_| ()),
        || controller.log_tail(),
    )
    .await;
}

#[tokio::test]
async fn without_workload_management_only_routing_objects_are_written() {
    let namespace = TestNamespace::create("ctl-noworkload");
    let ns = namespace.name();
    let plane = namespace.plane();
    let controller = Controller::start(ns, &["--manage-workloads=false"]);
    let client = plane.client().await;
    apply(plane, &notebook_yaml(ns, "routed", &[]));
    wait_virtual_service(&client, ns, "routed", "the VirtualService", |_| true, &controller).await;
    wait_until(
        "the Service",
        SETTLE,
        || async { get_json::<Service>(&client, ns, "routed").await },
        || controller.log_tail(),
    )
    .await;
    // The controller has seen the Notebook through: a reconcile finished
    // (counted after the step that would have applied the StatefulSet, and
    // this controller watches only this namespace, where "routed" is the
    // only Notebook). Only then does "no StatefulSet" mean something.
    wait_until(
        "a finished reconcile (portico_controller_reconcile_total{result=\"success\"})",
        SETTLE,
        || async { controller.metric("portico_controller_reconcile_total{result=\"success\"}").filter(|n| *n >= 1.0) },
        || controller.log_tail(),
    )
    .await;
    assert!(get_json::<StatefulSet>(&client, ns, "routed").await.is_none(), "no StatefulSet is written");
    let metrics = controller.metrics_text();
    assert!(
        !metrics.contains("portico_controller_applies_total{kind=\"StatefulSet\""),
        "the controller applied a StatefulSet:\n{metrics}"
    );
}
