//! `Notebook.status`, as Kubeflow's `createNotebookStatus` computes it.
//!
//! Pure: `readyReplicas` from the StatefulSet; when the pod `<name>-0`
//! exists, `containerState` of its container named like the Notebook and its
//! conditions mirrored one for one. A Notebook that cannot be run gets one
//! condition of its own instead (see [`invalid_status`]).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portico_api::notebook::{NotebookCondition, NotebookStatus};

/// Condition type set on a Notebook the controller cannot run.
pub const DEGRADED_CONDITION: &str = "Degraded";
/// Reason of that condition.
pub const INVALID_SPEC_REASON: &str = "InvalidSpec";

/// The status of the Notebook `name` given its StatefulSet and pod, either
/// of which may not exist (yet).
pub fn notebook_status(name: &str, stateful_set: Option<&StatefulSet>, pod: Option<&Pod>) -> NotebookStatus {
    let ready_replicas =
        stateful_set.and_then(|set| set.status.as_ref()).and_then(|status| status.ready_replicas).unwrap_or(0);
    let pod_status = pod.and_then(|pod| pod.status.as_ref());
    let container_state = pod_status
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|status| status.name == name))
        .and_then(|status| status.state.clone());
    let conditions = pod_status
        .and_then(|status| status.conditions.as_ref())
        .map(|conditions| conditions.iter().map(notebook_condition).collect())
        .unwrap_or_default();
    NotebookStatus { conditions, ready_replicas, container_state }
}

/// The status of a Notebook that cannot be run, saying why.
pub fn invalid_status(message: &str, now: Time) -> NotebookStatus {
    NotebookStatus {
        conditions: vec![NotebookCondition {
            type_: DEGRADED_CONDITION.to_string(),
            status: Some("True".to_string()),
            last_probe_time: None,
            last_transition_time: Some(time_text(&now)),
            reason: Some(INVALID_SPEC_REASON.to_string()),
            message: Some(message.to_string()),
        }],
        ready_replicas: 0,
        container_state: None,
    }
}

/// Whether two statuses differ in more than the invalid condition's
/// transition time (which would otherwise change on every reconcile).
pub fn differs(current: Option<&NotebookStatus>, desired: &NotebookStatus) -> bool {
    let Some(current) = current else { return true };
    let strip = |status: &NotebookStatus| {
        let mut status = status.clone();
        for condition in &mut status.conditions {
            if condition.type_ == DEGRADED_CONDITION {
                condition.last_transition_time = None;
            }
        }
        status
    };
    strip(current) != strip(desired)
}

/// Kubeflow's `PodCondToNotebookCond`.
fn notebook_condition(condition: &PodCondition) -> NotebookCondition {
    NotebookCondition {
        type_: condition.type_.clone(),
        status: Some(condition.status.clone()),
        last_probe_time: condition.last_probe_time.as_ref().map(time_text),
        last_transition_time: condition.last_transition_time.as_ref().map(time_text),
        reason: condition.reason.clone(),
        message: condition.message.clone(),
    }
}

/// A `Time` as Kubernetes writes it (RFC 3339, seconds).
fn time_text(time: &Time) -> String {
    match serde_json::to_value(time) {
        Ok(serde_json::Value::String(text)) => text,
        _ => time.0.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStatus, PodStatus};

    use super::*;

    fn time(text: &str) -> Time {
        serde_json::from_value(serde_json::Value::String(text.to_string())).unwrap()
    }

    fn running(since: &str) -> ContainerState {
        ContainerState { running: Some(ContainerStateRunning { started_at: Some(time(since)) }), ..Default::default() }
    }

    #[test]
    fn nothing_yet_is_zero_ready_and_no_conditions() {
        let status = notebook_status("nb", None, None);
        assert_eq!(status, NotebookStatus::default());
    }

    #[test]
    fn mirrors_the_stateful_set_and_the_pod() {
        let set = StatefulSet {
            status: Some(StatefulSetStatus { ready_replicas: Some(1), replicas: 1, ..Default::default() }),
            ..Default::default()
        };
        let pod = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".to_string(),
                    status: "True".to_string(),
                    last_transition_time: Some(time("2024-05-01T10:00:00Z")),
                    ..Default::default()
                }]),
                container_statuses: Some(vec![
                    ContainerStatus {
                        name: "istio-proxy".to_string(),
                        state: Some(ContainerState::default()),
                        ..Default::default()
                    },
                    ContainerStatus {
                        name: "nb".to_string(),
                        state: Some(running("2024-05-01T09:59:00Z")),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = notebook_status("nb", Some(&set), Some(&pod));
        assert_eq!(status.ready_replicas, 1);
        assert_eq!(status.container_state, Some(running("2024-05-01T09:59:00Z")));
        assert_eq!(
            status.conditions,
            vec![NotebookCondition {
                type_: "Ready".to_string(),
                status: Some("True".to_string()),
                last_transition_time: Some("2024-05-01T10:00:00Z".to_string()),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn the_invalid_condition_does_not_flap() {
        let first = invalid_status("no containers", time("2024-05-01T10:00:00Z"));
        let later = invalid_status("no containers", time("2024-05-01T11:00:00Z"));
        assert!(!differs(Some(&first), &later));
        assert!(differs(Some(&first), &invalid_status("other", time("2024-05-01T10:00:00Z"))));
        assert!(differs(None, &first));
        assert!(differs(Some(&first), &NotebookStatus::default()));
    }
}
