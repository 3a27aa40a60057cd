//! CHP's routes as the matcher's pieces: one listener (plus the redirect
//! port's), a `*` virtual host (one more per host with `--host-routing`),
//! and one route per CHP route.
//!
//! CHP picks the longest route whose path is a whole-segment prefix of the
//! request's. The matcher takes the first route in order that matches, so
//! each CHP route becomes a route matching exactly its path or its path
//! followed by `/`, ordered by descending path length: two routes that both
//! match one request are prefixes of one another, and the longer comes
//! first. `/` matches everything and comes last. With host routing, a
//! request for a host whose routes do not match falls back to `/`, as in
//! CHP's trie: every host's virtual host carries a copy of `/`.

use std::sync::Arc;
use std::time::Duration;

use portico_routing::ObjectRef;
use portico_routing::parts::{ListenerPart, Placed, TableDelta, VirtualHostPart};
use portico_routing::table::{
    DirectResponse, ErrorPages, Forward, HeaderOps, ListenerProtocol, PathMatch, PathMatchKind, PathNormalizationMode,
    Redirect, RedirectPort, RetryOn, RetryPolicy, Rewrite, Route, RouteAction, RouteMatch, TlsCredential, TlsServer,
    WeightedDestination,
};

use crate::route_path::RoutePath;
use crate::target::Target;

/// CHP's health check, answered on the public port before any route
/// (Zero to JupyterHub's liveness and readiness probes call it).
pub const HEALTH_PATH: &str = "/_chp_healthz";
/// The virtual host of requests no host route claims.
const ANY_HOST: &str = "*";

/// What shapes the pieces: CHP's command line alone, the controller's
/// flags in cluster mode.
#[derive(Clone, Debug)]
pub struct LayoutSettings {
    /// The listener's name prefix: `http`/`https` alone; cluster mode uses
    /// its own (`chp`) so it can never replace a listener an Istio Gateway
    /// gives the same gateway.
    pub listener_prefix: Option<String>,
    /// The public port (the gateway's server port).
    pub port: u16,
    /// Certificate chain and key files of the public port.
    pub tls: Option<(String, String)>,
    /// Plain-HTTP port and the HTTPS port it redirects to.
    pub redirect: Option<(u16, u16)>,
    /// `--no-include-prefix` clears it: strip the route's path upstream.
    pub include_prefix: bool,
    /// Send `X-Forwarded-Port` (the gateway sets `-For`, `-Proto`, `-Host`).
    pub x_forward: bool,
    pub change_origin: bool,
    pub custom_headers: Vec<(String, String)>,
    pub proxy_timeout: Option<Duration>,
    /// The public port's error pages, carried by its listener (cluster
    /// mode: the gateways get them with the routes; `portico-gateway chp`
    /// serves its own and leaves this empty).
    pub error_pages: Option<ErrorPages>,
}

impl LayoutSettings {
    /// CHP's defaults on `port`: the full path forwarded, `X-Forwarded-*`.
    pub fn on_port(port: u16) -> Self {
        Self {
            listener_prefix: None,
            port,
            tls: None,
            redirect: None,
            include_prefix: true,
            x_forward: true,
            change_origin: false,
            custom_headers: Vec::new(),
            proxy_timeout: None,
            error_pages: None,
        }
    }
}

/// Where pieces go, from the command line.
#[derive(Clone, Debug)]
pub struct Layout {
    listener: String,
    port: u16,
    tls: Option<(String, String)>,
    redirect: Option<(u16, u16)>,
    include_prefix: bool,
    request_headers: HeaderOps,
    change_origin: bool,
    proxy_timeout: Option<Duration>,
    error_pages: Option<ErrorPages>,
}

impl Layout {
    pub fn new(settings: &LayoutSettings) -> Self {
        let scheme = if settings.tls.is_some() { "https" } else { "http" };
        let mut request_headers = HeaderOps::default();
        if settings.x_forward {
            // The gateway sets X-Forwarded-For/-Proto/-Host itself; CHP
            // also sends the port.
            request_headers.set.push(("x-forwarded-port".to_string(), settings.port.to_string()));
        }
        request_headers.set.extend(settings.custom_headers.iter().cloned());
        Self {
            listener: format!("{}.{}", settings.listener_prefix.as_deref().unwrap_or(scheme), settings.port),
            port: settings.port,
            tls: settings.tls.clone(),
            redirect: settings.redirect,
            include_prefix: settings.include_prefix,
            request_headers,
            change_origin: settings.change_origin,
            proxy_timeout: settings.proxy_timeout,
            error_pages: settings.error_pages.clone(),
        }
    }

    /// The ports to bind and what they speak.
    pub fn ports(&self) -> Vec<(u16, ListenerProtocol)> {
        let protocol = if self.tls.is_some() { ListenerProtocol::Https } else { ListenerProtocol::Http };
        let mut ports = vec![(self.port, protocol)];
        ports.extend(self.redirect.map(|(from, _)| (from, ListenerProtocol::Http)));
        ports
    }

    /// Listeners, the `*` virtual host and the health check: what serves
    /// before any route is added.
    pub fn skeleton(&self) -> TableDelta {
        let mut delta = TableDelta::default();
        let tls = self
            .tls
            .iter()
            .map(|(cert_path, key_path)| TlsServer {
                hosts: vec![ANY_HOST.to_string()],
                credential: TlsCredential::Files { cert_path: cert_path.clone(), key_path: key_path.clone() },
            })
            .collect();
        let (_, protocol) = self.ports()[0];
        let mut public = listener(&self.listener, self.port, protocol, tls, "1");
        public.value.error_pages = self.error_pages.clone();
        delta.listeners.insert(self.listener.clone(), Some(public));
        self.add_virtual_host(&mut delta, None);
        if let Some((from, to)) = self.redirect {
            let name = format!("http.{from}");
            delta.listeners.insert(name.clone(), Some(listener(&name, from, ListenerProtocol::Http, Vec::new(), "2")));
            let host = format!("{name}/{ANY_HOST}");
            delta.virtual_hosts.insert(host.clone(), Some(virtual_host(&name, ANY_HOST)));
            let redirect = Redirect {
                uri: None,
                authority: None,
                scheme: Some("https".to_string()),
                port: RedirectPort::Fixed(to),
                status: 301,
            };
            let route = chp_route("redirect-to-https", Vec::new(), RouteAction::Redirect(redirect));
            delta.routes.insert(format!("{host}/redirect"), Some(placed(&host, "1", route)));
        }
        delta
    }

    /// The virtual host piece name of `host` (`None`: the `*` one).
    pub fn virtual_host_name(&self, host: Option<&str>) -> String {
        format!("{}/{}", self.listener, host.unwrap_or(ANY_HOST))
    }

    /// A new virtual host with its health check (`root`: the `/` route to copy in).
    pub fn add_virtual_host(&self, delta: &mut TableDelta, host: Option<&str>) -> String {
        let name = self.virtual_host_name(host);
        delta.virtual_hosts.insert(name.clone(), Some(virtual_host(&self.listener, host.unwrap_or(ANY_HOST))));
        let health = chp_route(
            HEALTH_PATH,
            vec![exact(HEALTH_PATH)],
            RouteAction::DirectResponse(DirectResponse { status: 200, body: "{\"status\": \"OK\"}".to_string() }),
        );
        delta.routes.insert(format!("{name}/{HEALTH_PATH}"), Some(placed(&name, "0", health)));
        name
    }

    /// Removes a host's virtual host and its pieces.
    pub fn remove_virtual_host(&self, delta: &mut TableDelta, host: &str) {
        let name = self.virtual_host_name(Some(host));
        delta.routes.insert(format!("{name}/{HEALTH_PATH}"), None);
        delta.routes.insert(route_piece_name(&name, "/"), None);
        delta.virtual_hosts.insert(name, None);
    }

    /// The piece of CHP route `path` -> `target` in virtual host `host_piece`.
    pub fn route(&self, host_piece: &str, path: &RoutePath, target: &Target) -> (String, Placed<Arc<Route>>) {
        let root = path.local == "/";
        let matches = if root { Vec::new() } else { vec![prefix(&format!("{}/", path.local)), exact(&path.local)] };
        let rewrite = Rewrite {
            uri: (!self.include_prefix && !root).then(|| "/".to_string()),
            authority: self.change_origin.then(|| target.authority()),
            uri_regex: None,
        };
        let forward = Forward {
            destinations: vec![WeightedDestination {
                host: target.host.clone(),
                port: target.port,
                weight: 100,
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
            }],
            rewrite,
        };
        let mut route = chp_route(&path.key, matches, RouteAction::Forward(forward));
        route.request_headers = self.request_headers.clone();
        route.timeout = self.proxy_timeout;
        let order = match (root, path.host.is_some()) {
            // The `/` route itself: after every route of every host.
            (true, false) => "3".to_string(),
            // A host's own `/`: before the `/` copy.
            (true, true) => "2".to_string(),
            (false, _) => format!("1{}", descending(path.local.len())),
        };
        (route_piece_name(host_piece, &path.key), placed(host_piece, &order, route))
    }

    /// The piece name of CHP route `key` in virtual host `host_piece`.
    pub fn route_name(&self, host_piece: &str, key: &str) -> String {
        route_piece_name(host_piece, key)
    }
}

fn route_piece_name(host_piece: &str, key: &str) -> String {
    format!("{host_piece}/chp:{key}")
}

/// Four base-62 digits that sort longer paths first.
fn descending(length: usize) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut value = 62usize.pow(4) - 1 - length.min(62usize.pow(4) - 1);
    let mut digits = [b'0'; 4];
    for slot in digits.iter_mut().rev() {
        *slot = DIGITS[value % 62];
        value /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

fn listener(
    name: &str,
    port: u16,
    protocol: ListenerProtocol,
    tls: Vec<TlsServer>,
    order: &str,
) -> Placed<ListenerPart> {
    Placed {
        parent: String::new(),
        order: order.to_string(),
        value: ListenerPart {
            name: name.to_string(),
            port,
            protocol,
            tls,
            path_normalization: PathNormalizationMode::MergeSlashes,
            security: Default::default(),
            error_pages: None,
        },
    }
}

fn virtual_host(listener: &str, host: &str) -> Placed<VirtualHostPart> {
    // Host-routed virtual hosts before `*` (the matcher finds hosts by name;
    // the order only shows in /routes).
    let order = if host == ANY_HOST { "2" } else { "1" };
    Placed {
        parent: listener.to_string(),
        order: order.to_string(),
        value: VirtualHostPart { name: host.to_string(), domains: vec![host.to_string()], https_redirect: false },
    }
}

fn placed(parent: &str, order: &str, route: Route) -> Placed<Arc<Route>> {
    Placed { parent: parent.to_string(), order: order.to_string(), value: Arc::new(route) }
}

fn chp_route(name: &str, matches: Vec<RouteMatch>, action: RouteAction) -> Route {
    Route {
        name: name.to_string(),
        provenance: portico_routing::table::Provenance {
            virtual_service: ObjectRef::new("ChpRoute", "", name),
            rule_index: 0,
            rule_name: None,
        },
        matches,
        action,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        timeout: None,
        // CHP never retries: a target that refuses gets the error page.
        retries: RetryPolicy { attempts: 0, per_try_timeout: None, retry_on: RetryOn::default() },
        cors: None,
    }
}

fn exact(path: &str) -> RouteMatch {
    RouteMatch {
        uri: Some(PathMatch { kind: PathMatchKind::Exact(path.to_string()), ignore_case: false }),
        ..RouteMatch::default()
    }
}

fn prefix(path: &str) -> RouteMatch {
    RouteMatch {
        uri: Some(PathMatch { kind: PathMatchKind::Prefix(path.to_string()), ignore_case: false }),
        ..RouteMatch::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_paths_sort_first() {
        assert!(descending(10) < descending(9));
        assert!(format!("1{}", descending(1)).as_str() < "2");
        assert_eq!(descending(0), "zzzz");
    }
}
