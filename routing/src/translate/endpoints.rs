//! Destination `host:port` -> ready endpoint addresses, from Services and
//! EndpointSlices (what kube-proxy would do, done at the gateway).

use std::collections::{BTreeMap, HashMap};

use portico_api::k8s_openapi::api::core::v1::Service;
use portico_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use portico_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::incremental::views::{PodRef, ServiceView, SliceView};
use crate::table::{Cluster, Endpoint, cluster_name};

/// Label EndpointSlices carry to name their Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Services indexed by `name.namespace.svc.<domain>`, and their
/// EndpointSlices by Service: finding a Service's endpoints costs its own
/// slices, not every slice of the cluster.
pub(crate) struct ServiceIndex<'a> {
    by_host: BTreeMap<String, &'a Service>,
    /// (namespace, Service name) -> its slices.
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    meshed: &'a std::collections::BTreeSet<String>,
    injected_pods: Option<&'a crate::resources::InjectedPods>,
}

/// The Service an EndpointSlice belongs to: (namespace, name).
pub(crate) fn slice_service(slice: &EndpointSlice) -> Option<(&str, &str)> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((slice.metadata.namespace.as_deref().unwrap_or("default"), service.as_str()))
}

/// `name.namespace.svc.<domain>`: the host a Service is reached by.
pub(crate) fn service_host(namespace: &str, name: &str, cluster_domain: &str) -> String {
    format!("{name}.{namespace}.svc.{cluster_domain}")
}

/// The port of a Service that has exactly one.
pub(crate) fn only_port(service: &Service) -> Option<u16> {
    let ports = service.spec.as_ref()?.ports.as_ref()?;
    match ports.as_slice() {
        [only] => u16::try_from(only.port).ok(),
        _ => None,
    }
}

impl<'a> ServiceIndex<'a> {
    pub fn new(
        services: &'a [Service],
        slices: &'a [EndpointSlice],
        meshed: &'a std::collections::BTreeSet<String>,
        injected_pods: Option<&'a crate::resources::InjectedPods>,
        cluster_domain: &str,
    ) -> Self {
        let by_host = services
            .iter()
            .filter_map(|service| {
                let name = service.metadata.name.as_deref()?;
                let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
                Some((service_host(namespace, name, cluster_domain), service))
            })
            .collect();
        let mut by_service: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>> = HashMap::new();
        for slice in slices {
            if let Some(key) = slice_service(slice) {
                by_service.entry(key).or_default().push(slice);
            }
        }
        Self { by_host, slices: by_service, meshed, injected_pods }
    }

    /// The port of a Service that has exactly one.
    pub fn only_port(&self, host: &str) -> Option<u16> {
        only_port(self.by_host.get(host)?)
    }

    /// The cluster for `host:port`, when `host` is a known Service with
    /// EndpointSlices. `None` lets the gateway fall back to its `--resolve`
    /// overrides and DNS.
    pub fn cluster(&self, host: &str, port: u16) -> Option<(String, Cluster)> {
        let service = self.by_host.get(host)?;
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        let name = service.metadata.name.as_deref()?;
        let slices = self.slices.get(&(namespace, name)).map(Vec::as_slice).unwrap_or_default();
        let slices: Vec<SliceView> = slices.iter().map(|slice| SliceView::from(*slice)).collect();
        let meshed = self.meshed.contains(namespace);
        let cluster = cluster_of(&ServiceView::from(*service), slices.iter(), port, meshed, self.injected_pods)?;
        Some((cluster_name(host, port), cluster))
    }
}

/// For an endpoint of a meshed namespace: whether its pod is known to carry
/// no sidecar (`plain`), else the pod's service account when known. An
/// unknown pod (no pod list, or no Pod `targetRef`) counts as meshed with
/// any service account of the namespace.
fn sidecar_of(
    injected_pods: Option<&crate::resources::InjectedPods>,
    namespace: &str,
    pod: Option<&PodRef>,
) -> (bool, Option<String>) {
    let (Some(pods), Some(pod)) = (injected_pods, pod) else { return (false, None) };
    let pod_namespace = pod.namespace.as_deref().unwrap_or(namespace).to_string();
    match pods.get(&(pod_namespace, pod.name.to_string())) {
        Some(service_account) => (false, Some(service_account.clone())),
        None => (true, None),
    }
}

/// The ready endpoints of `service`'s `port` in its EndpointSlices
/// (`slices`, all of that Service); `None` when it has no port `port` or no
/// slice at all.
pub(crate) fn cluster_of<'s>(
    service: &ServiceView,
    slices: impl Iterator<Item = &'s SliceView>,
    port: u16,
    mesh_tls: bool,
    injected_pods: Option<&crate::resources::InjectedPods>,
) -> Option<Cluster> {
    let namespace = service.key.0.as_str();
    let service_port = service.ports.iter().find(|p| i32::from(port) == p.port)?;
    let mut endpoints = Vec::new();
    let mut any_slice = false;
    for slice in slices {
        any_slice = true;
        // EndpointSlice ports carry the Service port's name; an unnamed
        // Service port matches the slice's unnamed port.
        let slice_port = slice
            .ports
            .iter()
            .find(|(name, _)| name.as_deref().unwrap_or("") == service_port.name.as_deref().unwrap_or(""));
        let target = match (slice_port.and_then(|(_, port)| *port), &service_port.target_port) {
            (Some(port), _) => u16::try_from(port).ok(),
            (None, Some(IntOrString::Int(port))) => u16::try_from(*port).ok(),
            (None, None) => Some(port),
            (None, Some(IntOrString::String(_))) => None,
        };
        let Some(target) = target else { continue };
        for endpoint in slice.endpoints.iter() {
            if endpoint.ready == Some(false) {
                continue;
            }
            let (plain, service_account) = match mesh_tls {
                true => sidecar_of(injected_pods, namespace, endpoint.pod.as_ref()),
                false => (false, None),
            };
            endpoints.extend(endpoint.addresses.iter().map(|&address| Endpoint {
                address,
                port: target,
                plain,
                service_account: service_account.clone(),
            }));
        }
    }
    endpoints.sort_by_key(|e| (e.address, e.port));
    endpoints.dedup_by_key(|e| (e.address, e.port));
    // The cluster is kept while a route names it: its exact length, not
    // the four slots `extend` grows one endpoint to.
    endpoints.shrink_to_fit();
    any_slice.then_some(Cluster { endpoints, mesh_tls })
}
