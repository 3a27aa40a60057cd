//! JupyterHub's proxy in cluster mode, end to end on the real API server:
//! the controller serves configurable-http-proxy's API (`--chp-api`) and
//! keeps each route as a ChpRoute object; gateway replicas in cluster mode
//! serve every route.
//!
//! * A real JupyterHub (`should_start = False`, `api_url` = the controller's
//!   API) with two gateway replicas: users log in and spawn, their servers
//!   answer through both replicas, a stopped server's route leaves the API
//!   and both replicas, and after one replica is killed (SIGKILL) the other
//!   still serves every route, new ones included.
//! * The API itself: CHP's answers and status codes, bad input that creates
//!   no object, the full path and `X-Forwarded-*` upstream, `last_activity`
//!   from what the gateways report, routes kept across a controller restart
//!   and served by a replica started after it.
//! * Two controller replicas: a route written through one is listed by the
//!   other and served by the gateways of both; deleted through the other, it
//!   is gone everywhere.
//! * CHP's `--default-target`, `--error-target` and `--error-path` as the
//!   controller's `--chp-*` flags, served by every gateway replica.

use std::net::SocketAddr;
use std::time::Duration;

use portico_e2e::TestNamespace;
use portico_e2e::chp_cluster::{ChpController, ChpGateway};
use portico_e2e::chp_proxy::TOKEN;
use portico_e2e::free_port;
use portico_e2e::http_stub::{HttpStub, StubResponse};
use portico_e2e::jupyterhub::{HUB_TOKEN, HubProxy, JupyterHub};
use portico_e2e::raw_http;
use portico_e2e::recording_upstream::RecordingUpstream;
use portico_e2e::wait::poll;
use serde_json::{Value, json};

/// Bound on a single-user server starting (a few seconds alone; two cores
/// shared with parallel tests take longer).
const SPAWN_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on a change reaching the API's answers and the gateways.
const SETTLE: Duration = Duration::from_secs(30);

/// Whether `user`'s single-user server answers its API through `public`
/// (the hub's test service may call it; the hub itself would redirect).
fn server_answers(public: SocketAddr, user: &str) -> bool {
    let request = format!(
        "GET /user/{user}/api/status HTTP/1.1\r\nHost: {public}\r\nAuthorization: token {HUB_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    raw_http::exchange(public, request.as_bytes())
        .is_ok_and(|response| response.status == 200 && response.text().contains("\"started\""))
}

fn wait_answers(replicas: &[&ChpGateway], user: &str, hub: &JupyterHub) {
    for replica in replicas {
        let answered = poll(SETTLE, || server_answers(replica.public, user).then_some(()));
        assert!(
            answered.is_some(),
            "{user}'s server does not answer through the replica on {}\nroutes: {}\ngateway log:\n{}\nhub log:\n{}",
            replica.public,
            hub.proxy_routes(),
            replica.gateway.log_tail(),
            hub.log_tail()
        );
    }
}

/// Stops `user`'s server and waits until its route has left the API, the
/// objects and every replica in `replicas`.
fn stop_and_see_the_route_go(hub: &JupyterHub, chp: &ChpController, replicas: &[&ChpGateway], user: &str) {
    hub.stop_server(user, SPAWN_TIMEOUT);
    let key = format!("/user/{user}");
    let gone = poll(SETTLE, || {
        let everywhere = hub.proxy_routes().get(&key).is_none()
            && !chp.objects().contains(&key)
            && replicas.iter().all(|replica| !replica.routes_key(&key));
        everywhere.then_some(())
    });
    assert!(gone.is_some(), "{key} is still routed: {}\nobjects: {:?}", hub.proxy_routes(), chp.objects());
    for replica in replicas {
        assert!(!server_answers(replica.public, user), "{user}'s stopped server still answers on {}", replica.public);
    }
}

#[test]
fn jupyterhub_with_two_gateway_replicas_loses_no_route_when_one_is_killed() {
    let namespace = TestNamespace::create("chp-hub");
    let chp = ChpController::start(namespace.name());
    let first = chp.gateway();
    let second = chp.gateway();
    // The hub's public URL: the survivor's (behind a Service in a cluster).
    let hub = JupyterHub::start(HubProxy::External { public: second.public, api: chp.api });
    let routes = hub.proxy_routes();
    assert_eq!(routes["/"]["hub"], true, "the hub added its own route: {routes}");
    assert_eq!(chp.objects(), vec!["/".to_string()], "one ChpRoute per route");

    // Log in and spawn: the hub and the server answer through both replicas.
    let cookies = hub.log_in("alice");
    let cookie = cookies.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; ");
    let home =
        format!("GET /hub/home HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n", first.public);
    let page = raw_http::exchange(first.public, home.as_bytes()).expect("GET /hub/home through the first replica");
    assert_eq!(page.status, 200, "the hub's home page through the first replica: {}", page.head);
    hub.spawn("alice", SPAWN_TIMEOUT);
    let routes = hub.proxy_routes();
    assert_eq!(routes["/user/alice"]["user"], "alice", "{routes}");
    assert!(routes["/user/alice"]["last_activity"].is_string(), "{routes}");
    assert!(routes["/user/alice"]["target"].as_str().is_some_and(|t| t.starts_with("http://127.0.0.1:")), "{routes}");
    wait_answers(&[&first, &second], "alice", &hub);

    // A server stopped from the hub: its route leaves the API, the objects
    // and both replicas.
    hub.create_user("bob");
    hub.spawn("bob", SPAWN_TIMEOUT);
    wait_answers(&[&first, &second], "bob", &hub);
    stop_and_see_the_route_go(&hub, &chp, &[&first, &second], "bob");

    // One replica killed: the other serves every route, and new ones.
    let killed = first.public;
    drop(first);
    assert!(raw_http::get(killed, "hub.test", "/").is_err(), "the killed replica still answers");
    assert!(server_answers(second.public, "alice"), "alice's server through the survivor right after the kill");
    hub.create_user("carol");
    hub.spawn("carol", SPAWN_TIMEOUT);
    wait_answers(&[&second], "carol", &hub);
    assert!(server_answers(second.public, "alice"));
    stop_and_see_the_route_go(&hub, &chp, &[&second], "alice");
    assert_eq!(chp.objects(), vec!["/".to_string(), "/user/carol".to_string()]);
}

/// POSTs `{"target": target, ...data}` to `/api/routes<path>`.
fn add(chp: &ChpController, path: &str, target: &str, data: Value) -> u16 {
    let mut body = data;
    body["target"] = Value::String(target.to_string());
    chp.api("POST", &format!("/api/routes{path}"), Some(&body.to_string())).status
}

#[test]
fn the_proxy_api_keeps_routes_as_objects_across_a_controller_restart() {
    let namespace = TestNamespace::create("chp-api");
    let mut chp = ChpController::start(namespace.name());
    let gateway = chp.gateway();
    let upstream = RecordingUpstream::start();
    let target = format!("http://{}", upstream.address());

    assert_eq!(add(&chp, "/user/alice/", &target, json!({"user": "alice", "jupyterhub": true})), 201);
    // The API answers once the gateways are being sent the route.
    let served = poll(Duration::from_secs(5), || gateway.get("/user/alice/lab?x=1").filter(|r| r.status == 200));
    assert!(served.is_some(), "the new route is not served; gateway log:\n{}", gateway.gateway.log_tail());
    assert!(
        upstream.requests().iter().any(|line| line.starts_with("GET /user/alice/lab?x=1 ")),
        "{:?}",
        upstream.requests()
    );
    let received = upstream.dump().to_ascii_lowercase();
    assert!(received.contains("x-forwarded-port: 8000") && received.contains("x-forwarded-for:"), "{received}");
    assert_eq!(gateway.get("/user/alicex").map(|r| r.status), Some(404), "whole segments only");
    let one = chp.api("GET", "/api/routes/user/alice", None);
    assert_eq!(one.status, 200, "{}", one.head);
    let one: Value = serde_json::from_slice(&one.body).unwrap_or_default();
    assert_eq!((&one["user"], &one["jupyterhub"], &one["target"]), (&json!("alice"), &json!(true), &json!(target)));
    assert_eq!(chp.objects(), vec!["/user/alice".to_string()]);

    // Bad input: CHP's status codes, and no object.
    let bad = [
        ("POST", "/api/routes/user/bob", Some("{"), Some(TOKEN), 400),
        ("POST", "/api/routes/user/bob", Some(r#"{"user": "bob"}"#), Some(TOKEN), 400),
        ("POST", "/api/routes/user/bob", Some(r#"{"target": "https://x:1"}"#), Some(TOKEN), 400),
        ("POST", "/api/routes/user/bob", Some(r#"[1]"#), Some(TOKEN), 400),
        ("POST", "/api/routes/user/../admin", Some(r#"{"target": "http://x:1"}"#), Some(TOKEN), 400),
        ("POST", "/api/routes/user/a%2Fb", Some(r#"{"target": "http://x:1"}"#), Some(TOKEN), 400),
        ("POST", "/api/routes/user/bob", Some(r#"{"target": "http://x:1"}"#), Some("wrong"), 403),
        ("POST", "/api/routes/user/bob", Some(r#"{"target": "http://x:1"}"#), None, 403),
        ("PUT", "/api/routes/user/bob", Some(r#"{"target": "http://x:1"}"#), Some(TOKEN), 405),
        ("GET", "/api/routes?inactive_since=yesterday", None, Some(TOKEN), 400),
        ("DELETE", "/api/routes/user/nobody", None, Some(TOKEN), 404),
        ("GET", "/api/routes/user/nobody", None, Some(TOKEN), 404),
        ("GET", "/api/other", None, Some(TOKEN), 404),
    ];
    for (method, path, body, token, want) in bad {
        let response = chp.api_with(method, path, body, token);
        assert_eq!(response.status, want, "{method} {path} {body:?}: {}\n{}", response.head, response.text());
    }
    assert_eq!(chp.objects(), vec!["/user/alice".to_string()], "refused requests wrote nothing");
    assert_eq!(chp.routes().as_object().map(|routes| routes.len()), Some(1));

    // last_activity: when added, then what the gateways report.
    let since = |date: &str| chp.api("GET", &format!("/api/routes?inactive_since={date}"), None);
    let idle: Value = serde_json::from_slice(&since("2999-01-01T00:00:00Z").body).unwrap_or_default();
    assert!(idle.get("/user/alice").is_some(), "idle before the far future: {idle}");
    let idle: Value = serde_json::from_slice(&since("2000-01-01").body).unwrap_or_default();
    assert_eq!(idle, json!({}), "nothing idle since 2000");
    let added = chp.routes()["/user/alice"]["last_activity"].as_str().unwrap_or_default().to_string();
    std::thread::sleep(Duration::from_millis(50));
    let save =
        "POST /user/alice/api/contents HTTP/1.1\r\nHost: hub.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let saved = raw_http::exchange(gateway.public, save.as_bytes()).map(|r| r.status).unwrap_or(0);
    assert_eq!(saved, 200);
    let moved = poll(SETTLE, || {
        let last = chp.routes()["/user/alice"]["last_activity"].as_str().unwrap_or_default().to_string();
        (last > added).then_some(last)
    });
    assert!(
        moved.is_some(),
        "last_activity stayed {added} after a request; controller log:\n{}",
        chp.controller.log_tail()
    );

    // A restarted controller serves the same routes, and a replica started
    // after it gets them all at once.
    chp.controller.restart();
    let routes = chp.routes();
    assert_eq!(routes["/user/alice"]["user"], "alice", "{routes}");
    let late = chp.gateway();
    assert_eq!(late.get("/user/alice/tree").map(|r| r.status), Some(200), "a new replica serves the kept route");
    assert_eq!(gateway.get("/user/alice/tree").map(|r| r.status), Some(200), "the old replica kept serving");

    // Delete: gone from the API, the objects and the replicas.
    assert_eq!(chp.api("DELETE", "/api/routes/user/alice", None).status, 204);
    assert_eq!(chp.objects(), Vec::<String>::new());
    assert_eq!(chp.routes(), json!({}));
    let gone = poll(SETTLE, || {
        [&gateway, &late]
            .iter()
            .all(|replica| replica.get("/user/alice/tree").is_some_and(|r| r.status == 404))
            .then_some(())
    });
    assert!(gone.is_some(), "a deleted route is still served");
}

#[test]
fn any_controller_replica_takes_writes_and_every_replica_serves_them() {
    let namespace = TestNamespace::create("chp-replicas");
    let first = ChpController::start(namespace.name());
    let second = ChpController::start(namespace.name());
    // Each gateway replica streams from its own controller replica.
    let (from_first, from_second) = (first.gateway(), second.gateway());
    let upstream = RecordingUpstream::start();
    let target = format!("http://{}", upstream.address());

    assert_eq!(add(&first, "/user/alice", &target, json!({"user": "alice"})), 201);
    let everywhere = poll(SETTLE, || {
        let listed = second.routes().get("/user/alice").is_some_and(|route| route["user"] == "alice");
        let served = [&from_first, &from_second].iter().all(|g| g.get("/user/alice/").is_some_and(|r| r.status == 200));
        (listed && served).then_some(())
    });
    assert!(everywhere.is_some(), "a route written through one controller is not everywhere: {}", second.routes());

    assert_eq!(second.api("DELETE", "/api/routes/user/alice", None).status, 204, "deleted through the other");
    let gone = poll(SETTLE, || {
        let unlisted = first.routes().get("/user/alice").is_none();
        let unserved =
            [&from_first, &from_second].iter().all(|g| g.get("/user/alice/").is_some_and(|r| r.status == 404));
        (unlisted && unserved).then_some(())
    });
    assert!(gone.is_some(), "a route deleted through one controller is still somewhere: {}", first.routes());
    assert_eq!(first.objects(), Vec::<String>::new());
}

#[test]
fn the_default_target_and_error_pages_are_served_by_every_replica() {
    let namespace = TestNamespace::create("chp-pages");
    let pages = HttpStub::start(|request| {
        StubResponse::new(200, format!("hub error page for {}", request.target))
            .with_header("content-type", "text/html")
    });
    let hub = HttpStub::echo();
    let hub_url = format!("http://{}", hub.address());
    let error_target = format!("http://{}/hub/error", pages.address());
    let chp = ChpController::start_with(
        namespace.name(),
        &["--chp-default-target", &hub_url, "--chp-error-target", &error_target],
    );
    let replicas = [chp.gateway(), chp.gateway()];

    // The default target is CHP's `/` route: listed, served, no object.
    let routes = chp.routes();
    assert_eq!(routes["/"]["target"], json!(hub_url), "{routes}");
    assert!(chp.objects().is_empty(), "the default target is not an object");
    for replica in &replicas {
        let login = poll(SETTLE, || replica.get("/hub/login").filter(|r| r.status == 200));
        let log = replica.gateway.log_tail();
        assert!(login.is_some_and(|r| r.text().starts_with("GET /hub/login\n")), "the hub is not served; log:\n{log}");
    }

    // A route whose server is down: 503 with the hub's page, on every replica.
    let down = format!("http://127.0.0.1:{}", free_port());
    assert_eq!(add(&chp, "/user/gone", &down, json!({"user": "gone"})), 201);
    for replica in &replicas {
        let page = poll(SETTLE, || replica.get("/user/gone/lab").filter(|r| r.status == 503));
        let page = page.unwrap_or_else(|| panic!("no 503; log:\n{}", replica.gateway.log_tail()));
        assert_eq!(page.text(), "hub error page for /hub/error/503?url=%2Fuser%2Fgone%2Flab");
        assert_eq!(page.header("content-type"), Some("text/html"));
    }

    // The hub's own `/` wins over the default, which comes back when it goes.
    let other_hub = HttpStub::echo();
    assert_eq!(add(&chp, "/", &format!("http://{}", other_hub.address()), json!({"hub": true})), 201);
    assert_eq!(chp.objects(), vec!["/".to_string(), "/user/gone".to_string()]);
    assert_eq!(replicas[0].get("/hub/home").map(|r| r.status), Some(200));
    assert_eq!(other_hub.requests().pop().map(|r| r.target).as_deref(), Some("/hub/home"));
    assert_eq!(chp.api("DELETE", "/api/routes/", None).status, 204);
    assert_eq!(chp.routes()["/"]["target"], json!(hub_url), "listed again");
    let back = poll(SETTLE, || {
        replicas[1].get("/hub/back").filter(|r| r.status == 200 && r.text().starts_with("GET /hub/back\n"))
    });
    assert!(back.is_some(), "the default target did not come back");

    // --chp-error-path: the folder's pages, read by the controller, served
    // by gateways that cannot see its files.
    let folder = tempfile::tempdir().expect("a pages folder");
    std::fs::write(folder.path().join("404.html"), "<h1>no such server</h1>").expect("writing 404.html");
    std::fs::write(folder.path().join("error.html"), "<h1>proxy error</h1>").expect("writing error.html");
    let other = TestNamespace::create("chp-folder");
    let folder_path = folder.path().display().to_string();
    let with_folder = ChpController::start_with(other.name(), &["--chp-error-path", &folder_path]);
    let replica = with_folder.gateway();
    let missing = poll(SETTLE, || replica.get("/nowhere").filter(|r| r.status == 404));
    let missing = missing.unwrap_or_else(|| panic!("no 404; log:\n{}", replica.gateway.log_tail()));
    assert_eq!(missing.text(), "<h1>no such server</h1>");
    assert_eq!(add(&with_folder, "/user/gone", &down, json!({})), 201);
    let failed = poll(SETTLE, || replica.get("/user/gone/").filter(|r| r.status == 503));
    assert_eq!(failed.map(|r| r.text()).as_deref(), Some("<h1>proxy error</h1>"));
}
