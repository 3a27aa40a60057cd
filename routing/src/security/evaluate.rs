//! Policy evaluation in Istio's order: CUSTOM first (the gateway asks the
//! provider), then DENY (any match denies), then ALLOW (when a workload has
//! ALLOW policies, a request must match one).

use std::net::IpAddr;

use crate::request::HeaderSource;

use super::{Attribute, Condition, OperationMatch, Patterns, Policy, PolicySet, Rule, SourceMatch};

/// The request as authorization sees it.
pub struct Attributes<'a> {
    /// Peer identity without `spiffe://` (`cluster.local/ns/x/sa/y`).
    pub principal: Option<&'a str>,
    /// `<iss>/<sub>` of the validated JWT.
    pub request_principal: Option<&'a str>,
    /// The validated JWT's claims.
    pub claims: Option<&'a serde_json::Value>,
    /// Host without port, lower-case.
    pub host: &'a str,
    pub port: u16,
    pub method: &'a str,
    /// The normalized path, without query: the one routing used.
    pub path: &'a str,
    /// The headers as the destination will see them (identity headers
    /// already set by authentication).
    pub headers: &'a dyn HeaderSource,
    pub client_ip: Option<IpAddr>,
    pub sni: Option<&'a str>,
}

/// Why a request was denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// A DENY policy matched.
    ByPolicy(String),
    /// ALLOW policies exist and none matched.
    NoAllowMatched,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::ByPolicy(name) => write!(f, "denied by AuthorizationPolicy {name}"),
            Denied::NoAllowMatched => f.write_str("no ALLOW AuthorizationPolicy matched"),
        }
    }
}

impl PolicySet {
    /// The provider of the first CUSTOM policy that matches, if any.
    pub fn custom_provider(&self, request: &Attributes<'_>) -> Option<&str> {
        self.custom.iter().find(|policy| matches_policy(policy, request, false)).and_then(|p| p.provider.as_deref())
    }

    /// DENY, then ALLOW.
    pub fn check(&self, request: &Attributes<'_>) -> Result<(), Denied> {
        if let Some(policy) = self.deny.iter().find(|policy| matches_policy(policy, request, true)) {
            return Err(Denied::ByPolicy(policy.name.clone()));
        }
        if self.allow.is_empty() || self.allow.iter().any(|policy| matches_policy(policy, request, false)) {
            Ok(())
        } else {
            Err(Denied::NoAllowMatched)
        }
    }
}

/// `unsupported_matches`: what a rule Portico cannot evaluate counts as.
fn matches_policy(policy: &Policy, request: &Attributes<'_>, unsupported_matches: bool) -> bool {
    policy.rules.iter().any(|rule| matches_rule(rule, request, unsupported_matches))
}

fn matches_rule(rule: &Rule, request: &Attributes<'_>, unsupported_matches: bool) -> bool {
    if rule.unsupported {
        return unsupported_matches;
    }
    (rule.from.is_empty() || rule.from.iter().any(|source| matches_source(source, request)))
        && (rule.to.is_empty() || rule.to.iter().any(|operation| matches_operation(operation, request)))
        && rule.when.iter().all(|condition| matches_condition(condition, request))
}

fn matches_source(source: &SourceMatch, request: &Attributes<'_>) -> bool {
    let namespace = request.principal.and_then(namespace_of);
    matches_one(&source.principals, request.principal, glob)
        && matches_one(&source.request_principals, request.request_principal, glob)
        && matches_one(&source.namespaces, namespace, glob)
        && matches_ip(&source.ip_blocks, request.client_ip)
}

fn matches_operation(operation: &OperationMatch, request: &Attributes<'_>) -> bool {
    let port = request.port.to_string();
    matches_one(&operation.hosts, Some(request.host), host_matches)
        && matches_one(&operation.ports, Some(&port), glob)
        && matches_one(&operation.methods, Some(request.method), glob)
        && matches_one(&operation.paths, Some(request.path), glob)
}

/// `hosts` patterns are case-insensitive and may carry a port; the
/// request's host has none (the port is matched by `ports`).
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = match pattern.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => pattern,
    };
    glob(&pattern.to_ascii_lowercase(), &host.to_ascii_lowercase())
}

fn matches_condition(condition: &Condition, request: &Attributes<'_>) -> bool {
    if let Attribute::SourceIp = condition.key {
        return matches_ip(&condition.values, request.client_ip);
    }
    let values = attribute_values(&condition.key, request);
    let any = condition.values.any.is_empty()
        || values.iter().any(|value| condition.values.any.iter().any(|pattern| glob(pattern, value)));
    let not = values.iter().all(|value| !condition.values.not.iter().any(|pattern| glob(pattern, value)));
    any && not
}

fn attribute_values(key: &Attribute, request: &Attributes<'_>) -> Vec<String> {
    let one = |value: Option<&str>| value.map(str::to_string).into_iter().collect::<Vec<_>>();
    match key {
        Attribute::Header(name) => one(request.headers.header(name).as_deref()),
        Attribute::Claim(path) => claim_strings(request.claims, path),
        Attribute::RequestPrincipal => one(request.request_principal),
        Attribute::Audiences => claim_strings(request.claims, &["aud".to_string()]),
        Attribute::Presenter => claim_strings(request.claims, &["azp".to_string()]),
        Attribute::SourcePrincipal => one(request.principal),
        Attribute::SourceNamespace => one(request.principal.and_then(namespace_of)),
        Attribute::SourceIp => Vec::new(),
        Attribute::DestinationPort => vec![request.port.to_string()],
        Attribute::Sni => one(request.sni),
    }
}

/// A claim as strings: a string, each string of a list, or a scalar's text.
pub(crate) fn claim_strings(claims: Option<&serde_json::Value>, path: &[String]) -> Vec<String> {
    let Some(mut value) = claims else { return Vec::new() };
    for segment in path {
        match value.get(segment) {
            Some(next) => value = next,
            None => return Vec::new(),
        }
    }
    match value {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => vec![value.to_string()],
        _ => Vec::new(),
    }
}

/// `any` (when given) and `not` over a single-valued attribute; an absent
/// attribute matches no pattern.
fn matches_one(patterns: &Patterns, value: Option<&str>, matcher: impl Fn(&str, &str) -> bool) -> bool {
    let value = value.unwrap_or("");
    let hit = |pattern: &String| !value.is_empty() && matcher(pattern, value);
    (patterns.any.is_empty() || patterns.any.iter().any(hit)) && !patterns.not.iter().any(hit)
}

fn matches_ip(blocks: &Patterns, ip: Option<IpAddr>) -> bool {
    let hit = |block: &String| ip.is_some_and(|ip| in_block(block, ip));
    (blocks.any.is_empty() || blocks.any.iter().any(hit)) && !blocks.not.iter().any(hit)
}

/// Whether `ip` is in `block` (`a.b.c.d`, `a.b.c.d/n`, IPv6 likewise).
pub(crate) fn in_block(block: &str, ip: IpAddr) -> bool {
    let (address, bits) = match block.split_once('/') {
        Some((address, bits)) => (address, bits.parse::<u32>().ok()),
        None => (block, None),
    };
    let Ok(network) = address.parse::<IpAddr>() else { return false };
    match (network, ip) {
        (IpAddr::V4(network), IpAddr::V4(ip)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(network) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(network), IpAddr::V6(ip)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(network) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// Istio's string match: `*` (any non-empty), `prefix*`, `*suffix`, exact.
pub(crate) fn glob(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        !value.is_empty()
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else {
        pattern == value
    }
}

/// `cluster.local/ns/<ns>/sa/<sa>` -> `<ns>`.
fn namespace_of(principal: &str) -> Option<&str> {
    let mut parts = principal.split('/');
    parts.find(|part| *part == "ns").and_then(|_| parts.next())
}
