//! The clusters of a table: the endpoints of every destination some route
//! names, kept while at least one route names it and recomputed when its
//! Service, EndpointSlices or mesh membership change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{IncrementalTranslator, Key};
use crate::table::{Cluster, cluster_name};
use crate::translate::endpoints::{cluster_of, service_host};

/// How many placed routes name each destination.
#[derive(Default)]
pub(super) struct ClusterRefs {
    /// host -> port -> references.
    ports_by_host: HashMap<String, BTreeMap<u16, usize>>,
}

impl IncrementalTranslator {
    /// A placed route names `host:port`.
    pub(super) fn reference_cluster(&mut self, host: &str, port: u16) {
        let count = self.clusters.ports_by_host.entry(host.to_string()).or_default().entry(port).or_default();
        *count += 1;
        if *count == 1 {
            self.set_cluster(host, port);
        }
    }

    /// A route that named `host:port` is gone.
    pub(super) fn release_cluster(&mut self, host: &str, port: u16) {
        let Some(ports) = self.clusters.ports_by_host.get_mut(host) else { return };
        let Some(count) = ports.get_mut(&port) else { return };
        *count = count.saturating_sub(1);
        if *count == 0 {
            ports.remove(&port);
            if ports.is_empty() {
                self.clusters.ports_by_host.remove(host);
            }
            self.cluster_parts.set(&cluster_name(host, port), None);
        }
    }

    /// Recomputes the named clusters of the Service `service`.
    pub(super) fn refresh_service_clusters(&mut self, service: &Key) {
        let host = service_host(&service.0, &service.1, &self.settings.cluster_domain);
        let ports: Vec<u16> =
            self.clusters.ports_by_host.get(&host).map(|ports| ports.keys().copied().collect()).unwrap_or_default();
        for port in ports {
            self.set_cluster(&host, port);
        }
    }

    /// Recomputes the named clusters of every Service of `namespace`.
    pub(super) fn refresh_namespace_clusters(&mut self, namespace: &str) {
        let names: Vec<String> =
            self.inputs.services_by_namespace.get(namespace).into_iter().flatten().cloned().collect();
        for name in names {
            self.refresh_service_clusters(&(namespace.to_string(), name));
        }
    }

    fn set_cluster(&mut self, host: &str, port: u16) {
        let cluster = self.compute_cluster(host, port).map(Arc::new);
        let name = cluster_name(host, port);
        if self.cluster_parts.get(&name) != cluster.as_ref() {
            self.cluster_parts.set(&name, cluster);
        }
    }

    /// `host:port`'s endpoints from its Service's own slices; `None` for an
    /// unknown Service or one without slices (the gateway then resolves).
    fn compute_cluster(&self, host: &str, port: u16) -> Option<Cluster> {
        let key = self.inputs.services_by_host.get(host)?;
        let service = self.inputs.services.get(key)?;
        let slices = self
            .inputs
            .slices_by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.inputs.endpoint_slices.get(&(key.0.clone(), name.clone())))
            .map(Arc::as_ref);
        let meshed = self.inputs.meshed_namespaces.contains(&key.0);
        cluster_of(service, slices, port, meshed, self.inputs.injected_pods.as_ref())
    }
}
