//! The data plane's workers and their listening sockets: with
//! `--reuse-port` every independent worker accepts on a socket of its own,
//! and a graceful upgrade (`--upgrade`, then SIGQUIT to the old process)
//! hands every one of them to the new process without failing a request.
//!
//! The real `portico-gateway` serves a Kubeflow notebook from a folder of
//! YAML in front of `portico-fake-notebook`; the sockets are counted in the
//! kernel's own table (`/proc/net/tcp`).

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use portico_e2e::fixtures::{kubeflow_gateway, notebook, notebook_host, notebook_prefix, resolve_args};
use portico_e2e::raw_http;
use portico_e2e::wait::poll;
use portico_e2e::{ConfigDir, FakeNotebook, Gateway, free_port};

const NAMESPACE: &str = "team";
const NAME: &str = "lab";
/// Worker threads of every gateway here.
const WORKERS: usize = 3;
/// Bound on the old process leaving after SIGQUIT (its drain delay is 1 s).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// The notebook's status API, through the gateway.
fn status_path() -> String {
    format!("{}api/status", notebook_prefix(NAMESPACE, NAME))
}

struct Setup {
    fake: FakeNotebook,
    config: ConfigDir,
    http: SocketAddr,
}

impl Setup {
    fn new() -> Setup {
        let fake = FakeNotebook::start();
        let config = ConfigDir::new();
        config.write("gateway.yaml", &kubeflow_gateway());
        config.write("notebook.yaml", &notebook(NAMESPACE, NAME));
        Setup { fake, config, http: SocketAddr::from(([127, 0, 0, 1], free_port())) }
    }

    /// A gateway on `http` with `WORKERS` workers and `extra` flags.
    fn gateway(&self, extra: &[&str]) -> Gateway {
        Gateway::start(self.config.path(), &self.args(extra))
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["--bind".to_string(), format!("80={}", self.http), "--threads".into(), WORKERS.to_string()];
        args.extend(resolve_args(&notebook_host(NAMESPACE, NAME), self.fake.address().port()));
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args
    }

    /// One request on a new connection; its status, or why there was none.
    fn get(&self) -> Result<u16, String> {
        raw_http::get(self.http, "localhost", &status_path())
            .map(|response| response.status)
            .map_err(|error| error.to_string())
    }
}

/// The inodes of the listening TCP sockets on `port`, as the kernel lists
/// them: the same inodes after an upgrade are the same sockets, handed over.
fn listening_sockets(port: u16) -> Vec<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("reading /proc/net/tcp");
    let local = format!(":{port:04X}");
    // Columns: sl, local_address, rem_address, st (0A: LISTEN), ..., inode (9).
    let mut inodes: Vec<u64> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let listening = columns.len() > 9 && columns[1].ends_with(&local) && columns[3] == "0A";
            listening.then(|| columns[9].parse().ok()).flatten()
        })
        .collect();
    inodes.sort_unstable();
    inodes
}

#[test]
fn reuse_port_gives_every_worker_a_socket_and_serves_a_burst_of_connections() {
    let setup = Setup::new();
    let gateway = setup.gateway(&["--reuse-port", "true"]);
    assert_eq!(setup.get(), Ok(200), "the notebook through the gateway; log:\n{}", gateway.log_tail());
    assert_eq!(
        listening_sockets(setup.http.port()).len(),
        WORKERS,
        "a socket per worker; log:\n{}",
        gateway.log_tail()
    );

    // A client opening its pool at once: every connection is served.
    let pool: Vec<TcpStream> = (0..4 * WORKERS)
        .map(|n| TcpStream::connect(setup.http).unwrap_or_else(|error| panic!("connection {n}: {error}")))
        .collect();
    let request = format!("GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n", status_path());
    for (n, mut stream) in pool.into_iter().enumerate() {
        let response = raw_http::exchange_on(&mut stream, request.as_bytes())
            .unwrap_or_else(|error| panic!("connection {n}: {error}; log:\n{}", gateway.log_tail()));
        assert_eq!(response.status, 200, "connection {n}: {}", response.head);
    }
    drop(gateway);

    // Without the flag the workers share one socket.
    let gateway = setup.gateway(&[]);
    assert_eq!(setup.get(), Ok(200), "the notebook through the gateway; log:\n{}", gateway.log_tail());
    assert_eq!(listening_sockets(setup.http.port()).len(), 1, "one shared socket; log:\n{}", gateway.log_tail());
}

#[test]
fn a_graceful_upgrade_hands_every_workers_socket_over_without_failing_a_request() {
    let setup = Arc::new(Setup::new());
    let dir = tempfile::tempdir().expect("a directory for the upgrade socket");
    let socket = dir.path().join("upgrade.sock").display().to_string();
    let flags = ["--reuse-port", "true", "--upgrade-sock", socket.as_str(), "--drain-delay-secs", "1"];
    let mut old = setup.gateway(&flags);
    let sockets = listening_sockets(setup.http.port());
    assert_eq!(sockets.len(), WORKERS, "a socket per worker; log:\n{}", old.log_tail());

    // A client that keeps opening connections through the whole handover.
    let running = Arc::new(AtomicBool::new(true));
    let client = {
        let (setup, running) = (Arc::clone(&setup), Arc::clone(&running));
        thread::spawn(move || {
            let (mut served, mut failed) = (0usize, Vec::new());
            while running.load(Ordering::SeqCst) {
                match setup.get() {
                    Ok(200) => served += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (served, failed)
        })
    };

    // The new process waits on the upgrade socket until the old one, told
    // by SIGQUIT, sends it the listening sockets.
    let new = {
        let args = setup.args(&[&flags[..], &["--upgrade"]].concat());
        let config = setup.config.path().to_path_buf();
        thread::spawn(move || Gateway::start(config, &args))
    };
    thread::sleep(Duration::from_millis(500));
    let quit = Command::new("kill").args(["-QUIT", &old.pid().to_string()]).status().expect("running kill");
    assert!(quit.success(), "kill -QUIT {}", old.pid());
    let new = new.join().expect("the new gateway started");
    let left = poll(HANDOVER_TIMEOUT, || (!old.is_running()).then_some(()));
    assert!(left.is_some(), "the old gateway still runs {HANDOVER_TIMEOUT:?} after SIGQUIT; log:\n{}", old.log_tail());
    thread::sleep(Duration::from_millis(300));
    running.store(false, Ordering::SeqCst);
    let (served, failed) = client.join().expect("the client thread");

    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the upgrade: {:?}\nnew log:\n{}",
        failed.len(),
        served + failed.len(),
        &failed[..failed.len().min(5)],
        new.log_tail()
    );
    assert!(served > 0, "no request was served during the upgrade");
    assert_eq!(
        listening_sockets(setup.http.port()),
        sockets,
        "every worker's socket handed over (the same sockets, none bound anew); log:\n{}",
        new.log_tail()
    );
    assert_eq!(setup.get(), Ok(200), "the new gateway serves; log:\n{}", new.log_tail());
}
