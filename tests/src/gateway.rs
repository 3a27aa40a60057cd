//! The `portico-gateway` binary, run as an operator runs it.
//!
//! [`Gateway::start`] gives every instance its own admin, health and metrics
//! ports (the defaults, 15000/15021/15090, would clash between parallel
//! tests), captures its output to a file for failure messages, and waits
//! until `/healthz/ready` answers 200, i.e. the first config is loaded.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::process::{ChildProcess, Stop, clear_settings_env};
use crate::raw_http;
use crate::wait::poll;
use crate::{binary, free_port};

/// Bound on start-up to ready (loading a small folder takes milliseconds;
/// the margin is for a loaded machine).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running gateway, killed on drop.
#[derive(Debug)]
pub struct Gateway {
    process: ChildProcess,
    admin: SocketAddr,
    health: SocketAddr,
    metrics: SocketAddr,
    // Holds the log file; dropped after the process (declaration order).
    _dir: TempDir,
}

impl Gateway {
    /// Runs `portico-gateway --config-dir <config_dir> --admin … --health …
    /// --metrics … <args>` and waits until it is ready. `args` are the
    /// test's own flags (`--bind`, `--resolve`, …).
    ///
    /// Panics with the gateway's log if it exits or is not ready in time.
    pub fn start(config_dir: impl AsRef<Path>, args: &[String]) -> Gateway {
        let source = vec!["--config-dir".to_string(), config_dir.as_ref().display().to_string()];
        Gateway::start_with_source(source, args)
    }

    /// Cluster mode: `portico-gateway --discovery <url> <args>`, ready once
    /// the controller's first configuration is applied.
    pub fn start_discovery(url: &str, args: &[String]) -> Gateway {
        Gateway::start_with_source(vec!["--discovery".to_string(), url.to_string()], args)
    }

    fn start_with_source(source: Vec<String>, args: &[String]) -> Gateway {
        let dir = tempfile::Builder::new().prefix("portico-gateway-").tempdir().expect("creating a gateway dir");
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let (admin, health, metrics) = (local(free_port()), local(free_port()), local(free_port()));
        let mut command = Command::new(binary("portico-gateway"));
        command
            .args(source)
            .args(["--admin", &admin.to_string(), "--health", &health.to_string(), "--metrics", &metrics.to_string()])
            .args(args)
            .env("RUST_BACKTRACE", "1");
        clear_settings_env(&mut command);
        // A graceful shutdown would wait for connections to drain; tests do
        // not need one.
        let process = ChildProcess::spawn("portico-gateway", command, &dir.path().join("gateway.log"), Stop::Kill);
        let mut gateway = Gateway { process, admin, health, metrics, _dir: dir };
        gateway.wait_ready();
        gateway
    }

    fn wait_ready(&mut self) {
        let url = format!("{}/healthz/ready", self.health_url());
        let ready = poll(READY_TIMEOUT, || {
            if let Some(status) = self.process.exited() {
                panic!("portico-gateway exited during start-up ({status}); log:\n{}", self.process.log_tail(60));
            }
            raw_http::get_url(&url).ok().filter(|response| response.status == 200)?;
            // Readiness is the data plane's; the admin and metrics services
            // start beside it and may bind a few milliseconds later (a test
            // that read /config_dump right away was refused once).
            [self.admin, self.metrics].iter().all(|port| std::net::TcpStream::connect(port).is_ok()).then_some(())
        });
        if ready.is_none() {
            panic!(
                "portico-gateway was not ready ({url}) within {READY_TIMEOUT:?}; log:\n{}",
                self.process.log_tail(60)
            );
        }
    }

    /// `http://127.0.0.1:<admin port>` (`/config_dump`, `/routes`, `/ready`).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// `http://127.0.0.1:<health port>` (`/healthz/ready`).
    pub fn health_url(&self) -> String {
        format!("http://{}", self.health)
    }

    /// `http://127.0.0.1:<metrics port>` (`/stats/prometheus`).
    pub fn metrics_url(&self) -> String {
        format!("http://{}", self.metrics)
    }

    /// The value of sample `series` on `/stats/prometheus`, if exported.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let url = format!("{}/stats/prometheus", self.metrics_url());
        let response = raw_http::get_url(&url).unwrap_or_else(|error| panic!("GET {url}: {error}"));
        raw_http::prometheus_sample(&response.text(), series)
    }

    /// Everything the gateway has printed so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The gateway's process id (for `/proc/<pid>/fd` and `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Whether the process is still running (it must survive bad config).
    pub fn is_running(&mut self) -> bool {
        self.process.exited().is_none()
    }

    /// `GET <admin>/config_dump`, parsed. Panics (with the log) if it is not
    /// a 200 with JSON.
    pub fn config_dump(&self) -> Value {
        let url = format!("{}/config_dump", self.admin_url());
        let response =
            raw_http::get_url(&url).unwrap_or_else(|error| panic!("GET {url}: {error}; log:\n{}", self.log_tail()));
        assert_eq!(response.status, 200, "GET {url}: {}\n{}", response.head, response.text());
        serde_json::from_slice(&response.body)
            .unwrap_or_else(|error| panic!("GET {url}: not JSON ({error}): {}", response.text()))
    }

    /// Polls `/config_dump` until `accept` holds, for at most `timeout`, and
    /// returns the accepted dump. Panics with the last dump and the log
    /// otherwise. `what` describes the wait in that message.
    pub fn wait_for_config(&self, what: &str, timeout: Duration, accept: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = poll(timeout, || {
            last = self.config_dump();
            accept(&last).then(|| last.clone())
        });
        found.unwrap_or_else(|| {
            panic!(
                "/config_dump did not show {what} within {timeout:?}; last dump:\n{}\nlog:\n{}",
                serde_json::to_string_pretty(&last).unwrap_or_default(),
                self.log_tail()
            )
        })
    }

    /// `GET <admin>/activity`: the state of destination `host`, if the
    /// gateway has seen activity or a websocket for it.
    pub fn activity(&self, host: &str) -> Option<Value> {
        let url = format!("{}/activity", self.admin_url());
        let response = raw_http::get_url(&url).unwrap_or_else(|error| panic!("GET {url}: {error}"));
        assert_eq!(response.status, 200, "GET {url}: {}", response.head);
        let dump: Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|error| panic!("GET {url}: not JSON ({error}): {}", response.text()));
        dump["destinations"].as_array()?.iter().find(|d| d["host"] == host).cloned()
    }

    /// `GET <admin>/routes`: the route table as text.
    pub fn routes(&self) -> String {
        let url = format!("{}/routes", self.admin_url());
        let response = raw_http::get_url(&url).unwrap_or_else(|error| panic!("GET {url}: {error}"));
        assert_eq!(response.status, 200, "GET {url}: {}", response.head);
        response.text()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail(60)
    }
}
