//! What to do with a request: the routing decision, made once per request
//! from one snapshot and one normalized path.
//!
//! Kept apart from Pingora's session so the whole policy reads top to bottom
//! and is testable on plain request headers.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header;
use pingora_http::RequestHeader;
use portico_routing::request::host_of;
use portico_routing::rewrite::{RedirectRequest, https_location, redirect_location, rewritten_path};
use portico_routing::table::{CorsPolicy, Route, RouteAction, WeightedDestination};
use portico_routing::{RequestView, normalize_ref};

use crate::metrics::OutcomeKey;
use crate::state::Snapshot;
use crate::upstream::{pick_weighted, random_u32};

/// Forward the request upstream.
pub struct Forward {
    /// Kept for the request's whole life: its clusters and policies are the
    /// ones the route was chosen with.
    pub snapshot: Arc<Snapshot>,
    route: Arc<Route>,
    destination: usize,
    /// Path and query to send upstream when normalization or a rewrite
    /// changed them; `None` forwards the client's own target.
    pub upstream_path: Option<String>,
    /// The request's host (lower-case, no port), for X-Forwarded-Host.
    pub host: String,
    /// The normalized path (no query) that routing matched: authorization
    /// decides on exactly this path.
    pub path: String,
    /// Set when CORS allows the request's Origin: echo it in the response.
    pub cors_origin: Option<String>,
}

impl Forward {
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// This request's metric series in its snapshot's cache.
    pub fn outcome_key(&self, grpc: bool, status: u16, flags: &'static str) -> OutcomeKey {
        // The snapshot holds the route, so its address names it as long as
        // the cache (in the same snapshot) lives.
        OutcomeKey { route: Arc::as_ptr(&self.route) as usize, destination: self.destination, grpc, status, flags }
    }

    /// The chosen destination's namespace (`<service>.<namespace>.svc...`):
    /// whose policies apply, and whose workloads may answer over the mesh.
    pub fn destination_namespace(&self) -> Option<&str> {
        self.destination().and_then(|d| second_label(&d.host))
    }

    /// The chosen destination (always present: only forward actions make a `Forward`).
    pub fn destination(&self) -> Option<&WeightedDestination> {
        match &self.route().action {
            RouteAction::Forward(forward) => forward.destinations.get(self.destination),
            _ => None,
        }
    }
}

/// `b` of `a.b.c`: a byte loop, as this runs twice a request and a
/// destination's first labels are short (a `str` searcher costs more).
fn second_label(host: &str) -> Option<&str> {
    let bytes = host.as_bytes();
    let start = bytes.iter().position(|b| *b == b'.')? + 1;
    let end = bytes[start..].iter().position(|b| *b == b'.').map_or(bytes.len(), |length| start + length);
    host.get(start..end)
}

/// Answer the request here.
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(header::HeaderName, String)>,
    pub body: Bytes,
    /// Envoy-style response flag for metrics and the access log.
    pub flags: &'static str,
}

impl LocalResponse {
    pub fn text(status: u16, body: &'static str, flags: &'static str) -> Self {
        Self {
            status,
            headers: vec![(header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string())],
            body: Bytes::from_static(body.as_bytes()),
            flags,
        }
    }

    /// A response with a body built at run time.
    pub fn with_body(status: u16, content_type: &str, body: impl Into<Bytes>, flags: &'static str) -> Self {
        Self { status, headers: vec![(header::CONTENT_TYPE, content_type.to_string())], body: body.into(), flags }
    }
}

pub enum Decision {
    Forward(Box<Forward>),
    /// A route (or an `httpsRedirect` server) answers here: a redirect or a
    /// direct response. Authorization still applies, on `host` and `path`.
    Local {
        snapshot: Arc<Snapshot>,
        response: LocalResponse,
        host: String,
        path: String,
    },
    /// Refused or unrouted: answered before any policy could apply.
    Respond(LocalResponse),
}

/// Decides what happens to `request`, arriving on Gateway port `port` over `scheme`.
///
/// `snapshot` moves into the decision that needs it: a request takes its
/// hold on the routes once, not once more per step.
pub fn decide(snapshot: Arc<Snapshot>, request: &RequestHeader, port: u16, scheme: &str) -> Decision {
    let Some(authority) = authority(request) else {
        return Decision::Respond(LocalResponse::text(400, "missing or conflicting host\n", "DPE"));
    };
    let Ok(raw_target) = std::str::from_utf8(request.raw_path()) else {
        return Decision::Respond(LocalResponse::text(400, "request target is not ASCII\n", "DPE"));
    };
    let target = match normalize_ref(raw_target, snapshot.normalization) {
        Ok(target) => target,
        Err(error) => {
            tracing::debug!(%error, target = raw_target, "request target rejected");
            return Decision::Respond(LocalResponse::text(400, "bad request path\n", "DPE"));
        }
    };
    let host = host_of(authority);
    let view = RequestView {
        port,
        scheme,
        method: request.method.as_str(),
        authority,
        host: &host,
        path: &target.path,
        query: target.query,
        headers: &request.headers,
    };
    let Some(selection) = snapshot.matcher.select(&view) else {
        return Decision::Respond(LocalResponse::text(404, "no route\n", "NR"));
    };
    let vhost = selection.virtual_host;
    // Redirects and direct responses are rare: a second hold is fine.
    let local = |response: LocalResponse| Decision::Local {
        snapshot: Arc::clone(&snapshot),
        response,
        host: host.clone().into_owned(),
        path: target.path.clone().into_owned(),
    };
    if vhost.https_redirect {
        let location = https_location(authority, &path_and_query(&target.path, target.query));
        return local(redirect(301, location));
    }
    let Some(selected) = selection.route else {
        return Decision::Respond(LocalResponse::text(404, "no route\n", "NR"));
    };
    let (route, match_index) = (selected.route, selected.match_index);
    let origin = request.headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let cors_origin = route.cors.as_ref().zip(origin).filter(|(cors, origin)| origin_allowed(cors, origin));
    if let Some((cors, origin)) = cors_origin
        && request.method == http::Method::OPTIONS
        && request.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return Decision::Respond(preflight(cors, origin));
    }
    match &route.action {
        RouteAction::Redirect(redirect_action) => {
            let location = redirect_location(
                redirect_action,
                &RedirectRequest { scheme, authority, listener_port: port, path: &target.path, query: target.query },
            );
            local(redirect(redirect_action.status, location))
        }
        RouteAction::DirectResponse(direct) => local(LocalResponse {
            status: direct.status,
            headers: vec![(header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string())],
            body: Bytes::from(direct.body.clone()),
            flags: "DR",
        }),
        RouteAction::Forward(forward) => {
            let matched = match_index.map(|i| &route.matches[i]);
            let rewritten = rewritten_path(&target.path, matched, &forward.rewrite);
            // Borrowed twice: the path is the client's, unchanged.
            let unchanged = matches!((&target.path, &rewritten), (Cow::Borrowed(_), Cow::Borrowed(_)));
            let upstream_path = (!unchanged).then(|| path_and_query(&rewritten, target.query));
            drop(rewritten);
            let destination = pick_weighted(&forward.destinations, random_u32());
            let cors_origin = cors_origin.map(|(_, origin)| origin.to_string());
            let route = Arc::clone(route);
            Decision::Forward(Box::new(Forward {
                snapshot,
                route,
                destination,
                upstream_path,
                host: host.into_owned(),
                path: target.path.into_owned(),
                cors_origin,
            }))
        }
    }
}

/// `path`, then `?` and the query when there was one (a bare trailing `?`
/// is kept).
fn path_and_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => {
            let mut target = String::with_capacity(path.len() + 1 + query.len());
            target.push_str(path);
            target.push('?');
            target.push_str(query);
            target
        }
        None => path.to_string(),
    }
}

/// The request's authority: `:authority`/absolute-form URI or Host, which
/// must agree when both are present.
fn authority(request: &RequestHeader) -> Option<&str> {
    let from_uri = request.uri.authority().map(|a| a.as_str());
    let mut hosts = request.headers.get_all(header::HOST).iter();
    let from_header = match (hosts.next(), hosts.next()) {
        (Some(host), None) => Some(host.to_str().ok()?),
        (None, None) => None,
        (Some(_), Some(_)) => return None,
        (None, Some(_)) => return None,
    };
    match (from_uri, from_header) {
        (Some(uri), Some(header)) if !uri.eq_ignore_ascii_case(header) => None,
        (Some(uri), _) => Some(uri),
        (None, Some(header)) if !header.is_empty() => Some(header),
        _ => None,
    }
}

fn redirect(status: u16, location: String) -> LocalResponse {
    LocalResponse { status, headers: vec![(header::LOCATION, location)], body: Bytes::new(), flags: "-" }
}

fn origin_allowed(cors: &CorsPolicy, origin: &str) -> bool {
    cors.allow_origins.iter().any(|allowed| allowed.matches(origin))
}

/// Envoy answers an allowed CORS preflight itself.
fn preflight(cors: &CorsPolicy, origin: &str) -> LocalResponse {
    let mut headers = vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.to_string())];
    if !cors.allow_methods.is_empty() {
        headers.push((header::ACCESS_CONTROL_ALLOW_METHODS, cors.allow_methods.join(",")));
    }
    if !cors.allow_headers.is_empty() {
        headers.push((header::ACCESS_CONTROL_ALLOW_HEADERS, cors.allow_headers.join(",")));
    }
    if let Some(max_age) = cors.max_age {
        headers.push((header::ACCESS_CONTROL_MAX_AGE, max_age.as_secs().to_string()));
    }
    if cors.allow_credentials {
        headers.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true".to_string()));
    }
    LocalResponse { status: 200, headers, body: Bytes::new(), flags: "-" }
}

#[cfg(test)]
mod tests {
    use super::second_label;

    #[test]
    fn second_label_is_the_namespace_of_a_service_host() {
        for host in ["nb.team.svc.cluster.local", "nb.team", "nb", "nb.", "a..b", ".x.y", ""] {
            assert_eq!(second_label(host), host.split('.').nth(1), "{host:?}");
        }
    }
}
