//! The front door as Kubeflow deploys it: Dex-issued JWTs checked by a
//! RequestAuthentication, `kubeflow-userid` from the token's email, a DENY
//! policy for requests without a token, the profile's
//! `ns-owner-access-istio` policy, a real oauth2-proxy as the CUSTOM
//! provider, and
//! the browser rules (websocket Origin, session cookie) in front of a real
//! Jupyter Server that has no token, no password and `allow_origin='*'`.
//!
//! Issuer keys are generated per test (ES256) and published by a JWKS
//! endpoint the gateway fetches; the notebooks are an echo upstream that
//! shows exactly which headers reached them, and a real Jupyter Server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use portico_e2e::config_dir::ConfigDir;
use portico_e2e::fixtures::{
    kubeflow_gateway, notebook, notebook_host, notebook_prefix, resolve_args, rewrite_virtual_service,
};
use portico_e2e::gateway::Gateway;
use portico_e2e::http_stub::{HttpStub, StubResponse};
use portico_e2e::jupyter::Jupyter;
use portico_e2e::jwt_issuer::{ISSUER, IssuerKey};
use portico_e2e::oauth2_proxy::{CLIENT_ID, COOKIE_NAME, OAuth2Proxy};
use portico_e2e::raw_http::{self, RawResponse};
use portico_e2e::{free_port, kernel};
use serde_json::json;

const PROFILE: &str = "kubeflow-user-example-com";
const OWNER: &str = "user@example.com";
/// Istio's ingress gateway identity, which Kubeflow's profile policies name.
const GATEWAY_PRINCIPAL: &str = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";

/// Serves `{"keys": [...]}` from a key list the test can change.
fn jwks_endpoint(keys: Arc<Mutex<Vec<serde_json::Value>>>) -> HttpStub {
    HttpStub::start(move |_| {
        let keys = keys.lock().map(|k| k.clone()).unwrap_or_default();
        StubResponse::new(200, json!({ "keys": keys }).to_string()).with_header("content-type", "application/json")
    })
}

/// Kubeflow's authentication and authorization objects, pointed at `jwks`.
fn kubeflow_policies(jwks: SocketAddr) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: dex-jwt, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwksUri: http://{jwks}/dex/keys
    audiences: [kubeflow-oidc-authservice]
    forwardOriginalToken: true
    outputClaimToHeaders:
    - {{header: kubeflow-userid, claim: email}}
    - {{header: kubeflow-groups, claim: groups}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: istio-ingressgateway-require-jwt, namespace: istio-system}}
spec:
  action: DENY
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  rules:
  - from: [{{source: {{notRequestPrincipals: ["*"]}}}}]
    to: [{{operation: {{notPaths: ["/dex/*", "/oauth2/*"]}}}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: ns-owner-access-istio, namespace: {PROFILE}}}
spec:
  rules:
  - from: [{{source: {{principals: ["{GATEWAY_PRINCIPAL}"]}}}}]
    when: [{{key: "request.headers[kubeflow-userid]", values: ["{OWNER}"]}}]
"#
    )
}

/// A gateway with Kubeflow's policies, `nb` in the profile served by
/// `notebook_addr`, and `/dex/` served by an echo upstream.
struct FrontDoor {
    _config: ConfigDir,
    gateway: Gateway,
    http: SocketAddr,
    dex: HttpStub,
}

impl FrontDoor {
    fn start(jwks: SocketAddr, notebook_addr: SocketAddr, files: &[(&str, String)], extra: &[&str]) -> FrontDoor {
        let config = ConfigDir::new();
        config.write("gateway.yaml", &kubeflow_gateway());
        config.write("policies.yaml", &kubeflow_policies(jwks));
        config.write("notebook.yaml", &notebook(PROFILE, "nb"));
        let dex = HttpStub::echo();
        config
            .write("dex.yaml", &rewrite_virtual_service("auth", "dex", "/dex/", "/dex/", "dex.auth.svc.cluster.local"));
        for (name, yaml) in files {
            config.write(name, yaml);
        }
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut args =
            vec!["--bind".to_string(), format!("80={http}"), "--principal".to_string(), GATEWAY_PRINCIPAL.to_string()];
        args.extend(resolve_args(&notebook_host(PROFILE, "nb"), notebook_addr.port()));
        args.extend(resolve_args("dex.auth.svc.cluster.local", dex.address().port()));
        args.extend(extra.iter().map(|a| a.to_string()));
        let gateway = Gateway::start(config.path(), &args);
        FrontDoor { _config: config, gateway, http, dex }
    }

    /// `GET path` with `headers`, through the gateway.
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> RawResponse {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: kubeflow.example.com\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        raw_http::exchange(self.http, request.as_bytes())
            .unwrap_or_else(|error| panic!("GET {path}: {error}; gateway log:\n{}", self.gateway.log_tail()))
    }
}

fn nb_path(rest: &str) -> String {
    format!("{}{rest}", notebook_prefix(PROFILE, "nb"))
}

fn setup() -> (IssuerKey, HttpStub, HttpStub, FrontDoor) {
    let key = IssuerKey::generate("key-1");
    let jwks = jwks_endpoint(Arc::new(Mutex::new(vec![key.jwk.clone()])));
    let upstream = HttpStub::echo();
    let door = FrontDoor::start(jwks.address(), upstream.address(), &[], &["--login-url", "/oauth2/start?rd={rd}"]);
    (key, jwks, upstream, door)
}

#[test]
fn the_profile_owner_reaches_the_notebook_with_identity_headers_from_the_token() {
    let (key, _jwks, upstream, door) = setup();
    let token = key.token(OWNER, json!({}));
    let response = door.get(&nb_path("api/status"), &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(response.status, 200, "{}\n{}", response.head, door.gateway.log_tail());
    let seen = upstream.requests().pop().expect("the notebook was reached");
    assert_eq!(seen.header_values("kubeflow-userid"), vec![OWNER]);
    assert_eq!(seen.header_values("kubeflow-groups"), vec!["team-a,team-b"]);
    // forwardOriginalToken: true (Kubeflow's apps read it).
    assert_eq!(seen.header("authorization"), Some(format!("Bearer {token}").as_str()));
}

#[test]
fn forged_identity_headers_never_reach_an_upstream() {
    let (key, _jwks, upstream, door) = setup();
    let token = key.token(OWNER, json!({}));
    let forged = [
        ("Authorization", format!("Bearer {token}")),
        ("kubeflow-userid", "admin@example.com".to_string()),
        ("Kubeflow-Groups", "admins".to_string()),
    ];
    let headers: Vec<(&str, &str)> = forged.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(door.get(&nb_path("api/status"), &headers).status, 200);
    let seen = upstream.requests().pop().expect("the notebook was reached");
    assert_eq!(seen.header_values("kubeflow-userid"), vec![OWNER], "the token's identity, alone");
    assert_eq!(seen.header_values("kubeflow-groups"), vec!["team-a,team-b"]);
    // Unauthenticated paths too: the login pages never see a forged identity.
    let login = door.get("/dex/auth", &[("kubeflow-userid", "admin@example.com")]);
    assert_eq!(login.status, 200, "{}", login.head);
    let seen = door.dex.requests().pop().expect("dex was reached");
    assert!(seen.header("kubeflow-userid").is_none(), "{seen:?}");
}

#[test]
fn no_token_is_401_for_api_calls_and_a_login_redirect_for_pages() {
    let (_key, _jwks, upstream, door) = setup();
    let api = door.get(&nb_path("api/kernels"), &[("Accept", "application/json")]);
    assert_eq!(api.status, 401, "{}", api.head);
    let websocket = door.get(
        &nb_path("api/kernels/k/channels"),
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    );
    assert_eq!(websocket.status, 401, "{}", websocket.head);
    let page = door.get(&nb_path("lab?reset"), &[("Sec-Fetch-Mode", "navigate"), ("Accept", "text/html")]);
    assert_eq!(page.status, 302, "{}", page.head);
    assert_eq!(page.header("location"), Some("/oauth2/start?rd=/notebook/kubeflow-user-example-com/nb/lab%3Freset"));
    assert!(upstream.requests().is_empty(), "nothing unauthenticated reached the notebook");
    // The login pages are open.
    assert_eq!(door.get("/dex/auth", &[]).status, 200);
}

#[test]
fn invalid_tokens_are_refused_with_401() {
    let (key, _jwks, upstream, door) = setup();
    let stranger = IssuerKey::generate("key-1");
    let cases = [
        ("signed by another key", stranger.token(OWNER, json!({}))),
        ("expired", key.token(OWNER, json!({ "exp": 1_000_000, "iat": 900_000 }))),
        ("another issuer", key.token(OWNER, json!({ "iss": "https://evil.example" }))),
        ("another audience", key.token(OWNER, json!({ "aud": "someone-else" }))),
        ("not a JWT", "not.a.jwt".to_string()),
    ];
    for (what, token) in cases {
        let response = door.get(&nb_path("api/status"), &[("Authorization", &format!("Bearer {token}"))]);
        assert_eq!(response.status, 401, "{what}: {}", response.head);
    }
    assert!(upstream.requests().is_empty(), "no refused token reached the notebook");
}

#[test]
fn another_user_cannot_open_someone_elses_notebook() {
    let (key, _jwks, upstream, door) = setup();
    let token = key.token("mallory@example.com", json!({}));
    let response = door.get(&nb_path("api/contents"), &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(response.status, 403, "{}", response.head);
    assert_eq!(response.text(), "RBAC: access denied\n");
    // Even claiming the owner's identity in a header does not help.
    let forged = door
        .get(&nb_path("api/contents"), &[("Authorization", &format!("Bearer {token}")), ("kubeflow-userid", OWNER)]);
    assert_eq!(forged.status, 403, "{}", forged.head);
    assert!(upstream.requests().is_empty());
}

#[test]
fn the_session_cookie_stays_at_the_gateway_and_jupyters_cookies_pass() {
    let (key, _jwks, upstream, door) = setup();
    let token = key.token(OWNER, json!({}));
    let cookies = "oauth2_proxy_kubeflow=secret-session; _xsrf=2|abc|def; oauth2_proxy_kubeflow_1=more-secret";
    let response =
        door.get(&nb_path("api/status"), &[("Authorization", &format!("Bearer {token}")), ("Cookie", cookies)]);
    assert_eq!(response.status, 200, "{}", response.head);
    let seen = upstream.requests().pop().expect("the notebook was reached");
    assert_eq!(seen.header_values("cookie"), vec!["_xsrf=2|abc|def"]);
}

#[test]
fn a_rotated_issuer_key_is_picked_up_without_a_restart() {
    let first = IssuerKey::generate("key-1");
    let keys = Arc::new(Mutex::new(vec![first.jwk.clone()]));
    let jwks = jwks_endpoint(Arc::clone(&keys));
    let upstream = HttpStub::echo();
    // Refetch for an unknown key at once (the default waits 5 s between
    // such refetches, so random key ids cannot hammer the issuer).
    let door = FrontDoor::start(jwks.address(), upstream.address(), &[], &["--jwks-refetch-interval", "0s"]);
    let bearer = |token: String| format!("Bearer {token}");
    assert_eq!(
        door.get(&nb_path("api/status"), &[("Authorization", &bearer(first.token(OWNER, json!({}))))]).status,
        200
    );
    // The issuer publishes a new key and signs with it.
    let second = IssuerKey::generate("key-2");
    keys.lock().expect("keys").push(second.jwk.clone());
    let response = door.get(&nb_path("api/status"), &[("Authorization", &bearer(second.token(OWNER, json!({}))))]);
    assert_eq!(response.status, 200, "{}\n{}", response.head, door.gateway.log_tail());
    assert_eq!(jwks.requests().len(), 2, "one fetch at first use, one for the unknown key");
}

fn mesh_config_with_oauth2_proxy() -> String {
    r#"apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    extensionProviders:
    - name: oauth2-proxy
      envoyExtAuthzHttp:
        service: oauth2-proxy.oauth2-proxy.svc.cluster.local
        port: 80
        includeRequestHeadersInCheck: [authorization, cookie]
        headersToUpstreamOnAllow: [authorization, path, x-auth-request-email]
        headersToDownstreamOnDeny: [content-type, set-cookie]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: istio-ingressgateway-oauth2-proxy, namespace: istio-system}
spec:
  action: CUSTOM
  provider: {name: oauth2-proxy}
  selector: {matchLabels: {istio: ingressgateway}}
  rules:
  - to: [{operation: {notPaths: ["/dex/*", "/oauth2/*"]}}]
"#
    .to_string()
}

/// Every `Set-Cookie` of a response, as `name=value` (attributes dropped).
fn set_cookies(response: &RawResponse) -> Vec<String> {
    response
        .head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| value.trim().split(';').next().unwrap_or_default().to_string())
        .collect()
}

/// Kubeflow's VirtualService for oauth2-proxy's own pages.
fn oauth2_proxy_route() -> String {
    r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: oauth2-proxy, namespace: oauth2-proxy}
spec:
  hosts: ["*"]
  gateways: [kubeflow/kubeflow-gateway]
  http:
  - match: [{uri: {prefix: /oauth2/}}]
    route: [{destination: {host: oauth2-proxy.oauth2-proxy.svc.cluster.local, port: {number: 80}}}]
"#
    .to_string()
}

#[test]
fn a_kubeflow_login_through_a_real_oauth2_proxy_reaches_the_notebook_as_the_user() {
    // RS256, as Dex signs: oauth2-proxy without discovery accepts only that.
    let key = IssuerKey::rsa_fixture("dex-key");
    let jwks = jwks_endpoint(Arc::new(Mutex::new(vec![key.jwk.clone()])));
    let upstream = HttpStub::echo();
    // The identity provider's token endpoint: any code is the owner's.
    let id_token = key.token(OWNER, json!({ "aud": CLIENT_ID, "email_verified": true }));
    let idp = HttpStub::start(move |_| {
        let body =
            json!({ "access_token": "opaque", "token_type": "Bearer", "expires_in": 3600, "id_token": id_token });
        StubResponse::new(200, body.to_string()).with_header("content-type", "application/json")
    });
    let proxy = OAuth2Proxy::start(
        ISSUER,
        &format!("http://{}/dex/token", idp.address()),
        &format!("http://{}/dex/keys", jwks.address()),
        "http://kubeflow.example.com/oauth2/callback",
    );
    let files = [("oauth2-proxy.yaml", mesh_config_with_oauth2_proxy()), ("oauth2-route.yaml", oauth2_proxy_route())];
    let resolve = format!("oauth2-proxy.oauth2-proxy.svc.cluster.local:80={}", proxy.address());
    let door = FrontDoor::start(jwks.address(), upstream.address(), &files, &["--resolve", &resolve]);
    let context = || format!("gateway:\n{}\noauth2-proxy:\n{}", door.gateway.log_tail(), proxy.log_tail());

    // 1. A page without a session: oauth2-proxy sends the browser to the
    //    identity provider, with its CSRF cookie.
    let page = door.get(&nb_path("lab"), &[("Accept", "text/html")]);
    assert_eq!(page.status, 302, "{}\n{}", page.head, context());
    let location = page.header("location").unwrap_or_default().to_string();
    assert!(location.starts_with("https://idp.example/auth?"), "{location}");
    let state = location.split(['?', '&']).find_map(|p| p.strip_prefix("state=")).expect("a state").to_string();
    let csrf = set_cookies(&page).into_iter().next().expect("a CSRF cookie");
    assert!(upstream.requests().is_empty());

    // 2. The provider sends the browser back with a code: oauth2-proxy
    //    redeems it and sets the session cookie.
    let callback = door.get(&format!("/oauth2/callback?code=a-code&state={state}"), &[("Cookie", &csrf)]);
    assert_eq!(callback.status, 302, "{}\n{}", callback.head, context());
    let session = set_cookies(&callback)
        .into_iter()
        .find(|c| c.starts_with(&format!("{COOKIE_NAME}=")) && c.len() > COOKIE_NAME.len() + 1)
        .unwrap_or_else(|| panic!("no session cookie in\n{}\n{}", callback.head, context()));

    // 3. From now on the browser sends only its cookies: oauth2-proxy turns
    //    the session into the ID token, the gateway verifies it and sets the
    //    identity; the notebook never sees the session.
    let response = door.get(&nb_path("api/status"), &[("Cookie", &format!("{session}; _xsrf=1"))]);
    assert_eq!(response.status, 200, "{}\n{}", response.head, context());
    let seen = upstream.requests().pop().expect("the notebook was reached");
    assert_eq!(seen.header_values("kubeflow-userid"), vec![OWNER]);
    assert_eq!(seen.header_values("cookie"), vec!["_xsrf=1"], "the session cookie is not forwarded");
}

#[test]
fn an_unreachable_oauth2_proxy_denies_instead_of_letting_requests_through() {
    let key = IssuerKey::generate("key-1");
    let jwks = jwks_endpoint(Arc::new(Mutex::new(vec![key.jwk.clone()])));
    let upstream = HttpStub::echo();
    let files = [("oauth2-proxy.yaml", mesh_config_with_oauth2_proxy())];
    let nowhere = format!("oauth2-proxy.oauth2-proxy.svc.cluster.local:80=127.0.0.1:{}", free_port());
    let door = FrontDoor::start(jwks.address(), upstream.address(), &files, &["--resolve", &nowhere]);
    let token = key.token(OWNER, json!({}));
    let response = door.get(&nb_path("api/status"), &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(response.status, 403, "{}", response.head);
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_jupyter_accepts_kernel_websockets_only_from_its_own_origin() {
    let key = IssuerKey::generate("key-1");
    let jwks = jwks_endpoint(Arc::new(Mutex::new(vec![key.jwk.clone()])));
    let jupyter = Jupyter::start(&notebook_prefix(PROFILE, "nb"));
    let door = FrontDoor::start(jwks.address(), jupyter.addr(), &[], &[]);
    let token = key.token(OWNER, json!({}));
    let base = format!("http://{}{}", door.http, notebook_prefix(PROFILE, "nb"));
    let kernel_id = {
        let response = portico_e2e::http_client()
            .post(format!("{base}api/kernels"))
            .bearer_auth(&token)
            .json(&json!({ "name": "python3" }))
            .send()
            .await
            .expect("POST api/kernels");
        assert_eq!(response.status().as_u16(), 201, "{:?}", response.text().await);
        let kernel: serde_json::Value = response.json().await.expect("kernel JSON");
        kernel["id"].as_str().expect("kernel id").to_string()
    };
    let url = kernel::channels_url(&base, &kernel_id);
    let open = |origin: &'static str| {
        let url = url.clone();
        let token = token.clone();
        let host = door.http;
        async move {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = url.into_client_request().expect("a websocket request");
            let headers = request.headers_mut();
            headers.insert("authorization", format!("Bearer {token}").parse().expect("header"));
            headers.insert("origin", origin.replace("HOST", &host.to_string()).parse().expect("header"));
            tokio_tungstenite::connect_async(request).await
        }
    };
    match open("https://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 403),
        other => panic!("a cross-site websocket must be refused with 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    let (socket, response) = open("http://HOST").await.expect("a same-origin websocket opens");
    assert_eq!(response.status().as_u16(), 101);
    drop(socket);
}

#[test]
fn kubeflow_identity_headers_are_removed_even_without_a_request_authentication() {
    // A gateway with no policies at all: a forged kubeflow-userid must
    // still not reach a notebook, whose profile policy may trust it.
    let config = ConfigDir::new();
    config.write("gateway.yaml", &kubeflow_gateway());
    config.write("notebook.yaml", &notebook(PROFILE, "nb"));
    let upstream = HttpStub::echo();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut args = vec!["--bind".to_string(), format!("80={http}")];
    args.extend(resolve_args(&notebook_host(PROFILE, "nb"), upstream.address().port()));
    let gateway = Gateway::start(config.path(), &args);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: kubeflow.example.com\r\nkubeflow-userid: {OWNER}\r\nKubeflow-Groups: admins\r\n\r\n",
        nb_path("api/status")
    );
    let response = raw_http::exchange(http, request.as_bytes()).expect("a response");
    assert_eq!(response.status, 200, "{}\n{}", response.head, gateway.log_tail());
    let seen = upstream.requests().pop().expect("the notebook was reached");
    assert!(seen.header("kubeflow-userid").is_none() && seen.header("kubeflow-groups").is_none(), "{seen:?}");
}

#[test]
fn redirects_and_direct_responses_are_behind_the_same_policies() {
    let key = IssuerKey::generate("key-1");
    let jwks = jwks_endpoint(Arc::new(Mutex::new(vec![key.jwk.clone()])));
    let upstream = HttpStub::echo();
    let local_routes = r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: local-answers, namespace: kubeflow}
spec:
  hosts: ["*"]
  gateways: [kubeflow/kubeflow-gateway]
  http:
  - match: [{uri: {prefix: /internal/config}}]
    directResponse: {status: 200, body: {string: "internal settings\n"}}
  - match: [{uri: {exact: /old-dashboard}}]
    redirect: {uri: /new-dashboard}
"#
    .to_string();
    let door = FrontDoor::start(jwks.address(), upstream.address(), &[("local.yaml", local_routes)], &[]);
    assert_eq!(door.get("/internal/config", &[]).status, 401, "a direct response needs a token too");
    assert_eq!(door.get("/old-dashboard", &[]).status, 401, "so does a redirect");
    let bearer = format!("Bearer {}", key.token(OWNER, json!({})));
    let allowed = door.get("/internal/config", &[("Authorization", &bearer)]);
    assert_eq!((allowed.status, allowed.text().as_str()), (200, "internal settings\n"));
    assert_eq!(door.get("/old-dashboard", &[("Authorization", &bearer)]).status, 301);
}
