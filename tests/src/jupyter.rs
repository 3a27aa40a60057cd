//! A real Jupyter Server, configured as Kubeflow's notebook images run it.
//!
//! Kubeflow's images start `jupyter lab --ServerApp.base_url=$NB_PREFIX`
//! with token and password empty and `allow_origin='*'`: the gateway is the
//! only authentication. [`Jupyter::start`] does the same from the venv that
//! `scripts/install-deps` builds (`target/venv`), so the gateway is tested
//! against the real HTTP, REST and kernel websocket traffic of a notebook.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{ChildProcess, Stop};
use crate::raw_http;
use crate::wait::poll;
use crate::{free_port, workspace_root};

/// Bound on Jupyter's start-up. It takes 1-3 s alone; parallel tests on two
/// cores can stretch that a lot.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Time Jupyter gets on SIGTERM to shut its kernels down.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running Jupyter Server on 127.0.0.1, stopped (with its kernels) on drop.
#[derive(Debug)]
pub struct Jupyter {
    process: ChildProcess,
    port: u16,
    base_url: String,
    // Root dir, runtime files and log; kept until the process is gone
    // (fields drop in declaration order).
    _dir: TempDir,
}

/// The venv's Python, or a panic that says how to create it.
pub fn venv_python() -> PathBuf {
    let python = workspace_root().join("target").join("venv").join("bin").join("python");
    if !python.is_file() {
        panic!("{} not found: run scripts/install-deps (it builds the Jupyter venv)", python.display());
    }
    python
}

impl Jupyter {
    /// Starts Jupyter Server with `base_url` (must start and end with `/`,
    /// like Kubeflow's `/notebook/<ns>/<name>/`, or be `/`) and waits until
    /// `<base_url>api/status` answers 200.
    ///
    /// Panics with the tail of Jupyter's log if it exits or is not ready in
    /// time.
    pub fn start(base_url: &str) -> Jupyter {
        Jupyter::start_on("127.0.0.1", base_url)
    }

    /// [`Jupyter::start`] listening on `ip` (`0.0.0.0`: also on the host's
    /// own address, which an EndpointSlice may name; loopback it may not).
    pub fn start_on(ip: &str, base_url: &str) -> Jupyter {
        assert!(
            base_url.starts_with('/') && base_url.ends_with('/'),
            "base_url {base_url:?} must start and end with /"
        );
        let dir = tempfile::Builder::new().prefix("portico-jupyter-").tempdir().expect("creating a Jupyter dir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("creating Jupyter's root dir");
        let port = free_port();
        let mut command = Command::new(venv_python());
        command
            .args(["-m", "jupyter_server", "--no-browser"])
            // Jupyter refuses to run as root without this; CI runs as root.
            .arg("--allow-root")
            .arg(format!("--ServerApp.ip={ip}"))
            .arg(format!("--ServerApp.port={port}"))
            // Fail on a taken port instead of silently serving on the next one.
            .arg("--ServerApp.port_retries=0")
            .arg(format!("--ServerApp.base_url={base_url}"))
            .arg("--IdentityProvider.token=")
            // `ServerApp.password` is deprecated since jupyter-server 2.0.
            .arg("--PasswordIdentityProvider.hashed_password=")
            .arg("--ServerApp.allow_origin=*")
            // Kubeflow's images listen on 0.0.0.0, which turns Jupyter's
            // Host-header check off; here it listens on loopback, where the
            // check would refuse requests for the gateway's public host names.
            .arg("--ServerApp.allow_remote_access=True")
            .arg("--ServerApp.disable_check_xsrf=True")
            .arg(format!("--ServerApp.root_dir={}", root.display()))
            // No outbound calls: tests run without the internet.
            .arg("--LabApp.extension_manager=readonly")
            .arg("--LabApp.news_url=None")
            .current_dir(&root)
            // Keep the user's Jupyter/IPython config, kernelspecs and runtime
            // files out: the venv's own python3 kernelspec must be the one
            // found, and parallel servers must not share a runtime dir.
            .env("JUPYTER_CONFIG_DIR", dir.path().join("config"))
            .env("JUPYTER_DATA_DIR", dir.path().join("data"))
            .env("JUPYTER_RUNTIME_DIR", dir.path().join("runtime"))
            .env("IPYTHONDIR", dir.path().join("ipython"))
            .env("JUPYTER_PLATFORM_DIRS", "1")
            .env_remove("JUPYTER_PATH")
            .env_remove("PYTHONPATH");
        let process = ChildProcess::spawn(
            "jupyter-server",
            command,
            &dir.path().join("jupyter.log"),
            Stop::Terminate(STOP_GRACE),
        );
        let mut jupyter = Jupyter { process, port, base_url: base_url.to_string(), _dir: dir };
        jupyter.wait_ready();
        jupyter
    }

    fn wait_ready(&mut self) {
        let status_url = format!("{}api/status", self.url());
        let ready = poll(START_TIMEOUT, || {
            if let Some(status) = self.process.exited() {
                panic!("Jupyter Server exited during start-up ({status}); log:\n{}", self.process.log_tail(40));
            }
            raw_http::get_url(&status_url).ok().filter(|response| response.status == 200).map(|_| ())
        });
        if ready.is_none() {
            panic!(
                "Jupyter Server did not answer 200 on {status_url} within {START_TIMEOUT:?}; log:\n{}",
                self.process.log_tail(40)
            );
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its base URL path (`/notebook/<ns>/<name>/`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `http://127.0.0.1:<port><base_url>`, ending in `/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.base_url)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Stops it now (also done on drop), for tests of a vanished upstream.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
