//! The kustomize manifests against the real API server, and the Kubeflow
//! walkthrough of examples/kubeflow/README.md run for real.
//!
//! Every overlay passes `kubectl apply --dry-run=server -k`; the standalone
//! overlay is applied; then the controller and the gateway run with exactly
//! the arguments and environment their Deployments declare (read from the
//! rendered manifests), the controller as the manifests' ServiceAccount
//! through a TokenRequest token, so its RBAC is what is tested: any 403 in
//! its log fails the test. The one substitution is the gateway's discovery
//! URL, whose Service DNS name is 127.0.0.1 here (no cluster DNS).
//!
//! This file holds one test on purpose: the manifests bind fixed ports
//! (15010, 15014, 15021, 8080...) and watch all namespaces, and cargo runs
//! test binaries one at a time, so nothing else runs beside it.
//!
//! The walkthrough's commands and their output are written to
//! `target/walkthrough.md`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use portico_e2e::process::{ChildProcess, Stop, clear_settings_env};
use portico_e2e::wait::poll;
use portico_e2e::{Jupyter, binary, host_address, kube_plane::plane, porticoctl, raw_http, workspace_root};
use serde_yaml::Value;

const SETTLE: Duration = Duration::from_secs(60);
const NOTEBOOK_NS: &str = "kubeflow-user-example-com";

/// Every document `kubectl kustomize DIR` renders.
fn render(overlay: &str) -> Vec<Value> {
    let dir = workspace_root().join("manifests").join(overlay);
    let yaml = plane().kubectl_ok(&["kustomize", dir.to_str().unwrap_or_default()]);
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|document| serde::Deserialize::deserialize(document).expect("kustomize renders YAML"))
        .collect()
}

/// The first container of the Deployment `name`: (args, env).
fn deployment_command(documents: &[Value], name: &str) -> (Vec<String>, Vec<(String, String)>) {
    let deployment = documents
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("the manifests have no Deployment {name}"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container["args"]
        .as_sequence()
        .map(|args| args.iter().filter_map(|a| a.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let pod = format!("{name}-7d9f8-x2x4q");
    let env = container["env"]
        .as_sequence()
        .map(|env| {
            env.iter()
                .map(|variable| {
                    let key = variable["name"].as_str().unwrap_or_default().to_string();
                    let value = match variable["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                        // What the downward API would give the pod.
                        Some("metadata.name") => pod.clone(),
                        Some("metadata.namespace") => "portico-system".to_string(),
                        Some(other) => panic!("{name}: env {key} uses an unexpected fieldRef {other}"),
                        None => variable["value"].as_str().unwrap_or_default().to_string(),
                    };
                    (key, value)
                })
                .collect()
        })
        .unwrap_or_default();
    (args, env)
}

/// A kubeconfig that authenticates as `serviceaccount` in portico-system
/// with a token from the TokenRequest API.
fn service_account_kubeconfig(serviceaccount: &str, dir: &std::path::Path) -> PathBuf {
    let token = plane().kubectl_ok(&["create", "token", serviceaccount, "-n", "portico-system", "--duration=1h"]);
    let admin: Value =
        serde_yaml::from_str(&std::fs::read_to_string(plane().kubeconfig()).expect("reading the admin kubeconfig"))
            .expect("the admin kubeconfig is YAML");
    let cluster = admin["clusters"][0]["cluster"].clone();
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "plane", "cluster": {
            "server": cluster["server"].as_str(),
            "certificate-authority-data": cluster["certificate-authority-data"].as_str(),
        }}],
        "users": [{"name": "sa", "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "plane", "user": "sa"}}],
    });
    let path = dir.join(format!("{serviceaccount}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("serializing")).expect("writing a kubeconfig");
    path
}

fn spawn(
    binary_name: &str,
    args: &[String],
    env: &[(String, String)],
    kubeconfig: Option<&PathBuf>,
    log: PathBuf,
) -> ChildProcess {
    let mut command = Command::new(binary(binary_name));
    clear_settings_env(&mut command);
    command.args(args).envs(env.iter().map(|(k, v)| (k, v))).env("RUST_BACKTRACE", "1");
    match kubeconfig {
        Some(path) => command.env("KUBECONFIG", path),
        // No credentials at all: the gateway must not need any.
        None => command.env("KUBECONFIG", "/nonexistent"),
    };
    // SIGTERM first: the controller releases its Lease, so a restart leads at once.
    ChildProcess::spawn(binary_name, command, &log, Stop::Terminate(Duration::from_secs(10)))
}

fn status(url: &str) -> u16 {
    raw_http::get_url(url).map_or(0, |r| r.status)
}

/// Runs a shell-visible command for the walkthrough and records it.
struct Transcript(String);

impl Transcript {
    fn kubectl(&mut self, args: &[&str]) -> String {
        let output = plane().kubectl_ok(args);
        let _ = write!(self.0, "$ kubectl {}\n{}\n", args.join(" "), output.trim_end());
        output
    }

    fn porticoctl(&mut self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = porticoctl::run(args);
        assert!(ok, "porticoctl {args:?}: {stderr}");
        let _ = write!(self.0, "$ porticoctl {}\n{}\n", args.join(" "), stdout.trim_end());
        stdout
    }

    fn note(&mut self, text: &str) {
        let _ = write!(self.0, "\n# {text}\n");
    }
}

#[test]
fn the_manifests_install_portico_and_the_walkthrough_works() {
    let plane = plane();
    let dir = tempfile::tempdir().expect("a temp dir");
    let manifests = workspace_root().join("manifests");
    let overlay = |name: &str| manifests.join("overlays").join(name).display().to_string();

    // Apply the standalone overlay for real, then every overlay in dry-run.
    let mut transcript = Transcript(String::new());
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

    // The walkthrough: a Notebook from examples/, served by a real Jupyter
    // that an EndpointSlice points at (no kubelet runs here).
    let base = format!("/notebook/{NOTEBOOK_NS}/my-notebook/");
    let jupyter = Jupyter::start_on("0.0.0.0", &base);
    plane.kubectl_ok(&["create", "namespace", NOTEBOOK_NS]);
    plane.kubectl_ok(&["create", "serviceaccount", "default", "-n", NOTEBOOK_NS]);
    transcript.note("Create a Notebook");
    let notebook = workspace_root().join("examples/kubeflow/notebook.yaml");
    transcript.kubectl(&["apply", "-f", notebook.to_str().unwrap_or_default()]);
    let address = SocketAddr::new(host_address(), jupyter.port());
    plane.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: my-notebook-jupyter\n  namespace: {NOTEBOOK_NS}\n  \
             labels: {{kubernetes.io/service-name: my-notebook}}\naddressType: IPv4\n\
             ports: [{{name: http-my-notebook, port: {}, protocol: TCP}}]\n\
             endpoints: [{{addresses: [\"{}\"], conditions: {{ready: true}}}}]\n",
            address.port(),
            address.ip()
        )),
    );
    let url = format!("http://127.0.0.1:8080{base}api/status");
    let served = poll(SETTLE, || (status(&url) == 200).then_some(()));
    assert!(
        served.is_some(),
        "{url} never answered 200; gateway log:\n{}\ncontroller log:\n{}",
        gateway.log_tail(40),
        controller.log_tail(40)
    );

    transcript.note("What the controller made: Kubeflow's VirtualService, owned by the Notebook");
    let list = transcript.kubectl(&["get", "virtualservice", "-n", NOTEBOOK_NS]);
    assert!(list.contains("notebook-kubeflow-user-example-com-my-notebook"), "{list}");
    let described = transcript.kubectl(&[
        "describe",
        "virtualservice",
        "notebook-kubeflow-user-example-com-my-notebook",
        "-n",
        NOTEBOOK_NS,
    ]);
    assert!(described.contains("Notebook"), "{described}");
    // Owned the way Kubeflow owns it: by this Notebook, as its controller.
    let notebook_uid =
        plane.kubectl_ok(&["get", "notebook", "my-notebook", "-n", NOTEBOOK_NS, "-o", "jsonpath={.metadata.uid}"]);
    let owner = plane.kubectl_ok(&[
        "get",
        "virtualservice",
        "notebook-kubeflow-user-example-com-my-notebook",
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
    transcript.note("Open the notebook");
    let lab = status(&format!("http://127.0.0.1:8080{base}lab"));
    let _ = write!(transcript.0, "$ curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:8080{base}lab\n{lab}\n");
    assert_eq!(lab, 200);

    transcript.note("Stop it (Kubeflow's annotation scales the StatefulSet to zero)");
    transcript.kubectl(&[
        "annotate",
        "notebook",
        "my-notebook",
        "-n",
        NOTEBOOK_NS,
        "kubeflow-resource-stopped=2026-11-25T00:00:00Z",
    ]);
    let stopped = poll(SETTLE, || {
        let replicas = plane.kubectl_ok(&[
            "get",
            "statefulset",
            "my-notebook",
            "-n",
            NOTEBOOK_NS,
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        (replicas.trim() == "0").then_some(())
    });
    assert!(stopped.is_some(), "the StatefulSet was not scaled to 0; log:\n{}", controller.log_tail(40));
    transcript.kubectl(&["get", "statefulset", "my-notebook", "-n", NOTEBOOK_NS]);

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

    transcript.note("Delete it (the garbage collector removes what it owns; none runs here, so the test does)");
    transcript.kubectl(&["delete", "notebook", "my-notebook", "-n", NOTEBOOK_NS]);
    plane.kubectl_ok(&["delete", "virtualservice,service,statefulset,endpointslice", "--all", "-n", NOTEBOOK_NS]);
    let gone = poll(SETTLE, || (status(&url) == 404).then_some(()));
    assert!(gone.is_some(), "the route outlived its Notebook");

    // The RBAC granted everything the controller did.
    let log = controller.log();
    // A refusal always says "forbidden" (reason Forbidden, code 403); bare
    // "403" would also match pids and timestamps.
    assert!(
        !log.to_ascii_lowercase().contains("forbidden"),
        "the controller was refused something; RBAC is missing a verb:\n{log}"
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
    let probe = std::fs::read_to_string(&notebook).expect("reading the example").replace("my-notebook", "rbac-probe");
    plane.kubectl_stdin(&["apply", "-f", "-"], Some(&probe));
    let refused = poll(SETTLE, || controller.log().contains("forbidden").then_some(()));
    assert!(refused.is_some(), "a missing verb went unnoticed; log:\n{}", controller.log_tail(40));

    // Leave the shared plane as other test binaries expect it: no
    // controller, gateway or extra namespaces (the CRDs stay: every test
    // binary applies them anyway, and deleting them would race that).
    controller.stop();
    gateway.stop();
    let cleanup: [&[&str]; 5] = [
        &[
            "delete",
            "deployment,service,serviceaccount,role,rolebinding,poddisruptionbudget,horizontalpodautoscaler,lease",
            "--all",
            "-n",
            "portico-system",
            "--wait=false",
        ],
        &["delete", "gateway", "--all", "-n", "kubeflow", "--wait=false"],
        &["delete", "notebook,serviceaccount,event", "--all", "-n", NOTEBOOK_NS, "--wait=false"],
        &["delete", "clusterrole,clusterrolebinding", "portico-controller", "--wait=false", "--ignore-not-found"],
        &["delete", "mutatingwebhookconfiguration", "portico-sidecar-injector", "--wait=false", "--ignore-not-found"],
    ];
    for args in cleanup {
        let _ = plane.kubectl().args(args).output();
    }
    for namespace in [NOTEBOOK_NS, "portico-system", "kubeflow"] {
        let _ = plane.kubectl().args(["delete", "namespace", namespace, "--wait=false"]).output();
        let finalize = format!(
            r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{namespace}"}},"spec":{{"finalizers":[]}}}}"#
        );
        let mut command = plane.kubectl();
        let path = format!("/api/v1/namespaces/{namespace}/finalize");
        command.args(["replace", "--raw", &path, "-f", "-"]).stdin(std::process::Stdio::piped());
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        if let Ok(mut child) = command.spawn() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = std::io::Write::write_all(&mut stdin, finalize.as_bytes());
            }
            let _ = child.wait();
        }
    }
}
