//! What a pod's containers run here: each image the tests use, mapped to the
//! program it would start, run in the pod's network namespace.
//!
//! * A notebook container (Kubeflow sets `NB_PREFIX` on every one) runs a
//!   real Jupyter Server from the test venv as Kubeflow's images start it:
//!   `jupyter lab` on 0.0.0.0 at the container's port, `base_url=$NB_PREFIX`,
//!   token and password empty, as root (`--allow-root`; CI runs as root).
//! * Portico's sidecar image runs `target/debug/portico-sidecar` with the
//!   container's args, as the container's `runAsUser` (setpriv).
//!
//! Volumes are not mounted (no mount namespaces here): a volume is written to
//! the pod's own directory and any argument under its `mountPath` is
//! rewritten to that directory. Anything else is refused with a message that
//! names the container and image, and the pod stays NotReady.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::sandbox::PodSandbox;
use crate::binary;
use crate::jupyter::venv_python;

/// What a notebook container (one with `NB_PREFIX`) runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NotebookProgram {
    /// A real Jupyter Server (JupyterLab) from the test venv.
    #[default]
    Jupyter,
    /// `portico-fake-notebook`: any path answers, kernels included; for
    /// tests about routing, where many notebooks start at once.
    Fake,
    /// A Bokeh server app (a text box echoed back) at `NB_PREFIX` + `app`:
    /// a real non-Jupyter websocket app, as code-server or RStudio images
    /// are to Kubeflow.
    Bokeh,
}

/// How a container is started and when it counts as ready.
#[derive(Debug)]
pub struct Program {
    /// The container's name.
    pub name: String,
    /// The command, already inside the pod's network namespace.
    pub command: Command,
    /// The port a readiness check talks to, and the HTTP path it asks for
    /// (`None`: any HTTP answer at all means the server is up).
    pub ready_port: Option<u16>,
    /// The readiness probe's path, when the container declares one.
    pub ready_path: Option<String>,
}

/// The programs of `pod`'s init containers (run to completion, in order) and
/// containers (kept running), or why this runner cannot run it.
pub fn programs(
    pod: &Pod,
    sandbox: &PodSandbox,
    dir: &Path,
    notebooks: NotebookProgram,
) -> Result<(Vec<Program>, Vec<Program>), String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let mounts = Mounts::new(dir);
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| program(c, sandbox, dir, &mounts, notebooks))
        .collect::<Result<_, _>>()?;
    let main =
        spec.containers.iter().map(|c| program(c, sandbox, dir, &mounts, notebooks)).collect::<Result<_, _>>()?;
    Ok((init, main))
}

fn program(
    container: &Container,
    sandbox: &PodSandbox,
    dir: &Path,
    mounts: &Mounts,
    notebooks: NotebookProgram,
) -> Result<Program, String> {
    let image = container.image.as_deref().unwrap_or_default();
    let env = env_of(container);
    let (ready_port, ready_path) = readiness(container);
    let mut command = if let Some(prefix) = env.iter().find(|(name, _)| name == "NB_PREFIX").map(|(_, v)| v.clone()) {
        let port = ready_port.unwrap_or(8888);
        match notebooks {
            NotebookProgram::Jupyter => notebook(sandbox, dir, &container.name, &prefix, port),
            NotebookProgram::Fake => {
                let mut command = sandbox.command(binary("portico-fake-notebook"));
                command.args(["--listen", &format!("0.0.0.0:{port}"), "--threads", "1"]);
                command
            }
            NotebookProgram::Bokeh => bokeh(sandbox, dir, &container.name, &prefix, port),
        }
    } else if image.contains("portico-sidecar") {
        let uid = container.security_context.as_ref().and_then(|s| s.run_as_user).unwrap_or(0);
        let mut command = sandbox.command("setpriv");
        command.arg(format!("--reuid={uid}")).arg(format!("--regid={uid}")).arg("--clear-groups");
        command.arg(binary("portico-sidecar"));
        command.args(container.args.iter().flatten().map(|arg| mounts.rewrite(container, arg)));
        command
    } else {
        return Err(format!(
            "container {:?} (image {image:?}): the pod runner knows no program for this image \
             (it runs Kubeflow notebook images, which set NB_PREFIX, and portico-sidecar)",
            container.name
        ));
    };
    command.envs(env);
    Ok(Program { name: container.name.clone(), command, ready_port, ready_path })
}

/// `bokeh serve` of a one-text-box app, under `prefix` on all addresses.
fn bokeh(sandbox: &PodSandbox, dir: &Path, name: &str, prefix: &str, port: u16) -> Command {
    let home = dir.join(name);
    let _ = std::fs::create_dir_all(&home);
    let app = home.join("app.py");
    let _ = std::fs::write(
        &app,
        "from bokeh.io import curdoc\nfrom bokeh.layouts import column\nfrom bokeh.models import Div, TextInput\n\
         text = TextInput(title='name')\nshown = Div(text='')\n\
         text.on_change('value', lambda attr, old, new: setattr(shown, 'text', new))\n\
         curdoc().add_root(column(text, shown))\n",
    );
    let mut command = sandbox.command(venv_python());
    command
        .args(["-m", "bokeh", "serve"])
        .arg(&app)
        .args(["--address", "0.0.0.0", "--port", &port.to_string(), "--allow-websocket-origin", "*"])
        .args(["--prefix", prefix.trim_end_matches('/')])
        .current_dir(&home)
        .env("HOME", &home);
    command
}

/// Jupyter as Kubeflow's notebook images run it (their `s6` start script):
/// `jupyter lab --ip=0.0.0.0 --port=8888 --ServerApp.base_url=$NB_PREFIX`.
fn notebook(sandbox: &PodSandbox, dir: &Path, name: &str, prefix: &str, port: u16) -> Command {
    let home = dir.join(name);
    let _ = std::fs::create_dir_all(home.join("work"));
    let mut command = sandbox.command(venv_python());
    command
        .args(["-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=0.0.0.0"])
        .arg(format!("--port={port}"))
        .arg("--ServerApp.port_retries=0")
        .arg(format!("--ServerApp.base_url={prefix}"))
        .arg("--IdentityProvider.token=")
        .arg("--PasswordIdentityProvider.hashed_password=")
        .arg("--ServerApp.allow_origin=*")
        .arg("--ServerApp.authenticate_prometheus=False")
        .arg(format!("--ServerApp.root_dir={}", home.join("work").display()))
        // No outbound calls: the pod network leads nowhere.
        .arg("--LabApp.extension_manager=readonly")
        .arg("--LabApp.news_url=None")
        .current_dir(home.join("work"))
        .env("HOME", &home)
        .env("JUPYTER_CONFIG_DIR", home.join(".jupyter"))
        .env("JUPYTER_DATA_DIR", home.join(".local/share/jupyter"))
        .env("JUPYTER_RUNTIME_DIR", home.join(".local/share/jupyter/runtime"))
        .env("IPYTHONDIR", home.join(".ipython"))
        .env("JUPYTER_PLATFORM_DIRS", "1")
        .env_remove("JUPYTER_PATH")
        .env_remove("PYTHONPATH");
    command
}

/// The container's literal environment (`valueFrom` is not resolved).
fn env_of(container: &Container) -> Vec<(String, String)> {
    container.env.iter().flatten().filter_map(|var| Some((var.name.clone(), var.value.clone()?))).collect()
}

/// The readiness probe's port and path, else the first container port.
fn readiness(container: &Container) -> (Option<u16>, Option<String>) {
    let port_number = |port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString| match port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => u16::try_from(*n).ok(),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    };
    if let Some(http) = container.readiness_probe.as_ref().and_then(|probe| probe.http_get.as_ref()) {
        return (port_number(&http.port), Some(http.path.clone().unwrap_or_else(|| "/".to_string())));
    }
    let first = container.ports.iter().flatten().next().and_then(|p| u16::try_from(p.container_port).ok());
    (first, None)
}

/// Where each volume mount of the pod lives on this host.
struct Mounts {
    dir: PathBuf,
}

impl Mounts {
    fn new(dir: &Path) -> Mounts {
        Mounts { dir: dir.join("volumes") }
    }

    /// `arg` with a mount path prefix replaced by the volume's directory.
    fn rewrite(&self, container: &Container, arg: &str) -> String {
        for mount in container.volume_mounts.iter().flatten() {
            if let Some(rest) = arg.strip_prefix(&mount.mount_path) {
                return format!("{}{rest}", self.dir.join(&mount.name).display());
            }
        }
        arg.to_string()
    }

    /// The directory of volume `name`.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The directory the runner writes volume `name` of a pod into.
pub fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    Mounts::new(pod_dir).volume(name)
}
