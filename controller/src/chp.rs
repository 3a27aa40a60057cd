//! JupyterHub's proxy API in cluster mode (`--chp-api`): every controller
//! replica serves configurable-http-proxy's REST API, stores each route as
//! a `ChpRoute` object ([`objects`]), and every replica's route index
//! watches them and serves them to every gateway over the discovery stream
//! ([`table`]). Every gateway replica then serves every route: the proxy is
//! no longer one process JupyterHub cannot lose.
//!
//! The API's requests, checks and answers are `portico_chp`'s, the same the
//! gateway alone (`portico-gateway chp`) serves, and so are the route table
//! pieces a route becomes: the gateways route JupyterHub's routes exactly as
//! CHP does (longest whole-segment prefix, full path forwarded, straight to
//! the target's `ip:port`).
//!
//! `last_activity` is what the gateways report for the route's target
//! (merged over replicas, the lifecycle's activity rules), or when the route
//! was added if that is later or nothing was reported ([`server`]).

pub mod error_pages;
pub mod objects;
pub mod propagation;
pub mod server;
pub mod table;

use std::net::SocketAddr;

use portico_chp::{LayoutSettings, Target};
use portico_routing::table::ErrorPages;

/// The listener name prefix of the gateways' JupyterHub port: its own, so
/// it never replaces a listener an Istio Gateway gives the same gateways.
pub const LISTENER_PREFIX: &str = "chp";

/// What `--chp-*` configure.
#[derive(Clone, Debug)]
pub struct ChpSettings {
    /// Where the API listens.
    pub api: SocketAddr,
    /// Namespace of the ChpRoute objects.
    pub namespace: String,
    /// The gateways' port that serves JupyterHub's routes.
    pub port: u16,
    /// CHP's `--host-routing`: a route's first segment is a host name.
    pub host_routing: bool,
    /// `CONFIGPROXY_AUTH_TOKEN`; `None`: an open API (as CHP without one).
    pub token: Option<String>,
    /// CHP's `--default-target`: serves `/` while no route `/` exists.
    pub default_target: Option<Target>,
    /// CHP's `--error-target`/`--error-path`, served by the gateways.
    pub error_pages: Option<ErrorPages>,
}

impl ChpSettings {
    /// The pieces' shape: CHP's defaults on the gateways' port.
    pub fn layout(&self) -> LayoutSettings {
        LayoutSettings {
            listener_prefix: Some(LISTENER_PREFIX.to_string()),
            error_pages: self.error_pages.clone(),
            ..LayoutSettings::on_port(self.port)
        }
    }
}
