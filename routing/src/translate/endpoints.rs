//! Destination `host:port` -> ready endpoint addresses, from Services and
//! EndpointSlices (what kube-proxy would do, done at the gateway).

use std::collections::BTreeMap;
use std::net::IpAddr;

use portico_api::k8s_openapi::api::core::v1::Service;
use portico_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use portico_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::table::{Cluster, Endpoint, cluster_name};

/// Label EndpointSlices carry to name their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Services indexed by `name.namespace.svc.<domain>`.
pub(super) struct ServiceIndex<'a> {
    by_host: BTreeMap<String, &'a Service>,
    slices: &'a [EndpointSlice],
    meshed: &'a std::collections::BTreeSet<String>,
    injected_pods: Option<&'a crate::resources::InjectedPods>,
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
                Some((format!("{name}.{namespace}.svc.{cluster_domain}"), service))
            })
            .collect();
        Self { by_host, slices, meshed, injected_pods }
    }

    /// The port of a Service that has exactly one.
    pub fn only_port(&self, host: &str) -> Option<u16> {
        let ports = self.by_host.get(host)?.spec.as_ref()?.ports.as_ref()?;
        match ports.as_slice() {
            [only] => u16::try_from(only.port).ok(),
            _ => None,
        }
    }

    /// For an endpoint of a meshed namespace: whether its pod is known to
    /// carry no sidecar (`plain`), else the pod's service account when
    /// known. An unknown pod (no pod list, or no Pod `targetRef`) counts as
    /// meshed with any service account of the namespace.
    fn sidecar_of(
        &self,
        namespace: &str,
        target: Option<&portico_api::k8s_openapi::api::core::v1::ObjectReference>,
    ) -> (bool, Option<String>) {
        let (Some(pods), Some(target)) = (self.injected_pods, target) else { return (false, None) };
        let Some(name) = target.name.clone().filter(|_| target.kind.as_deref() == Some("Pod")) else {
            return (false, None);
        };
        let pod_namespace = target.namespace.clone().unwrap_or_else(|| namespace.to_string());
        match pods.get(&(pod_namespace, name)) {
            Some(service_account) => (false, Some(service_account.clone())),
            None => (true, None),
        }
    }

    /// The cluster for `host:port`, when `host` is a known Service with
    /// EndpointSlices. `None` lets the gateway fall back to its `--resolve`
    /// overrides and DNS.
    pub fn cluster(&self, host: &str, port: u16) -> Option<(String, Cluster)> {
        let service = self.by_host.get(host)?;
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        let name = service.metadata.name.as_deref()?;
        let service_port = service.spec.as_ref()?.ports.as_ref()?.iter().find(|p| i32::from(port) == p.port)?;
        let mesh_tls = self.meshed.contains(namespace);
        let mut endpoints = Vec::new();
        let mut any_slice = false;
        for slice in self.slices.iter().filter(|slice| {
            slice.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(String::as_str)
                    == Some(name)
        }) {
            any_slice = true;
            // EndpointSlice ports carry the Service port's name; an unnamed
            // Service port matches the slice's unnamed port.
            let slice_port = slice.ports.as_ref().and_then(|ports| {
                ports.iter().find(|p| p.name.as_deref().unwrap_or("") == service_port.name.as_deref().unwrap_or(""))
            });
            let target = match (slice_port.and_then(|p| p.port), &service_port.target_port) {
                (Some(port), _) => u16::try_from(port).ok(),
                (None, Some(IntOrString::Int(port))) => u16::try_from(*port).ok(),
                (None, None) => Some(port),
                (None, Some(IntOrString::String(_))) => None,
            };
            let Some(target) = target else { continue };
            for endpoint in &slice.endpoints {
                if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                let (plain, service_account) = match mesh_tls {
                    true => self.sidecar_of(namespace, endpoint.target_ref.as_ref()),
                    false => (false, None),
                };
                endpoints.extend(endpoint.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()).map(|address| {
                    Endpoint { address, port: target, plain, service_account: service_account.clone() }
                }));
            }
        }
        endpoints.sort_by_key(|e| (e.address, e.port));
        endpoints.dedup_by_key(|e| (e.address, e.port));
        any_slice.then(|| (cluster_name(host, port), Cluster { endpoints, mesh_tls }))
    }
}
