//! Portico as configurable-http-proxy, driven through CHP's REST API the
//! way JupyterHub's `ConfigurableHTTPProxy` drives it: routes added and
//! deleted at run time reach real upstreams (a Jupyter Server for the
//! kernel websocket), with CHP's matching, forwarding, status codes and
//! error pages, and bad input changes nothing.

use std::process::Command;
use std::time::Duration;

use portico_e2e::chp_proxy::{ChpProxy, TOKEN};
use portico_e2e::http_stub::{HttpStub, StubResponse};
use portico_e2e::{Jupyter, KernelSocket, binary, channels_url, create_kernel, execute, free_port};
use serde_json::Value;

fn args(args: &[&str]) -> Vec<String> {
    args.iter().map(ToString::to_string).collect()
}

#[test]
fn routes_added_through_the_api_forward_the_full_path_with_forwarded_headers() {
    let upstream = HttpStub::echo();
    let proxy = ChpProxy::start(&[]);
    let target = format!("http://{}", upstream.address());
    let body = serde_json::json!({"target": target, "user": "alice", "jupyterhub": true}).to_string();
    let added = proxy.api("POST", "/api/routes/user/alice", Some(&body));
    assert_eq!(added.status, 201, "{}", added.text());

    let response = proxy.get("/user/alice/lab/tree?x=1");
    assert_eq!(response.status, 200, "{}\n{}", response.head, proxy.log_tail());
    let seen = upstream.requests().pop().expect("the upstream saw the request");
    assert_eq!(seen.target, "/user/alice/lab/tree?x=1", "the full path, no prefix stripped");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("hub.test"));
    assert_eq!(seen.header("x-forwarded-port"), Some(proxy.proxy.port().to_string().as_str()));

    // Whole segments: /user/alicex is not under /user/alice.
    assert_eq!(proxy.get("/user/alicex").status, 404);

    let routes = proxy.routes();
    let route = &routes["/user/alice"];
    assert_eq!(route["target"], Value::String(target.clone()), "{routes}");
    assert_eq!(route["user"], "alice");
    assert_eq!(route["jupyterhub"], true);
    let last_activity = route["last_activity"].as_str().expect("last_activity");
    assert!(last_activity.ends_with('Z') && last_activity.len() == 24, "{last_activity}");
    assert_eq!(proxy.api("GET", "/api/routes/user/alice", None).status, 200);

    // Idle since before it was added: not returned; idle before the far future: returned.
    let none = proxy.api("GET", "/api/routes?inactive_since=2000-01-01T00:00:00.000Z", None);
    assert_eq!(serde_json::from_slice::<Value>(&none.body).unwrap(), serde_json::json!({}));
    let all = proxy.api("GET", "/api/routes?inactive_since=2999-01-01T00:00:00Z", None);
    assert!(serde_json::from_slice::<Value>(&all.body).unwrap().get("/user/alice").is_some());

    assert_eq!(proxy.api("DELETE", "/api/routes/user/alice", None).status, 204);
    assert_eq!(proxy.api("DELETE", "/api/routes/user/alice", None).status, 404);
    assert_eq!(proxy.get("/user/alice/lab").status, 404);
    assert_eq!(proxy.routes(), serde_json::json!({}));
}

#[test]
fn bad_api_input_gets_chps_status_codes_and_changes_nothing() {
    let upstream = HttpStub::echo();
    let proxy = ChpProxy::start(&[]);
    proxy.add_route("/user/a", &format!("http://{}", upstream.address()));
    let before = proxy.routes();
    let good = r#"{"target": "http://127.0.0.1:1"}"#;

    let no_token = proxy.api_with("POST", "/api/routes/user/b", Some(good), None);
    assert_eq!(no_token.status, 403);
    let bad_token = proxy.api_with("GET", "/api/routes", None, Some("wrong"));
    assert_eq!(bad_token.status, 403);
    let cases = [
        ("/api/routes/user/b", "{\"target\": ", "Body not valid JSON"),
        ("/api/routes/user/b", "{\"user\": \"b\"}", "target"),
        ("/api/routes/user/b", "{\"target\": 5}", "target"),
        ("/api/routes/user/b", "{\"target\": \"not a url\"}", "target"),
        ("/api/routes/user/b", "{\"target\": \"https://127.0.0.1:1\"}", "scheme"),
        ("/api/routes/user/../b", good, "`..`"),
        ("/api/routes/user//b", good, "empty segment"),
        ("/api/routes/user/a%2Fb", good, "%2F"),
    ];
    for (path, body, reason) in cases {
        let response = proxy.api("POST", path, Some(body));
        assert_eq!(response.status, 400, "POST {path} {body}: {}", response.text());
        assert!(response.text().contains(reason), "POST {path} {body}: {:?} should say {reason:?}", response.text());
    }
    assert_eq!(proxy.api("PUT", "/api/routes/user/b", Some(good)).status, 405);
    assert_eq!(proxy.api("GET", "/api/other", None).status, 404);
    let bad_date = proxy.api("GET", "/api/routes?inactive_since=yesterday", None);
    assert_eq!(bad_date.status, 400, "{}", bad_date.text());

    let after = proxy.routes();
    assert_eq!(after.as_object().map(|routes| routes.len()), Some(1), "{after}");
    assert_eq!(after["/user/a"]["target"], before["/user/a"]["target"]);
    assert_eq!(proxy.get("/user/a/x").status, 200, "the serving route is untouched");
    assert_eq!(proxy.get("/user/b/x").status, 404);
}

#[test]
fn the_error_target_serves_404_and_503_pages_and_the_default_target_the_rest() {
    let pages = HttpStub::start(|request| {
        StubResponse::new(200, format!("hub error page for {}", request.target))
            .with_header("content-type", "text/html")
    });
    let hub = HttpStub::echo();
    let proxy = ChpProxy::start(&args(&["--error-target", &format!("http://{}/hub/error", pages.address())]));
    let missing = proxy.get("/nowhere?a=b");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.text(), "hub error page for /hub/error/404?url=%2Fnowhere%3Fa%3Db");
    assert_eq!(missing.header("content-type"), Some("text/html"));

    // A route whose server is down: CHP's 503, with the hub's page.
    proxy.add_route("/user/gone", &format!("http://127.0.0.1:{}", free_port()));
    let down = proxy.get("/user/gone/lab");
    assert_eq!(down.status, 503, "{}", proxy.log_tail());
    assert_eq!(down.text(), "hub error page for /hub/error/503?url=%2Fuser%2Fgone%2Flab");

    let with_default = ChpProxy::start(&args(&["--default-target", &format!("http://{}", hub.address())]));
    let routes = with_default.routes();
    assert_eq!(routes["/"]["target"], format!("http://{}", hub.address()), "{routes}");
    assert_eq!(with_default.get("/hub/login").status, 200);
    assert_eq!(hub.requests().pop().map(|r| r.target).as_deref(), Some("/hub/login"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kernel_websocket_runs_through_a_chp_route() {
    let jupyter = Jupyter::start("/user/alice/");
    let proxy = ChpProxy::start(&[]);
    proxy.add_route("/user/alice", &format!("http://{}", jupyter.addr()));
    let base = format!("http://{}/user/alice/", proxy.proxy);
    let kernel = create_kernel(&base).await;
    assert_eq!(execute(&channels_url(&base, &kernel), "6*7").await, "42");

    // As with CHP, a route with a websocket open is active: its
    // last_activity moves while the socket idles, and stops when it closes.
    let last_activity = || proxy.routes()["/user/alice"]["last_activity"].as_str().map(str::to_string);
    let socket = KernelSocket::connect(&channels_url(&base, &kernel)).await;
    let opened = last_activity().expect("last_activity");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle_but_open = last_activity().expect("last_activity");
    assert!(idle_but_open > opened, "{idle_but_open} should be later than {opened}");
    socket.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed = last_activity();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(last_activity(), closed, "no websocket, no request: no activity");
}

#[test]
fn routes_survive_a_restart_with_a_routes_file() {
    let upstream = HttpStub::echo();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.json").display().to_string();
    let (port, api_port) = (free_port(), free_port());
    let mut proxy = ChpProxy::start_on(port, api_port, &args(&["--routes-file", &file]));
    proxy.add_route("/user/a", &format!("http://{}", upstream.address()));
    let before = proxy.routes();
    proxy.kill();

    let restarted = ChpProxy::start_on(port, api_port, &args(&["--routes-file", &file]));
    assert_eq!(restarted.routes(), before, "the same routes, last_activity included");
    assert_eq!(restarted.get("/user/a/lab").status, 200, "{}", restarted.log_tail());
}

#[test]
fn unknown_and_unsupported_flags_are_refused_by_name() {
    for (flag, expected) in [
        ("--frobnicate", "--frobnicate"),
        ("--storage-backend=x", "--storage-backend is not supported"),
        ("--api-ssl-key=k", "--api-ssl-key is not supported"),
    ] {
        let output = Command::new(binary("portico-gateway"))
            .args(["chp", flag])
            .env("CONFIGPROXY_AUTH_TOKEN", TOKEN)
            .output()
            .expect("running portico-gateway chp");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag} was accepted");
        assert!(stderr.contains(expected), "{flag}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_the_https_redirect_and_the_forwarding_flags() {
    const HOST: &str = "hub.example.com";
    let certified = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).expect("generating a certificate");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let upstream = HttpStub::echo();
    let redirect_port = free_port();
    let proxy = ChpProxy::start(&args(&[
        &format!("--ssl-cert={}", cert.display()),
        &format!("--ssl-key={}", key.display()),
        &format!("--redirect-port={redirect_port}"),
        "--redirect-to=443",
        "--no-include-prefix",
        "--change-origin",
        "--custom-header=X-Served-By: portico",
    ]));
    proxy.add_route("/user/a", &format!("http://{}", upstream.address()));

    let client = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap())
        .resolve(HOST, proxy.proxy)
        .build()
        .unwrap();
    let health = client.get(format!("https://{HOST}:{}/_chp_healthz", proxy.proxy.port())).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let response = client.get(format!("https://{HOST}:{}/user/a/lab?x=1", proxy.proxy.port())).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", proxy.log_tail());
    let seen = upstream.requests().pop().expect("the upstream saw the request");
    assert_eq!(seen.target, "/lab?x=1", "--no-include-prefix strips the route's prefix");
    assert_eq!(seen.header("host"), Some(upstream.address().to_string().as_str()), "--change-origin");
    assert_eq!(seen.header("x-served-by"), Some("portico"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    let plain = portico_e2e::raw_http::get(
        std::net::SocketAddr::from(([127, 0, 0, 1], redirect_port)),
        &format!("{HOST}:{redirect_port}"),
        "/user/a/lab?x=1",
    )
    .unwrap();
    assert_eq!(plain.status, 301);
    assert_eq!(plain.header("location"), Some(format!("https://{HOST}/user/a/lab?x=1").as_str()));
}
