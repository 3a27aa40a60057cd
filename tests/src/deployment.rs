//! Portico's own Deployments, run as their manifests declare them.
//!
//! The test cluster's pod runner runs notebook pods; Portico's controller and
//! gateway run here as host processes instead (the gateway must listen where
//! the test and its browser reach it), but with exactly the arguments and
//! environment their Deployments declare, read from the rendered manifests,
//! and the controller as its ServiceAccount through a TokenRequest token, so
//! its RBAC is what is tested.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;

use crate::kube_plane::plane;
use crate::process::{ChildProcess, Stop, clear_settings_env};
use crate::{binary, porticoctl, workspace_root};

/// Every document `kubectl kustomize manifests/<overlay>` renders.
pub fn render(overlay: &str) -> Vec<Value> {
    let dir = workspace_root().join("manifests").join(overlay);
    let yaml = plane().kubectl_ok(&["kustomize", dir.to_str().unwrap_or_default()]);
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|document| serde::Deserialize::deserialize(document).expect("kustomize renders YAML"))
        .collect()
}

/// The first container of the Deployment `name`: (args, env), the downward
/// API's fields filled in as the pod would see them.
pub fn deployment_command(documents: &[Value], name: &str) -> (Vec<String>, Vec<(String, String)>) {
    let deployment = documents
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("the manifests have no Deployment {name}"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container["args"]
        .as_sequence()
        .map(|args| args.iter().filter_map(|a| a.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let pod = format!("{name}-7d9f8-x2x4q");
    let env = container["env"]
        .as_sequence()
        .map(|env| {
            env.iter()
                .map(|variable| {
                    let key = variable["name"].as_str().unwrap_or_default().to_string();
                    let value = match variable["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                        Some("metadata.name") => pod.clone(),
                        Some("metadata.namespace") => "portico-system".to_string(),
                        Some(other) => panic!("{name}: env {key} uses an unexpected fieldRef {other}"),
                        None => variable["value"].as_str().unwrap_or_default().to_string(),
                    };
                    (key, value)
                })
                .collect()
        })
        .unwrap_or_default();
    (args, env)
}

/// A kubeconfig that authenticates as `serviceaccount` in portico-system
/// with a token from the TokenRequest API.
pub fn service_account_kubeconfig(serviceaccount: &str, dir: &Path) -> PathBuf {
    let token = plane().kubectl_ok(&["create", "token", serviceaccount, "-n", "portico-system", "--duration=1h"]);
    let admin: Value =
        serde_yaml::from_str(&std::fs::read_to_string(plane().kubeconfig()).expect("reading the admin kubeconfig"))
            .expect("the admin kubeconfig is YAML");
    let cluster = admin["clusters"][0]["cluster"].clone();
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "plane", "cluster": {
            "server": cluster["server"].as_str(),
            "certificate-authority-data": cluster["certificate-authority-data"].as_str(),
        }}],
        "users": [{"name": "sa", "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "plane", "user": "sa"}}],
    });
    let path = dir.join(format!("{serviceaccount}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("serializing")).expect("writing a kubeconfig");
    path
}

/// Starts `binary_name` with a Deployment's `args` and `env`, as the
/// `kubeconfig` given (none: no credentials at all).
pub fn spawn(
    binary_name: &str,
    args: &[String],
    env: &[(String, String)],
    kubeconfig: Option<&PathBuf>,
    log: PathBuf,
) -> ChildProcess {
    let mut command = Command::new(binary(binary_name));
    clear_settings_env(&mut command);
    command.args(args).envs(env.iter().map(|(k, v)| (k, v))).env("RUST_BACKTRACE", "1");
    match kubeconfig {
        Some(path) => command.env("KUBECONFIG", path),
        // No credentials at all: the gateway must not need any.
        None => command.env("KUBECONFIG", "/nonexistent"),
    };
    // SIGTERM first: the controller releases its Lease, so a restart leads at once.
    ChildProcess::spawn(binary_name, command, &log, Stop::Terminate(Duration::from_secs(10)))
}

/// The commands a walkthrough runs, with their real output, as Markdown.
#[derive(Default)]
pub struct Transcript(pub String);

impl Transcript {
    /// Runs `kubectl args` (it must succeed) and records it as a user at
    /// the repository's root would have typed it, with what kubectl printed
    /// (its stderr too when it said nothing else: "No resources found").
    pub fn kubectl(&mut self, args: &[&str]) -> String {
        let output = plane().kubectl().args(args).output().expect("running kubectl");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "kubectl {args:?} failed ({}):\n{stderr}", output.status);
        let root = format!("{}/", workspace_root().display());
        let typed = args.iter().map(|arg| arg.replace(&root, "")).collect::<Vec<_>>().join(" ");
        let shown = if stdout.trim().is_empty() { stderr.into_owned() } else { stdout.clone() };
        self.record(&format!("kubectl {typed}"), &shown);
        stdout
    }

    /// Runs `porticoctl args` (it must succeed) and records it.
    pub fn porticoctl(&mut self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = porticoctl::run(args);
        assert!(ok, "porticoctl {args:?}: {stderr}");
        self.record(&format!("porticoctl {}", args.join(" ")), &stdout);
        stdout
    }

    /// Records a command run some other way, with its output.
    pub fn record(&mut self, command: &str, output: &str) {
        let _ = write!(self.0, "$ {command}\n{}\n", output.trim_end());
    }

    /// Starts a step.
    pub fn note(&mut self, text: &str) {
        let _ = write!(self.0, "\n# {text}\n");
    }
}
