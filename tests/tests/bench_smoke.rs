//! `bench/run --quick` is a check, not only a measurement: when a target
//! stops answering mid-case, the run must exit non-zero and say which case
//! and which target failed (issue #14). Runs the real harness on the test
//! build (`--profile dev --no-build`: this test runs inside `cargo test`,
//! which holds cargo's lock) and stops the fake notebook upstream that every
//! target forwards to right after the first target of the keep-alive case
//! was measured.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portico_e2e::binary::target_dir;
use portico_e2e::workspace_root;

/// Bound on the whole harness run (one case, a second per target).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The pid of the `portico-fake-notebook` child of `parent`, if running.
fn fake_notebook_child(parent: u32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // Fields after the parenthesized command: state, ppid, ...
        let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let argv0 = cmdline.split(|b| *b == 0).next()?;
        (ppid == parent && argv0.ends_with(b"portico-fake-notebook")).then_some(pid)
    })
}

#[test]
fn bench_quick_fails_naming_case_and_target_when_the_upstream_stops_mid_case() {
    assert!(
        target_dir().join("debug/examples/pingora_minimal").is_file(),
        "bench/run needs the pingora_minimal example: run `cargo build --workspace --bins --examples` first"
    );
    let output = tempfile::tempdir().expect("a temp dir");
    let mut bench = Command::new(workspace_root().join("bench/run"))
        .args(["--quick", "--profile", "dev", "--no-build", "--case", "keepalive", "--output"])
        .arg(output.path().join("result.json"))
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting bench/run");
    let stderr = bench.stderr.take().expect("bench/run's stderr");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut log = Vec::new();
    let mut stopped = None;
    while let Ok(line) = received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        // The direct path is measured first; every target after it goes
        // through the same upstream, which is now stopped.
        if stopped.is_none() && line.contains("keep-alive direct:") {
            let pid = fake_notebook_child(bench.id())
                .unwrap_or_else(|| panic!("no portico-fake-notebook child of bench/run; its log:\n{}", log.join("\n")));
            // SAFETY: kill(2) has no memory effects; pid is our grandchild.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "killing the fake notebook {pid}");
            stopped = Some(pid);
        }
        log.push(line);
    }
    // Its stderr closed: it has exited or is about to.
    let status = match portico_e2e::wait::poll(Duration::from_secs(10), || bench.try_wait().ok().flatten()) {
        Some(status) => status,
        None => {
            let _ = bench.kill();
            panic!("bench/run did not finish within {RUN_TIMEOUT:?}; its log:\n{}", log.join("\n"));
        }
    };
    let log = log.join("\n");
    assert!(stopped.is_some(), "the keep-alive case never measured the direct path; log:\n{log}");
    assert_eq!(status.code(), Some(1), "bench/run with its upstream stopped must exit 1; log:\n{log}");
    // Portico (measured right after direct) fails on 5xx from the dead
    // upstream, named with the case.
    let failure = log
        .lines()
        .find(|line| line.starts_with("bench/run: FAILED keepalive / portico:"))
        .unwrap_or_else(|| panic!("no failure line naming keepalive / portico; log:\n{log}"));
    assert!(
        failure.contains("non-2xx") || failure.contains("socket errors") || failure.contains("no request"),
        "the failure should say what went wrong: {failure}"
    );
    assert!(!log.contains("FAILED keepalive / direct"), "direct was measured before the stop; log:\n{log}");
}
