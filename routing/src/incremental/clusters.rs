//! The clusters of a table: the endpoints of every destination some route
//! names, kept while at least one route names it and recomputed when its
//! Service, EndpointSlices or mesh membership change. Beside them, which
//! VirtualServices read each Service host's ports.

use std::collections::HashMap;
use std::sync::Arc;

use super::small_set::SmallSet;
use super::{IncrementalTranslator, Key, Name};
use crate::table::{Cluster, cluster_name};
use crate::translate::endpoints::{cluster_of, service_host};

/// What refers to each destination host, in one map: a notebook's route
/// names the very host its translation read the port of.
#[derive(Default)]
pub(super) struct HostRefs {
    hosts: HashMap<String, HostUse>,
}

#[derive(Default)]
struct HostUse {
    /// `(port, placed routes naming it)`, sorted by port (a `Vec`: nearly
    /// every host has one port, and a `BTreeMap` node is 200 bytes).
    ports: Vec<(u16, usize)>,
    /// VirtualServices whose translation read the host's Service ports.
    readers: SmallSet<Key>,
}

impl HostUse {
    fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.readers.is_empty()
    }
}

impl IncrementalTranslator {
    /// The translation of `reader` read `host`'s Service ports.
    pub(super) fn add_port_reader(&mut self, host: &str, reader: &Key) {
        self.clusters.hosts.entry(host.to_string()).or_default().readers.insert(reader.clone());
    }

    /// The translation of `reader` that read `host`'s ports is gone.
    pub(super) fn remove_port_reader(&mut self, host: &str, reader: &Key) {
        let Some(refs) = self.clusters.hosts.get_mut(host) else { return };
        refs.readers.remove(reader);
        if refs.is_empty() {
            self.clusters.hosts.remove(host);
        }
    }

    /// The VirtualServices whose translation read `host`'s ports.
    pub(super) fn port_readers(&self, host: &str) -> Vec<Key> {
        self.clusters.hosts.get(host).into_iter().flat_map(|refs| (&refs.readers).into_iter().cloned()).collect()
    }

    /// A placed route names `host:port`.
    pub(super) fn reference_cluster(&mut self, host: &str, port: u16) {
        let ports = &mut self.clusters.hosts.entry(host.to_string()).or_default().ports;
        let at = match ports.binary_search_by_key(&port, |(p, _)| *p) {
            Ok(at) => at,
            Err(at) => {
                ports.reserve_exact(1);
                ports.insert(at, (port, 0));
                at
            }
        };
        ports[at].1 += 1;
        if ports[at].1 == 1 {
            self.set_cluster(host, port);
        }
    }

    /// A route that named `host:port` is gone.
    pub(super) fn release_cluster(&mut self, host: &str, port: u16) {
        let Some(refs) = self.clusters.hosts.get_mut(host) else { return };
        let Ok(at) = refs.ports.binary_search_by_key(&port, |(p, _)| *p) else { return };
        refs.ports[at].1 = refs.ports[at].1.saturating_sub(1);
        if refs.ports[at].1 == 0 {
            refs.ports.remove(at);
            if refs.is_empty() {
                self.clusters.hosts.remove(host);
            }
            self.cluster_parts.set(&cluster_name(host, port), None);
        }
    }

    /// Recomputes the named clusters of the Service `service`.
    pub(super) fn refresh_service_clusters(&mut self, service: &Key) {
        let host = service_host(&service.0, &service.1, &self.settings.cluster_domain);
        let ports: Vec<u16> =
            self.clusters.hosts.get(&host).map(|refs| refs.ports.iter().map(|(p, _)| *p).collect()).unwrap_or_default();
        for port in ports {
            self.set_cluster(&host, port);
        }
    }

    /// Recomputes the named clusters of every Service of `namespace`.
    pub(super) fn refresh_namespace_clusters(&mut self, namespace: &str) {
        let names: Vec<Name> =
            self.inputs.services_by_namespace.get(namespace).into_iter().flatten().cloned().collect();
        for name in names {
            self.refresh_service_clusters(&(Name::from(namespace), name));
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
        let key = self.service_at(host)?;
        let service = self.inputs.services.get(&key)?;
        let slices: Vec<_> = self
            .inputs
            .slices_by_service
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.inputs.endpoint_slices.get(&(key.0.clone(), name.clone())))
            .map(|slice| slice.view())
            .collect();
        let meshed = self.inputs.meshed_namespaces.contains(key.0.as_str());
        cluster_of(
            &service.view(),
            slices.iter().map(|slice| &**slice),
            port,
            meshed,
            self.inputs.injected_pods.as_ref(),
        )
    }
}
