//! RequestAuthentications, AuthorizationPolicies and the mesh config's
//! extension providers in, the [`SecurityTable`] of one gateway out.
//!
//! Anything that cannot be honoured is reported with the object, field and
//! reason, and fails closed: a DENY rule Portico cannot evaluate denies
//! everything it would have covered, an ALLOW rule allows nothing.

use std::collections::BTreeMap;

use portico_api::istio::{self, AuthorizationPolicy, ExtensionProvider, WorkloadSelector};
use portico_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    Attribute, ClaimHeader, Condition, ExtAuthzProvider, JwtIssuer, OperationMatch, Patterns, Policy, PolicySet,
    ROOT_NAMESPACE, Rule, SecurityTable, SourceMatch, TokenHeader,
};
use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::duration::parse as parse_duration;
use crate::resources::Resources;
use crate::translate::GatewayIdentity;

const DEFAULT_JWKS_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_EXT_AUTHZ_TIMEOUT_MS: u64 = 600_000;

/// Compiles what applies to the gateway `identity`.
pub fn compile(resources: &Resources, identity: &GatewayIdentity, diagnostics: &mut Vec<Diagnostic>) -> SecurityTable {
    let mut table = SecurityTable::default();
    for authentication in sorted(&resources.request_authentications, |o| &o.metadata) {
        let (namespace, name) = names(&authentication.metadata);
        let object = ObjectRef::new("RequestAuthentication", namespace, name);
        if !applies_to_gateway(namespace, authentication.spec.selector.as_ref(), identity) {
            continue;
        }
        for (index, rule) in authentication.spec.jwt_rules.iter().enumerate() {
            if let Some(issuer) = jwt_issuer(rule, &object, index, diagnostics) {
                table.jwt_rules.push(issuer);
            }
        }
    }
    for policy in sorted(&resources.authorization_policies, |o| &o.metadata) {
        let (namespace, name) = names(&policy.metadata);
        let object = ObjectRef::new("AuthorizationPolicy", namespace, name);
        let selector = policy.spec.selector.as_ref();
        let into = if applies_to_gateway(namespace, selector, identity) {
            &mut table.gateway
        } else if namespace == ROOT_NAMESPACE || namespace == identity.namespace {
            continue;
        } else if selector.is_some_and(|s| !s.match_labels.is_empty()) {
            diagnostics.push(Diagnostic::warning(
                &object,
                "spec.selector",
                "selects pods, not the gateway: enforced by the pods' sidecars, not at the gateway",
            ));
            continue;
        } else {
            table.namespaces.entry(namespace.to_string()).or_default()
        };
        add_policy(into, policy, &object, diagnostics);
    }
    if let Some(mesh) = &resources.mesh_config {
        for (index, provider) in mesh.extension_providers.iter().enumerate() {
            if let Some(provider) = ext_authz_provider(provider, index, diagnostics) {
                table.providers.insert(provider.name.clone(), provider);
            }
        }
    }
    check_providers(&table, diagnostics);
    table
}

/// Objects in (namespace, name) order, so the table does not depend on
/// the order files or watch events came in.
fn sorted<T>(objects: &[T], metadata: impl Fn(&T) -> &ObjectMeta) -> Vec<&T> {
    let mut objects: Vec<&T> = objects.iter().collect();
    objects.sort_by_key(|o| names(metadata(o)));
    objects
}

fn names(metadata: &ObjectMeta) -> (&str, &str) {
    (metadata.namespace.as_deref().unwrap_or("default"), metadata.name.as_deref().unwrap_or(""))
}

/// A policy is the gateway's when it lives in the gateway's namespace or in
/// the root namespace and its selector (if any) matches the gateway's labels.
fn applies_to_gateway(namespace: &str, selector: Option<&WorkloadSelector>, identity: &GatewayIdentity) -> bool {
    (namespace == identity.namespace || namespace == ROOT_NAMESPACE)
        && selector.is_none_or(|s| s.match_labels.iter().all(|(k, v)| identity.labels.get(k) == Some(v)))
}

fn jwt_issuer(
    rule: &istio::JwtRule,
    object: &ObjectRef,
    index: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<JwtIssuer> {
    let field = |name: &str| format!("spec.jwtRules[{index}]{name}");
    if rule.issuer.is_empty() {
        diagnostics.push(Diagnostic::error(object, field(".issuer"), "an issuer is required"));
        return None;
    }
    if rule.jwks_uri.is_none() && rule.jwks.is_none() {
        // Istio would discover the keys from the issuer's OpenID
        // configuration; requiring them explicitly keeps startup offline.
        diagnostics.push(Diagnostic::error(
            object,
            field(""),
            "set jwksUri or jwks (OpenID discovery is not supported)",
        ));
        return None;
    }
    if let Some(jwks) = &rule.jwks
        && let Err(error) = serde_json::from_str::<serde_json::Value>(jwks)
    {
        diagnostics.push(Diagnostic::error(object, field(".jwks"), format!("not JSON: {error}")));
        return None;
    }
    let jwks_timeout_ms = match rule.timeout.as_deref().map(parse_duration) {
        None => DEFAULT_JWKS_TIMEOUT_MS,
        Some(Ok(duration)) => u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        Some(Err(error)) => {
            diagnostics.push(Diagnostic::warning(object, field(".timeout"), format!("{error}; using 5s")));
            DEFAULT_JWKS_TIMEOUT_MS
        }
    };
    let mut from_headers: Vec<TokenHeader> = rule
        .from_headers
        .iter()
        .map(|h| TokenHeader { name: h.name.to_ascii_lowercase(), prefix: h.prefix.clone().unwrap_or_default() })
        .collect();
    let mut from_params = rule.from_params.clone();
    // Istio's defaults apply only when no location is configured at all.
    if from_headers.is_empty() && from_params.is_empty() && rule.from_cookies.is_empty() {
        from_headers.push(TokenHeader { name: "authorization".to_string(), prefix: "Bearer ".to_string() });
        from_params.push("access_token".to_string());
    }
    Some(JwtIssuer {
        source: format!("{}/{} jwtRules[{index}]", object.namespace, object.name),
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        jwks_uri: rule.jwks_uri.clone(),
        jwks: rule.jwks.clone(),
        from_headers,
        from_params,
        from_cookies: rule.from_cookies.clone(),
        forward_original_token: rule.forward_original_token,
        claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| ClaimHeader { header: c.header.to_ascii_lowercase(), claim: c.claim.clone() })
            .collect(),
        payload_header: rule.output_payload_to_header.as_ref().map(|h| h.to_ascii_lowercase()),
        jwks_timeout_ms,
    })
}

fn add_policy(
    into: &mut PolicySet,
    policy: &AuthorizationPolicy,
    object: &ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let rules = policy
        .spec
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule)| compile_rule(rule, object, index, diagnostics))
        .collect();
    let name = format!("{}/{}", object.namespace, object.name);
    let action = policy.spec.action.as_deref().unwrap_or("ALLOW");
    match action {
        "ALLOW" => into.allow.push(Policy { name, provider: None, rules }),
        "DENY" => into.deny.push(Policy { name, provider: None, rules }),
        "CUSTOM" => match &policy.spec.provider {
            Some(provider) if !provider.name.is_empty() => {
                into.custom.push(Policy { name, provider: Some(provider.name.clone()), rules });
            }
            _ => diagnostics.push(Diagnostic::error(object, "spec.provider.name", "a CUSTOM policy needs a provider")),
        },
        "AUDIT" => diagnostics.push(Diagnostic::warning(object, "spec.action", "AUDIT policies are not enforced")),
        other => diagnostics.push(Diagnostic::error(
            object,
            "spec.action",
            format!("unknown action {other:?}; expected ALLOW, DENY, CUSTOM or AUDIT"),
        )),
    }
}

fn compile_rule(rule: &istio::Rule, object: &ObjectRef, index: usize, diagnostics: &mut Vec<Diagnostic>) -> Rule {
    let mut compiled = Rule::default();
    let mut unsupported = |field: String, reason: &str| {
        diagnostics.push(Diagnostic::error(object, field, format!("{reason}; the rule fails closed")));
    };
    let mut failed = false;
    for (from_index, from) in rule.from.iter().enumerate() {
        let source = &from.source;
        let at = format!("spec.rules[{index}].from[{from_index}].source");
        let blocks = [&source.ip_blocks, &source.not_ip_blocks, &source.remote_ip_blocks, &source.not_remote_ip_blocks];
        for block in blocks.iter().flat_map(|b| b.iter()) {
            if !valid_block(block) {
                unsupported(format!("{at}.ipBlocks"), &format!("{block:?} is not an IP address or CIDR"));
                failed = true;
            }
        }
        compiled.from.push(SourceMatch {
            principals: patterns(&source.principals, &source.not_principals),
            request_principals: patterns(&source.request_principals, &source.not_request_principals),
            namespaces: patterns(&source.namespaces, &source.not_namespaces),
            // The gateway is the edge: the peer is the remote client.
            ip_blocks: patterns(
                &[source.ip_blocks.clone(), source.remote_ip_blocks.clone()].concat(),
                &[source.not_ip_blocks.clone(), source.not_remote_ip_blocks.clone()].concat(),
            ),
        });
    }
    for (to_index, to) in rule.to.iter().enumerate() {
        let operation = &to.operation;
        for path in operation.paths.iter().chain(&operation.not_paths) {
            if path.contains('{') {
                unsupported(
                    format!("spec.rules[{index}].to[{to_index}].operation.paths"),
                    &format!("path template {path:?} is not supported"),
                );
                failed = true;
            }
        }
        compiled.to.push(OperationMatch {
            hosts: patterns(&operation.hosts, &operation.not_hosts),
            ports: patterns(&operation.ports, &operation.not_ports),
            methods: patterns(&operation.methods, &operation.not_methods),
            paths: patterns(&operation.paths, &operation.not_paths),
        });
    }
    for (when_index, condition) in rule.when.iter().enumerate() {
        match attribute(&condition.key) {
            Some(key) => {
                compiled.when.push(Condition { key, values: patterns(&condition.values, &condition.not_values) })
            }
            None => {
                unsupported(
                    format!("spec.rules[{index}].when[{when_index}].key"),
                    &format!("unsupported attribute {:?}", condition.key),
                );
                failed = true;
            }
        }
    }
    compiled.unsupported = failed;
    compiled
}

fn patterns(any: &[String], not: &[String]) -> Patterns {
    Patterns { any: any.to_vec(), not: not.to_vec() }
}

fn valid_block(block: &str) -> bool {
    let (address, bits) = block.split_once('/').map_or((block, None), |(a, b)| (a, Some(b)));
    let max = if address.contains(':') { 128 } else { 32 };
    address.parse::<std::net::IpAddr>().is_ok() && bits.is_none_or(|b| b.parse::<u8>().is_ok_and(|b| b <= max))
}

/// Istio attribute names -> [`Attribute`].
fn attribute(key: &str) -> Option<Attribute> {
    if let Some(name) = bracketed(key, "request.headers") {
        return Some(Attribute::Header(name.first()?.to_ascii_lowercase()));
    }
    if let Some(path) = bracketed(key, "request.auth.claims") {
        return Some(Attribute::Claim(path));
    }
    Some(match key {
        "request.auth.principal" => Attribute::RequestPrincipal,
        "request.auth.audiences" => Attribute::Audiences,
        "request.auth.presenter" => Attribute::Presenter,
        "source.principal" => Attribute::SourcePrincipal,
        "source.namespace" => Attribute::SourceNamespace,
        "source.ip" | "remote.ip" => Attribute::SourceIp,
        "destination.port" => Attribute::DestinationPort,
        "connection.sni" => Attribute::Sni,
        _ => return None,
    })
}

/// `name[a][b]` -> `[a, b]`.
fn bracketed(key: &str, name: &str) -> Option<Vec<String>> {
    let mut rest = key.strip_prefix(name)?;
    let mut segments = Vec::new();
    while let Some(inner) = rest.strip_prefix('[') {
        let end = inner.find(']')?;
        segments.push(inner[..end].to_string());
        rest = &inner[end + 1..];
    }
    (rest.is_empty() && !segments.is_empty()).then_some(segments)
}

fn ext_authz_provider(
    provider: &ExtensionProvider,
    index: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<ExtAuthzProvider> {
    let object = ObjectRef::new("ConfigMap", ROOT_NAMESPACE, "istio");
    let field = format!("data.mesh.extensionProviders[{index}]");
    let Some(http) = &provider.envoy_ext_authz_http else {
        let kinds: Vec<&String> = provider.other.keys().collect();
        diagnostics.push(Diagnostic::warning(
            &object,
            field,
            format!("provider {:?} is of type {kinds:?}; only envoyExtAuthzHttp is supported", provider.name),
        ));
        return None;
    };
    let Ok(port) = u16::try_from(http.port) else {
        diagnostics.push(Diagnostic::error(&object, format!("{field}.envoyExtAuthzHttp.port"), "not a port number"));
        return None;
    };
    // `[<namespace>/]<hostname>`.
    let service = http.service.rsplit_once('/').map_or(http.service.as_str(), |(_, host)| host).to_string();
    let timeout_ms = match http.timeout.as_deref().map(parse_duration) {
        None => DEFAULT_EXT_AUTHZ_TIMEOUT_MS,
        Some(Ok(duration)) => u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        Some(Err(error)) => {
            diagnostics.push(Diagnostic::warning(&object, format!("{field}.envoyExtAuthzHttp.timeout"), error));
            DEFAULT_EXT_AUTHZ_TIMEOUT_MS
        }
    };
    let status_on_error = http.status_on_error.as_deref().and_then(|s| s.parse::<u16>().ok()).unwrap_or(403);
    let lower = |names: &[String]| names.iter().map(|n| n.to_ascii_lowercase()).collect::<Vec<_>>();
    Some(ExtAuthzProvider {
        name: provider.name.clone(),
        service,
        port,
        timeout_ms,
        path_prefix: http.path_prefix.clone().unwrap_or_default(),
        fail_open: http.fail_open,
        status_on_error,
        include_request_headers: lower(&http.include_request_headers_in_check),
        additional_headers: http
            .include_additional_headers_in_check
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        headers_to_upstream_on_allow: lower(&http.headers_to_upstream_on_allow),
        headers_to_downstream_on_allow: lower(&http.headers_to_downstream_on_allow),
        headers_to_downstream_on_deny: lower(&http.headers_to_downstream_on_deny),
    })
}

/// A CUSTOM policy naming an unknown provider denies what it covers (as
/// Istio does), and says so.
fn check_providers(table: &SecurityTable, diagnostics: &mut Vec<Diagnostic>) {
    let known: BTreeMap<&str, ()> = table.providers.keys().map(|k| (k.as_str(), ())).collect();
    let sets = std::iter::once(&table.gateway).chain(table.namespaces.values());
    for policy in sets.flat_map(|set| set.custom.iter()) {
        if let Some(provider) = policy.provider.as_deref()
            && !known.contains_key(provider)
        {
            let (namespace, name) = policy.name.split_once('/').unwrap_or(("", &policy.name));
            diagnostics.push(Diagnostic::error(
                &ObjectRef::new("AuthorizationPolicy", namespace, name),
                "spec.provider.name",
                format!("no extension provider {provider:?} in the mesh config; matching requests are denied"),
            ));
        }
    }
}
