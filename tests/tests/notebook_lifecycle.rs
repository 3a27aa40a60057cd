//! A notebook's lifecycle as its user sees it, on the test cluster with real
//! pods: a stopped notebook wakes when its owner comes back (a starting page
//! that turns into JupyterLab, API and websocket requests held until the
//! server is ready) and for nobody else; an idle notebook is culled with
//! Kubeflow's own annotations.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use portico_e2e::browser::{idle_then_type, run_cell_and_stay, run_cell_in_waking_lab, typing_every};
use portico_e2e::kernel::{KernelSocket, channels_url};
use portico_e2e::notebooks::{apply, apply_kubeflow_gateway, notebook_yaml};
use portico_e2e::pod_runner::{NotebookProgram, PodRunner, RunnerOptions, fake_notebooks};
use portico_e2e::raw_http::{self, RawResponse};
use portico_e2e::wait::poll;
use portico_e2e::{Controller, Gateway, TestNamespace, free_port, http_client};
use tokio_tungstenite::tungstenite::Message;

const OWNER: &str = "alice@example.com";
const OTHER: &str = "bob@example.com";
/// The gateway's identity, which the profile's policy admits (Kubeflow's).
const GATEWAY_PRINCIPAL: &str = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
/// Bound on a pod going from created to serving on a busy machine.
const POD_START: Duration = Duration::from_secs(180);
const SETTLE: Duration = Duration::from_secs(60);
const STOP_ANNOTATION: &str = "kubeflow-resource-stopped";
const LAST_ACTIVITY: &str = "notebooks.kubeflow.org/last-activity";

/// How a [`Profile`] is set up.
#[derive(Default)]
struct Options<'a> {
    controller_args: &'a [&'a str],
    controller_env: &'a [(&'a str, &'a str)],
    gateway_args: &'a [&'a str],
    pods: RunnerOptions,
    /// Kubeflow's `ns-owner-access-istio`: only [`OWNER`] gets in.
    owner_only: bool,
}

/// A profile namespace, a controller, a cluster-mode gateway and a pod runner.
struct Profile {
    namespace: TestNamespace,
    controller: Controller,
    gateway: Gateway,
    port: u16,
    runner: PodRunner,
}

impl Profile {
    fn start(prefix: &str, options: Options) -> Profile {
        let namespace = TestNamespace::create(prefix);
        let ns = namespace.name().to_string();
        let gateway_ref = format!("{ns}/kubeflow-gateway");
        let mut env: Vec<(&str, &str)> = options.controller_env.to_vec();
        env.push(("ISTIO_GATEWAY", &gateway_ref));
        let controller = Controller::start_with_env(&ns, options.controller_args, &env);
        apply_kubeflow_gateway(namespace.plane(), &ns);
        if options.owner_only {
            apply(
                namespace.plane(),
                &format!(
                    "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\n\
                     metadata: {{name: ns-owner-access-istio, namespace: {ns}}}\nspec:\n  rules:\n\
                     \x20 - from: [{{source: {{principals: [\"{GATEWAY_PRINCIPAL}\"]}}}}]\n\
                     \x20   when: [{{key: \"request.headers[kubeflow-userid]\", values: [\"{OWNER}\"]}}]\n"
                ),
            );
        }
        let port = free_port();
        // `kubeflow-userid` from the client stands in for the login a real
        // deployment puts in front (the gateway trusts it here, instead of
        // setting it from a token).
        let bind = format!("80=127.0.0.1:{port}");
        let args: Vec<String> =
            ["--node-name", "gw", "--bind", &bind, "--principal", GATEWAY_PRINCIPAL, "--identity-header", ""]
                .iter()
                .chain(options.gateway_args)
                .map(|a| a.to_string())
                .collect();
        let gateway = Gateway::start_discovery(&controller.discovery_url(), &args);
        let runner = PodRunner::start_with(&ns, options.pods);
        Profile { namespace, controller, gateway, port, runner }
    }

    fn ns(&self) -> &str {
        self.namespace.name()
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn path(&self, notebook: &str, rest: &str) -> String {
        format!("/notebook/{}/{notebook}/{rest}", self.ns())
    }

    /// `method path` as `user` (Kubeflow's identity header), with `headers`;
    /// waits up to `POD_START` for the answer (held requests).
    fn request(&self, method: &str, path: &str, user: Option<&str>, headers: &[(&str, &str)]) -> RawResponse {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: nb.example.com\r\nConnection: close\r\n");
        if let Some(user) = user {
            head.push_str(&format!("kubeflow-userid: {user}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if method != "GET" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        raw_http::exchange_within(self.address(), head.as_bytes(), POD_START)
            .unwrap_or_else(|error| panic!("{method} {path}: {error}\n{}", self.context()))
    }

    /// A person opening `path` in a browser tab.
    fn navigate(&self, path: &str, user: Option<&str>) -> RawResponse {
        let headers = [("Accept", "text/html,application/xhtml+xml"), ("Sec-Fetch-Mode", "navigate")];
        self.request("GET", path, user, &headers)
    }

    /// The status of a websocket handshake for `path` as the owner (101
    /// when the notebook's server took it).
    fn websocket(&self, path: &str) -> u16 {
        let mut stream = TcpStream::connect(self.address()).expect("connecting to the gateway");
        stream.set_read_timeout(Some(POD_START)).expect("a read timeout");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: nb.example.com\r\nkubeflow-userid: {OWNER}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).expect("sending the handshake");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        head.split(' ').nth(1).and_then(|status| status.parse().ok()).unwrap_or(0)
    }

    fn annotations(&self, notebook: &str) -> BTreeMap<String, String> {
        let output = self.namespace.plane().kubectl_ok(&[
            "get",
            "notebook",
            notebook,
            "-n",
            self.ns(),
            "-o",
            "jsonpath={.metadata.annotations}",
        ]);
        serde_json::from_str(&output).unwrap_or_default()
    }

    fn wait_serving(&self, notebook: &str) {
        let path = self.path(notebook, "api/status");
        let served = poll(POD_START, || (self.request("GET", &path, Some(OWNER), &[]).status == 200).then_some(()));
        assert!(served.is_some(), "{path} never answered 200 through the gateway\n{}", self.context());
    }

    /// Stops `notebook` as Kubeflow's UI does (the annotation's value is
    /// the time, `at`), and waits until the gateway knows it is stopped.
    fn stop(&self, notebook: &str, at: &str) {
        self.namespace.plane().kubectl_ok(&[
            "annotate",
            "notebook",
            notebook,
            "-n",
            self.ns(),
            &format!("{STOP_ANNOTATION}={at}"),
        ]);
        let path = self.path(notebook, "api/status");
        let stopped = poll(SETTLE, || {
            let answer = self.request("GET", &path, Some(OWNER), &[]);
            (answer.status == 503 && answer.text().contains("is stopped")).then_some(answer)
        });
        let answer = stopped.unwrap_or_else(|| panic!("{path} never answered as stopped\n{}", self.context()));
        assert!(answer.header("retry-after").is_some(), "503 without Retry-After: {}", answer.head);
    }

    /// What a failure needs to be understood without a rerun, most telling
    /// first (a CI log keeps a failure's head and tail): the objects and
    /// their annotations, each EndpointSlice's readiness, what each side of
    /// the discovery stream holds, then the logs (the gateway's repeated
    /// lines folded).
    fn context(&self) -> String {
        let kubectl = |args: &[&str]| {
            let output = self.namespace.plane().kubectl().args(args).args(["-n", self.ns()]).output();
            output.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
        };
        let objects = kubectl(&["get", "pods,notebooks", "-o", "wide"]);
        let annotations = kubectl(&[
            "get",
            "notebooks",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}: {.metadata.annotations}{\"\\n\"}{end}",
        ]);
        let slices = kubectl(&[
            "get",
            "endpointslices",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} (rv {.metadata.resourceVersion}):\
             {range .endpoints[*]} {.addresses[0]} ready={.conditions.ready}{end}{\"\\n\"}{end}",
        ]);
        // Not `Controller::snapshot` or `Gateway::config_dump`: they panic
        // when nothing answers, and this is already a failure's message.
        let json_at = |url: String| {
            let response = raw_http::get_url(&url).ok()?;
            serde_json::from_slice::<serde_json::Value>(&response.body).ok()
        };
        let controller_version = json_at(format!("{}/debug/snapshot", self.controller.url()))
            .map(|snapshot| snapshot["version"].to_string())
            .unwrap_or_default();
        let gateway_version = json_at(format!("{}/config_dump", self.gateway.admin_url()))
            .map(|dump| format!("{} (applied at unix {})", dump["version"], dump["applied_at_unix"]))
            .unwrap_or_default();
        format!(
            "{objects}\nannotations:\n{annotations}\nendpoint slices:\n{slices}\n\
             route versions: controller {controller_version}, gateway {gateway_version}\n\
             pod runner:\n{}\ncontroller log:\n{}\ngateway log:\n{}",
            self.runner.events().join("\n"),
            self.controller.log_tail(),
            fold_repeats(&self.gateway.log_tail())
        )
    }
}

/// `log` with each run of lines that differ only in their timestamp (a
/// request polled every 50 ms) folded into its first line and a count.
fn fold_repeats(log: &str) -> String {
    let mut folded: Vec<(&str, &str, usize)> = Vec::new();
    for line in log.lines() {
        let body = line.split_once(' ').map_or(line, |(_, rest)| rest);
        match folded.last_mut() {
            Some((_, last, count)) if *last == body => *count += 1,
            _ => folded.push((line, body, 1)),
        }
    }
    let lines = folded.into_iter().map(|(line, _, count)| match count {
        1 => line.to_string(),
        _ => format!("{line}  [and {} more like it]", count - 1),
    });
    lines.collect::<Vec<_>>().join("\n")
}

#[test]
fn a_stopped_notebook_wakes_for_its_owner_only_and_holds_their_requests() {
    let options = Options { controller_args: &["--wake-min-interval", "1s"], owner_only: true, ..Options::default() };
    let profile = Profile::start("wake", options);
    let ns = profile.ns().to_string();
    apply(profile.namespace.plane(), &notebook_yaml(&ns, "nb", &[]));
    profile.wait_serving("nb");
    profile.stop("nb", "2026-12-05T10:00:00Z");

    // Nobody else wakes it: an anonymous or foreign visit is refused as
    // it would be if the notebook ran, and a polling GET (an open tab) of
    // its owner does not count as coming back.
    let lab = profile.path("nb", "lab");
    assert_eq!(profile.navigate(&lab, None).status, 403, "anonymous");
    assert_eq!(profile.navigate(&lab, Some(OTHER)).status, 403, "another user");
    let polled = profile.request("GET", &profile.path("nb", "api/kernels"), Some(OWNER), &[]);
    assert_eq!(polled.status, 503, "{}", polled.text());
    std::thread::sleep(Duration::from_secs(3));
    assert!(profile.annotations("nb").contains_key(STOP_ANNOTATION), "woken by a request that must not wake it");
    assert_eq!(profile.controller.metric("portico_controller_notebooks_woken_total"), Some(0.0));

    // The owner opens it: the starting page, and the notebook starts.
    let page = profile.navigate(&lab, Some(OWNER));
    assert_eq!(page.status, 503, "{}", page.head);
    assert!(page.text().contains("Starting your notebook"), "{}", page.text());
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")), "{}", page.head);
    // An API request and a websocket sent now are held, then served.
    let started = Instant::now();
    let (api, websocket) = std::thread::scope(|scope| {
        let api = scope.spawn(|| profile.request("GET", &profile.path("nb", "api/status"), Some(OWNER), &[]));
        let websocket = scope.spawn(|| profile.websocket(&profile.path("nb", "api/events/subscribe")));
        (api.join().expect("the API request"), websocket.join().expect("the websocket"))
    });
    let held_for = started.elapsed();
    assert_eq!(api.status, 200, "the held API request: {}\n{}", api.text(), profile.context());
    assert_eq!(websocket, 101, "the held websocket\n{}", profile.context());
    assert!(!profile.annotations("nb").contains_key(STOP_ANNOTATION), "still stopped");
    assert_eq!(profile.controller.metric("portico_controller_notebooks_woken_total"), Some(1.0));
    eprintln!("held requests were served {} ms after the wake", held_for.as_millis());

    // Stopped again, opened in a browser: the starting page turns into
    // JupyterLab by itself, and a cell runs.
    profile.stop("nb", "2026-12-05T10:05:00Z");
    let run = run_cell_in_waking_lab(&format!("http://127.0.0.1:{}{lab}", profile.port), &[("kubeflow-userid", OWNER)]);
    assert!(run.ok, "JupyterLab after waking: {} (screenshot {:?})\n{}", run.error, run.screenshot, profile.context());
    assert_eq!(run.output, "42");
    assert!(!run.starting_phases.is_empty(), "the browser never saw the starting page");
    eprintln!("the starting page showed {:?}", run.starting_phases);
}

/// Also: a notebook whose image takes longer to pull than `CULL_IDLE_TIME`
/// is not culled as it comes up (Kubeflow's culler, whose clock starts when
/// the pod exists, would stop it before anyone could open it).
#[test]
fn an_idle_notebook_is_culled_with_kubeflows_annotations() {
    let env = [("ENABLE_CULLING", "true"), ("CULL_IDLE_TIME", "20s"), ("IDLENESS_CHECK_PERIOD", "2s")];
    let pods = RunnerOptions { pull_time: Duration::from_secs(25), ..fake_notebooks() };
    let profile = Profile::start("cull", Options { controller_env: &env, pods, ..Options::default() });
    let ns = profile.ns().to_string();
    apply(profile.namespace.plane(), &notebook_yaml(&ns, "idle", &[]));
    profile.wait_serving("idle");
    assert!(!profile.annotations("idle").contains_key(STOP_ANNOTATION), "culled as it came up\n{}", profile.context());
    // The idle clock starts once the notebook serves.
    let started = poll(SETTLE, || profile.annotations("idle").get(LAST_ACTIVITY).cloned());
    assert!(started.is_some(), "no last-activity annotation\n{}", profile.context());

    let culled = poll(Duration::from_secs(90), || profile.annotations("idle").get(STOP_ANNOTATION).cloned());
    let culled = culled.unwrap_or_else(|| panic!("never culled\n{}", profile.context()));
    assert!(culled.ends_with('Z') && culled.len() == 20, "an RFC 3339 time in seconds, as Kubeflow writes: {culled}");
    assert_eq!(profile.controller.metric("portico_controller_notebooks_culled_total"), Some(1.0));
    // Stopped: the pod goes, and Kubeflow's activity annotations with it.
    let cleaned = poll(SETTLE, || (!profile.annotations("idle").contains_key(LAST_ACTIVITY)).then_some(()));
    assert!(cleaned.is_some(), "last-activity kept while stopped\n{}", profile.context());
    let events =
        profile.namespace.plane().kubectl_ok(&["get", "events", "-n", &ns, "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("Culled"), "no Culled event: {events}");
}

/// Kubeflow's culler polls `/api/kernels` and would cull the terminal (no
/// kernel) and, between its polls, nothing else; here what the gateways saw
/// decides: typing in a terminal and a cell that runs keep their notebooks,
/// while JupyterLab left open in a browser tab, untouched, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_people_do_keeps_a_notebook_and_an_idle_open_tab_does_not() {
    let env = [("ENABLE_CULLING", "true"), ("CULL_IDLE_TIME", "25s"), ("IDLENESS_CHECK_PERIOD", "2s")];
    let options = Options {
        controller_env: &env,
        controller_args: &["--activity-annotation-interval", "5s"],
        gateway_args: &["--activity-report-interval", "1s"],
        ..Options::default()
    };
    let profile = Profile::start("activity", options);
    let ns = profile.ns().to_string();
    for name in ["tab", "terminal", "cell"] {
        apply(profile.namespace.plane(), &notebook_yaml(&ns, name, &[]));
    }
    for name in ["tab", "terminal", "cell"] {
        profile.wait_serving(name);
    }
    let base = |name: &str| format!("http://127.0.0.1:{}{}", profile.port, profile.path(name, ""));
    // Long enough for the tab's notebook to be culled twice over.
    let watch_for = Duration::from_secs(60);

    // A cell that sleeps longer than the idle limit, with no client traffic.
    let kernel = jupyter_post(&format!("{}api/kernels", base("cell"))).await["id"].as_str().map(str::to_string);
    let kernel = kernel.expect("a kernel id");
    let mut socket = KernelSocket::connect(&channels_url(&base("cell"), &kernel)).await;
    let cell = socket.start_execute("import time; time.sleep(75)").await;

    // JupyterLab in a tab: a cell run, then nothing for a minute.
    let lab = format!("{}lab", base("tab"));
    let tab = std::thread::spawn(move || run_cell_and_stay(&lab, watch_for.as_secs_f64()));

    // A terminal typed into every 5 s.
    let created = jupyter_post(&format!("{}api/terminals", base("terminal"))).await;
    let terminal = created["name"].as_str().expect("a terminal name").to_string();
    let url = format!("{}terminals/websocket/{terminal}", base("terminal")).replacen("http://", "ws://", 1);
    let (mut typing, _) = tokio_tungstenite::connect_async(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let started = Instant::now();
    while started.elapsed() < watch_for {
        typing.send(Message::text(r#"["stdin", "date\r"]"#)).await.expect("typing");
        tokio::time::sleep(Duration::from_secs(5)).await;
        // The terminal's output is read so that it never backs up.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), typing.next()).await {}
    }

    let culled = |name: &str| profile.annotations(name).contains_key(STOP_ANNOTATION);
    assert!(culled("tab"), "an idle open tab kept its notebook\n{}", profile.context());
    assert!(!culled("terminal"), "a terminal in use was culled\n{}", profile.context());
    assert!(!culled("cell"), "a running cell was culled\n{}", profile.context());
    for name in ["terminal", "cell"] {
        let annotations = profile.annotations(name);
        let last = annotations.get(LAST_ACTIVITY).cloned().unwrap_or_default();
        assert!(!last.is_empty(), "{name} has no last-activity: {annotations:?}");
    }
    let run = tab.join().expect("the browser");
    assert!(run.ok, "JupyterLab in the tab: {} (screenshot {:?})", run.error, run.screenshot);
    drop(socket);
    let _ = cell;
}

/// POSTs `{}` to a Jupyter Server API as its page would: with the `_xsrf`
/// cookie the server sets on a page load, echoed in `X-XSRFToken` (Kubeflow's
/// images run without a token, so Jupyter checks XSRF on every POST).
async fn jupyter_post(url: &str) -> serde_json::Value {
    let page = url.split("/api/").next().unwrap_or(url).to_string() + "/lab";
    let loaded = http_client().get(&page).send().await.unwrap_or_else(|e| panic!("GET {page}: {e}"));
    let xsrf = loaded
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|cookie| cookie.strip_prefix("_xsrf=").map(|rest| rest.split(';').next().unwrap_or("").to_string()))
        .unwrap_or_else(|| panic!("GET {page} set no _xsrf cookie"));
    let response = http_client()
        .post(url)
        .header("Cookie", format!("_xsrf={xsrf}"))
        .header("X-XSRFToken", &xsrf)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "POST {url} answered {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("POST {url}: {e}: {body}"))
}

/// An IDE or app that is not Jupyter (code-server, RStudio; here a real
/// Bokeh server app, the only kind of such app this machine can install) is
/// culled when its open tab sits idle, and kept while a person types into
/// it: Kubeflow's kernel-based culler can do neither.
#[test]
fn a_websocket_app_is_culled_when_its_tab_sits_idle_and_kept_while_typed_into() {
    let env = [("ENABLE_CULLING", "true"), ("CULL_IDLE_TIME", "25s"), ("IDLENESS_CHECK_PERIOD", "2s")];
    let options = Options {
        controller_env: &env,
        controller_args: &["--activity-annotation-interval", "5s"],
        gateway_args: &["--activity-report-interval", "1s"],
        pods: RunnerOptions { notebooks: NotebookProgram::Bokeh, ..RunnerOptions::default() },
        ..Options::default()
    };
    let profile = Profile::start("app", options);
    let ns = profile.ns().to_string();
    for name in ["idle-app", "typed-app"] {
        apply(profile.namespace.plane(), &notebook_yaml(&ns, name, &[]));
    }
    for name in ["idle-app", "typed-app"] {
        let path = profile.path(name, "app");
        let served = poll(POD_START, || (profile.request("GET", &path, None, &[]).status == 200).then_some(()));
        assert!(served.is_some(), "{path} never answered 200 through the gateway\n{}", profile.context());
    }
    let url = |name: &str| format!("http://127.0.0.1:{}{}", profile.port, profile.path(name, "app"));
    let idle_url = url("idle-app");
    // Open, then untouched for a minute (typing only at the very end).
    let idle = std::thread::spawn(move || idle_then_type(&idle_url, "input", 60.0, "input", "late"));
    // Typing something new about every 7 s for a minute.
    let typed = typing_every(&url("typed-app"), "input", 5.0, 9, "input", "portico");
    assert!(typed.ok, "the app being typed into: {}\n{}", typed.error, profile.context());
    let _ = idle.join();

    let culled = |name: &str| profile.annotations(name).contains_key(STOP_ANNOTATION);
    assert!(culled("idle-app"), "an idle open tab of the app kept its notebook\n{}", profile.context());
    assert!(!culled("typed-app"), "the app being typed into was culled\n{}", profile.context());
}
