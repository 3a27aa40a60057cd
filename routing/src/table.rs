//! The route table: what one gateway instance serves, as plain data.
//!
//! This is the intermediate representation between the Kubernetes objects and
//! the data plane. It is what `translate` produces, what the discovery
//! protocol carries, what `/config_dump` shows and what [`crate::Matcher`]
//! compiles. It holds no Kubernetes types: a route keeps only its
//! [`Provenance`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::diagnostic::ObjectRef;
use crate::normalize::PathNormalization;
use crate::pattern::{Pattern, SearchPattern};

mod header_ops;
pub use self::header_ops::{HeaderLists, HeaderOps};

/// Everything one gateway instance serves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteTable {
    /// Set by whoever publishes the table (folder watcher, controller).
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub path_normalization: PathNormalizationMode,
    pub listeners: Vec<Listener>,
    /// Resolved endpoints of the destinations, keyed by `host:port`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clusters: BTreeMap<String, Cluster>,
    /// Authentication and authorization the gateway enforces.
    #[serde(default, skip_serializing_if = "crate::security::SecurityTable::is_empty")]
    pub security: crate::security::SecurityTable,
}

impl RouteTable {
    /// Equal apart from the version stamp: publishing such a table changes
    /// nothing. Destructured so that a field added to the table cannot be
    /// forgotten here (its changes would never be applied).
    pub fn same_content(&self, other: &RouteTable) -> bool {
        let RouteTable { version: _, path_normalization, listeners, clusters, security } = other;
        self.path_normalization == *path_normalization
            && self.listeners == *listeners
            && self.clusters == *clusters
            && self.security == *security
    }
}

/// Serializable wrapper of [`PathNormalization`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalizationMode {
    None,
    Base,
    #[default]
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl From<PathNormalization> for PathNormalizationMode {
    fn from(mode: PathNormalization) -> Self {
        match mode {
            PathNormalization::None => PathNormalizationMode::None,
            PathNormalization::Base => PathNormalizationMode::Base,
            PathNormalization::MergeSlashes => PathNormalizationMode::MergeSlashes,
            PathNormalization::DecodeAndMergeSlashes => PathNormalizationMode::DecodeAndMergeSlashes,
        }
    }
}

impl From<PathNormalizationMode> for PathNormalization {
    fn from(mode: PathNormalizationMode) -> Self {
        match mode {
            PathNormalizationMode::None => PathNormalization::None,
            PathNormalizationMode::Base => PathNormalization::Base,
            PathNormalizationMode::MergeSlashes => PathNormalization::MergeSlashes,
            PathNormalizationMode::DecodeAndMergeSlashes => PathNormalization::DecodeAndMergeSlashes,
        }
    }
}

/// One port of the gateway: the merge of every selected Gateway server on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// `http.80`, `https.443`: like Istio's route configuration names.
    pub name: String,
    pub port: u16,
    pub protocol: ListenerProtocol,
    /// Certificates served on this port, chosen by SNI. Empty for plaintext.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsServer>,
    /// What answers this port's 404 (no route) and 5xx in place of the
    /// plain text: JupyterHub's proxy's `--error-target`/`--error-path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_pages: Option<ErrorPages>,
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A listener's error pages (configurable-http-proxy's): JupyterHub's
/// "your server is not running" page for a stopped user's URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorPages {
    /// `GET <url><code>?url=<request path>` (`url` ends with `/`); the
    /// plain answer if it fails.
    Target { url: String },
    /// HTML bodies by status code, and the page of every other code.
    Pages {
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        by_status: BTreeMap<u16, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        other: Option<String>,
    },
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    /// HTTP/1.1 and h2c.
    Http,
    /// TLS terminated here, then HTTP/1.1 or h2 by ALPN.
    Https,
}

/// A TLS server of a listener (Gateway `servers[].tls` with mode SIMPLE).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsServer {
    /// SNI names this certificate serves; `*` and `*.suffix` allowed.
    pub hosts: Vec<String>,
    pub credential: TlsCredential,
}

/// Where a TLS server's certificate and key come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsCredential {
    /// From a `kubernetes.io/tls` Secret (`credentialName`), inlined so the
    /// data plane needs no access to Secrets.
    Pem {
        /// `namespace/name` of the Secret.
        source: String,
        cert_pem: String,
        key_pem: String,
    },
    /// `serverCertificate` / `privateKey` file paths on the gateway.
    Files { cert_path: String, key_path: String },
}

/// A set of domains and the ordered routes that serve them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VirtualHost {
    /// `domain:port`, like Istio's virtual host names.
    pub name: String,
    /// Exact host, `*.suffix` or `*`; always lower-case.
    pub domains: Vec<String>,
    /// Gateway `tls.httpsRedirect`: every request gets a 301 to https.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    pub routes: Vec<Route>,
}

/// Where a route came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub virtual_service: ObjectRef,
    /// Index in `spec.http`.
    pub rule_index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
}

/// One HTTP route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// The rule name, or `<namespace>.<virtualservice>.<index>`.
    pub name: String,
    pub provenance: Provenance,
    /// Alternatives (OR). Empty means "every request".
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub matches: Vec<RouteMatch>,
    pub action: RouteAction,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
    /// Whole-request timeout; `None` means none (Istio's default, which keeps
    /// long-lived notebook websockets alive).
    #[serde(default, with = "crate::duration::serde_opt", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    pub retries: RetryPolicy,
    /// Boxed: rare, and 120 bytes inline in every route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Box<CorsPolicy>>,
}

/// One `match[]` entry: all its conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<ValueMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<ValueMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub query_params: Vec<QueryParamMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl RouteMatch {
    /// Istio's catch-all: the path condition accepts every path and nothing
    /// else is constrained. Such routes are moved behind all others.
    pub fn is_catch_all(&self) -> bool {
        let path_is_any = match &self.uri {
            None => true,
            Some(PathMatch { kind: PathMatchKind::Prefix(prefix), .. }) => prefix == "/",
            Some(PathMatch { kind: PathMatchKind::Regex(pattern), .. }) => {
                matches!(pattern.as_str(), "*" | ".*" | "^.*$" | "/.*")
            }
            Some(PathMatch { kind: PathMatchKind::Exact(_), .. }) => false,
        };
        path_is_any
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.query_params.is_empty()
            && self.port.is_none()
    }
}

/// Condition on the (normalized) path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathMatch {
    pub kind: PathMatchKind,
    /// `ignoreUriCase`: ASCII case-insensitive exact/prefix comparison.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
}

/// How a path is compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMatchKind {
    Exact(String),
    /// A plain string prefix: `/a/` does not match `/a`.
    Prefix(String),
    Regex(Pattern),
}

/// Condition on a header, method, scheme, authority or query value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueMatch {
    Exact(String),
    Prefix(String),
    Regex(Pattern),
}

impl ValueMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(expected) => value == expected,
            ValueMatch::Prefix(prefix) => value.starts_with(prefix.as_str()),
            ValueMatch::Regex(pattern) => pattern.is_full_match(value),
        }
    }
}

/// `headers` / `withoutHeaders` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lower-case header name.
    pub name: String,
    /// `None`: the header only has to be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ValueMatch>,
    /// From `withoutHeaders`: the condition must not hold (an absent header
    /// satisfies it, as in Envoy's `invert_match`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

/// `queryParams` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryParamMatch {
    pub name: String,
    /// `None`: the parameter only has to be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ValueMatch>,
}

/// What a route does with a request it matched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    Forward(Forward),
    Redirect(Redirect),
    DirectResponse(DirectResponse),
}

/// Proxy to one of weighted destinations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forward {
    #[serde(deserialize_with = "exact_vec")]
    pub destinations: Vec<WeightedDestination>,
    #[serde(default, skip_serializing_if = "Rewrite::is_empty")]
    pub rewrite: Rewrite,
}

/// A destination with its relative weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedDestination {
    /// Fully qualified host, e.g. `nb.team.svc.cluster.local`.
    pub host: String,
    pub port: u16,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}

impl WeightedDestination {
    /// The key of this destination's [`Cluster`].
    pub fn cluster_name(&self) -> String {
        cluster_name(&self.host, self.port)
    }
}

/// `host:port`, the key of [`RouteTable::clusters`].
pub fn cluster_name(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

/// `rewrite`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    /// Replaces the matched prefix (exact/regex matches: the whole path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// `uriRegexRewrite`: every match of the pattern in the path is replaced;
    /// `\1` style references are already converted to `${1}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<RegexRewrite>,
}

impl Rewrite {
    pub fn is_empty(&self) -> bool {
        self.uri.is_none() && self.authority.is_none() && self.uri_regex.is_none()
    }
}

/// `uriRegexRewrite`, compiled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegexRewrite {
    /// Unanchored: it replaces each match inside the path.
    pub pattern: SearchPattern,
    pub replacement: String,
}

/// `redirect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    pub port: RedirectPort,
    pub status: u16,
}

/// Which port a redirect's Location carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedirectPort {
    /// Keep whatever port the request's Host had.
    Unchanged,
    /// `derivePort: FROM_PROTOCOL_DEFAULT`: no port, the scheme's default.
    ProtocolDefault,
    /// `derivePort: FROM_REQUEST_PORT`: the port the request arrived on.
    FromRequest,
    Fixed(u16),
}

/// `directResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

/// `retries`. The gateway only retries requests that are safe to repeat
/// (idempotent methods, no upgrade, body not yet streamed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first try; 0 disables retrying.
    pub attempts: u32,
    #[serde(default, with = "crate::duration::serde_opt", skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
}

impl Default for RetryPolicy {
    /// Istio's default when a route sets no `retries`: 2 attempts on
    /// connection failures, refused streams and 503.
    fn default() -> Self {
        Self {
            attempts: 2,
            per_try_timeout: None,
            retry_on: RetryOn {
                connect_failure: true,
                refused_stream: true,
                status_codes: vec![503],
                ..RetryOn::default()
            },
        }
    }
}

/// The conditions of `retries.retryOn` Portico acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryOn {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub connect_failure: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused_stream: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    /// `5xx`: any 5xx status or a reset.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub server_error: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gateway_error: bool,
    /// `retriable-status-codes` and bare numbers in `retryOn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub status_codes: Vec<u16>,
}

/// `corsPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsPolicy {
    pub allow_origins: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, with = "crate::duration::serde_opt", skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
}

/// The resolved endpoints of one `host:port`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    #[serde(deserialize_with = "exact_vec")]
    pub endpoints: Vec<Endpoint>,
    /// The endpoints are meshed pods: connect with the gateway's workload
    /// certificate and verify theirs against the mesh root.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mesh_tls: bool,
}

/// One ready endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
    /// In a meshed cluster, a pod known to run without the sidecar (opted
    /// out, or created before its namespace joined the mesh): plain TCP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain: bool,
    /// A meshed pod's service account, when known: its certificate must
    /// name exactly `spiffe://<trust domain>/ns/<namespace>/sa/<this>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

impl RouteTable {
    /// A copy safe to show on admin endpoints: key material removed.
    pub fn redacted(&self) -> RouteTable {
        let mut table = self.clone();
        for server in table.listeners.iter_mut().flat_map(|l| l.tls.iter_mut()) {
            if let TlsCredential::Pem { cert_pem, key_pem, .. } = &mut server.credential {
                *cert_pem = format!("<{} bytes>", cert_pem.len());
                *key_pem = "<redacted>".to_string();
            }
        }
        table
    }

    /// Number of routes across all listeners and virtual hosts.
    pub fn route_count(&self) -> usize {
        self.listeners.iter().flat_map(|l| &l.virtual_hosts).map(|v| v.routes.len()).sum()
    }
}

/// Deserializes a list at exactly its length. Formats that give no length
/// up front (JSON, which the discovery protocol carries) grow a `Vec` to
/// four slots for one element: a gateway decoding 10,000 notebook routes
/// held 14 MiB of empty slots, a third of its heap.
fn exact_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut items = Vec::<T>::deserialize(deserializer)?;
    items.shrink_to_fit();
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_lists_hold_no_spare_slots() {
        let route: Route = serde_json::from_str(
            r#"{"name": "r", "provenance": {"virtual_service": {"kind": "VirtualService", "namespace": "a", "name": "b"}, "rule_index": 0},
                "matches": [{"uri": {"kind": {"prefix": "/a/"}}, "headers": [{"name": "x"}]}],
                "action": {"forward": {"destinations": [{"host": "h", "port": 80, "weight": 100}]}},
                "retries": {"attempts": 2, "retry_on": {"status_codes": [503]}}}"#,
        )
        .unwrap();
        assert_eq!(route.matches.capacity(), 1);
        assert_eq!(route.matches[0].headers.capacity(), 1);
        let RouteAction::Forward(forward) = &route.action else { panic!("{:?}", route.action) };
        assert_eq!(forward.destinations.capacity(), 1);
        assert_eq!(route.retries.retry_on.status_codes.capacity(), 1);
    }
}
