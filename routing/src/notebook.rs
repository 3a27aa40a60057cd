//! The objects Kubeflow's notebook-controller derives from a `Notebook`.
//!
//! The controller and the gateway's folder mode both call these functions, so
//! a Notebook is routed identically with or without a cluster. The output
//! matches Kubeflow's `generateVirtualService` and `generateService` field
//! for field (see shared/REFERENCE.md), including what it leaves out: no
//! timeout and no retries, because a timeout once cut terminal websockets.

use std::collections::BTreeMap;

use portico_api::istio::{
    Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRewrite, HttpRoute, HttpRouteDestination,
    PortSelector, StringMatch, VirtualService, VirtualServiceSpec,
};
use portico_api::k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use portico_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use portico_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use portico_api::notebook::{HEADERS_REQUEST_SET_ANNOTATION, Notebook, REWRITE_URI_ANNOTATION};
use portico_api::{ObjectMeta, Resource};

use crate::diagnostic::{Diagnostic, ObjectRef};

/// Port the notebook Service listens on (Kubeflow's `DefaultServingPort`).
pub const SERVING_PORT: i32 = 80;
/// Container port used when the notebook container declares none.
pub const DEFAULT_CONTAINER_PORT: i32 = 8888;

/// The notebook-controller's environment, with Kubeflow's names and defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotebookSettings {
    /// `ISTIO_GATEWAY`: the Gateway the VirtualServices bind to.
    pub istio_gateway: String,
    /// `ISTIO_HOST`: the VirtualServices' host.
    pub istio_host: String,
    /// `CLUSTER_DOMAIN`: suffix of Service host names.
    pub cluster_domain: String,
}

impl Default for NotebookSettings {
    fn default() -> Self {
        Self {
            istio_gateway: "kubeflow/kubeflow-gateway".to_string(),
            istio_host: "*".to_string(),
            cluster_domain: "cluster.local".to_string(),
        }
    }
}

/// `/notebook/<namespace>/<name>/`: the prefix a notebook is served under.
pub fn notebook_prefix(namespace: &str, name: &str) -> String {
    format!("/notebook/{namespace}/{name}/")
}

/// `<name>.<namespace>.svc.<cluster domain>`: the notebook Service's host,
/// its route's destination (the lifecycle's key for a notebook).
pub fn notebook_host(namespace: &str, name: &str, cluster_domain: &str) -> String {
    format!("{name}.{namespace}.svc.{cluster_domain}")
}

/// `notebook-<namespace>-<name>`: the VirtualService's name.
pub fn virtual_service_name(namespace: &str, name: &str) -> String {
    format!("notebook-{namespace}-{name}")
}

/// The VirtualService Kubeflow creates for `notebook`, and diagnostics for
/// annotations it could not use (the route is still produced, as Kubeflow
/// does: a bad header annotation yields an empty header map).
pub fn notebook_virtual_service(notebook: &Notebook, settings: &NotebookSettings) -> (VirtualService, Vec<Diagnostic>) {
    let name = notebook.metadata.name.clone().unwrap_or_default();
    let namespace = notebook.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    let annotations = notebook.metadata.annotations.clone().unwrap_or_default();
    let object = ObjectRef::new("Notebook", &namespace, &name);
    let mut diagnostics = Vec::new();

    let prefix = notebook_prefix(&namespace, &name);
    let rewrite =
        annotations.get(REWRITE_URI_ANNOTATION).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| prefix.clone());
    let headers_set = match annotations.get(HEADERS_REQUEST_SET_ANNOTATION).filter(|v| !v.is_empty()) {
        None => BTreeMap::new(),
        Some(json) => serde_json::from_str::<BTreeMap<String, String>>(json).unwrap_or_else(|error| {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("metadata.annotations[{HEADERS_REQUEST_SET_ANNOTATION}]"),
                format!("not a JSON object of strings ({error}); no request headers are set"),
            ));
            BTreeMap::new()
        }),
    };

    let route = HttpRoute {
        matches: vec![HttpMatchRequest { uri: Some(StringMatch::prefix(prefix)), ..HttpMatchRequest::default() }],
        rewrite: Some(HttpRewrite { uri: Some(rewrite), ..HttpRewrite::default() }),
        headers: Some(Headers {
            request: Some(HeaderOperations { set: headers_set, ..HeaderOperations::default() }),
            response: None,
        }),
        route: vec![HttpRouteDestination {
            destination: Destination {
                host: notebook_host(&namespace, &name, &settings.cluster_domain),
                subset: None,
                port: Some(PortSelector { number: SERVING_PORT as u32 }),
            },
            weight: None,
            headers: None,
        }],
        ..HttpRoute::default()
    };
    let spec = VirtualServiceSpec {
        hosts: vec![settings.istio_host.clone()],
        gateways: vec![settings.istio_gateway.clone()],
        http: vec![route],
        export_to: Vec::new(),
    };
    let mut virtual_service = VirtualService::new(&virtual_service_name(&namespace, &name), spec);
    virtual_service.metadata = derived_metadata(notebook, virtual_service_name(&namespace, &name), &namespace);
    (virtual_service, diagnostics)
}

/// The Service Kubeflow creates for `notebook`: ClusterIP, selector
/// `statefulset=<name>`, port 80 named `http-<name>` to the first container
/// port (8888 when none is declared).
pub fn notebook_service(notebook: &Notebook) -> Service {
    let name = notebook.metadata.name.clone().unwrap_or_default();
    let namespace = notebook.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    let target_port = notebook_container_port(notebook);
    Service {
        metadata: derived_metadata(notebook, name.clone(), &namespace),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(BTreeMap::from([("statefulset".to_string(), name.clone())])),
            ports: Some(vec![ServicePort {
                name: Some(format!("http-{name}")),
                port: SERVING_PORT,
                target_port: Some(IntOrString::Int(target_port)),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The first port of the first container, or 8888.
pub fn notebook_container_port(notebook: &Notebook) -> i32 {
    notebook
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|pod| pod.containers.first())
        .and_then(|container| container.ports.as_ref())
        .and_then(|ports| ports.first())
        .map_or(DEFAULT_CONTAINER_PORT, |port| port.container_port)
}

/// The owner reference Kubeflow puts on everything it derives from
/// `notebook` (controller-runtime's `SetControllerReference`: `controller` and
/// `blockOwnerDeletion` true); `None` when the Notebook has no uid, i.e. did
/// not come from an API server.
pub fn notebook_owner_reference(notebook: &Notebook) -> Option<OwnerReference> {
    notebook.controller_owner_ref(&()).map(|owner| OwnerReference { block_owner_deletion: Some(true), ..owner })
}

/// Metadata of an object owned by `notebook`.
fn derived_metadata(notebook: &Notebook, name: String, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        owner_references: notebook_owner_reference(notebook).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}
