//! What runs behind a route's destination, as the gateway needs to know it
//! when no endpoint is ready: a stopped notebook (wake it), one starting
//! (show its progress, hold API requests), or something else (plain 503).
//!
//! The controller derives a [`WorkloadState`] from each Notebook and sends
//! it keyed by the destination host of the notebook's route, beside the
//! endpoints of that host; the gateway never reads Notebooks.

use portico_api::notebook::{Notebook, STOP_ANNOTATION};
use serde::{Deserialize, Serialize};

use crate::notebook::{NotebookSettings, notebook_host};

/// Where a notebook is on its way to serving, from its `status` (Kubeflow
/// mirrors the pod's conditions and container state there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadPhase {
    /// `kubeflow-resource-stopped` is set: no pod will run until it is removed.
    Stopped,
    /// Waiting for a node (no pod yet, or not scheduled).
    Scheduling,
    /// Scheduled; pulling the image and creating the container.
    Pulling,
    /// The container runs; the server is not ready yet.
    Starting,
    /// Ready: requests go through.
    Ready,
    /// Cannot start without someone's help (image pull or crash loop).
    Failing,
}

impl WorkloadPhase {
    /// Said on the starting page.
    pub fn describe(self) -> &'static str {
        match self {
            WorkloadPhase::Stopped => "stopped",
            WorkloadPhase::Scheduling => "waiting for a node",
            WorkloadPhase::Pulling => "pulling the image",
            WorkloadPhase::Starting => "starting the server",
            WorkloadPhase::Ready => "ready",
            WorkloadPhase::Failing => "failing to start",
        }
    }
}

/// One notebook's state, sent to gateways under its route's destination host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadState {
    pub namespace: String,
    /// The Notebook's name.
    pub notebook: String,
    pub phase: WorkloadPhase,
    /// The reason Kubernetes gave, when there is one (e.g. `ImagePullBackOff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The value of `kubeflow-resource-stopped` (when it was stopped): tells
    /// one stop from the next, so a wake asked for one is not taken for the
    /// next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_since: Option<String>,
}

/// Reasons of a waiting container that will not resolve on their own.
const FAILING_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "CrashLoopBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The destination host of `notebook`'s route and its state.
pub fn notebook_workload(notebook: &Notebook, settings: &NotebookSettings) -> (String, WorkloadState) {
    let name = notebook.metadata.name.clone().unwrap_or_default();
    let namespace = notebook.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    let host = notebook_host(&namespace, &name, &settings.cluster_domain);
    let stopped_since = notebook.metadata.annotations.as_ref().and_then(|a| a.get(STOP_ANNOTATION)).cloned();
    let (phase, message) =
        if stopped_since.is_some() { (WorkloadPhase::Stopped, None) } else { running_phase(notebook) };
    (host, WorkloadState { namespace, notebook: name, phase, message, stopped_since })
}

fn running_phase(notebook: &Notebook) -> (WorkloadPhase, Option<String>) {
    let Some(status) = notebook.status.as_ref() else { return (WorkloadPhase::Scheduling, None) };
    if status.ready_replicas > 0 {
        return (WorkloadPhase::Ready, None);
    }
    let condition = |type_: &str| {
        status.conditions.iter().find(|c| c.type_ == type_).is_some_and(|c| c.status.as_deref() == Some("True"))
    };
    let state = status.container_state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = waiting.reason.clone();
        if reason.as_deref().is_some_and(|r| FAILING_REASONS.contains(&r)) {
            let message = match (&reason, &waiting.message) {
                (Some(reason), Some(message)) => Some(format!("{reason}: {message}")),
                _ => reason,
            };
            return (WorkloadPhase::Failing, message);
        }
        return (WorkloadPhase::Pulling, reason);
    }
    if state.is_some_and(|s| s.running.is_some()) {
        return (WorkloadPhase::Starting, None);
    }
    if condition("PodScheduled") {
        return (WorkloadPhase::Pulling, None);
    }
    (WorkloadPhase::Scheduling, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notebook(yaml: &str) -> Notebook {
        let base = "apiVersion: kubeflow.org/v1\nkind: Notebook\nmetadata: {name: nb, namespace: team}\n\
                    spec: {template: {spec: {containers: [{name: nb, image: x}]}}}\n";
        serde_yaml::from_str(&format!("{base}{yaml}")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn phase(yaml: &str) -> (WorkloadPhase, Option<String>) {
        let (host, state) = notebook_workload(&notebook(yaml), &NotebookSettings::default());
        assert_eq!(host, "nb.team.svc.cluster.local");
        (state.phase, state.message)
    }

    #[test]
    fn the_phase_follows_the_status_kubeflow_mirrors() {
        assert_eq!(phase(""), (WorkloadPhase::Scheduling, None));
        assert_eq!(
            phase("status: {conditions: [{type: PodScheduled, status: 'False'}]}"),
            (WorkloadPhase::Scheduling, None)
        );
        assert_eq!(
            phase("status: {conditions: [{type: PodScheduled, status: 'True'}]}"),
            (WorkloadPhase::Pulling, None)
        );
        assert_eq!(
            phase("status: {containerState: {waiting: {reason: ContainerCreating}}}"),
            (WorkloadPhase::Pulling, Some("ContainerCreating".to_string()))
        );
        assert_eq!(
            phase("status: {containerState: {waiting: {reason: ImagePullBackOff, message: 'no such image'}}}"),
            (WorkloadPhase::Failing, Some("ImagePullBackOff: no such image".to_string()))
        );
        assert_eq!(phase("status: {containerState: {running: {}}}"), (WorkloadPhase::Starting, None));
        assert_eq!(phase("status: {readyReplicas: 1, containerState: {running: {}}}"), (WorkloadPhase::Ready, None));
    }

    #[test]
    fn the_stop_annotation_wins_over_a_pod_still_running() {
        let yaml = "status: {readyReplicas: 1}\n";
        let mut stopped = notebook(yaml);
        stopped.metadata.annotations =
            Some([(STOP_ANNOTATION.to_string(), "2026-12-05T00:00:00Z".to_string())].into_iter().collect());
        let (_, state) = notebook_workload(&stopped, &NotebookSettings::default());
        assert_eq!(state.phase, WorkloadPhase::Stopped);
    }
}
