//! JupyterHub's proxy in cluster mode: a controller serving the proxy API
//! (`--chp-api`, routes as ChpRoute objects in the test's namespace) and
//! gateway replicas in cluster mode (`--discovery`) serving JupyterHub's
//! port, each on its own loopback address, as replicas behind a Service.

use std::net::SocketAddr;

use serde_json::Value;

use crate::chp_proxy::{TOKEN, api_request};
use crate::raw_http::{self, RawResponse};
use crate::{Controller, Gateway, free_port};

/// The gateways' JupyterHub port (`--chp-port`), bound by each replica to
/// its own address (`--bind`).
pub const CHP_PORT: u16 = 8000;

/// A controller serving the proxy API.
pub struct ChpController {
    pub controller: Controller,
    /// Where the proxy API listens (`c.ConfigurableHTTPProxy.api_url`).
    pub api: SocketAddr,
    namespace: String,
}

/// A gateway replica and the address its JupyterHub port listens on.
pub struct ChpGateway {
    pub gateway: Gateway,
    pub public: SocketAddr,
}

impl ChpController {
    /// Starts a controller for `namespace` with the proxy API on a free
    /// port, `CONFIGPROXY_AUTH_TOKEN` the tests' token.
    pub fn start(namespace: &str) -> ChpController {
        ChpController::start_with(namespace, &[])
    }

    /// The same, with more `--chp-*` flags.
    pub fn start_with(namespace: &str, more: &[&str]) -> ChpController {
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (api_text, port) = (api.to_string(), CHP_PORT.to_string());
        let mut args = vec!["--chp-api", &api_text, "--chp-port", &port];
        args.extend_from_slice(more);
        let controller = Controller::start_with_env(namespace, &args, &[("CONFIGPROXY_AUTH_TOKEN", TOKEN)]);
        ChpController { controller, api, namespace: namespace.to_string() }
    }

    /// A gateway replica in cluster mode, reporting activity every 200 ms.
    pub fn gateway(&self) -> ChpGateway {
        let public = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let args = [
            "--bind".to_string(),
            format!("{CHP_PORT}={public}"),
            "--activity-report-interval".to_string(),
            "200ms".to_string(),
        ];
        let gateway = Gateway::start_discovery(&self.controller.discovery_url(), &args);
        ChpGateway { gateway, public }
    }

    /// A proxy API request (`token: None`: no Authorization header).
    pub fn api_with(&self, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> RawResponse {
        raw_http::exchange(self.api, api_request(self.api, method, path, body, token).as_bytes())
            .unwrap_or_else(|error| panic!("{method} {path}: {error}; log:\n{}", self.controller.log_tail()))
    }

    /// A proxy API request with the test token.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> RawResponse {
        self.api_with(method, path, body, Some(TOKEN))
    }

    /// `GET /api/routes`, parsed.
    pub fn routes(&self) -> Value {
        let response = self.api("GET", "/api/routes", None);
        assert_eq!(response.status, 200, "GET /api/routes: {}\n{}", response.head, response.text());
        serde_json::from_slice(&response.body).unwrap_or_else(|error| panic!("not JSON ({error}): {}", response.text()))
    }

    /// The ChpRoute objects in the namespace: `spec.path` of each.
    pub fn objects(&self) -> Vec<String> {
        let plane = crate::kube_plane::plane();
        let json = plane.kubectl_ok(&["get", "chproutes.proxy.portico.dev", "-n", &self.namespace, "-o", "json"]);
        let list: Value = serde_json::from_str(&json).unwrap_or_default();
        let mut paths: Vec<String> = list["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|item| item["spec"]["path"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        paths.sort();
        paths
    }
}

impl ChpGateway {
    /// `GET path` on this replica's JupyterHub port; `None` if it does not answer.
    pub fn get(&self, path: &str) -> Option<RawResponse> {
        raw_http::get(self.public, "hub.test", path).ok()
    }

    /// Whether this replica's table has a route for CHP key `key` (its
    /// admin `/routes/json`: a CHP route is named by its key).
    pub fn routes_key(&self, key: &str) -> bool {
        let url = format!("{}/routes/json", self.gateway.admin_url());
        let rows: Value =
            raw_http::get_url(&url).ok().and_then(|r| serde_json::from_slice(&r.body).ok()).unwrap_or_default();
        rows.as_array().is_some_and(|rows| rows.iter().any(|row| row["name"] == key))
    }
}
