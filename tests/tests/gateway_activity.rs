//! Activity (issue 17), end to end: what a person or a running job does
//! through the gateway moves a destination's last activity on `/activity`;
//! what an idle open tab does does not.
//!
//! Real components only: a Jupyter Server from the venv (its REST API,
//! kernel and terminal websockets), JupyterLab in headless Chromium, and
//! `bokeh serve` as the non-Jupyter websocket app, each behind the
//! `portico-gateway` binary in folder mode.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use portico_e2e::browser::{idle_then_type, run_cell_and_stay};
use portico_e2e::fixtures::{kubeflow_gateway, notebook, notebook_host, notebook_prefix, resolve_args};
use portico_e2e::jupyter::venv_python;
use portico_e2e::process::{ChildProcess, Stop};
use portico_e2e::wait::poll;
use portico_e2e::{
    ConfigDir, Gateway, Jupyter, KernelSocket, channels_url, create_kernel, free_port, http_client, raw_http,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const NAMESPACE: &str = "team";
/// Bound on a notebook's listener and on state showing on `/activity`.
const WAIT: Duration = Duration::from_secs(30);

/// A gateway routing notebook `name` to a local server on `port`.
struct Deployment {
    _config: ConfigDir,
    gateway: Gateway,
    http: SocketAddr,
    host: String,
    prefix: String,
}

impl Deployment {
    fn start(name: &str, port: u16) -> Deployment {
        Deployment::start_with(name, port, &[])
    }

    /// [`Deployment::start`] with the gateway's `extra` flags.
    fn start_with(name: &str, port: u16, extra: &[&str]) -> Deployment {
        let config = ConfigDir::new();
        config.write("gateway.yaml", &kubeflow_gateway());
        config.write("notebook.yaml", &notebook(NAMESPACE, name));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let host = notebook_host(NAMESPACE, name);
        let mut args = vec!["--bind".to_string(), format!("80={http}")];
        args.extend(resolve_args(&host, port));
        args.extend(extra.iter().map(ToString::to_string));
        let gateway = Gateway::start(config.path(), &args);
        let prefix = notebook_prefix(NAMESPACE, name);
        // The listener may come up a moment after /healthz/ready.
        raw_http::get_when_listening(http, "portico.test", &prefix, WAIT)
            .unwrap_or_else(|error| panic!("GET {prefix}: {error}; log:\n{}", gateway.log_tail()));
        Deployment { _config: config, gateway, http, host, prefix }
    }

    /// `http://<gateway><prefix><path>`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.http, self.prefix)
    }

    /// The destination's state on `/activity` (`Null` before any).
    fn state(&self) -> Value {
        self.gateway.activity(&self.host).unwrap_or(Value::Null)
    }

    fn last_activity(&self) -> i64 {
        self.state()["last_activity_unix_ms"].as_i64().unwrap_or(0)
    }

    /// Waits until the destination's state satisfies `accept`.
    fn wait_for(&self, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        poll(WAIT, || Some(self.state()).filter(&accept)).unwrap_or_else(|| {
            panic!("/activity never showed {what}: {}\nlog:\n{}", self.state(), self.gateway.log_tail())
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Past the millisecond of the last stamp, so a new one is visibly later.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn jupyter(name: &str) -> Jupyter {
    Jupyter::start(&notebook_prefix(NAMESPACE, name))
}

#[tokio::test]
async fn polling_does_not_count_and_saving_a_file_or_opening_a_page_does() {
    let server = jupyter("poll");
    let deployment = Deployment::start("poll", server.port());
    let client = http_client();
    // JupyterLab's polling, the culler's probe, a health check.
    for _ in 0..3 {
        for path in ["api/kernels", "api/sessions", "api/terminals", "api/contents", "api/status"] {
            let response = client
                .get(deployment.url(path))
                .header("accept", "application/json")
                .header("sec-fetch-mode", "cors")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "GET {path}");
        }
    }
    assert_eq!(deployment.last_activity(), 0, "polling is not activity: {}", deployment.state());

    let before = now_ms();
    let saved = client
        .put(deployment.url("api/contents/notes.txt"))
        .json(&json!({"type": "file", "format": "text", "content": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 201);
    // Counted when the gateway ends the request, a moment after the client
    // has its answer: wait for it rather than race it.
    let saved = deployment.wait_for("the save counted", |s| s["last_activity_unix_ms"].as_i64() >= Some(before));
    let saved_at = saved["last_activity_unix_ms"].as_i64().unwrap_or(0);

    tick().await;
    let scripted = client
        .get(deployment.url("lab"))
        .header("accept", "text/html")
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-dest", "empty")
        .send()
        .await
        .unwrap();
    assert_eq!(scripted.status(), 200);
    assert_eq!(deployment.last_activity(), saved_at, "a script fetching HTML is no navigation");
    let navigation = client
        .get(deployment.url("lab"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .unwrap();
    assert_eq!(navigation.status(), 200);
    deployment.wait_for("opening the lab counted", |s| s["last_activity_unix_ms"].as_i64() > Some(saved_at));
}

#[tokio::test]
async fn kernel_messages_and_a_running_cell_count() {
    let server = jupyter("kernel");
    let deployment = Deployment::start("kernel", server.port());
    let base = deployment.url("");
    let kernel = create_kernel(&base).await;
    let mut socket = KernelSocket::connect(&channels_url(&base, &kernel)).await;
    deployment.wait_for("the kernel websocket", |s| s["kernel_websockets"] == 1);
    // Jupyter Server asks the new connection's kernel for its info: let
    // that busy/idle pass before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quiet = deployment.last_activity();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(deployment.last_activity(), quiet, "an open kernel websocket alone is not activity");

    assert_eq!(socket.execute("6 * 7").await, "42");
    let executed = deployment.last_activity();
    assert!(executed > quiet, "execute_request is activity: {}", deployment.state());

    let cell = socket.start_execute("import time; time.sleep(15)").await;
    let running = deployment.wait_for("a busy kernel", |s| s["busy_kernels"] == 1);
    let started = Instant::now();
    let series = format!(
        "portico_destination_busy_kernels{{destination_service=\"{}\",destination_service_name=\"kernel\",destination_service_namespace=\"{NAMESPACE}\"}}",
        deployment.host
    );
    assert_eq!(deployment.gateway.metric(&series), Some(1.0), "{running}");
    // No client traffic while the cell runs, yet the destination is active now.
    while started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let state = deployment.state();
        let last = state["last_activity_unix_ms"].as_i64().unwrap_or(0);
        assert!(last >= now_ms() - 1000, "a busy kernel reads as active now: {state}");
    }
    socket.finish_execute(&cell).await;
    let done = deployment.wait_for("the kernel idle again", |s| s["busy_kernels"] == 0);
    let idle_since = done["last_activity_unix_ms"].as_i64().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(deployment.last_activity(), idle_since, "an idle kernel is not active");
    socket.close().await;
    deployment.wait_for("the websocket closed", |s| s["kernel_websockets"] == 0);
}

#[tokio::test]
async fn terminal_keystrokes_count_and_resizing_does_not() {
    terminal_case("term", &[]).await;
}

/// The same when upgrades stay in Pingora's proxy loop: the body filters
/// see the websocket's bytes instead of the splice.
#[tokio::test]
async fn terminal_keystrokes_count_without_splicing_too() {
    terminal_case("term-pingora", &["--splice-upgrades", "false"]).await;
}

async fn terminal_case(name: &str, extra: &[&str]) {
    let server = jupyter(name);
    let deployment = Deployment::start_with(name, server.port(), extra);
    let created: Value =
        http_client().post(deployment.url("api/terminals")).send().await.unwrap().json().await.unwrap();
    let name = created["name"].as_str().expect("a terminal name").to_string();
    let url = deployment.url(&format!("terminals/websocket/{name}")).replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    deployment.wait_for("the terminal websocket", |s| s["terminal_websockets"] == 1);
    let quiet = deployment.last_activity();
    tick().await;
    ws.send(Message::text(r#"["set_size", 24, 80, 600, 800]"#)).await.unwrap();
    // The shell's prompt and output are not activity either.
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deployment.last_activity(), quiet, "set_size is not activity: {}", deployment.state());

    ws.send(Message::text(r#"["stdin", "echo portico-$((6*7))\r"]"#)).await.unwrap();
    let echoed = tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = ws.next().await {
            if message.to_text().unwrap_or_default().contains("portico-42") {
                return;
            }
        }
        panic!("the terminal closed");
    })
    .await;
    assert!(echoed.is_ok(), "the terminal never echoed");
    assert!(deployment.last_activity() > quiet, "stdin is activity: {}", deployment.state());
}

/// Samples of `/activity` taken while `run` runs: (Unix ms, state).
fn sampled<T: Send>(deployment: &Deployment, run: impl FnOnce() -> T + Send) -> (T, Vec<(i64, Value)>) {
    std::thread::scope(|scope| {
        let running = scope.spawn(run);
        let mut samples = Vec::new();
        while !running.is_finished() {
            samples.push((now_ms(), deployment.state()));
            std::thread::sleep(Duration::from_millis(500));
        }
        (running.join().expect("the browser thread"), samples)
    })
}

#[test]
fn an_open_jupyterlab_tab_counts_when_used_and_not_while_it_sits_idle() {
    let server = jupyter("lab");
    let deployment = Deployment::start("lab", server.port());
    let opened = now_ms();
    let (run, samples) = sampled(&deployment, || run_cell_and_stay(&deployment.url("lab"), 20.0));
    assert!(run.ok, "JupyterLab through the gateway: {}; log:\n{}", run.error, deployment.gateway.log_tail());
    eprintln!("JupyterLab's kernel websocket carried {} frames", run.kernel_frames);
    let kernels = samples.iter().map(|(_, s)| s["kernel_websockets"].as_u64().unwrap_or(0)).max();
    assert!(kernels >= Some(1), "the lab's kernel websocket was seen: {samples:?}");
    let last = deployment.last_activity();
    assert!(last >= opened, "opening the lab and running a cell is activity");
    // The tab then sat open, polling, for 20 s: none of it counts. (2 s
    // for the tail of the cell: its reply and the kernel going idle.)
    assert!(
        last <= run.cell_done_ms + 2000,
        "activity at {last}, {} ms after the cell finished; the tab was idle until {}: {samples:?}",
        last - run.cell_done_ms,
        run.stayed_until_ms
    );
}

/// A Bokeh app (a text input echoed into a div) served at `prefix`.
fn start_bokeh(dir: &Path, prefix: &str, port: u16) -> ChildProcess {
    let app = dir.join("app.py");
    std::fs::write(
        &app,
        "from bokeh.io import curdoc\nfrom bokeh.layouts import column\nfrom bokeh.models import Div, TextInput\n\
         text = TextInput(title='name')\nshown = Div(text='')\n\
         text.on_change('value', lambda attr, old, new: setattr(shown, 'text', new))\n\
         curdoc().add_root(column(text, shown))\n",
    )
    .expect("writing the Bokeh app");
    let mut command = Command::new(venv_python());
    command
        .args(["-m", "bokeh", "serve"])
        .arg(&app)
        .args(["--address", "127.0.0.1", "--port", &port.to_string(), "--allow-websocket-origin", "*"])
        .args(["--prefix", prefix.trim_end_matches('/')]);
    let process = ChildProcess::spawn("bokeh", command, &dir.join("bokeh.log"), Stop::Kill);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let path = format!("{prefix}app");
    let ready = poll(Duration::from_secs(60), || {
        raw_http::get(address, "127.0.0.1", &path).ok().filter(|r| r.status == 200).map(|_| ())
    });
    assert!(ready.is_some(), "bokeh serve did not answer {path}; log:\n{}", process.log_tail(30));
    process
}

#[test]
fn an_idle_websocket_app_does_not_count_and_typing_into_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _bokeh = start_bokeh(dir.path(), &notebook_prefix(NAMESPACE, "bk"), port);
    let deployment = Deployment::start("bk", port);
    let (page, samples) =
        sampled(&deployment, || idle_then_type(&deployment.url("app"), "input", 12.0, "input", "portico"));
    assert!(page.ok, "the Bokeh app through the gateway: {}", page.error);
    let idle: Vec<&(i64, Value)> =
        samples.iter().filter(|(at, _)| *at > page.loaded_ms + 2000 && *at < page.idle_until_ms).collect();
    assert!(idle.len() >= 10, "sampled the idle tab: {samples:?}");
    assert!(idle.iter().all(|(_, s)| s["other_websockets"] == 1), "its websocket was open: {idle:?}");
    let idle_last: Vec<i64> = idle.iter().map(|(_, s)| s["last_activity_unix_ms"].as_i64().unwrap_or(0)).collect();
    let sent_while_idle: Vec<&(i64, u64)> =
        page.client_messages.iter().filter(|(at, _)| *at > page.loaded_ms && *at < page.idle_until_ms).collect();
    eprintln!("the idle Bokeh tab sent {} websocket messages: {sent_while_idle:?}", sent_while_idle.len());
    assert!(
        idle_last.iter().all(|last| *last == idle_last[0] && *last <= page.loaded_ms + 2000),
        "nothing counted while the tab sat idle: {idle_last:?} (loaded at {})",
        page.loaded_ms
    );
    let last = deployment.last_activity();
    assert!(last >= page.typed_ms, "typing into the app is activity: {} (typed at {})", last, page.typed_ms);
}

/// The kernel's statuses reach the watch through Pingora's response body
/// filter when upgrades are not spliced.
#[tokio::test]
async fn a_busy_kernel_is_seen_without_splicing_too() {
    let server = jupyter("kernel-pingora");
    let deployment = Deployment::start_with("kernel-pingora", server.port(), &["--splice-upgrades", "false"]);
    let base = deployment.url("");
    let kernel = create_kernel(&base).await;
    let mut socket = KernelSocket::connect(&channels_url(&base, &kernel)).await;
    let cell = socket.start_execute("import time; time.sleep(4)").await;
    deployment.wait_for("a busy kernel", |s| s["busy_kernels"] == 1 && s["kernel_websockets"] == 1);
    socket.finish_execute(&cell).await;
    deployment.wait_for("the kernel idle again", |s| s["busy_kernels"] == 0);
    socket.close().await;
    deployment.wait_for("the websocket closed", |s| s["kernel_websockets"] == 0);
}
