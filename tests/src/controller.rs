//! The `portico-controller` binary against the shared control plane.
//!
//! [`Controller::start`] runs it with `KUBECONFIG=target/kube/kubeconfig`,
//! confined to the test's namespace (`--watch-namespace`, and the Lease in
//! it), on a free metrics port, logging to a file, and waits until `/readyz`
//! says the caches are filled. It is killed (SIGKILL) on drop.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::kube_plane::plane;
use crate::process::{ChildProcess, Stop, clear_settings_env};
use crate::raw_http;
use crate::wait::poll;
use crate::{binary, free_port};

/// Bound on start-up to ready (a few lists against a local API server).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running controller.
#[derive(Debug)]
pub struct Controller {
    process: ChildProcess,
    metrics: SocketAddr,
    discovery: SocketAddr,
    secure_discovery: SocketAddr,
    webhook: SocketAddr,
    launch: Launch,
    _dir: TempDir,
}

/// How the controller was started, to start it again.
#[derive(Debug)]
struct Launch {
    namespace: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    runs: u32,
}

impl Launch {
    /// Spawns with the metrics, discovery, secure discovery and webhook addresses.
    fn spawn(&self, [metrics, discovery, secure, webhook]: [SocketAddr; 4], dir: &std::path::Path) -> ChildProcess {
        let plane = plane();
        let mut command = Command::new(binary("portico-controller"));
        clear_settings_env(&mut command);
        let namespace = self.namespace.as_str();
        command
            .env("KUBECONFIG", plane.kubeconfig())
            .env("RUST_BACKTRACE", "1")
            .args(["--metrics", &metrics.to_string(), "--discovery", &discovery.to_string()])
            // All interfaces: network-namespace tests reach the CA from a "pod".
            .args(["--secure-discovery", &format!("0.0.0.0:{}", secure.port()), "--webhook", &webhook.to_string()])
            .args(["--watch-namespace", namespace, "--namespace", namespace])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let log = dir.join(format!("controller-{}.log", self.runs));
        ChildProcess::spawn("portico-controller", command, &log, Stop::Kill)
    }
}

impl Controller {
    /// Starts a controller for `namespace` with the extra `args`, and waits
    /// until it is ready. Panics with its log otherwise.
    pub fn start(namespace: &str, args: &[&str]) -> Controller {
        Controller::start_with_env(namespace, args, &[])
    }

    /// [`Controller::start`] with environment variables (`ISTIO_GATEWAY`, ...).
    pub fn start_with_env(namespace: &str, args: &[&str], env: &[(&str, &str)]) -> Controller {
        let mut controller = Controller::spawn(namespace, args, env);
        controller.wait_ready();
        controller
    }

    /// Starts a controller without waiting for readiness.
    pub fn spawn(namespace: &str, args: &[&str], env: &[(&str, &str)]) -> Controller {
        let dir = tempfile::Builder::new().prefix("portico-controller-").tempdir().expect("creating a controller dir");
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let discovery = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let secure_discovery = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let webhook = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let launch = Launch {
            namespace: namespace.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            runs: 1,
        };
        let process = launch.spawn([metrics, discovery, secure_discovery, webhook], dir.path());
        Controller { process, metrics, discovery, secure_discovery, webhook, launch, _dir: dir }
    }

    /// Kills the process and starts it again with the same flags and ports
    /// (as a Deployment would), then waits until it is ready.
    pub fn restart(&mut self) {
        self.process.stop();
        self.launch.runs += 1;
        let addresses = [self.metrics, self.discovery, self.secure_discovery, self.webhook];
        self.process = self.launch.spawn(addresses, self._dir.path());
        self.wait_ready();
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self) {
        let url = format!("{}/readyz", self.url());
        let ready = poll(READY_TIMEOUT, || {
            if let Some(status) = self.process.exited() {
                panic!("portico-controller exited during start-up ({status}); log:\n{}", self.process.log_tail(60));
            }
            raw_http::get_url(&url).ok().filter(|response| response.status == 200).map(|_| ())
        });
        if ready.is_none() {
            panic!("portico-controller was not ready ({url}) within {READY_TIMEOUT:?}; log:\n{}", self.log_tail());
        }
    }

    /// `http://127.0.0.1:<metrics port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.metrics)
    }

    /// `http://127.0.0.1:<discovery port>`: what gateways and porticoctl dial.
    pub fn discovery_url(&self) -> String {
        format!("http://{}", self.discovery)
    }

    /// `127.0.0.1:<port>` of the TLS listener (discovery and certificates).
    pub fn secure_discovery_addr(&self) -> SocketAddr {
        self.secure_discovery
    }

    /// `127.0.0.1:<port>` of the injection webhook (HTTPS).
    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// `GET /metrics` as text.
    pub fn metrics_text(&self) -> String {
        let url = format!("{}/metrics", self.url());
        let response = raw_http::get_url(&url).unwrap_or_else(|error| panic!("GET {url}: {error}"));
        assert_eq!(response.status, 200, "GET {url}: {}", response.head);
        response.text()
    }

    /// The value of the sample `series` (`name` or `name{labels}` exactly as
    /// exported), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        raw_http::prometheus_sample(&self.metrics_text(), series)
    }

    /// `GET /debug/snapshot`, parsed.
    pub fn snapshot(&self) -> Value {
        let url = format!("{}/debug/snapshot", self.url());
        let response = raw_http::get_url(&url).unwrap_or_else(|error| panic!("GET {url}: {error}"));
        assert_eq!(response.status, 200, "GET {url}: {}", response.head);
        serde_json::from_slice(&response.body).unwrap_or_else(|error| panic!("GET {url}: not JSON: {error}"))
    }

    /// Status code of `GET path`, or `None` when nothing answers.
    pub fn get_status(&self, path: &str) -> Option<u16> {
        raw_http::get_url(&format!("{}{path}", self.url())).ok().map(|response| response.status)
    }

    /// Everything the controller has logged.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail(80)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.exited().is_none()
    }

    /// Stops the process with SIGTERM (a graceful shutdown: the Lease is
    /// released) and waits up to 10 s for it to exit.
    pub fn terminate(&mut self) {
        let Ok(pid) = libc::pid_t::try_from(self.process.id()) else { return };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let exited = poll(Duration::from_secs(10), || self.process.exited());
        assert!(exited.is_some(), "portico-controller ignored SIGTERM for 10s; log:\n{}", self.log_tail());
    }

    /// Kills the process (SIGKILL): no lease release, no goodbye.
    pub fn kill(&mut self) {
        self.process.stop();
    }
}
