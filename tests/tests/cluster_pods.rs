//! Notebooks served by real pods on the test cluster, in cluster mode:
//! Notebook -> StatefulSet -> Pod (scheduled, given an IP by kwok, run by the
//! pod runner) -> Ready -> EndpointSlice (Kubernetes' controller) -> the
//! controller's route table -> a gateway -> the pod's Jupyter Server. No
//! EndpointSlice here is written by a test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use portico_e2e::browser::run_cell_in_lab;
use portico_e2e::injection_webhook::InjectionWebhook;
use portico_e2e::notebooks::{apply, apply_kubeflow_gateway, notebook_yaml};
use portico_e2e::pod_runner::{PodRunner, RunnerOptions};
use portico_e2e::wait::poll;
use portico_e2e::{Controller, Gateway, TestNamespace, free_port, raw_http};

/// Bound on a pod going from created to serving (scheduling, an IP, a
/// Jupyter Server starting on a busy machine).
const POD_START: Duration = Duration::from_secs(180);
const SETTLE: Duration = Duration::from_secs(60);
/// The host's address on the pod network: where pods reach the controller.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 254);

/// A namespace with Kubeflow's Gateway, a controller, a cluster-mode gateway
/// and a pod runner.
struct Cluster {
    namespace: TestNamespace,
    controller: Controller,
    gateway: Gateway,
    port: u16,
    runner: PodRunner,
}

impl Cluster {
    fn status(&self, path: &str) -> u16 {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        raw_http::get(address, "nb.example.com", path).map_or(0, |r| r.status)
    }

    fn base(&self, notebook: &str) -> String {
        format!("http://127.0.0.1:{}/notebook/{}/{notebook}/", self.port, self.namespace.name())
    }

    fn pod_field(&self, pod: &str, path: &str) -> String {
        let plane = self.namespace.plane();
        let ns = self.namespace.name();
        plane
            .kubectl()
            .args(["get", "pod", pod, "-n", ns, "-o", &format!("jsonpath={{{path}}}")])
            .output()
            .map_or(String::new(), |output| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Everything a failure message needs.
    fn context(&self) -> String {
        let ns = self.namespace.name();
        let pods =
            self.namespace.plane().kubectl().args(["get", "pods,endpointslices", "-n", ns, "-o", "wide"]).output();
        format!(
            "{}\npod runner:\n{}\ngateway log:\n{}\ncontroller log:\n{}",
            pods.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default(),
            self.runner.events().join("\n"),
            self.gateway.log_tail(),
            self.controller.log_tail()
        )
    }

    /// Waits until `notebook`'s `api/status` answers 200 through the gateway.
    fn wait_serving(&self, notebook: &str) {
        let path = format!("/notebook/{}/{notebook}/api/status", self.namespace.name());
        let served = poll(POD_START, || (self.status(&path) == 200).then_some(()));
        assert!(served.is_some(), "{path} never answered 200 through the gateway\n{}", self.context());
    }
}

/// A plain (unmeshed) cluster in a new namespace; `gateway_args` are added
/// to the gateway's.
fn plain_cluster(prefix: &str, gateway_args: &[&str]) -> Cluster {
    let namespace = TestNamespace::create(prefix);
    let ns = namespace.name().to_string();
    let controller = Controller::start_with_env(&ns, &[], &[("ISTIO_GATEWAY", &format!("{ns}/kubeflow-gateway"))]);
    apply_kubeflow_gateway(namespace.plane(), namespace.name());
    let port = free_port();
    let bind = format!("80=127.0.0.1:{port}");
    let args: Vec<String> =
        ["--node-name", "gw", "--bind", &bind].iter().chain(gateway_args).map(|a| a.to_string()).collect();
    let gateway = Gateway::start_discovery(&controller.discovery_url(), &args);
    let runner = PodRunner::start(&ns);
    Cluster { namespace, controller, gateway, port, runner }
}

#[test]
fn a_restarted_pod_is_routed_only_once_it_is_ready_again() {
    let cluster = plain_cluster("pod-restart", &[]);
    let ns = cluster.namespace.name();
    let plane = cluster.namespace.plane();
    apply(plane, &notebook_yaml(ns, "nb", &[]));
    cluster.wait_serving("nb");
    let old_uid = cluster.pod_field("nb-0", ".metadata.uid");
    let old_ip = cluster.pod_field("nb-0", ".status.podIP");
    let old_endpoint = format!("{old_ip}:8888");

    // The pod goes (its processes stop); the EndpointSlice controller drops
    // it; the gateway's table loses the address.
    plane.kubectl_ok(&["delete", "pod", "nb-0", "-n", ns, "--wait=false"]);
    // The dump lists an endpoint as {"address": "<ip>", "port": 8888}.
    let old_address = format!("\"{old_ip}\"");
    let propagated = poll(SETTLE, || {
        let dump = cluster.gateway.config_dump().to_string();
        (!dump.contains(&old_address)).then_some(())
    });
    assert!(propagated.is_some(), "the gateway kept {old_endpoint} after its pod was deleted\n{}", cluster.context());
    let log_mark = cluster.gateway.log().len();

    // Until the new pod is Ready nothing is connected to: the gateway holds
    // the requests (the notebook is restarting) or answers 503 with
    // `Retry-After` itself, never a raw 503; then the new pod serves.
    let path = format!("/notebook/{ns}/nb/api/status");
    let address = SocketAddr::from(([127, 0, 0, 1], cluster.port));
    let (mut in_gap, mut raw_503) = (0, Vec::new());
    let back = poll(POD_START, || {
        let started = Instant::now();
        let response = raw_http::get(address, "nb.example.com", &path);
        let status = response.as_ref().map_or(0, |r| r.status);
        if status != 200 || started.elapsed() > Duration::from_millis(500) {
            in_gap += 1;
        }
        if let Ok(answer) = &response
            && answer.status == 503
            && answer.header("retry-after").is_none()
        {
            raw_503.push(answer.head.clone());
        }
        (status == 200).then_some(())
    });
    assert!(back.is_some(), "the restarted pod was never routed\n{}", cluster.context());
    assert!(raw_503.is_empty(), "503s without Retry-After while the pod restarted: {raw_503:#?}");
    let new_uid = cluster.pod_field("nb-0", ".metadata.uid");
    let new_ip = cluster.pod_field("nb-0", ".status.podIP");
    assert_ne!(new_uid, old_uid, "the StatefulSet made a new pod");
    assert!(in_gap > 0, "no request fell in the gap between the pods; the test proved nothing");

    let log = cluster.gateway.log();
    let after: Vec<&str> = log[log_mark..].lines().filter(|line| line.contains(&path)).collect();
    let connected: Vec<&&str> =
        after.iter().filter(|line| line.contains("\"status\":503") && !line.contains("\"upstream\":\"-\"")).collect();
    assert!(connected.is_empty(), "requests were sent to an address with no ready pod behind it:\n{connected:#?}");
    if new_ip != old_ip {
        let stale: Vec<&&str> = after.iter().filter(|line| line.contains(&old_endpoint)).collect();
        assert!(stale.is_empty(), "requests went to the old pod's {old_endpoint}:\n{stale:#?}");
    }
    let last = after.last().copied().unwrap_or_default();
    assert!(last.contains(&format!("{new_ip}:8888")), "the last request went elsewhere than {new_ip}: {last}");
}

#[test]
fn a_pod_whose_server_never_becomes_ready_is_never_routed() {
    // Requests for a notebook that is not ready are held this long.
    let cluster = plain_cluster("pod-unready", &["--hold-timeout", "2s"]);
    let ns = cluster.namespace.name();
    // The server runs, but its readiness probe asks for a page it does not have.
    let yaml = notebook_yaml(ns, "nb", &[]).replace(
        "        resources:",
        "        readinessProbe: {httpGet: {path: /not-a-page, port: 8888}, periodSeconds: 1}\n        resources:",
    );
    apply(cluster.namespace.plane(), &yaml);
    let running = poll(POD_START, || {
        let ip = cluster.pod_field("nb-0", ".status.podIP");
        let ip: IpAddr = ip.parse().ok()?;
        let direct = raw_http::get(SocketAddr::new(ip, 8888), "nb", &format!("/notebook/{ns}/nb/api/status")).ok()?;
        (direct.status == 200).then_some(())
    });
    assert!(running.is_some(), "the notebook's server never started\n{}", cluster.context());
    // Some time for anything that would mark it ready to do so.
    std::thread::sleep(Duration::from_secs(3));
    let ready = cluster.pod_field("nb-0", ".status.conditions[?(@.type==\"Ready\")].status");
    assert_eq!(ready, "False", "a pod whose probe fails is NotReady\n{}", cluster.context());
    let address = SocketAddr::from(([127, 0, 0, 1], cluster.port));
    let answer = raw_http::get(address, "nb.example.com", &format!("/notebook/{ns}/nb/api/status"));
    let answer = answer.unwrap_or_else(|error| panic!("no answer: {error}\n{}", cluster.context()));
    assert_eq!(answer.status, 503, "a NotReady pod is not routed\n{}", cluster.context());
    // Held for --hold-timeout, then told when to come back, and why.
    assert!(answer.header("retry-after").is_some(), "{}", answer.head);
    assert!(answer.text().contains(&format!("notebook {ns}/nb is ")), "{}", answer.text());
}

#[test]
fn an_injected_notebook_pod_is_reached_over_mutual_tls() {
    let namespace = TestNamespace::create("pod-mesh");
    let ns = namespace.name().to_string();
    let plane = namespace.plane();
    // A label of this test's own for the webhook: no other test's pod is injected.
    let label = format!("portico-injection-{ns}");
    let webhook = InjectionWebhook::for_namespace(&ns);
    let controller = Controller::start_with_env(
        &ns,
        &["--webhook-config", webhook.name(), "--injection-label", &label, "--injection-resync", "1s"],
        &[("ISTIO_GATEWAY", &format!("{ns}/kubeflow-gateway"))],
    );
    webhook.install(controller.webhook_addr().port(), &label);
    assert!(webhook.wait_ca_bundle(SETTLE), "the controller never set the caBundle; log:\n{}", controller.log_tail());
    // Meshed for routing (mutual TLS to its pods) and for the webhook.
    plane.kubectl_ok(&["label", "namespace", &ns, "portico-injection=enabled", &format!("{label}=enabled")]);
    apply_kubeflow_gateway(namespace.plane(), namespace.name());

    // The gateway holds the identity the sidecars admit by default.
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = plane.secret_value(&ns, "portico-ca", "ca-cert.pem");
    let root_path = dir.path().join("root.pem");
    std::fs::write(&root_path, &root).expect("writing the root");
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, namespace.mesh_token("portico-gateway")).expect("writing the token");
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
        &root_path.display().to_string(),
        "--token-file",
        &token_path.display().to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let gateway = Gateway::start_discovery(&controller.discovery_url(), &args);
    // The injected sidecar asks the CA at its Service's name; pods reach the
    // host (where the controller listens on all interfaces) at the node IP.
    let ca_name = format!("portico-controller.{ns}.svc");
    let options = RunnerOptions { hosts: vec![(ca_name, IpAddr::V4(NODE_IP))], ..RunnerOptions::default() };
    let runner = PodRunner::start_with(&ns, options);
    let cluster = Cluster { namespace, controller, gateway, port, runner };

    apply(plane, &notebook_yaml(&ns, "nb", &[]));
    cluster.wait_serving("nb");
    let pod = cluster.pod_field("nb-0", ".spec.containers[*].name");
    assert_eq!(pod, "nb portico-sidecar", "the pod was injected");
    // The notebook's port takes mutual TLS only: plain HTTP from the host is captured.
    let ip: IpAddr = cluster.pod_field("nb-0", ".status.podIP").parse().expect("a pod IP");
    let plain = raw_http::get(SocketAddr::new(ip, 8888), "nb", &format!("/notebook/{ns}/nb/api/status"));
    assert!(!plain.as_ref().is_ok_and(|r| r.status == 200), "plain HTTP reached the notebook: {plain:?}");
    // JupyterLab in a browser through the gateway: the page, its REST calls
    // and the kernel websocket all over the gateway's mutual TLS.
    let run = run_cell_in_lab(&format!("{}lab", cluster.base("nb")), &[]);
    assert!(
        run.ok,
        "JupyterLab through the mesh: {} (screenshot {:?})\n{}",
        run.error,
        run.screenshot,
        cluster.context()
    );
    assert_eq!(run.output, "42");
}
