//! The StatefulSet Kubeflow's notebook-controller runs a Notebook as.
//!
//! Pure: a Notebook in, a StatefulSet out, following Kubeflow's
//! `generateStatefulSet` (see shared/REFERENCE.md):
//!
//! * name `<name>`, replicas 1, or 0 while `kubeflow-resource-stopped` is set;
//! * selector `statefulset=<name>`; the pod gets the Notebook's labels plus
//!   `statefulset=<name>` and `notebook-name=<name>`, and the Notebook's
//!   annotations except those whose key mentions `kubectl` or `notebook`
//!   (so `last-activity` updates do not roll the pod);
//! * container 0 gets `NB_PREFIX=/notebook/<ns>/<name>` (no trailing slash),
//!   `workingDir: /home/jovyan` if empty and port 8888 `notebook-port` if it
//!   declares none;
//! * `securityContext.fsGroup: 100` when the pod sets no security context
//!   (unless ADD_FSGROUP is false).
//!
//! Two deliberate differences from Kubeflow's Go code: an existing `NB_PREFIX`
//! is overwritten (Kubeflow means to, but edits a copy in its loop, and a
//! wrong prefix breaks routing), and `statefulset`/`notebook-name` win over a
//! Notebook label of the same key (otherwise the selector would not match and
//! the API server would reject the StatefulSet).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{ContainerPort, EnvVar, PodSecurityContext, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::ObjectMeta;
use portico_api::notebook::{Notebook, STOP_ANNOTATION};
use portico_routing::notebook::notebook_owner_reference;

/// Kubeflow's `DefaultContainerPort`.
pub const DEFAULT_CONTAINER_PORT: i32 = 8888;
/// Kubeflow's `DefaultFSGroup` (the jovyan user's group `users`).
pub const DEFAULT_FS_GROUP: i64 = 100;
/// Kubeflow's default working directory of notebook images.
pub const DEFAULT_WORKING_DIR: &str = "/home/jovyan";
/// Environment variable Jupyter images pass as `--ServerApp.base_url`.
pub const PREFIX_ENV: &str = "NB_PREFIX";

/// Settings of the derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadSettings {
    /// ADD_FSGROUP.
    pub add_fs_group: bool,
}

impl Default for WorkloadSettings {
    fn default() -> Self {
        Self { add_fs_group: true }
    }
}

/// Why a Notebook cannot be run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidNotebook {
    #[error("metadata.name and metadata.namespace are required")]
    MissingName,
    #[error("spec.template.spec is missing: a Notebook needs a pod template")]
    MissingPodSpec,
    #[error("spec.template.spec.containers is empty: a Notebook needs at least one container")]
    NoContainers,
}

/// Checks what [`notebook_stateful_set`] needs, so that a bad Notebook is
/// reported once instead of failing every write.
pub fn validate(notebook: &Notebook) -> Result<(), InvalidNotebook> {
    let named = notebook.metadata.name.as_deref().is_some_and(|n| !n.is_empty())
        && notebook.metadata.namespace.as_deref().is_some_and(|n| !n.is_empty());
    if !named {
        return Err(InvalidNotebook::MissingName);
    }
    let pod = notebook.spec.template.spec.as_ref().ok_or(InvalidNotebook::MissingPodSpec)?;
    if pod.containers.is_empty() {
        return Err(InvalidNotebook::NoContainers);
    }
    Ok(())
}

/// `/notebook/<namespace>/<name>`: the `NB_PREFIX` value.
pub fn notebook_base_url(namespace: &str, name: &str) -> String {
    format!("/notebook/{namespace}/{name}")
}

/// The StatefulSet Kubeflow runs `notebook` as; see the module docs.
pub fn notebook_stateful_set(notebook: &Notebook, settings: &WorkloadSettings) -> Result<StatefulSet, InvalidNotebook> {
    validate(notebook)?;
    let name = notebook.metadata.name.clone().unwrap_or_default();
    let namespace = notebook.metadata.namespace.clone().unwrap_or_default();
    let mut pod_spec = notebook.spec.template.spec.clone().ok_or(InvalidNotebook::MissingPodSpec)?;
    let container = pod_spec.containers.first_mut().ok_or(InvalidNotebook::NoContainers)?;

    if container.working_dir.as_deref().unwrap_or("").is_empty() {
        container.working_dir = Some(DEFAULT_WORKING_DIR.to_string());
    }
    if container.ports.is_none() {
        container.ports = Some(vec![ContainerPort {
            container_port: DEFAULT_CONTAINER_PORT,
            name: Some("notebook-port".to_string()),
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]);
    }
    let prefix = notebook_base_url(&namespace, &name);
    let env = container.env.get_or_insert_with(Vec::new);
    match env.iter_mut().find(|var| var.name == PREFIX_ENV) {
        Some(var) => {
            var.value = Some(prefix);
            var.value_from = None;
        }
        None => env.push(EnvVar { name: PREFIX_ENV.to_string(), value: Some(prefix), value_from: None }),
    }
    if settings.add_fs_group && pod_spec.security_context.is_none() {
        pod_spec.security_context =
            Some(PodSecurityContext { fs_group: Some(DEFAULT_FS_GROUP), ..PodSecurityContext::default() });
    }

    let mut labels = notebook.metadata.labels.clone().unwrap_or_default();
    labels.insert("statefulset".to_string(), name.clone());
    labels.insert("notebook-name".to_string(), name.clone());
    let annotations: BTreeMap<String, String> = notebook
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(key, _)| !key.contains("kubectl") && !key.contains("notebook"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let stopped = notebook.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(STOP_ANNOTATION));

    Ok(StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            owner_references: notebook_owner_reference(notebook).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(if stopped { 0 } else { 1 }),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("statefulset".to_string(), name)])),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(*pod_spec),
            },
            ..StatefulSetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use portico_api::notebook::NotebookSpec;

    use super::*;

    fn notebook(containers: Vec<Container>) -> Notebook {
        let mut notebook = Notebook::new(
            "my-notebook",
            NotebookSpec {
                template: portico_api::notebook::NotebookTemplateSpec {
                    spec: Some(Box::new(PodSpec { containers, ..PodSpec::default() })),
                },
            },
        );
        notebook.metadata.namespace = Some("team".to_string());
        notebook.metadata.uid = Some("uid-1".to_string());
        notebook.metadata.labels = Some(BTreeMap::from([("app".to_string(), "my-notebook".to_string())]));
        notebook
    }

    fn container(name: &str) -> Container {
        Container { name: name.to_string(), image: Some("jupyter".to_string()), ..Container::default() }
    }

    fn pod(set: &StatefulSet) -> &PodSpec {
        set.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn follows_kubeflows_generate_stateful_set() {
        let set =
            notebook_stateful_set(&notebook(vec![container("my-notebook")]), &WorkloadSettings::default()).unwrap();
        assert_eq!(set.metadata.name.as_deref(), Some("my-notebook"));
        assert_eq!(set.metadata.namespace.as_deref(), Some("team"));
        let owner = &set.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Notebook", "my-notebook", "uid-1")
        );
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        let spec = set.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.selector.match_labels,
            Some(BTreeMap::from([("statefulset".to_string(), "my-notebook".to_string())]))
        );
        let labels = spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
        assert_eq!(labels.get("statefulset").map(String::as_str), Some("my-notebook"));
        assert_eq!(labels.get("notebook-name").map(String::as_str), Some("my-notebook"));
        assert_eq!(labels.get("app").map(String::as_str), Some("my-notebook"));
        let pod = pod(&set);
        assert_eq!(pod.security_context.as_ref().unwrap().fs_group, Some(100));
        let first = &pod.containers[0];
        assert_eq!(first.working_dir.as_deref(), Some("/home/jovyan"));
        let ports = first.ports.as_ref().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(
            (ports[0].container_port, ports[0].name.as_deref(), ports[0].protocol.as_deref()),
            (8888, Some("notebook-port"), Some("TCP"))
        );
        let env = first.env.as_ref().unwrap();
        assert_eq!(
            env,
            &vec![EnvVar {
                name: "NB_PREFIX".to_string(),
                value: Some("/notebook/team/my-notebook".to_string()),
                value_from: None
            }]
        );
    }

    #[test]
    fn the_stop_annotation_scales_to_zero() {
        let mut stopped = notebook(vec![container("my-notebook")]);
        stopped.metadata.annotations =
            Some(BTreeMap::from([(STOP_ANNOTATION.to_string(), "2024-01-01T00:00:00Z".to_string())]));
        let set = notebook_stateful_set(&stopped, &WorkloadSettings::default()).unwrap();
        assert_eq!(set.spec.unwrap().replicas, Some(0));
    }

    #[test]
    fn what_the_user_set_is_kept() {
        let mut first = container("my-notebook");
        first.working_dir = Some("/work".to_string());
        first.ports = Some(vec![ContainerPort { container_port: 8080, ..ContainerPort::default() }]);
        first.env = Some(vec![
            EnvVar { name: "A".to_string(), value: Some("1".to_string()), value_from: None },
            EnvVar { name: "NB_PREFIX".to_string(), value: Some("/wrong".to_string()), value_from: None },
        ]);
        let mut nb = notebook(vec![first, container("sidecar")]);
        nb.spec.template.spec.as_mut().unwrap().security_context =
            Some(PodSecurityContext { run_as_user: Some(1000), ..PodSecurityContext::default() });
        let set = notebook_stateful_set(&nb, &WorkloadSettings::default()).unwrap();
        let pod = pod(&set);
        assert_eq!(pod.security_context.as_ref().unwrap().fs_group, None, "a pod security context is left alone");
        assert_eq!(pod.containers.len(), 2);
        assert_eq!(pod.containers[1], container("sidecar"), "only container 0 is changed");
        let first = &pod.containers[0];
        assert_eq!(first.working_dir.as_deref(), Some("/work"));
        assert_eq!(first.ports.as_ref().unwrap()[0].container_port, 8080);
        let env: Vec<_> = first.env.iter().flatten().map(|v| (v.name.as_str(), v.value.as_deref())).collect();
        assert_eq!(env, [("A", Some("1")), ("NB_PREFIX", Some("/notebook/team/my-notebook"))]);
    }

    #[test]
    fn fs_group_can_be_turned_off() {
        let set =
            notebook_stateful_set(&notebook(vec![container("a")]), &WorkloadSettings { add_fs_group: false }).unwrap();
        assert_eq!(pod(&set).security_context, None);
    }

    #[test]
    fn pod_annotations_skip_kubectl_and_notebook_keys() {
        let mut nb = notebook(vec![container("a")]);
        nb.metadata.annotations = Some(BTreeMap::from([
            ("kubectl.kubernetes.io/last-applied-configuration".to_string(), "{}".to_string()),
            ("notebooks.kubeflow.org/last-activity".to_string(), "2024-01-01T00:00:00Z".to_string()),
            ("poddefaults.kubeflow.org/x".to_string(), "y".to_string()),
        ]));
        nb.metadata.labels = Some(BTreeMap::from([("statefulset".to_string(), "other".to_string())]));
        let set = notebook_stateful_set(&nb, &WorkloadSettings::default()).unwrap();
        let meta = set.spec.unwrap().template.metadata.unwrap();
        assert_eq!(
            meta.annotations,
            Some(BTreeMap::from([("poddefaults.kubeflow.org/x".to_string(), "y".to_string())]))
        );
        assert_eq!(meta.labels.unwrap().get("statefulset").map(String::as_str), Some("my-notebook"));
    }

    #[test]
    fn a_notebook_without_containers_is_invalid() {
        assert_eq!(
            notebook_stateful_set(&notebook(vec![]), &WorkloadSettings::default()),
            Err(InvalidNotebook::NoContainers)
        );
        let mut no_template = notebook(vec![]);
        no_template.spec.template.spec = None;
        assert_eq!(validate(&no_template), Err(InvalidNotebook::MissingPodSpec));
        let mut unnamed = notebook(vec![container("a")]);
        unnamed.metadata.namespace = None;
        assert_eq!(validate(&unnamed), Err(InvalidNotebook::MissingName));
    }
}
