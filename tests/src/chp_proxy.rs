//! `portico-gateway chp`: Portico run as JupyterHub's
//! configurable-http-proxy, with CHP's flags and its REST API.
//!
//! [`ChpProxy::start`] picks free ports for the public and API listeners,
//! sets `CONFIGPROXY_AUTH_TOKEN`, captures the output to a file and waits
//! until `/_chp_healthz` (CHP's health check) answers on the public port.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::process::{ChildProcess, Stop, clear_settings_env};
use crate::raw_http::{self, RawResponse};
use crate::wait::poll;
use crate::{binary, free_port};

/// Bound on start-up to `/_chp_healthz` answering.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The token tests use unless they say otherwise.
pub const TOKEN: &str = "portico-test-token";

/// A running `portico-gateway chp`, killed on drop.
#[derive(Debug)]
pub struct ChpProxy {
    process: ChildProcess,
    /// The public (proxy) listener.
    pub proxy: SocketAddr,
    /// The REST API listener.
    pub api: SocketAddr,
    // Holds the log file; dropped after the process (declaration order).
    _dir: TempDir,
}

impl ChpProxy {
    /// `portico-gateway chp --ip 127.0.0.1 --port <free> --api-ip 127.0.0.1
    /// --api-port <free> <args>` with the test token; waits until ready.
    pub fn start(args: &[String]) -> ChpProxy {
        ChpProxy::start_on(free_port(), free_port(), args)
    }

    /// [`ChpProxy::start`] on given ports (a restart on the same ones).
    pub fn start_on(port: u16, api_port: u16, args: &[String]) -> ChpProxy {
        let dir = tempfile::Builder::new().prefix("portico-chp-").tempdir().expect("creating a proxy dir");
        let mut command = Command::new(binary("portico-gateway"));
        command
            .arg("chp")
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--api-ip", "127.0.0.1", "--api-port", &api_port.to_string()])
            .args(args)
            .env("CONFIGPROXY_AUTH_TOKEN", TOKEN)
            .env("RUST_BACKTRACE", "1");
        clear_settings_env(&mut command);
        let process = ChildProcess::spawn("portico-gateway chp", command, &dir.path().join("chp.log"), Stop::Kill);
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let mut proxy = ChpProxy { process, proxy: local(port), api: local(api_port), _dir: dir };
        // With TLS the health check would need a client that trusts the
        // test's certificate: the API answering is enough then.
        proxy.wait_ready(!args.iter().any(|arg| arg.starts_with("--ssl-cert")));
        proxy
    }

    fn wait_ready(&mut self, plain: bool) {
        let ready = poll(READY_TIMEOUT, || {
            if let Some(status) = self.process.exited() {
                panic!("portico-gateway chp exited during start-up ({status}); log:\n{}", self.log_tail());
            }
            if plain {
                let health = raw_http::get(self.proxy, "localhost", "/_chp_healthz").ok()?;
                (health.status == 200).then_some(())?;
            }
            let api = raw_http::get(self.api, "localhost", "/api/routes").ok()?;
            (api.status == 403).then_some(())
        });
        if ready.is_none() {
            panic!("portico-gateway chp was not ready within {READY_TIMEOUT:?}; log:\n{}", self.log_tail());
        }
    }

    /// An API request with the test token (`token: None`: none at all).
    pub fn api_with(&self, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> RawResponse {
        raw_http::exchange(self.api, api_request(self.api, method, path, body, token).as_bytes())
            .unwrap_or_else(|error| panic!("{method} {path}: {error}; log:\n{}", self.log_tail()))
    }

    /// An API request with the test token.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> RawResponse {
        self.api_with(method, path, body, Some(TOKEN))
    }

    /// `POST /api/routes<path>` with `{"target": target}`; panics unless 201.
    pub fn add_route(&self, path: &str, target: &str) {
        let body = serde_json::json!({ "target": target }).to_string();
        let response = self.api("POST", &format!("/api/routes{path}"), Some(&body));
        assert_eq!(
            response.status,
            201,
            "POST {path}: {}\n{}\nlog:\n{}",
            response.head,
            response.text(),
            self.log_tail()
        );
    }

    /// `GET /api/routes`, parsed.
    pub fn routes(&self) -> Value {
        let response = self.api("GET", "/api/routes", None);
        assert_eq!(response.status, 200, "GET /api/routes: {}\n{}", response.head, response.text());
        serde_json::from_slice(&response.body).unwrap_or_else(|error| panic!("not JSON ({error}): {}", response.text()))
    }

    /// `GET path` through the public port.
    pub fn get(&self, path: &str) -> RawResponse {
        raw_http::get(self.proxy, "hub.test", path)
            .unwrap_or_else(|error| panic!("GET {path}: {error}; log:\n{}", self.log_tail()))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.exited().is_none()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail(60)
    }

    /// Kills the process now (as a crash would).
    pub fn kill(&mut self) {
        self.process.stop();
    }
}

/// A proxy API request as JupyterHub sends it (`token: None`: no
/// Authorization header), to the API at `api`: `portico-gateway chp`'s or,
/// in cluster mode, the controller's.
pub fn api_request(api: SocketAddr, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> String {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: token {token}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    request
}
