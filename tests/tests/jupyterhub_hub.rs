//! A real JupyterHub with Portico as its proxy, end to end: a user logs in
//! through the login form, the hub spawns their server and adds its route,
//! JupyterLab opens in headless Chromium (the hub's OAuth redirects
//! included) and runs a cell, and the hub stops the server and deletes the
//! route.
//!
//! Once with the hub starting Portico itself (`ConfigurableHTTPProxy.command
//! = [portico-gateway, chp]`, the flags JupyterHub passes to CHP), once with
//! `should_start = False` against a Portico already running.

use std::time::Duration;

use portico_e2e::browser::run_cell_in_lab_with_cookies;
use portico_e2e::chp_proxy::ChpProxy;
use portico_e2e::free_port;
use portico_e2e::jupyterhub::{HubProxy, JupyterHub};
use portico_e2e::wait::poll;

/// Bound on a single-user server starting (jupyterhub-singleuser with
/// JupyterLab takes a few seconds alone; parallel tests on two cores more).
const SPAWN_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on the hub updating its proxy after a change.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Log in, spawn, run a cell in the lab, stop: the user's route comes and goes.
fn a_user_session(hub: &JupyterHub, user: &str) {
    let cookies = hub.log_in(user);
    let route = format!("/user/{user}");
    hub.spawn(user, SPAWN_TIMEOUT);
    let routes = hub.proxy_routes();
    let added = &routes[&route];
    assert_eq!(added["user"], user, "{routes}");
    assert_eq!(added["jupyterhub"], true, "{routes}");
    assert!(added["last_activity"].is_string(), "{routes}");
    assert_eq!(routes["/"]["hub"], true, "the hub's own route: {routes}");

    let lab = format!("http://{}/user/{user}/lab", hub.public);
    let run = run_cell_in_lab_with_cookies(&lab, &[], &cookies);
    assert!(
        run.ok,
        "JupyterLab through Portico: {} (screenshot: {:?})\nhub log:\n{}",
        run.error,
        run.screenshot,
        hub.log_tail()
    );
    assert_eq!(run.output, "42");

    hub.stop_server(user, SPAWN_TIMEOUT);
    let gone = poll(ROUTE_TIMEOUT, || hub.proxy_routes().get(&route).is_none().then_some(()));
    assert!(gone.is_some(), "{route} is still routed: {}", hub.proxy_routes());
    // The hub's route still serves: /user/<name> now reaches the hub.
    assert!(hub.proxy_routes().get("/").is_some());
}

#[test]
fn jupyterhub_starts_portico_as_its_proxy_and_a_user_runs_a_cell() {
    let hub = JupyterHub::start(HubProxy::Started { port: free_port(), api_port: free_port() });
    a_user_session(&hub, "alice");
}

#[test]
fn jupyterhub_drives_a_portico_already_running() {
    let proxy = ChpProxy::start(&[]);
    let hub = JupyterHub::start(HubProxy::External { public: proxy.proxy, api: proxy.api });
    a_user_session(&hub, "bob");
    drop(hub);
    // The hub is gone, the proxy keeps serving what it was given.
    let routes = proxy.routes();
    assert!(routes.get("/").is_some(), "{routes}");
}
