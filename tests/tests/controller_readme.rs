//! The README's "Running the controller" steps, as written, on the test
//! control plane: `kubectl apply -k manifests/crds`, `kubectl create
//! namespace portico-system`, `portico-controller`.
//!
//! The commands are read from README.md, so the README cannot drift from
//! what is tested. Three substitutions keep the run honest on a plane other
//! tests share: the namespace gets a fresh name in place of
//! `portico-system` (passed with `--namespace`, what the default stands
//! for), the controller watches only that namespace (a cluster-wide one
//! would reconcile other tests' Notebooks) and its listeners take free
//! ports. Skipping the namespace step first shows the start-up error a
//! newcomer meets: one line naming what is missing and how to fix it.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use portico_e2e::process::clear_settings_env;
use portico_e2e::{TestNamespace, binary, free_port, plane, raw_http, workspace_root};

/// Bound on the controller's start-up, to ready or to its error.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The commands of the first `sh` block under "## Running the controller",
/// comments stripped.
fn readme_controller_steps() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("reading README.md");
    let section =
        readme.split("## Running the controller").nth(1).expect("README.md has \"## Running the controller\"");
    let block = section.split("```sh\n").nth(1).and_then(|rest| rest.split("```").next()).expect("an sh block there");
    block
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}

/// `portico-controller` as the README runs it, plus the substitutions of
/// the module docs; with `RUST_BACKTRACE=1` as many shells (and this CI) set.
fn controller_command(namespace: &str) -> Command {
    let mut command = Command::new(binary("portico-controller"));
    clear_settings_env(&mut command);
    command.env("KUBECONFIG", plane().kubeconfig()).env("RUST_BACKTRACE", "1").env_remove("RUST_LIB_BACKTRACE");
    command.args(["--namespace", namespace, "--watch-namespace", namespace]);
    for listener in ["--metrics", "--discovery", "--secure-discovery", "--webhook"] {
        command.args([listener, &format!("127.0.0.1:{}", free_port())]);
    }
    command
}

/// Runs `command` to its exit (bounded).
fn run_to_exit(mut command: Command) -> Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting portico-controller");
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(START_TIMEOUT) {
        Ok(output) => output.expect("waiting for portico-controller"),
        Err(_) => {
            // SAFETY: kill(2) has no memory effects; pid is our child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("portico-controller without its namespace did not exit within {START_TIMEOUT:?}");
        }
    }
}

#[test]
fn the_readme_controller_steps_work_on_a_fresh_namespace_and_a_missing_one_is_one_clear_line() {
    let steps = readme_controller_steps();
    assert_eq!(
        steps,
        ["kubectl apply -k manifests/crds", "kubectl create namespace portico-system", "portico-controller"],
        "the README's controller steps changed; update this test with them"
    );
    let plane = plane();
    let namespace = TestNamespace::unused_name("portico-system");

    // Step 1, as written (the CRDs are the plane's already: it is idempotent).
    plane.kubectl_ok(&["apply", "-k", &workspace_root().join("manifests/crds").display().to_string()]);

    // Step 3 without step 2: the controller stops at once with one line.
    let output = run_to_exit(controller_command(&namespace));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the controller ran without its namespace:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("portico-controller: error: loading the mesh CA: ")
            && last.contains(&format!("namespace \"{namespace}\" does not exist"))
            && last.contains(&format!("kubectl create namespace {namespace}")),
        "the last line should name the missing namespace and the fix; stderr:\n{stderr}"
    );
    for noise in ["Status {", "ErrorResponse", "stack backtrace", "Stack backtrace", "Caused by", "   0: "] {
        assert!(!stderr.contains(noise), "the start-up error carries {noise:?}; stderr:\n{stderr}");
    }
    assert_eq!(stderr.matches("error:").count(), 1, "one error line; stderr:\n{stderr}");

    // Step 2, then step 3: the controller starts and creates its CA there.
    plane.kubectl_ok(&["create", "namespace", &namespace]);
    let _cleanup = TestNamespace::adopt(&namespace);
    let mut command = controller_command(&namespace);
    let metrics = command
        .get_args()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|pair| pair[0] == "--metrics")
        .map(|pair| pair[1].to_string_lossy().into_owned())
        .expect("a --metrics argument");
    let dir = tempfile::tempdir().expect("a temp dir");
    let log = std::fs::File::create(dir.path().join("controller.log")).expect("a log file");
    let mut controller = command
        .stdout(log.try_clone().expect("the log file"))
        .stderr(log)
        .spawn()
        .expect("starting portico-controller");
    let started = Instant::now();
    let ready = loop {
        if raw_http::get_url(&format!("http://{metrics}/readyz")).is_ok_and(|r| r.status == 200) {
            break true;
        }
        if controller.try_wait().ok().flatten().is_some() || started.elapsed() > START_TIMEOUT {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = controller.kill();
    let _ = controller.wait();
    let log = std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default();
    assert!(ready, "the controller did not get ready after the README's steps; log:\n{log}");
    let root = plane.secret_value(&namespace, "portico-ca", "ca-cert.pem");
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "the mesh CA's root: {root}");
}
