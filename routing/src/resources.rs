//! The input of translation: every object that can affect routing, and the
//! kubectl-style YAML reader that fills it from files.

use portico_api::istio::{AuthorizationPolicy, Gateway, MeshConfig, RequestAuthentication, VirtualService};
use portico_api::k8s_openapi::api::core::v1::{Secret, Service};
use portico_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use portico_api::notebook::Notebook;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::notebook::NotebookSettings;
use crate::table::PathNormalizationMode;

/// Namespace label that turns sidecar injection on, and with it mutual TLS
/// from the gateway to the namespace's pods.
pub const MESH_NAMESPACE_LABEL: &str = "portico-injection";

/// Injected pods: (namespace, name) -> service account.
pub type InjectedPods = std::collections::BTreeMap<(String, String), String>;

/// Annotation the injector records a pod's service account in, so that the
/// route index (which watches pod metadata only) knows the identity the
/// pod's sidecar will present.
pub const SERVICE_ACCOUNT_ANNOTATION: &str = "sidecar.portico.dev/service-account";

/// Label the injector puts on pods that carry the sidecar (Istio's).
pub const INJECTED_POD_LABEL: &str = "security.istio.io/tlsMode";
/// Its value on injected pods.
pub const INJECTED_POD_VALUE: &str = "istio";

/// Objects that routing depends on, as read from a folder or a cluster.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub gateways: Vec<Gateway>,
    pub virtual_services: Vec<VirtualService>,
    /// Turned into VirtualServices by [`crate::notebook_virtual_service`]
    /// (folder mode; in a cluster the controller writes those objects).
    pub notebooks: Vec<Notebook>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    /// `kubernetes.io/tls` Secrets referenced by `credentialName`.
    pub secrets: Vec<Secret>,
    /// Namespaces labelled [`MESH_NAMESPACE_LABEL`]`=enabled`: their pods
    /// carry the sidecar, so the gateway reaches them with mutual TLS.
    pub meshed_namespaces: std::collections::BTreeSet<String>,
    /// Pods carrying the sidecar (label [`INJECTED_POD_LABEL`]): (namespace,
    /// name) -> service account. `None` where pods cannot be seen (folder
    /// mode): then every endpoint of a meshed namespace is taken to be meshed.
    pub injected_pods: Option<InjectedPods>,
    pub request_authentications: Vec<RequestAuthentication>,
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// `mesh` of ConfigMap `istio-system/istio` (CUSTOM policies' providers).
    pub mesh_config: Option<MeshConfig>,
    pub settings: NotebookSettings,
    pub path_normalization: PathNormalizationMode,
}

/// Minimal view of a document, to dispatch on `apiVersion`/`kind`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Option<NameMeta>,
}

#[derive(Deserialize)]
struct NameMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

impl Resources {
    /// Adds every object of `other` (one file's objects into the folder's).
    /// Settings stay this set's; a mesh config in `other` replaces this one.
    pub fn merge(&mut self, other: Resources) {
        let Resources {
            gateways,
            virtual_services,
            notebooks,
            services,
            endpoint_slices,
            secrets,
            meshed_namespaces,
            injected_pods,
            request_authentications,
            authorization_policies,
            mesh_config,
            settings: _,
            path_normalization: _,
        } = other;
        self.gateways.extend(gateways);
        self.virtual_services.extend(virtual_services);
        self.notebooks.extend(notebooks);
        self.services.extend(services);
        self.endpoint_slices.extend(endpoint_slices);
        self.secrets.extend(secrets);
        self.meshed_namespaces.extend(meshed_namespaces);
        if let Some(pods) = injected_pods {
            self.injected_pods.get_or_insert_with(Default::default).extend(pods);
        }
        self.request_authentications.extend(request_authentications);
        self.authorization_policies.extend(authorization_policies);
        if mesh_config.is_some() {
            self.mesh_config = mesh_config;
        }
    }

    /// Adds every object in `yaml` (one or more `---`-separated documents,
    /// or `kind: List`), as `kubectl apply -f` reads a file. Objects of kinds
    /// that do not affect routing are ignored. A document that cannot be read
    /// is reported (naming `source`, the object and the reason) and skipped;
    /// the documents around it still count. Objects without a namespace are
    /// in `default`, as with kubectl.
    pub fn add_yaml(&mut self, yaml: &str, source: &str) -> Vec<Diagnostic> {
        self.add_yaml_each(yaml, source, |_| {})
    }

    /// [`Resources::add_yaml`], calling `each` after every document: a
    /// caller that keeps less than whole objects (folder mode keeps their
    /// routing views) takes them out as they come, so a file of 30,000
    /// objects is never held whole.
    pub fn add_yaml_each(&mut self, yaml: &str, source: &str, mut each: impl FnMut(&mut Self)) -> Vec<Diagnostic> {
        let mut diagnostics = Vec::new();
        for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
            match serde_yaml::Value::deserialize(document) {
                Ok(serde_yaml::Value::Null) => {}
                Ok(value) => {
                    self.add_value(value, source, index, &mut diagnostics);
                    each(self);
                }
                Err(error) => {
                    let object = ObjectRef::new("File", "", source);
                    diagnostics.push(Diagnostic::error(
                        &object,
                        format!("document[{index}]"),
                        format!("invalid YAML: {error}"),
                    ));
                    // The YAML stream cannot be resynchronised after a syntax error.
                    break;
                }
            }
        }
        diagnostics
    }

    fn add_value(&mut self, value: serde_yaml::Value, source: &str, index: usize, diagnostics: &mut Vec<Diagnostic>) {
        let meta = match TypeMeta::deserialize(&value) {
            Ok(meta) => meta,
            Err(error) => {
                let object = ObjectRef::new("File", "", source);
                diagnostics.push(Diagnostic::error(
                    &object,
                    format!("document[{index}]"),
                    format!("not a Kubernetes object: {error}"),
                ));
                return;
            }
        };
        let group = meta.api_version.rsplit_once('/').map_or("", |(group, _)| group);
        let (name, namespace) = meta
            .metadata
            .as_ref()
            .map(|m| (m.name.clone().unwrap_or_default(), m.namespace.clone().unwrap_or_default()))
            .unwrap_or_default();
        let object = ObjectRef::new(&meta.kind, &namespace, &name);
        let at = |field: &str| format!("{source}: document[{index}]{field}");
        match (group, meta.kind.as_str()) {
            ("", "List") | ("v1", "List") => {
                if let Some(serde_yaml::Value::Sequence(items)) = value.get("items").cloned() {
                    for item in items {
                        self.add_value(item, source, index, diagnostics);
                    }
                }
            }
            ("networking.istio.io", "Gateway") => push(&mut self.gateways, value, &object, &at(""), diagnostics),
            ("networking.istio.io", "VirtualService") => {
                push(&mut self.virtual_services, value, &object, &at(""), diagnostics)
            }
            ("security.istio.io", "RequestAuthentication") => {
                push(&mut self.request_authentications, value, &object, &at(""), diagnostics)
            }
            ("security.istio.io", "AuthorizationPolicy") => {
                push(&mut self.authorization_policies, value, &object, &at(""), diagnostics)
            }
            ("", "ConfigMap")
                if meta.api_version == "v1" && namespace == crate::security::ROOT_NAMESPACE && name == "istio" =>
            {
                let mesh = value.get("data").and_then(|d| d.get("mesh")).and_then(serde_yaml::Value::as_str);
                match mesh.map(serde_yaml::from_str::<MeshConfig>) {
                    Some(Ok(config)) => self.mesh_config = Some(config),
                    Some(Err(error)) => diagnostics.push(Diagnostic::error(
                        &object,
                        "data.mesh",
                        format!("cannot read mesh config: {error}"),
                    )),
                    None => {}
                }
            }
            ("kubeflow.org", "Notebook") => push(&mut self.notebooks, value, &object, &at(""), diagnostics),
            ("", "Service") if meta.api_version == "v1" => {
                push(&mut self.services, value, &object, &at(""), diagnostics)
            }
            ("", "Secret") if meta.api_version == "v1" => push(&mut self.secrets, value, &object, &at(""), diagnostics),
            ("discovery.k8s.io", "EndpointSlice") => {
                push(&mut self.endpoint_slices, value, &object, &at(""), diagnostics)
            }
            ("", "Namespace") if meta.api_version == "v1" => {
                let label =
                    value.get("metadata").and_then(|m| m.get("labels")).and_then(|l| l.get(MESH_NAMESPACE_LABEL));
                if label.and_then(serde_yaml::Value::as_str) == Some("enabled") {
                    self.meshed_namespaces.insert(name.clone());
                }
            }
            _ => {}
        }
    }
}

/// Objects that can carry a namespace.
trait Namespaced {
    fn default_namespace(&mut self);
}

macro_rules! namespaced {
    ($($t:ty),*) => {$(
        impl Namespaced for $t {
            fn default_namespace(&mut self) {
                if self.metadata.namespace.as_deref().unwrap_or("").is_empty() {
                    self.metadata.namespace = Some("default".to_string());
                }
            }
        }
    )*};
}
namespaced!(
    Gateway,
    VirtualService,
    Notebook,
    Service,
    Secret,
    EndpointSlice,
    RequestAuthentication,
    AuthorizationPolicy
);

fn push<T: DeserializeOwned + Namespaced>(
    into: &mut Vec<T>,
    value: serde_yaml::Value,
    object: &ObjectRef,
    location: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match serde_yaml::from_value::<T>(value) {
        Ok(mut parsed) => {
            parsed.default_namespace();
            into.push(parsed);
        }
        Err(error) => {
            diagnostics.push(Diagnostic::error(object, location, format!("cannot read object: {error}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_files_and_lists() {
        let yaml = r#"
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: kubeflow-gateway, namespace: kubeflow}
spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1beta1
  kind: VirtualService
  metadata: {name: a}
  spec: {hosts: ["*"], gateways: [kubeflow/kubeflow-gateway]}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: ignored}
"#;
        let mut resources = Resources::default();
        let diagnostics = resources.add_yaml(yaml, "test.yaml");
        assert_eq!(diagnostics, vec![]);
        assert_eq!(resources.gateways.len(), 1);
        assert_eq!(resources.virtual_services.len(), 1);
        assert_eq!(resources.virtual_services[0].metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn a_bad_document_is_reported_and_the_others_kept() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: team}
spec: {hosts: "not-a-list"}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: good, namespace: team}
spec: {hosts: ["*"]}
"#;
        let mut resources = Resources::default();
        let diagnostics = resources.add_yaml(yaml, "vs.yaml");
        assert_eq!(resources.virtual_services.len(), 1);
        assert_eq!(diagnostics.len(), 1);
        let text = diagnostics[0].to_string();
        assert!(text.contains("VirtualService team/broken"), "{text}");
        assert!(text.contains("vs.yaml"), "{text}");
    }

    #[test]
    fn a_syntax_error_names_the_file() {
        let mut resources = Resources::default();
        let diagnostics = resources.add_yaml("kind: [unclosed", "broken.yaml");
        assert_eq!(diagnostics.len(), 1);
        assert!(diagnostics[0].to_string().contains("File broken.yaml"), "{}", diagnostics[0]);
    }
}
