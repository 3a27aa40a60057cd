//! End-to-end test support for Portico.
//!
//! The tests in `tests/tests/` run Portico the way an operator does: the real
//! `portico-gateway` binary, a folder of Kubernetes YAML, and a real Jupyter
//! Server (from the venv `scripts/install-deps` builds under `target/venv`)
//! behind it. This crate holds what they share:
//!
//! * [`free_port`] and [`binary`]: where things listen, what to run;
//! * [`Jupyter`] and [`Gateway`]: child processes that start, wait until
//!   they are ready (bounded) and are killed on drop, so a failing test never
//!   leaves servers behind;
//! * [`ConfigDir`] and [`fixtures`]: the YAML the gateway reads;
//! * [`kernel`]: a Jupyter kernel client over the channels websocket;
//! * [`raw_http`]: exact bytes over TCP, for framing and smuggling cases no
//!   well-behaved client would send; [`raw_h2`]: the same for HTTP/2 frames;
//! * [`RecordingUpstream`]: a backend that keeps every byte it received, to
//!   show that nothing of a refused request reached it;
//! * [`kube_plane`], [`TestNamespace`] and [`Controller`]: the real
//!   kube-apiserver + etcd of `tests/kube` (started once per test process),
//!   a namespace per test, and the `portico-controller` binary against it;
//! * [`FakeNotebook`] and [`porticoctl`]: a cheap upstream for any notebook
//!   path, and the CLI as a user runs it;
//! * [`pod_runner`]: the kubelet's other half for the test cluster's pods:
//!   their processes (a real Jupyter Server for a notebook) in a network
//!   namespace holding the pod's IP, Ready when their server answers;
//! * [`browser`]: JupyterLab in headless Chromium, a cell run as a user runs it;
//! * [`chp_proxy`]: `portico-gateway chp`, Portico as JupyterHub's
//!   configurable-http-proxy, and its REST API; [`jupyterhub`]: a real
//!   JupyterHub whose proxy is Portico;
//! * [`kube_wait`] and [`notebooks`]: bounded waits on API objects, Notebook
//!   fixtures, objects read back as the JSON the API server stored.
//!
//! Every wait is bounded: a test fails with the relevant log instead of
//! hanging.

pub mod binary;
pub mod browser;
pub mod chp_cluster;
pub mod chp_proxy;
pub mod config_dir;
pub mod controller;
pub mod deployment;
pub mod fake_notebook;
pub mod fixtures;
pub mod gateway;
pub mod http_stub;
pub mod injection_webhook;
pub mod jupyter;
pub mod jupyterhub;
pub mod jwt_issuer;
pub mod kernel;
pub mod kube_plane;
pub mod kube_wait;
pub mod notebooks;
pub mod oauth2_proxy;
pub mod pod_runner;
pub mod porticoctl;
pub mod ports;
pub mod process;
pub mod raw_h2;
pub mod raw_http;
pub mod recording_upstream;
pub mod test_namespace;
pub mod wait;

pub use binary::{binary, workspace_root};
pub use config_dir::{ConfigDir, write_yaml};
pub use controller::Controller;
pub use fake_notebook::FakeNotebook;
pub use gateway::Gateway;
pub use jupyter::Jupyter;
pub use kernel::{KernelSocket, channels_url, create_kernel, execute};
pub use kube_plane::{KubePlane, plane};
pub use ports::{free_port, host_address};
pub use recording_upstream::RecordingUpstream;
pub use test_namespace::TestNamespace;

use std::time::Duration;

/// An HTTP client for tests: no proxy from the environment (every target is
/// on this machine), no connection reuse surprises across servers, and a
/// bounded time per request.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building the test HTTP client")
}
