//! Security policies in cluster mode: RequestAuthentication and
//! AuthorizationPolicy objects applied with kubectl to the real API server
//! reach a `--discovery` gateway through the controller, and take effect
//! (and stop taking effect) without a restart.

use std::net::SocketAddr;
use std::time::Duration;

use portico_e2e::jwt_issuer::{ISSUER, IssuerKey, jwks};
use portico_e2e::notebooks::{apply, notebook_yaml};
use portico_e2e::pod_runner::{PodRunner, fake_notebooks};
use portico_e2e::raw_http;
use portico_e2e::wait::poll;
use portico_e2e::{Controller, Gateway, TestNamespace, free_port};
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(30);

fn status(address: SocketAddr, path: &str, bearer: Option<&str>) -> u16 {
    let authorization = bearer.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: notebooks.example.com\r\n{authorization}\r\n");
    raw_http::exchange(address, request.as_bytes()).map_or(0, |r| r.status)
}

fn wait_status(address: SocketAddr, path: &str, bearer: Option<&str>, want: u16, context: impl Fn() -> String) {
    let mut last = 0;
    let seen = poll(SETTLE, || {
        last = status(address, path, bearer);
        (last == want).then_some(())
    });
    assert!(seen.is_some(), "GET {path}: wanted {want}, last {last}\n{}", context());
}

#[test]
fn policies_applied_with_kubectl_guard_the_notebooks_of_a_cluster_mode_gateway() {
    let namespace = TestNamespace::create("sec");
    let ns = namespace.name();
    let plane = namespace.plane();
    let controller = Controller::start_with_env(ns, &[], &[("ISTIO_GATEWAY", &format!("{ns}/kubeflow-gateway"))]);
    apply(
        plane,
        &format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: kubeflow-gateway, namespace: {ns}}}\n\
             spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n"
        ),
    );
    let key = IssuerKey::generate("key-1");
    // The gateway runs in the test namespace, so its policies live there.
    apply(
        plane,
        &format!(
            r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: dex-jwt, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwks: '{jwks}'
    outputClaimToHeaders: [{{header: kubeflow-userid, claim: email}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: {ns}}}
spec:
  action: DENY
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  rules:
  - from: [{{source: {{notRequestPrincipals: ["*"]}}}}]
"#,
            jwks = jwks(&[&key])
        ),
    );
    let _pods = PodRunner::start_with(ns, fake_notebooks());
    let port = free_port();
    let args: Vec<String> = ["--node-name", "secure-gw", "--namespace", ns, "--bind", &format!("80=127.0.0.1:{port}")]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let gateway = Gateway::start_discovery(&controller.discovery_url(), &args);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let context = || {
        let log: Vec<String> = gateway.log().lines().filter(|l| !l.contains("access:")).map(str::to_string).collect();
        format!("controller:\n{}\ngateway:\n{}", controller.log_tail(), log.join("\n"))
    };

    apply(plane, &notebook_yaml(ns, "alpha", &[]));
    let path = format!("/notebook/{ns}/alpha/api/status");
    // The route and the policies arrive together: never a 200 without a token.
    wait_status(address, &path, None, 401, context);
    let token = key.token("user@example.com", json!({}));
    // With a token: 200 once the notebook's pod is Ready and published.
    wait_status(address, &path, Some(&token), 200, context);
    assert_eq!(status(address, &path, Some("not.a.jwt")), 401);

    // Deleting the policy opens the route again, with no restart.
    plane.kubectl_ok(&["delete", "authorizationpolicy", "require-jwt", "-n", ns]);
    wait_status(address, &path, None, 200, context);
}
