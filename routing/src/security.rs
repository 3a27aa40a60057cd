//! What the gateway enforces before it forwards: JWT authentication
//! (Istio RequestAuthentication), authorization (Istio AuthorizationPolicy,
//! ALLOW/DENY/CUSTOM) and the external authorization providers CUSTOM
//! policies name.
//!
//! [`SecurityTable`] is the compiled form, carried in the route table (and
//! so over discovery). Evaluation ([`PolicySet::custom_provider`],
//! [`PolicySet::check`]) is pure: the gateway supplies the request's
//! attributes, including the one normalized path that routing used.

mod compile;
mod evaluate;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use compile::compile;
pub use evaluate::{Attributes, Denied};

/// Istio's root namespace: its policies apply to every workload of the mesh.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Reads the `mesh` key of Istio's mesh config ConfigMap (YAML).
pub fn parse_mesh_config(mesh: &str) -> Result<portico_api::istio::MeshConfig, String> {
    serde_yaml::from_str(mesh).map_err(|error| format!("cannot read mesh config: {error}"))
}

/// Everything one gateway enforces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecurityTable {
    /// Accepted JWT issuers (RequestAuthentications selecting the gateway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtIssuer>,
    /// Policies whose workload is the gateway itself (its namespace, or the
    /// root namespace, and a matching selector).
    #[serde(default, skip_serializing_if = "PolicySet::is_empty")]
    pub gateway: PolicySet,
    /// Selector-less policies of a destination's namespace, evaluated at the
    /// gateway for requests routed into that namespace (source principal:
    /// the gateway's own identity), so a profile's policies hold even for
    /// pods without a sidecar.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, PolicySet>,
    /// `extensionProviders` of the mesh config, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, ExtAuthzProvider>,
}

impl SecurityTable {
    pub fn is_empty(&self) -> bool {
        self.jwt_rules.is_empty() && self.gateway.is_empty() && self.namespaces.is_empty() && self.providers.is_empty()
    }

    /// Request headers that only the gateway may set: every
    /// `outputClaimToHeaders` and `outputPayloadToHeader` target. Client
    /// copies are removed from every request, authenticated or not.
    pub fn identity_headers(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.identity_header_names().collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// [`Self::identity_headers`] as the rules list them, repeats included:
    /// no allocation, for the request path.
    pub fn identity_header_names(&self) -> impl Iterator<Item = &str> {
        self.jwt_rules.iter().flat_map(|rule| {
            rule.claim_to_headers.iter().map(|c| c.header.as_str()).chain(rule.payload_header.as_deref())
        })
    }
}

/// One accepted issuer, with where its tokens are read from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JwtIssuer {
    /// `namespace/name jwtRules[i]` of the RequestAuthentication.
    pub source: String,
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Header locations, defaults filled in (`authorization`, `Bearer `).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<TokenHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_to_headers: Vec<ClaimHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_header: Option<String>,
    /// JWKS fetch timeout.
    pub jwks_timeout_ms: u64,
}

/// A header a token is read from: `<prefix><token>`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenHeader {
    /// Lower-case.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// `outputClaimToHeaders[]`; `claim` may be nested (`a.b`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimHeader {
    /// Lower-case.
    pub header: String,
    pub claim: String,
}

/// The authorization policies of one workload, by action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicySet {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Policy>,
}

impl PolicySet {
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty() && self.deny.is_empty() && self.allow.is_empty()
    }
}

/// One AuthorizationPolicy: it matches a request when any rule does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// `namespace/name`.
    pub name: String,
    /// CUSTOM: the extension provider to ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// `from`, `to` and `when` all match (an absent part matches anything);
/// one entry of `from` and one of `to` suffice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<SourceMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<OperationMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
    /// Set when the rule used something Portico cannot evaluate: a DENY
    /// rule then matches every request and an ALLOW rule none (fail closed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsupported: bool,
}

/// Values a request attribute must (`any`) and must not (`not`) match, as
/// Istio patterns: exact, `prefix*`, `*suffix`, or `*` (present).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Patterns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not: Vec<String>,
}

impl Patterns {
    pub fn is_empty(&self) -> bool {
        self.any.is_empty() && self.not.is_empty()
    }
}

/// `rules[].from[].source`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceMatch {
    #[serde(default, skip_serializing_if = "Patterns::is_empty")]
    pub principals: Patterns,
    #[serde(default, skip_serializing_if = "Patterns::is_empty")]
    pub request_principals: Patterns,
    #[serde(default, skip_serializing_if = "Patterns::is_empty")]
    pub namespaces: Patterns,
    /// CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.
    #[serde(default, skip_serializing_if = "Patterns::is_empty")]
    pub ip_blocks: Patterns,
}

/// `rules[].to[].operation`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperationMatch {
    #[serde(default, skip_serializing_if = "Patterns::is_empty")]
    pub hosts: Patterns,
    #[serde(default, skip_serializing_if = "Patterns::is_empty")]
    pub ports: Patterns,
    #[serde(default, skip_serializing_if = "Patterns::is_empty")]
    pub methods: Patterns,
    #[serde(default, skip_serializing_if = "Patterns::is_empty")]
    pub paths: Patterns,
}

/// `rules[].when[]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub key: Attribute,
    pub values: Patterns,
}

/// The Istio attributes a condition can test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// `request.headers[<name>]` (lower-case).
    Header(String),
    /// `request.auth.claims[a][b]`.
    Claim(Vec<String>),
    /// `request.auth.principal`.
    RequestPrincipal,
    /// `request.auth.audiences`.
    Audiences,
    /// `request.auth.presenter`.
    Presenter,
    /// `source.principal`.
    SourcePrincipal,
    /// `source.namespace`.
    SourceNamespace,
    /// `source.ip` and `remote.ip` (CIDRs).
    SourceIp,
    /// `destination.port`.
    DestinationPort,
    /// `connection.sni`.
    Sni,
}

/// An `envoyExtAuthzHttp` provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtAuthzProvider {
    pub name: String,
    /// Service host name (`oauth2-proxy.oauth2-proxy.svc.cluster.local`).
    pub service: String,
    pub port: u16,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
    /// The status a client gets when the service cannot be asked.
    pub status_on_error: u16,
    /// Lower-case header names copied into the check request (besides
    /// Host, Method, Path and Content-Length, always sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<String>,
}
