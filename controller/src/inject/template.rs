//! What injection adds to a pod, as an RFC 6902 JSON patch.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// Pod label that opts a pod out (Istio's).
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";
pub use portico_routing::resources::{INJECTED_POD_LABEL, INJECTED_POD_VALUE, SERVICE_ACCOUNT_ANNOTATION};
/// Annotation set on injected pods.
pub const STATUS_ANNOTATION: &str = "sidecar.portico.dev/status";
/// The sidecar's uid: iptables exempts its own traffic by it (Istio's 1337).
pub const PROXY_UID: i64 = 1337;

/// The injection template's settings (from the controller's flags).
#[derive(Clone, Debug)]
pub struct InjectionSettings {
    pub image: String,
    /// `https://<controller service>:15012`.
    pub ca_address: String,
    pub trust_domain: String,
    /// SPIFFE IDs allowed into pods (the gateway's).
    pub allow: Vec<String>,
    /// ConfigMap (in each namespace) holding the mesh root as `root-cert.pem`.
    pub root_config_map: String,
}

/// The patch for `pod`, or `None` when it must not be injected.
pub fn patch(pod: &Pod, settings: &InjectionSettings) -> Option<Value> {
    let metadata = &pod.metadata;
    let opted_out = metadata.labels.as_ref().and_then(|l| l.get(INJECT_LABEL)).is_some_and(|v| v == "false")
        || metadata.annotations.as_ref().and_then(|a| a.get(INJECT_LABEL)).is_some_and(|v| v == "false");
    let spec = pod.spec.as_ref()?;
    let injected = spec.containers.iter().any(|c| c.name == "portico-sidecar")
        || metadata.annotations.as_ref().is_some_and(|a| a.contains_key(STATUS_ANNOTATION));
    if opted_out || injected {
        return None;
    }
    // The notebook's port: the first declared container port (Kubeflow's 8888).
    let app_port =
        spec.containers.iter().flat_map(|c| c.ports.iter().flatten()).map(|p| p.container_port).next().unwrap_or(8888);
    let mut operations = Vec::new();
    if spec.init_containers.is_none() {
        operations.push(json!({"op": "add", "path": "/spec/initContainers", "value": []}));
    }
    operations.push(json!({"op": "add", "path": "/spec/initContainers/-", "value": init_container(settings)}));
    operations.push(json!({"op": "add", "path": "/spec/containers/-", "value": sidecar_container(settings, app_port)}));
    if spec.volumes.is_none() {
        operations.push(json!({"op": "add", "path": "/spec/volumes", "value": []}));
    }
    for volume in volumes(settings) {
        operations.push(json!({"op": "add", "path": "/spec/volumes/-", "value": volume}));
    }
    if metadata.annotations.is_none() {
        operations.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    // Istio's marker of a pod with a sidecar: the route index reaches such
    // pods with mutual TLS and the other pods of the namespace without.
    if metadata.labels.is_none() {
        operations.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
    }
    operations.push(json!({
        "op": "add",
        "path": format!("/metadata/labels/{}", INJECTED_POD_LABEL.replace('/', "~1")),
        "value": INJECTED_POD_VALUE,
    }));
    operations.push(json!({
        "op": "add",
        "path": format!("/metadata/annotations/{}", STATUS_ANNOTATION.replace('/', "~1")),
        "value": "injected",
    }));
    // The identity the sidecar will hold, for the gateway to pin. The
    // ServiceAccount admission plugin has set it by now ("default" if not).
    let service_account = spec.service_account_name.clone().unwrap_or_else(|| "default".to_string());
    operations.push(json!({
        "op": "add",
        "path": format!("/metadata/annotations/{}", SERVICE_ACCOUNT_ANNOTATION.replace('/', "~1")),
        "value": service_account,
    }));
    Some(Value::Array(operations))
}

fn init_container(settings: &InjectionSettings) -> Value {
    json!({
        "name": "portico-init",
        "image": settings.image,
        "args": ["init", "--proxy-uid", PROXY_UID.to_string(), "--capture-outbound"],
        "securityContext": {
            "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}, "limits": {"memory": "32Mi"}},
    })
}

fn sidecar_container(settings: &InjectionSettings, app_port: i32) -> Value {
    json!({
        "name": "portico-sidecar",
        "image": settings.image,
        "args": [
            "run",
            "--app-port", app_port.to_string(),
            "--outbound", "0.0.0.0:15001",
            "--ca-address", settings.ca_address,
            "--trust-domain", settings.trust_domain,
            "--allow", settings.allow.join(","),
            "--ca-root", "/var/run/secrets/portico/root-cert.pem",
            "--token-file", "/var/run/secrets/tokens/portico-token",
            "--log-format", "json",
        ],
        "ports": [
            {"name": "http-envoy-prom", "containerPort": 15090},
            {"name": "status-port", "containerPort": 15021},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 2},
        "securityContext": {
            "runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": true,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "volumeMounts": [
            {"name": "portico-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
            {"name": "portico-ca-root", "mountPath": "/var/run/secrets/portico", "readOnly": true},
        ],
    })
}

fn volumes(settings: &InjectionSettings) -> Vec<Value> {
    vec![
        json!({"name": "portico-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "portico-ca", "expirationSeconds": 43200, "path": "portico-token"}}]}}),
        json!({"name": "portico-ca-root", "configMap": {"name": settings.root_config_map}}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> InjectionSettings {
        InjectionSettings {
            image: "ghcr.io/portico-dev/portico-sidecar:v0.1.0".to_string(),
            ca_address: "https://portico-controller.portico-system.svc:15012".to_string(),
            trust_domain: "cluster.local".to_string(),
            allow: vec!["spiffe://cluster.local/ns/portico-system/sa/portico-gateway".to_string()],
            root_config_map: "portico-ca-root-cert".to_string(),
        }
    }

    fn pod(extra: Value) -> Pod {
        let mut value = json!({
            "metadata": {"name": "nb-0", "namespace": "team"},
            "spec": {"containers": [{"name": "nb", "image": "jupyter", "ports": [{"containerPort": 8888}]}]},
        });
        if let (Some(target), Value::Object(extra)) = (value.as_object_mut(), extra) {
            for (key, field) in extra {
                target.insert(key, field);
            }
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_plain_pod_gets_the_sidecar_and_the_init_container() {
        let patch = patch(&pod(json!({})), &settings()).unwrap();
        let text = patch.to_string();
        assert!(text.contains("\"portico-sidecar\"") && text.contains("\"portico-init\""), "{text}");
        assert!(text.contains("\"--app-port\",\"8888\""), "{text}");
        assert!(text.contains("\"runAsUser\":1337"), "{text}");
        assert!(text.contains("sidecar.portico.dev~1status"), "{text}");
    }

    #[test]
    fn opted_out_and_injected_pods_are_left_alone() {
        let out =
            pod(json!({"metadata": {"name": "x", "namespace": "t", "labels": {"sidecar.istio.io/inject": "false"}}}));
        assert_eq!(patch(&out, &settings()), None);
        let done =
            pod(json!({"metadata": {"name": "x", "namespace": "t", "annotations": {STATUS_ANNOTATION: "injected"}}}));
        assert_eq!(patch(&done, &settings()), None);
    }
}
