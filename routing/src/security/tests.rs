//! Kubeflow's own policies (examples/kubeflow-auth, as Kubeflow's manifests
//! install them), compiled for the ingress gateway and evaluated on the
//! requests a user would send.

use std::collections::BTreeMap;

use super::*;
use crate::diagnostic::Diagnostic;
use crate::resources::Resources;
use crate::translate::GatewayIdentity;

/// Kubeflow's objects, as the example folder carries them.
const KUBEFLOW: &str = include_str!("../../../examples/kubeflow-auth/policies.yaml");

const GATEWAY: &str = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";

fn kubeflow() -> (SecurityTable, Vec<Diagnostic>) {
    let mut resources = Resources::default();
    assert_eq!(resources.add_yaml(KUBEFLOW, "kubeflow.yaml"), vec![]);
    let identity = GatewayIdentity {
        name: "gw".to_string(),
        namespace: "istio-system".to_string(),
        labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
    };
    let mut diagnostics = Vec::new();
    (compile(&resources, &identity, &mut diagnostics), diagnostics)
}

struct Request {
    principal: Option<&'static str>,
    request_principal: Option<&'static str>,
    path: &'static str,
    headers: Vec<(String, String)>,
}

impl Request {
    fn to(path: &'static str) -> Self {
        Request { principal: None, request_principal: None, path, headers: Vec::new() }
    }

    fn signed_in_as(mut self, user: &str) -> Self {
        self.request_principal = Some("http://dex.auth.svc.cluster.local:5556/dex/Cg0wLTM4NS0yODA4OS0wEgRtb2Nr");
        self.headers.push(("kubeflow-userid".to_string(), user.to_string()));
        self
    }

    fn via_gateway(mut self) -> Self {
        self.principal = Some(GATEWAY);
        self
    }

    fn attributes(&self) -> Attributes<'_> {
        Attributes {
            principal: self.principal,
            request_principal: self.request_principal,
            claims: None,
            host: "kubeflow.example.com",
            port: 443,
            method: "GET",
            path: self.path,
            headers: &self.headers,
            client_ip: Some("203.0.113.9".parse().unwrap()),
            sni: None,
        }
    }
}

#[test]
fn kubeflow_policies_compile_without_diagnostics() {
    let (table, diagnostics) = kubeflow();
    assert_eq!(diagnostics, vec![]);
    assert_eq!(table.jwt_rules.len(), 1);
    assert_eq!(table.identity_headers(), vec!["kubeflow-groups", "kubeflow-userid"]);
    assert_eq!(table.gateway.deny.len(), 1);
    assert_eq!(table.gateway.custom.len(), 1);
    assert_eq!(table.namespaces["kubeflow-user-example-com"].allow.len(), 1);
    let provider = &table.providers["oauth2-proxy"];
    assert_eq!(
        (provider.service.as_str(), provider.port, provider.status_on_error),
        ("oauth2-proxy.oauth2-proxy.svc.cluster.local", 80, 403)
    );
    // Defaults Istio applies when a rule names no location.
    assert_eq!(table.jwt_rules[0].from_headers[0].name, "authorization");
    assert_eq!(table.jwt_rules[0].from_params, vec!["access_token"]);
}

#[test]
fn the_gateway_asks_oauth2_proxy_except_for_the_login_pages() {
    let (table, _) = kubeflow();
    assert_eq!(table.gateway.custom_provider(&Request::to("/notebook/a/b/").attributes()), Some("oauth2-proxy"));
    assert_eq!(table.gateway.custom_provider(&Request::to("/oauth2/start").attributes()), None);
    assert_eq!(table.gateway.custom_provider(&Request::to("/dex/auth").attributes()), None);
}

#[test]
fn requests_without_a_jwt_are_denied_except_login() {
    let (table, _) = kubeflow();
    let denied = table.gateway.check(&Request::to("/notebook/a/b/").attributes());
    assert_eq!(denied, Err(Denied::ByPolicy("istio-system/istio-ingressgateway-require-jwt".to_string())));
    assert_eq!(table.gateway.check(&Request::to("/dex/auth").attributes()), Ok(()));
    let signed_in = Request::to("/notebook/a/b/").signed_in_as("user@example.com");
    assert_eq!(table.gateway.check(&signed_in.attributes()), Ok(()));
}

#[test]
fn only_the_profile_owner_reaches_the_profile_namespace() {
    let (table, _) = kubeflow();
    let profile = &table.namespaces["kubeflow-user-example-com"];
    let owner = Request::to("/notebook/kubeflow-user-example-com/nb/").signed_in_as("user@example.com").via_gateway();
    assert_eq!(profile.check(&owner.attributes()), Ok(()));
    let other =
        Request::to("/notebook/kubeflow-user-example-com/nb/").signed_in_as("mallory@example.com").via_gateway();
    assert_eq!(profile.check(&other.attributes()), Err(Denied::NoAllowMatched));
    // The kubelet-style probes the profile allows.
    assert_eq!(profile.check(&Request::to("/healthz").via_gateway().attributes()), Ok(()));
}

#[test]
fn istio_string_patterns() {
    use super::evaluate::glob;
    assert!(glob("*", "x") && !glob("*", ""));
    assert!(glob("/dex/*", "/dex/auth") && !glob("/dex/*", "/dexter"));
    assert!(glob("*.example.com", "a.example.com") && !glob("*.example.com", "example.org"));
    assert!(glob("GET", "GET") && !glob("GET", "POST"));
}

#[test]
fn cidr_blocks() {
    use super::evaluate::in_block;
    assert!(in_block("10.0.0.0/8", "10.1.2.3".parse().unwrap()));
    assert!(!in_block("10.0.0.0/8", "11.1.2.3".parse().unwrap()));
    assert!(in_block("203.0.113.9", "203.0.113.9".parse().unwrap()));
    assert!(in_block("2001:db8::/32", "2001:db8::1".parse().unwrap()));
    assert!(!in_block("2001:db8::/32", "10.0.0.1".parse().unwrap()));
}

#[test]
fn unsupported_rules_fail_closed_and_are_reported() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: odd, namespace: istio-system}
spec:
  action: DENY
  rules:
  - when: [{key: "experimental.envoy.filters.whatever", values: ["x"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-odd, namespace: team}
spec:
  rules:
  - to: [{operation: {paths: ["/{*}/x"]}}]
"#;
    let mut resources = Resources::default();
    assert_eq!(resources.add_yaml(yaml, "odd.yaml"), vec![]);
    let identity = GatewayIdentity { namespace: "istio-system".to_string(), ..GatewayIdentity::default() };
    let mut diagnostics = Vec::new();
    let table = compile(&resources, &identity, &mut diagnostics);
    let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:#?}");
    assert!(text[0].contains("AuthorizationPolicy istio-system/odd: spec.rules[0].when[0].key"), "{text:#?}");
    assert!(text[1].contains("AuthorizationPolicy team/allow-odd: spec.rules[0].to[0].operation.paths"), "{text:#?}");
    // The DENY rule now covers everything; the ALLOW rule nothing.
    assert!(table.gateway.check(&Request::to("/").attributes()).is_err());
    assert_eq!(table.namespaces["team"].check(&Request::to("/a/x").attributes()), Err(Denied::NoAllowMatched));
}

#[test]
fn a_custom_policy_without_a_known_provider_is_reported() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: istio-system}
spec: {action: CUSTOM, provider: {name: nowhere}, rules: [{}]}
"#;
    let mut resources = Resources::default();
    assert_eq!(resources.add_yaml(yaml, "ext.yaml"), vec![]);
    let identity = GatewayIdentity { namespace: "istio-system".to_string(), ..GatewayIdentity::default() };
    let mut diagnostics = Vec::new();
    compile(&resources, &identity, &mut diagnostics);
    assert_eq!(diagnostics.len(), 1);
    assert!(diagnostics[0].to_string().contains("no extension provider \"nowhere\""), "{}", diagnostics[0]);
}
