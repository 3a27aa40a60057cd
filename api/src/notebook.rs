//! Kubeflow's `Notebook` custom resource (`notebooks.kubeflow.org`).
//!
//! The three served versions share one schema; `v1` is the storage version
//! and the one the rest of Portico uses. The older versions are served by the
//! generated CRD (see [`crate::crd`]) exactly as Kubeflow's CRD serves them.

use k8s_openapi::api::core::v1::{ContainerState, PodSpec};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation that stops a notebook: its StatefulSet is scaled to 0.
pub const STOP_ANNOTATION: &str = "kubeflow-resource-stopped";
/// Annotation overriding the VirtualService `rewrite.uri` (code-server, RStudio use `/`).
pub const REWRITE_URI_ANNOTATION: &str = "notebooks.kubeflow.org/http-rewrite-uri";
/// Annotation holding a JSON object of request headers to set on the route.
pub const HEADERS_REQUEST_SET_ANNOTATION: &str = "notebooks.kubeflow.org/http-headers-request-set";
/// Annotation the culler maintains with the last activity time (RFC 3339).
pub const LAST_ACTIVITY_ANNOTATION: &str = "notebooks.kubeflow.org/last-activity";

/// `spec.template`: the pod template of the notebook. Only `spec` is honoured,
/// as in Kubeflow.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct NotebookTemplateSpec {
    // Boxed: a pod spec is 2 KB inline, and what routing keeps of a
    // Notebook (folder mode, 10,000 of them) has none. (A plain comment:
    // doc comments become the CRD schema's descriptions.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserve_unknown_object")]
    pub spec: Option<Box<PodSpec>>,
}

/// One entry of `status.conditions`, mirrored from the notebook pod.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotebookCondition {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `status` of a Notebook.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotebookStatus {
    #[serde(default)]
    pub conditions: Vec<NotebookCondition>,
    #[serde(default)]
    pub ready_replicas: i32,
    /// State of the container named like the Notebook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserve_unknown_object")]
    pub container_state: Option<ContainerState>,
}

/// `spec` of a Notebook. The Rust type is the v1 one; [`crate::crd`] serves
/// the same schema as v1beta1 and v1alpha1.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "kubeflow.org",
    version = "v1",
    kind = "Notebook",
    plural = "notebooks",
    namespaced,
    status = "NotebookStatus",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct NotebookSpec {
    #[serde(default)]
    pub template: NotebookTemplateSpec,
}

/// The versions of `notebooks.kubeflow.org`, storage version first.
pub const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha1"];
