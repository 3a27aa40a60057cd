//! The real Kubernetes control plane of `tests/kube` (etcd + kube-apiserver
//! on loopback), shared by every test of a test process.
//!
//! [`plane()`] runs `tests/kube/up` once per process (it is idempotent and
//! serializes concurrent callers on its own lock file, so several test
//! binaries may call it) and applies Portico's CRDs (`kubectl apply -k manifests/crds`).
//! Tests then get their own namespace ([`crate::TestNamespace`]).
//!
//! There is no controller-manager: no garbage collection, no EndpointSlices,
//! no pods from StatefulSets, no namespace finalization. Tests create what
//! they need and never wait for those controllers.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::wait::poll;
use crate::workspace_root;

/// The running control plane.
#[derive(Debug)]
pub struct KubePlane {
    dir: PathBuf,
    kubeconfig: PathBuf,
    /// `kube-apiserver vX, etcd Y`, from `up`'s last line.
    versions: String,
}

static PLANE: OnceLock<KubePlane> = OnceLock::new();

/// The shared control plane, started (or found running) on first use, with
/// Portico's CRDs installed and established.
///
/// Panics with `up`'s output if it cannot start (the first build of
/// kube-apiserver takes minutes; `scripts/install-deps` does it up front).
pub fn plane() -> &'static KubePlane {
    PLANE.get_or_init(|| {
        let root = workspace_root();
        let started = Instant::now();
        let up = root.join("tests").join("kube").join("up");
        let output = Command::new(&up)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("running {}: {error}", up.display()));
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "tests/kube/up failed ({}):\n{text}", output.status);
        let versions = text
            .lines()
            .rev()
            .find_map(|line| line.split_once("kube-apiserver v").map(|(_, rest)| format!("kube-apiserver v{rest}")))
            .and_then(|line| line.split(" at ").next().map(|v| v.trim_end_matches(')').to_string()))
            .unwrap_or_default();
        let dir = root.join("target").join("kube");
        let plane = KubePlane { kubeconfig: dir.join("kubeconfig"), dir, versions };
        plane.apply_crds();
        eprintln!("test control plane ready in {:.1?}: {}", started.elapsed(), plane.versions);
        plane
    })
}

impl KubePlane {
    /// `target/kube/kubeconfig` (user `admin`, system:masters).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `kube-apiserver v1.33.13, etcd 3.5.24` (as `up` reported them).
    pub fn versions(&self) -> &str {
        &self.versions
    }

    /// A kubectl command against the plane.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new("kubectl");
        command.arg("--kubeconfig").arg(&self.kubeconfig).arg("--request-timeout=60s").stdin(Stdio::null());
        command
    }

    /// Runs `kubectl args...` and returns stdout; panics with stderr on failure.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.kubectl_stdin(args, None)
    }

    /// Like [`Self::kubectl_ok`], with `input` on stdin (for `-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: Option<&str>) -> String {
        let mut command = self.kubectl();
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().unwrap_or_else(|error| panic!("kubectl {args:?}: {error}"));
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("kubectl stdin is piped");
            stdin.write_all(input.as_bytes()).unwrap_or_else(|error| panic!("kubectl {args:?} stdin: {error}"));
        }
        let output = child.wait_with_output().unwrap_or_else(|error| panic!("kubectl {args:?}: {error}"));
        assert!(
            output.status.success(),
            "kubectl {args:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The decoded value of `key` in Secret `namespace/name`.
    pub fn secret_value(&self, namespace: &str, name: &str, key: &str) -> String {
        let json = self.kubectl_ok(&["get", "secret", name, "-n", namespace, "-o", "json"]);
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_str(&json).unwrap_or_else(|error| panic!("Secret {namespace}/{name}: {error}"));
        let bytes = secret.data.and_then(|mut data| data.remove(key)).map(|bytes| bytes.0);
        let bytes = bytes.unwrap_or_else(|| panic!("Secret {namespace}/{name} has no {key}"));
        String::from_utf8(bytes).unwrap_or_else(|error| panic!("Secret {namespace}/{name} {key}: {error}"))
    }

    /// A kube client for the plane. Create one per test: a client belongs to
    /// the tokio runtime it was made on.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|error| panic!("reading {}: {error}", self.kubeconfig.display()));
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap_or_else(|error| panic!("loading {}: {error}", self.kubeconfig.display()));
        kube::Client::try_from(config).unwrap_or_else(|error| panic!("building a kube client: {error}"))
    }

    /// Whether `/readyz` answers `ok`.
    pub fn ready(&self) -> bool {
        let output = self.kubectl().args(["--request-timeout=5s", "get", "--raw", "/readyz"]).output();
        output.is_ok_and(|output| output.status.success() && output.stdout.trim_ascii() == b"ok")
    }

    /// `kubectl apply -k manifests/crds` and waits until they are established.
    pub fn apply_crds(&self) {
        let crds = workspace_root().join("manifests").join("crds");
        let crds = crds.to_str().expect("the workspace path is UTF-8");
        self.kubectl_ok(&["apply", "-k", crds]);
        let names = [
            "crd/gateways.networking.istio.io",
            "crd/virtualservices.networking.istio.io",
            "crd/notebooks.kubeflow.org",
            "crd/chproutes.proxy.portico.dev",
        ];
        let mut args = vec!["wait", "--for", "condition=established", "--timeout=60s"];
        args.extend(names);
        self.kubectl_ok(&args);
    }

    /// Stops kube-apiserver (SIGTERM), keeps it down for `down_for`, and
    /// starts it again with the very same command line (same port, certs
    /// and etcd, whose data survives), then waits for `/readyz`. Holds
    /// `tests/kube`'s lock meanwhile so that no `up` replaces the plane.
    ///
    /// It disturbs every client of the plane: only a test binary with a
    /// single test may call it.
    pub fn restart_apiserver(&self, down_for: Duration) {
        let lock = File::create(self.dir.join("up.lock")).expect("opening target/kube/up.lock");
        flock(&lock);
        let pid_file = self.dir.join("kube-apiserver.pid");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {}", pid_file.display()));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("reading the API server's command line");
        let argv: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("reading the API server's executable");
        assert!(exe.ends_with("target/kube/bin/kube-apiserver"), "pid {pid} is not our kube-apiserver: {exe:?}");

        // Gone when /proc/<pid>/exe no longer resolves, as tests/kube/lib.sh
        // checks: an exited process whose parent has not reaped it yet (a
        // zombie) counts as gone.
        let gone = || std::fs::read_link(format!("/proc/{pid}/exe")).is_err();
        // A graceful stop, bounded: kube-apiserver drains for up to half a
        // minute, which a test does not need to wait for.
        signal(pid, libc::SIGTERM);
        if poll(Duration::from_secs(10), || gone().then_some(())).is_none() {
            signal(pid, libc::SIGKILL);
            poll(Duration::from_secs(10), || gone().then_some(())).expect("kube-apiserver did not exit after SIGKILL");
        }
        std::thread::sleep(down_for);

        // Started the way `up` starts it (setsid, in the background of a
        // shell that exits at once): in a session of its own, outliving this
        // test process, adopted by init rather than left a zombie of ours.
        let log = self.dir.join("kube-apiserver.log");
        let output = Command::new("sh")
            .arg("-c")
            .arg(r#"log="$1"; shift; setsid "$@" </dev/null >>"$log" 2>&1 & echo $!"#)
            .arg("sh")
            .arg(&log)
            .arg(&exe)
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .expect("restarting kube-apiserver");
        let new_pid = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(output.status.success() && !new_pid.is_empty(), "restarting kube-apiserver: {output:?}");
        std::fs::write(&pid_file, format!("{new_pid}\n")).expect("writing kube-apiserver.pid");
        drop(lock);
        let ready = poll(Duration::from_secs(90), || self.ready().then_some(()));
        assert!(ready.is_some(), "kube-apiserver was not ready within 90s of its restart");
    }
}

/// Blocks until `file` is exclusively locked (released when it is closed).
fn flock(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor this function borrows; no memory is shared.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(result, 0, "locking target/kube/up.lock: {}", std::io::Error::last_os_error());
}

fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) };
}
