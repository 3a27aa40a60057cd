//! jupyterhub-idle-culler (from PyPI, run as a hub service) with Portico as
//! the hub's proxy: an idle server is culled and its route deleted, while a
//! server whose terminal is in use (keystrokes over the terminal websocket,
//! through Portico) is kept.
//!
//! The hub merges the activity the proxy reports per route (`last_activity`
//! on `GET /api/routes`, polled every `last_activity_interval`) with what
//! single-user servers report themselves; the culler acts on the merge.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use portico_e2e::free_port;
use portico_e2e::jupyterhub::{HUB_TOKEN, HubProxy, JupyterHub};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SPAWN_TIMEOUT: Duration = Duration::from_secs(120);
/// Idle time after which the culler stops a server.
const CULL_AFTER_SECS: u64 = 20;
/// Bound on the idle server being culled (idle time, culler period, the
/// hub's activity polls, a loaded machine).
const CULL_TIMEOUT: Duration = Duration::from_secs(120);

fn culler_config() -> String {
    format!(
        r#"
c.JupyterHub.last_activity_interval = 5
c.Spawner.environment = {{"JUPYTERHUB_ACTIVITY_INTERVAL": "5"}}
c.JupyterHub.services.append({{
    "name": "idle-culler",
    # In a session of its own, like the servers: it dies with the hub.
    "command": ["/usr/bin/setpriv", "--pdeathsig", "KILL", "{{venv}}/python", "-m", "jupyterhub_idle_culler", "--timeout={CULL_AFTER_SECS}", "--cull-every=5"],
}})
c.JupyterHub.load_roles.append({{
    "name": "idle-culler",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": ["idle-culler"],
}})
"#
    )
}

/// Whether the hub lists `user`'s server (a hub too busy to answer: yes).
fn server_running(hub: &JupyterHub, user: &str) -> bool {
    let Ok(response) = hub.try_api("GET", &format!("/users/{user}")) else { return true };
    let user: Value = serde_json::from_slice(&response.body).unwrap_or_default();
    user["servers"].get("").is_some() || response.status != 200
}

#[tokio::test(flavor = "multi_thread")]
async fn the_idle_culler_culls_an_idle_server_and_keeps_one_whose_terminal_is_in_use() {
    let hub = JupyterHub::start_with(HubProxy::Started { port: free_port(), api_port: free_port() }, &culler_config());
    for user in ["carol", "dave"] {
        hub.create_user(user);
        hub.spawn(user, SPAWN_TIMEOUT);
    }

    // Dave opens a terminal through Portico and types into it.
    let terminal = hub.request_with_token("POST", "/user/dave/api/terminals", HUB_TOKEN);
    assert_eq!(terminal.status, 200, "new terminal: {}\n{}", terminal.head, terminal.text());
    let name = serde_json::from_slice::<Value>(&terminal.body).expect("terminal JSON")["name"]
        .as_str()
        .expect("terminal name")
        .to_string();
    let mut request = format!("ws://{}/user/dave/terminals/websocket/{name}", hub.public)
        .into_client_request()
        .expect("a websocket request");
    request.headers_mut().insert("authorization", format!("token {HUB_TOKEN}").parse().expect("a header value"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("the terminal websocket");

    let started = Instant::now();
    let mut culled = false;
    while started.elapsed() < CULL_TIMEOUT {
        socket
            .send(Message::text(r#"["stdin", "echo still here\r"]"#))
            .await
            .unwrap_or_else(|error| panic!("typing into dave's terminal: {error}\n{}", hub.log_tail()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !server_running(&hub, "carol") {
            culled = true;
            break;
        }
    }
    assert!(culled, "carol's idle server was not culled within {CULL_TIMEOUT:?}; log:\n{}", hub.log_tail());
    assert!(
        started.elapsed() >= Duration::from_secs(CULL_AFTER_SECS / 2),
        "culled after {:?}: too early to be the idle timeout",
        started.elapsed()
    );
    assert!(server_running(&hub, "dave"), "dave's server, in use, was culled; log:\n{}", hub.log_tail());
    let routes = hub.proxy_routes();
    assert!(routes.get("/user/carol").is_none(), "carol's route is gone: {routes}");
    assert!(routes.get("/user/dave").is_some(), "dave's route stays: {routes}");
    let _ = socket.close(None).await;
}
