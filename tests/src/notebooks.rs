//! Notebook fixtures and object readers for the controller tests.
//!
//! Objects are read back as plain JSON (`DynamicObject`), not through
//! Portico's types: the tests compare exactly the fields the API server
//! stored, which typed deserialization would blur (defaults, unknown fields).

use std::collections::BTreeMap;

use k8s_openapi::api::events::v1::Event;
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client, Resource};
use serde_json::Value;

use crate::KubePlane;

/// A Notebook as the Kubeflow UI writes it, with `annotations`.
pub fn notebook_yaml(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = annotations.iter().map(|(key, value)| format!("\n    {key}: {value:?}")).collect();
    let annotations = if annotations.is_empty() { String::new() } else { format!("\n  annotations:{annotations}") };
    format!(
        r#"apiVersion: kubeflow.org/v1
kind: Notebook
metadata:
  name: {name}
  namespace: {namespace}
  labels:
    app: {name}{annotations}
spec:
  template:
    spec:
      containers:
      - name: {name}
        image: kubeflownotebookswg/jupyter-scipy:v1.9.2
        resources:
          requests:
            cpu: "0.5"
            memory: 1Gi
"#
    )
}

/// `examples/kubeflow/notebook.yaml` moved into `namespace`.
pub fn example_notebook_yaml(namespace: &str) -> String {
    let path = crate::workspace_root().join("examples").join("kubeflow").join("notebook.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    let moved = yaml.replace("namespace: kubeflow-user-example-com", &format!("namespace: {namespace}"));
    assert_ne!(moved, yaml, "the example notebook names its namespace");
    moved
}

/// What Kubeflow makes before the example Notebook, in `namespace` (as
/// `examples/kubeflow/profile.yaml` does in its own): the `default-editor`
/// ServiceAccount its pod runs as and the `my-notebook-workspace` claim,
/// with a hostPath volume reserved for that claim (a provisioner's job in a
/// real cluster).
pub fn apply_example_profile(plane: &KubePlane, namespace: &str) {
    let dir = std::env::temp_dir().join(format!("portico-workspace-{namespace}"));
    let _ = std::fs::create_dir_all(&dir);
    apply(
        plane,
        &format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default-editor, namespace: {namespace}}}\n---\n\
             apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: workspace-{namespace}}}\n\
             spec: {{capacity: {{storage: 10Gi}}, accessModes: [ReadWriteOnce], persistentVolumeReclaimPolicy: Retain, \
             hostPath: {{path: {dir}}}, claimRef: {{namespace: {namespace}, name: my-notebook-workspace}}}}\n---\n\
             apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: my-notebook-workspace, namespace: {namespace}}}\n\
             spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 10Gi}}}}}}\n",
            dir = dir.display()
        ),
    );
}

/// Kubeflow's `kubeflow-gateway` Gateway (port 80, any host, selecting
/// `istio: ingressgateway`), in `namespace`.
pub fn apply_kubeflow_gateway(plane: &KubePlane, namespace: &str) {
    apply(
        plane,
        &format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: kubeflow-gateway, namespace: {namespace}}}\n\
             spec:\n  selector: {{istio: ingressgateway}}\n  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [\"*\"]}}]\n"
        ),
    );
}

/// `kubectl apply -f -` with `yaml`.
pub fn apply(plane: &KubePlane, yaml: &str) -> String {
    plane.kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
}

/// `K`'s API as untyped JSON objects in `namespace`.
pub fn dynamic_api<K: Resource<DynamicType = ()>>(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<K>(&()))
}

/// The object `name` as the API server returns it (`metadata` and the rest
/// merged back into one JSON object), or `None`.
pub async fn get_json<K: Resource<DynamicType = ()>>(client: &Client, namespace: &str, name: &str) -> Option<Value> {
    let object = dynamic_api::<K>(client, namespace).get_opt(name).await.ok().flatten()?;
    let mut value = object.data;
    let fields = value.as_object_mut()?;
    if let Some(types) = object.types {
        fields.insert("apiVersion".to_string(), Value::String(types.api_version));
        fields.insert("kind".to_string(), Value::String(types.kind));
    }
    fields.insert("metadata".to_string(), serde_json::to_value(&object.metadata).ok()?);
    Some(value)
}

/// `(type, reason, note)` of the Events about the Notebook `name`.
pub async fn notebook_events(client: &Client, namespace: &str, name: &str) -> Vec<(String, String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = events.list(&Default::default()).await else { return Vec::new() };
    list.items
        .into_iter()
        .filter(|event| {
            event
                .regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("Notebook") && r.name.as_deref() == Some(name))
        })
        .map(|event| {
            (event.type_.unwrap_or_default(), event.reason.unwrap_or_default(), event.note.unwrap_or_default())
        })
        .collect()
}

/// The owner reference every derived object must carry.
pub fn expected_owner(notebook: &Value) -> Value {
    serde_json::json!([{
        "apiVersion": "kubeflow.org/v1",
        "kind": "Notebook",
        "name": notebook["metadata"]["name"],
        "uid": notebook["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// `metadata.annotations` of `object` as a map.
pub fn annotations(object: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(object["metadata"]["annotations"].clone()).unwrap_or_default()
}
