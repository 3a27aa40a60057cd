//! The kubelet's other half for the test cluster: runs what each pod of a
//! namespace would run, in a network namespace holding the pod's IP.
//!
//! `tests/kube/up` runs kwok for the cluster's one node: it gives each
//! scheduled pod an IP from the node's pod CIDR and leaves it Pending. A
//! [`PodRunner`] watches one namespace (each test has its own, so parallel
//! tests never run each other's pods) and for each such pod:
//!
//! 1. makes its network namespace (`sandbox`) holding that IP;
//! 2. runs its init containers to completion, then starts its containers
//!    (`containers` says what each image runs here);
//! 3. marks the pod Ready only when every container's server answers (its
//!    readiness probe if it has one, else any HTTP answer on its first
//!    port), and NotReady again if a process exits;
//! 4. stops its processes and removes its namespace when the pod is deleted.
//!
//! A pod it cannot run stays Pending and NotReady (its reason is in
//! [`PodRunner::events`]), so it is never routed. Dropping the runner stops
//! every pod it started.

mod containers;
mod sandbox;
mod status;
mod volumes;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::oneshot;

use crate::kube_plane::plane;
use crate::process::{ChildProcess, Stop};

pub use containers::NotebookProgram;
pub use sandbox::PodSandbox;

/// How often a starting pod's servers are asked whether they answer.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How often a Ready pod's servers and processes are checked.
const READY_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Pause between attempts to write a pod's volumes.
const VOLUME_RETRY: Duration = Duration::from_secs(1);
/// Time a container gets on SIGTERM (Jupyter shuts its kernels down).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs the pods of one namespace until dropped; see the module docs.
pub struct PodRunner {
    namespace: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    events: Arc<Mutex<Vec<String>>>,
}

impl PodRunner {
    /// Starts running the pods of `namespace` (existing and future ones),
    /// notebooks as real Jupyter Servers.
    pub fn start(namespace: &str) -> PodRunner {
        PodRunner::start_with(namespace, RunnerOptions::default())
    }

    /// [`PodRunner::start`] with `options`.
    pub fn start_with(namespace: &str, options: RunnerOptions) -> PodRunner {
        let (stop, stopped) = oneshot::channel();
        let events = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let namespace = namespace.to_string();
            let events = Arc::clone(&events);
            std::thread::Builder::new()
                .name(format!("pod-runner-{namespace}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("building the pod runner's runtime");
                    runtime.block_on(run(namespace, options, events, stopped));
                })
                .expect("starting the pod runner's thread")
        };
        PodRunner { namespace: namespace.to_string(), stop: Some(stop), thread: Some(thread), events }
    }

    /// What happened so far, one line per step ("06:02:11.250 nb-0:
    /// started", ...), for assertions and failure messages.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().map(|events| events.clone()).unwrap_or_default()
    }

    /// The namespace whose pods it runs.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl Drop for PodRunner {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How a [`PodRunner`] runs its pods.
#[derive(Clone, Debug, Default)]
pub struct RunnerOptions {
    /// Names resolvable inside every pod, with their addresses: what cluster
    /// DNS would answer for a Service (there is none here), e.g. the
    /// controller's name for the sidecars' CA.
    pub hosts: Vec<(String, IpAddr)>,
    /// What a notebook container runs.
    pub notebooks: NotebookProgram,
    /// How long each pod's images take to pull before its containers start
    /// (the pod stays Pending and NotReady meanwhile, as with a large image).
    pub pull_time: Duration,
}

/// A [`PodRunner`] started for tests about routing rather than Jupyter
/// itself: its notebooks are `portico-fake-notebook`, which starts in
/// milliseconds and answers any path.
pub fn fake_notebooks() -> RunnerOptions {
    RunnerOptions { notebooks: NotebookProgram::Fake, ..RunnerOptions::default() }
}

/// A pod being run: its task, told to stop through `stop`.
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn run(
    namespace: String,
    options: RunnerOptions,
    events: Arc<Mutex<Vec<String>>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let options = Arc::new(options);
    let client = plane().client().await;
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let log = Log(events);
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut stream = watcher(pods.clone(), watcher::Config::default()).boxed();
    loop {
        let event = tokio::select! {
            _ = &mut stopped => break,
            event = stream.next() => event,
        };
        let pods_now: Vec<Pod> = match event {
            Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => vec![pod],
            Some(Ok(watcher::Event::Delete(pod))) => {
                if let Some(pod) = uid(&pod).and_then(|uid| running.remove(&uid)) {
                    stop_pod(pod).await;
                }
                continue;
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                log.add(format!("watch error (retrying): {error}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            None => break,
        };
        for pod in pods_now {
            let Some(key) = uid(&pod) else { continue };
            let deleting = pod.metadata.deletion_timestamp.is_some();
            if deleting {
                if let Some(running_pod) = running.remove(&key) {
                    stop_pod(running_pod).await;
                }
                continue;
            }
            if running.contains_key(&key) {
                continue;
            }
            let Some(ip) = pod_ip(&pod) else { continue };
            let (stop, stop_rx) = oneshot::channel();
            let task = tokio::spawn(run_pod(pods.clone(), pod, ip, Arc::clone(&options), log.clone(), stop_rx));
            running.insert(key, Running { stop, task });
        }
    }
    for (_, pod) in running.drain() {
        stop_pod(pod).await;
    }
}

async fn stop_pod(pod: Running) {
    let _ = pod.stop.send(());
    let _ = pod.task.await;
}

fn uid(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone()
}

fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// The runner's event log, shared with its tasks. Each line starts with the
/// time of day (UTC), to line up with the gateway's and controller's logs.
#[derive(Clone)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn add(&self, line: String) {
        let line = format!("{} {line}", k8s_openapi::jiff::Timestamp::now().strftime("%H:%M:%S%.3f"));
        eprintln!("pod runner: {line}");
        if let Ok(mut events) = self.0.lock() {
            events.push(line);
        }
    }
}

/// One pod from sandbox to stop; see the module docs.
async fn run_pod(
    pods: Api<Pod>,
    pod: Pod,
    ip: Ipv4Addr,
    options: Arc<RunnerOptions>,
    log: Log,
    mut stop: oneshot::Receiver<()>,
) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let id: String = uid.chars().filter(char::is_ascii_hexdigit).take(8).collect();
    let dir = std::env::temp_dir().join(format!("portico-pod-{}-{name}-{id}", pods_namespace(&pod)));
    let _ = std::fs::create_dir_all(&dir);
    let sandbox = match PodSandbox::create(&id, ip, &options.hosts) {
        Ok(sandbox) => sandbox,
        Err(error) => {
            log.add(format!("{name}: cannot create its network: {error}"));
            return;
        }
    };
    // As a kubelet does, a volume whose source is missing (a ConfigMap the
    // controller publishes a moment later) is retried, not given up on.
    let mut attempts = 0;
    while let Err(error) = volumes::write(&pods, &pod, &dir).await {
        attempts += 1;
        if attempts == 1 || attempts % 10 == 0 {
            log.add(format!("{name}: {error} (retrying)"));
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(VOLUME_RETRY) => {}
        }
    }
    if !options.pull_time.is_zero() {
        log.add(format!("{name}: pulling its images ({} s)", options.pull_time.as_secs_f64()));
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(options.pull_time) => {}
        }
    }
    let (init, main) = match containers::programs(&pod, &sandbox, &dir, options.notebooks) {
        Ok(programs) => programs,
        Err(error) => {
            log.add(format!("{name}: not run: {error}"));
            return;
        }
    };
    for program in init {
        let container = program.name.clone();
        let log_path = dir.join(format!("{container}.log"));
        let result = tokio::task::spawn_blocking(move || {
            let mut command = program.command;
            let output = command.output();
            let _ = output.as_ref().map(|o| std::fs::write(&log_path, [&o.stdout[..], &o.stderr[..]].concat()));
            output
        })
        .await;
        match result {
            Ok(Ok(output)) if output.status.success() => {
                log.add(format!("{name}: init container {container} completed"))
            }
            other => {
                log.add(format!("{name}: init container {container} failed: {other:?}; the pod stays NotReady"));
                return;
            }
        }
    }
    let mut processes = Vec::new();
    let mut checks = Vec::new();
    for program in main {
        let log_path = dir.join(format!("{}.log", program.name));
        checks.push((program.name.clone(), program.ready_port, program.ready_path.clone()));
        processes.push(ChildProcess::spawn(
            &format!("{name}/{}", program.name),
            program.command,
            &log_path,
            Stop::Terminate(STOP_GRACE),
        ));
    }
    log.add(format!("{name}: started {} container(s) at {ip}", processes.len()));
    let mut ready = false;
    loop {
        // A Ready pod is checked less often, as a kubelet probes.
        let interval = if ready { READY_CHECK_INTERVAL } else { CHECK_INTERVAL };
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let exited: Vec<String> = processes
            .iter_mut()
            .filter_map(|process| process.exited().map(|status| format!("{} exited ({status})", process.name())))
            .collect();
        let now_ready = exited.is_empty() && status::all_answer(ip, sandbox.netns(), &checks).await;
        if now_ready != ready {
            match status::set_ready(&pods, &pod, now_ready).await {
                Ok(()) => {
                    ready = now_ready;
                    log.add(format!(
                        "{name}: {}",
                        if ready { "ready".to_string() } else { format!("not ready: {}", exited.join(", ")) }
                    ));
                }
                Err(error) => log.add(format!("{name}: updating its status: {error}")),
            }
        }
    }
    tokio::task::spawn_blocking(move || {
        for mut process in processes {
            process.stop();
        }
        drop(sandbox);
    })
    .await
    .ok();
    log.add(format!("{name}: stopped"));
}

fn pods_namespace(pod: &Pod) -> String {
    pod.metadata.namespace.clone().unwrap_or_default()
}
