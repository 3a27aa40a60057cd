//! Runs every mode of the real `portico-load` binary briefly against
//! `portico-fake-notebook` served in-process on port 0, and checks the JSON
//! reports: no errors, plausible counts, and `1+1` executing to `2`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bound on one run of the binary (each run asks for well under a second).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Starts a fake notebook server on its own runtime thread; returns its address.
fn start_fake(h2c: bool) -> SocketAddr {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = portico_fake_notebook::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            sender.send(listener.local_addr().unwrap()).unwrap();
            let config = portico_fake_notebook::Config { body_bytes: 512, h2c };
            portico_fake_notebook::serve(listener, config).await;
        });
    });
    receiver.recv_timeout(Duration::from_secs(10)).unwrap()
}

fn fake() -> SocketAddr {
    static FAKE: OnceLock<SocketAddr> = OnceLock::new();
    *FAKE.get_or_init(|| start_fake(false))
}

/// Runs `portico-load ARGS --json FILE -q`; returns (report, stdout).
fn run(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico-load"))
        .args(args)
        .args(["--json", json.to_str().unwrap(), "-q", "--timeout", "5s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > RUN_LIMIT {
            child.kill().unwrap();
            panic!("portico-load {args:?} ran over {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "portico-load {args:?} failed: {stderr}\n{stdout}");
    (read_json(&json), stdout)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn op<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

fn assert_no_errors(report: &Value) {
    assert_eq!(report["error_total"], 0, "{report:#}");
}

#[test]
fn http_closed_loop_round_robins_urls() {
    let addr = fake();
    let urls = format!("http://{addr}/notebook/ns/nb/lab,http://{addr}/notebook/ns/nb/api/status");
    let (report, stdout) = run(&["http", "--url", &urls, "-c", "4", "-d", "300ms"]);
    assert_no_errors(&report);
    let request = op(&report, "request");
    assert!(request["count"].as_u64().unwrap() > 100, "{report:#}");
    let latency = &request["latency_ms"];
    assert!(latency["p50"].as_f64().unwrap() > 0.0);
    assert!(latency["p50"].as_f64() <= latency["p99"].as_f64() && latency["p99"].as_f64() <= latency["max"].as_f64());
    assert_eq!(report["targets"].as_array().unwrap().len(), 2);
    assert!(stdout.contains("p99.9 ms") && stdout.contains("errors: none"), "{stdout}");
}

#[test]
fn http_fixed_rate_keeps_the_schedule() {
    let addr = fake();
    let url = format!("http://{addr}/notebook/ns/nb/");
    let (report, _) = run(&["http", "--url", &url, "-c", "2", "-d", "500ms", "--rate", "200"]);
    assert_no_errors(&report);
    let count = op(&report, "request")["count"].as_u64().unwrap();
    assert!((80..=101).contains(&count), "200/s for 0.5 s sent {count}");
}

#[test]
fn http_hyper_engine_and_h2c() {
    let url = format!("http://{}/notebook/ns/nb/lab", fake());
    let (report, _) = run(&["http", "--url", &url, "-c", "2", "-d", "300ms", "--engine", "hyper"]);
    assert_no_errors(&report);
    assert!(op(&report, "request")["count"].as_u64().unwrap() > 50);

    let url = format!("http://{}/notebook/ns/nb/lab", start_fake(true));
    let (report, _) = run(&["http", "--url", &url, "-c", "2", "--h2", "--streams", "3", "-d", "300ms"]);
    assert_no_errors(&report);
    assert_eq!(report["settings"]["protocol"], "h2c");
    assert!(op(&report, "request")["count"].as_u64().unwrap() > 50);
}

#[test]
fn http_errors_are_counted_by_kind() {
    // A port nobody listens on: refused connects, counted, and the run still ends.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (report, stdout) = run(&["http", "--url", &format!("http://{closed}/"), "-c", "1", "-d", "200ms"]);
    assert!(report["errors"]["connect"].as_u64().unwrap() > 0, "{report:#}");
    assert!(stdout.contains("connect"), "{stdout}");

    // The channels path without an upgrade is a 400 from the fake, as from Jupyter.
    let url = format!("http://{}/notebook/ns/nb/api/kernels/k/channels", fake());
    let (report, _) = run(&["http", "--url", &url, "-c", "1", "-d", "200ms"]);
    assert!(report["errors"]["status_400"].as_u64().unwrap() > 0, "{report:#}");
}

#[test]
fn ws_idle_creates_kernels_holds_and_measures_rss() {
    let addr = fake();
    let pid = std::process::id().to_string();
    let base = format!("http://{addr}/notebook/ns/nb/");
    let (report, stdout) = run(&[
        "ws-idle",
        "--base",
        &base,
        "--count",
        "60",
        "--kernels",
        "2",
        "--hold",
        "200ms",
        "--pid",
        &pid,
        "--parallel",
        "8",
    ]);
    assert_no_errors(&report);
    assert_eq!(op(&report, "ws_connect")["count"], 60);
    assert_eq!(op(&report, "ws_close")["count"], 60);
    assert_eq!(report["details"]["websockets"]["open_at_end_of_hold"], 60);
    assert_eq!(report["details"]["kernels_deleted"], 2);
    let memory = &report["details"]["memory"][0];
    assert_eq!(memory["pid"], std::process::id());
    assert!(memory["rss_before_kib"].as_u64().unwrap() > 0);
    assert!(memory["per_connection_kib"].is_number(), "{memory}");
    assert!(stdout.contains("KiB per websocket"), "{stdout}");

    let url = format!("ws://{addr}/notebook/ns/nb/api/kernels/any-id/channels");
    let (report, _) = run(&["ws-idle", "--url", &url, "--count", "10", "--hold", "100ms"]);
    assert_no_errors(&report);
    assert_eq!(op(&report, "ws_connect")["count"], 10);
}

#[test]
fn sessions_execute_and_check_results() {
    let pattern = format!("http://{}/notebook/ns/nb-{{i}}/", fake());
    let (report, stdout) = run(&[
        "sessions",
        "--base-pattern",
        &pattern,
        "--notebooks",
        "2",
        "--sessions",
        "6",
        "--kernels",
        "2",
        "-d",
        "1s",
        "--execute-interval",
        "50ms",
        "--burst",
        "3",
        "--idle",
        "0.25",
        "--ramp",
        "100ms",
    ]);
    assert_no_errors(&report);
    assert_eq!(report["details"]["first_execute"]["result"], "2", "1+1 must come back as 2");
    for name in ["page", "contents", "ws_connect"] {
        assert_eq!(op(&report, name)["count"], 6, "{name}");
    }
    // Six sessions over two notebooks with two kernels each.
    assert_eq!(report["details"]["kernels"]["created"], 4);
    assert_eq!(report["details"]["kernels"]["deleted"], 4);
    let executes = op(&report, "execute")["count"].as_u64().unwrap();
    assert!(executes >= 30, "only {executes} executions");
    assert!(op(&report, "status")["count"].as_u64().unwrap() > 6, "status is polled between bursts");
    assert!(stdout.contains("1+1 -> 2"), "{stdout}");
}
