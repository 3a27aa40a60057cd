//! The kustomize manifests against the test cluster, and the Kubeflow
//! walkthrough of examples/kubeflow/README.md run for real, pods and all.
//!
//! Every overlay passes `kubectl apply --dry-run=server -k`; the standalone
//! overlay is applied; then the controller and the gateway run with exactly
//! the arguments and environment their Deployments declare (read from the
//! rendered manifests), the controller as the manifests' ServiceAccount
//! through a TokenRequest token, so its RBAC is what is tested: any 403 in
//! its log fails the test. The one substitution is the gateway's discovery
//! URL, whose Service DNS name is 127.0.0.1 here (no cluster DNS).
//!
//! The notebook takes the path it takes in a cluster: Notebook -> (Portico's
//! controller) StatefulSet, Service, VirtualService -> (Kubernetes'
//! StatefulSet controller, scheduler, kwok) a Pod with an IP -> (the pod
//! runner) a real Jupyter Server in the pod's network namespace -> Ready ->
//! (the EndpointSlice controller) an EndpointSlice -> the gateway -> a cell
//! run in JupyterLab in headless Chromium. Stopping, starting and deleting
//! the Notebook go through the same chain, the garbage collector included.
//!
//! This file holds one test on purpose: the manifests bind fixed ports
//! (15010, 15014, 15021, 8080...) and watch all namespaces, and cargo runs
//! test binaries one at a time, so nothing else runs beside it.
//!
//! The walkthrough's commands and their output are written to
//! `target/walkthrough.md` (examples/kubeflow/README.md shows a run).

use std::time::Duration;

use portico_e2e::browser::run_cell_in_lab;
use portico_e2e::deployment::{Transcript, deployment_command, render, service_account_kubeconfig, spawn};
use portico_e2e::pod_runner::PodRunner;
use portico_e2e::wait::poll;
use portico_e2e::{kube_plane::plane, porticoctl, raw_http, workspace_root};

const SETTLE: Duration = Duration::from_secs(60);
/// Bound on a pod going from created to serving: scheduling, kwok's IP, a
/// Jupyter Server starting (seconds alone, much longer on a busy machine).
const POD_START: Duration = Duration::from_secs(180);
const NOTEBOOK_NS: &str = "kubeflow-user-example-com";
const VIRTUAL_SERVICE: &str = "notebook-kubeflow-user-example-com-my-notebook";

#[test]
fn the_manifests_install_portico_and_the_walkthrough_works() {
    let plane = plane();
    let dir = tempfile::tempdir().expect("a temp dir");
    let manifests = workspace_root().join("manifests");
    let overlay = |name: &str| manifests.join("overlays").join(name).display().to_string();
    let example = |name: &str| workspace_root().join("examples/kubeflow").join(name).display().to_string();

    // Apply the standalone overlay for real, then every overlay in dry-run.
    let mut transcript = Transcript::default();
    transcript.note("Install Portico (standalone: no Istio, no Kubeflow needed)");
    transcript.kubectl(&["apply", "-k", &overlay("standalone")]);
    for name in ["standalone", "kubeflow"] {
        plane.kubectl_ok(&["apply", "--dry-run=server", "-k", &overlay(name)]);
    }

    // The controller, as its Deployment runs it, as its ServiceAccount.
    let documents = render("overlays/standalone");
    let (args, env) = deployment_command(&documents, "portico-controller");
    assert!(args.contains(&"--leader-election".to_string()), "{args:?}");
    let kubeconfig = service_account_kubeconfig("portico-controller", dir.path());
    let mut controller = spawn("portico-controller", &args, &env, Some(&kubeconfig), dir.path().join("controller.log"));
    let ready = poll(SETTLE, || (status("http://127.0.0.1:15014/readyz") == 200).then_some(()));
    assert!(ready.is_some(), "the controller never got ready; log:\n{}", controller.log_tail(60));

    // The gateway, as its Deployment runs it.
    let (mut args, env) = deployment_command(&documents, "portico-gateway");
    for arg in &mut args {
        if arg.starts_with("--discovery=") {
            *arg = "--discovery=http://127.0.0.1:15010".to_string();
        }
    }
    let mut gateway = spawn("portico-gateway", &args, &env, None, dir.path().join("gateway.log"));
    let ready = poll(SETTLE, || (status("http://127.0.0.1:15021/healthz/ready") == 200).then_some(()));
    assert!(ready.is_some(), "the gateway never got ready; log:\n{}", gateway.log_tail(60));

    // What Kubeflow's profile controller and web app make first; the
    // cluster's storage (a provisioner's job in a real cluster) is one
    // hostPath volume, there before the claim so that it binds at once.
    let volume_dir = dir.path().join("workspace-volume");
    std::fs::create_dir_all(&volume_dir).expect("creating the volume's directory");
    // A volume an earlier run left (its path is gone) is not reused. The
    // test cluster runs no pv-protection controller to lift the finalizer
    // a bound volume carries: lift it here, or the delete waits forever.
    let _ = plane
        .kubectl()
        .args(["patch", "persistentvolume", "walkthrough-workspace", "--type=merge"])
        .args(["-p", r#"{"metadata":{"finalizers":null}}"#])
        .output();
    plane.kubectl_ok(&["delete", "persistentvolume", "walkthrough-workspace", "--ignore-not-found"]);
    plane.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: walkthrough-workspace}}\n\
             spec: {{capacity: {{storage: 10Gi}}, accessModes: [ReadWriteOnce], \
             persistentVolumeReclaimPolicy: Retain, hostPath: {{path: {}}}, \
             claimRef: {{namespace: {NOTEBOOK_NS}, name: my-notebook-workspace}}}}\n",
            volume_dir.display()
        )),
    );
    transcript.note("The user's profile: namespace, ServiceAccount, workspace volume");
    transcript.kubectl(&["apply", "-f", &example("profile.yaml")]);
    let runner = PodRunner::start(NOTEBOOK_NS);

    transcript.note("Create a Notebook");
    transcript.kubectl(&["apply", "-f", &example("notebook.yaml")]);
    let base = format!("/notebook/{NOTEBOOK_NS}/my-notebook/");
    let url = format!("http://127.0.0.1:8080{base}api/status");
    let served = poll(POD_START, || (status(&url) == 200).then_some(()));
    let context = |gateway: &portico_e2e::process::ChildProcess, controller: &portico_e2e::process::ChildProcess| {
        format!(
            "pods:\n{}\npod runner:\n{}\ngateway log:\n{}\ncontroller log:\n{}",
            plane.kubectl_ok(&["get", "pods,endpointslices", "-n", NOTEBOOK_NS, "-o", "wide"]),
            runner.events().join("\n"),
            gateway.log_tail(30),
            controller.log_tail(30)
        )
    };
    assert!(served.is_some(), "{url} never answered 200\n{}", context(&gateway, &controller));

    transcript.note("What Kubernetes and the controller made: the pod is Ready, its EndpointSlice names it");
    let pod_ip =
        plane.kubectl_ok(&["get", "pod", "my-notebook-0", "-n", NOTEBOOK_NS, "-o", "jsonpath={.status.podIP}"]);
    assert!(pod_ip.starts_with("198.18."), "the pod's IP {pod_ip:?} is not on the pod network");
    transcript.kubectl(&["get", "statefulset,pod", "-n", NOTEBOOK_NS]);
    let slices = transcript.kubectl(&["get", "endpointslices", "-n", NOTEBOOK_NS]);
    assert!(slices.contains(pod_ip.trim()), "the EndpointSlice does not name the pod {pod_ip}:\n{slices}");
    let list = transcript.kubectl(&["get", "virtualservice", "-n", NOTEBOOK_NS]);
    assert!(list.contains(VIRTUAL_SERVICE), "{list}");
    let described = transcript.kubectl(&["describe", "virtualservice", VIRTUAL_SERVICE, "-n", NOTEBOOK_NS]);
    assert!(described.contains("Notebook"), "{described}");
    // Owned the way Kubeflow owns it: by this Notebook, as its controller.
    let notebook_uid =
        plane.kubectl_ok(&["get", "notebook", "my-notebook", "-n", NOTEBOOK_NS, "-o", "jsonpath={.metadata.uid}"]);
    let owner = plane.kubectl_ok(&[
        "get",
        "virtualservice",
        VIRTUAL_SERVICE,
        "-n",
        NOTEBOOK_NS,
        "-o",
        "jsonpath={range .metadata.ownerReferences[*]}{.apiVersion} {.kind} {.name} {.uid} controller={.controller}{\"\\n\"}{end}",
    ]);
    assert_eq!(
        owner.trim(),
        format!("kubeflow.org/v1 Notebook my-notebook {} controller=true", notebook_uid.trim()),
        "the VirtualService's ownerReferences"
    );
    transcript.note("The gateways and their routes");
    let proxy_status = poll(SETTLE, || {
        let (_, stdout, _) = porticoctl::run(&["proxy-status", "--controller", "127.0.0.1:15010"]);
        (stdout.matches("SYNCED").count() >= 3).then_some(())
    });
    assert!(proxy_status.is_some(), "proxy-status never showed SYNCED");
    transcript.porticoctl(&["proxy-status", "--controller", "127.0.0.1:15010"]);
    let routes = transcript.porticoctl(&["proxy-config", "routes", "--admin", "127.0.0.1:15000"]);
    assert!(routes.contains(&format!("{base}*")), "{routes}");

    transcript.note("Open the notebook: JupyterLab in a browser, one cell run");
    let lab_url = format!("http://127.0.0.1:8080{base}lab");
    let run = run_cell_in_lab(&lab_url, &[]);
    assert!(
        run.ok,
        "JupyterLab at {lab_url}: {} (screenshot {:?})\n{}",
        run.error,
        run.screenshot,
        context(&gateway, &controller)
    );
    transcript.record(
        &format!("chromium --headless {lab_url}  # new notebook, print(6 * 7), Shift+Enter"),
        &format!("cell output: {}", run.output),
    );
    assert_eq!(run.output, "42");

    transcript.note("Stop it (Kubeflow's annotation: the StatefulSet goes to zero, the pod goes)");
    transcript.kubectl(&[
        "annotate",
        "notebook",
        "my-notebook",
        "-n",
        NOTEBOOK_NS,
        "kubeflow-resource-stopped=2026-11-25T00:00:00Z",
    ]);
    let gone = poll(POD_START, || {
        let pods = plane.kubectl_ok(&["get", "pods", "-n", NOTEBOOK_NS, "-o", "name"]);
        (pods.trim().is_empty() && status(&url) != 200).then_some(())
    });
    assert!(gone.is_some(), "the pod or its route outlived the stop\n{}", context(&gateway, &controller));
    transcript.kubectl(&["get", "statefulset", "my-notebook", "-n", NOTEBOOK_NS]);
    let stopped = raw_http::get_url(&url).expect("the gateway answers for a stopped notebook");
    transcript.record(&format!("curl -s -o /dev/null -w '%{{http_code}}' {url}"), &stopped.status.to_string());
    assert_eq!(stopped.status, 503, "a stopped notebook's route: {}", stopped.text());

    transcript.note("Start it again (remove the annotation)");
    transcript.kubectl(&["annotate", "notebook", "my-notebook", "-n", NOTEBOOK_NS, "kubeflow-resource-stopped-"]);
    let back = poll(POD_START, || (status(&url) == 200).then_some(()));
    assert!(back.is_some(), "the notebook did not come back\n{}", context(&gateway, &controller));
    transcript.record(&format!("curl -s -o /dev/null -w '%{{http_code}}' {lab_url}"), &status(&lab_url).to_string());

    // Bad input exercises Events (a verb the RBAC must grant).
    plane.kubectl_ok(&[
        "annotate",
        "notebook",
        "my-notebook",
        "-n",
        NOTEBOOK_NS,
        "notebooks.kubeflow.org/http-headers-request-set={not json",
    ]);
    // A Warning Event with the reason Kubeflow's users search for, about
    // this Notebook; any other Event does not count.
    let expected = "InvalidAnnotation Warning Notebook/my-notebook";
    let mut events = String::new();
    let warned = poll(SETTLE, || {
        events = plane.kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            NOTEBOOK_NS,
            "-o",
            "jsonpath={range .items[*]}{.reason} {.type} {.regarding.kind}/{.regarding.name}{\"\\n\"}{end}",
        ]);
        events.lines().any(|line| line.trim() == expected).then_some(())
    });
    assert!(
        warned.is_some(),
        "no Event {expected:?} was recorded; Events:\n{events}\nlog:\n{}",
        controller.log_tail(40)
    );

    transcript.note("Delete it (the garbage collector removes what the Notebook owned)");
    transcript.kubectl(&["delete", "notebook", "my-notebook", "-n", NOTEBOOK_NS]);
    let collected = poll(SETTLE, || {
        let left =
            plane.kubectl_ok(&["get", "virtualservice,service,statefulset,pod", "-n", NOTEBOOK_NS, "-o", "name"]);
        (left.trim().is_empty() && status(&url) == 404).then_some(())
    });
    assert!(collected.is_some(), "the Notebook's objects or its route outlived it\n{}", context(&gateway, &controller));
    transcript.kubectl(&["get", "virtualservice,service,statefulset,pod", "-n", NOTEBOOK_NS]);
    transcript.record(&format!("curl -s -o /dev/null -w '%{{http_code}}' {url}"), &status(&url).to_string());
    drop(runner);

    // The RBAC granted everything the controller did.
    let log = controller.log();
    // A refusal always says "forbidden" (reason Forbidden, code 403); bare
    // "403" would also match pids and timestamps.
    // (A namespace of another test being deleted refuses new objects with
    // a Forbidden too, NamespaceTerminating: not a missing verb.)
    let refused: Vec<&str> = log
        .lines()
        .filter(|line| line.to_ascii_lowercase().contains("forbidden") && !line.contains("NamespaceTerminating"))
        .collect();
    assert!(
        refused.is_empty(),
        "the controller was refused something; RBAC is missing a verb:\n{}",
        refused.join("\n")
    );
    let out = workspace_root().join("target").join("walkthrough.md");
    let _ = std::fs::write(&out, &transcript.0);

    // And the check above does catch a missing verb: without `patch` on
    // VirtualServices, the controller's log shows the 403.
    let role = plane.kubectl_ok(&["get", "clusterrole", "portico-controller", "-o", "json"]);
    let mut role: serde_json::Value = serde_json::from_str(&role).expect("a ClusterRole");
    for rule in role["rules"].as_array_mut().into_iter().flatten() {
        if rule["resources"] == serde_json::json!(["virtualservices"]) {
            rule["verbs"] = serde_json::json!(["get", "list", "watch", "create"]);
        }
    }
    plane.kubectl_stdin(&["replace", "-f", "-"], Some(&role.to_string()));
    controller.stop();
    let (args, env) = deployment_command(&documents, "portico-controller");
    let mut controller =
        spawn("portico-controller", &args, &env, Some(&kubeconfig), dir.path().join("controller-2.log"));
    let ready = poll(SETTLE, || (status("http://127.0.0.1:15014/readyz") == 200).then_some(()));
    assert!(ready.is_some(), "the controller never got ready again; log:\n{}", controller.log_tail(60));
    let probe = std::fs::read_to_string(example("notebook.yaml"))
        .expect("reading the example")
        .replace("my-notebook", "rbac-probe");
    plane.kubectl_stdin(&["apply", "-f", "-"], Some(&probe));
    let refused = poll(SETTLE, || controller.log().contains("forbidden").then_some(()));
    assert!(refused.is_some(), "a missing verb went unnoticed; log:\n{}", controller.log_tail(40));

    // Leave the shared cluster as other test binaries expect it: no
    // controller, gateway or extra namespaces (the CRDs stay: every test
    // binary applies them anyway, and deleting them would race that). The
    // namespace controller empties and removes the namespaces.
    controller.stop();
    gateway.stop();
    let cleanup: [&[&str]; 5] = [
        &["delete", "namespace", NOTEBOOK_NS, "portico-system", "kubeflow", "--wait=false"],
        &["delete", "clusterrole,clusterrolebinding", "portico-controller", "--wait=false", "--ignore-not-found"],
        &["delete", "mutatingwebhookconfiguration", "portico-sidecar-injector", "--wait=false", "--ignore-not-found"],
        &["delete", "persistentvolume", "walkthrough-workspace", "--wait=false", "--ignore-not-found"],
        &["delete", "gateway", "--all", "-n", "kubeflow", "--wait=false"],
    ];
    for args in cleanup {
        let _ = plane.kubectl().args(args).output();
    }
}

fn status(url: &str) -> u16 {
    raw_http::get_url(url).map_or(0, |r| r.status)
}
