//! A route table as named, individually replaceable pieces: what the
//! discovery protocol sends.
//!
//! [`TableParts::split`] cuts a [`RouteTable`] into listeners, virtual hosts,
//! routes and clusters, each with a stable name, its parent's name and a
//! sort key ([`crate::order_key`]) so that a changed notebook changes exactly
//! its own pieces. [`TableParts::assemble`] puts them back together; the
//! round trip is the identity (tested below and in the gateway's tests).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::order_key;
use crate::security::SecurityTable;
use crate::table::{
    Cluster, ErrorPages, Listener, ListenerProtocol, PathNormalizationMode, Route, RouteTable, TlsServer, VirtualHost,
};
use crate::workload::WorkloadState;

/// A listener without its virtual hosts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerPart {
    pub name: String,
    pub port: u16,
    pub protocol: ListenerProtocol,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsServer>,
    /// Envoy configures path normalization per listener; every listener of
    /// a table carries the table's mode.
    #[serde(default)]
    pub path_normalization: PathNormalizationMode,
    /// Authentication and authorization apply to the whole gateway; every
    /// listener carries them, like the path normalization (policies change
    /// rarely, so re-sending listeners on a policy change is cheap).
    #[serde(default, skip_serializing_if = "SecurityTable::is_empty")]
    pub security: SecurityTable,
    /// The listener's error pages (JupyterHub's proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_pages: Option<ErrorPages>,
}

/// A virtual host without its routes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VirtualHostPart {
    pub name: String,
    pub domains: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
}

/// A piece with its place in the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed<T> {
    /// The containing piece's name ("" for listeners).
    pub parent: String,
    /// Sort key among the parent's children.
    pub order: String,
    pub value: T,
}

/// Every piece of one table, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableParts {
    pub listeners: BTreeMap<String, Placed<ListenerPart>>,
    pub virtual_hosts: BTreeMap<String, Placed<VirtualHostPart>>,
    pub routes: BTreeMap<String, Placed<Route>>,
    /// `host:port` -> endpoints; unordered.
    pub clusters: BTreeMap<String, Cluster>,
}

/// A change to a table's pieces, by name: `Some` is the piece's new
/// version, `None` its removal. What an incremental translation produces,
/// what a discovery response carries once decoded, and what the gateway's
/// [`crate::Matcher`] applies in place. Keyed by name, so that a later
/// change of the same piece in one batch replaces the earlier one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableDelta {
    pub listeners: BTreeMap<String, Option<Placed<ListenerPart>>>,
    pub virtual_hosts: BTreeMap<String, Option<Placed<VirtualHostPart>>>,
    pub routes: BTreeMap<String, Option<Placed<Arc<Route>>>>,
    pub clusters: BTreeMap<String, Option<Arc<Cluster>>>,
    /// What runs behind a destination host (cluster mode only: the
    /// controller derives it from Notebooks; see [`crate::workload`]).
    pub workloads: BTreeMap<String, Option<Arc<WorkloadState>>>,
}

impl TableDelta {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
            && self.virtual_hosts.is_empty()
            && self.routes.is_empty()
            && self.clusters.is_empty()
            && self.workloads.is_empty()
    }

    /// Number of pieces changed or removed.
    pub fn len(&self) -> usize {
        self.listeners.len() + self.virtual_hosts.len() + self.routes.len() + self.clusters.len() + self.workloads.len()
    }

    /// Folds `later` into `self`: the later change of a piece wins.
    pub fn merge(&mut self, later: TableDelta) {
        self.listeners.extend(later.listeners);
        self.virtual_hosts.extend(later.virtual_hosts);
        self.routes.extend(later.routes);
        self.clusters.extend(later.clusters);
        self.workloads.extend(later.workloads);
    }

    /// Every piece of `parts`, as additions (a full state).
    pub fn everything(parts: &TableParts) -> TableDelta {
        TableDelta {
            listeners: parts.listeners.iter().map(|(name, part)| (name.clone(), Some(part.clone()))).collect(),
            virtual_hosts: parts.virtual_hosts.iter().map(|(name, part)| (name.clone(), Some(part.clone()))).collect(),
            routes: parts
                .routes
                .iter()
                .map(|(name, part)| {
                    let placed = Placed {
                        parent: part.parent.clone(),
                        order: part.order.clone(),
                        value: Arc::new(part.value.clone()),
                    };
                    (name.clone(), Some(placed))
                })
                .collect(),
            clusters: parts
                .clusters
                .iter()
                .map(|(name, cluster)| (name.clone(), Some(Arc::new(cluster.clone()))))
                .collect(),
            workloads: BTreeMap::new(),
        }
    }
}

/// The sort keys handed out before, so that a new split keeps them.
#[derive(Clone, Debug, Default)]
pub struct OrderHistory {
    keys: HashMap<String, String>,
}

impl TableParts {
    /// Splits `table`, reusing the sort keys of `history` where the order
    /// allows and recording the new ones in it.
    pub fn split(table: &RouteTable, history: &mut OrderHistory) -> TableParts {
        let mut parts = TableParts { clusters: table.clusters.clone(), ..TableParts::default() };
        let mut next_keys = HashMap::new();
        let listener_names: Vec<&str> = table.listeners.iter().map(|l| l.name.as_str()).collect();
        let listener_keys = history.keys_for("", &listener_names, &mut next_keys);
        for (listener, order) in table.listeners.iter().zip(listener_keys) {
            let value = ListenerPart {
                name: listener.name.clone(),
                port: listener.port,
                protocol: listener.protocol,
                tls: listener.tls.clone(),
                path_normalization: table.path_normalization,
                security: table.security.clone(),
                error_pages: listener.error_pages.clone(),
            };
            parts.listeners.insert(listener.name.clone(), Placed { parent: String::new(), order, value });
            let host_names: Vec<String> =
                listener.virtual_hosts.iter().map(|v| virtual_host_name(&listener.name, &v.name)).collect();
            let host_keys = history.keys_for(&listener.name, &host_names, &mut next_keys);
            for ((host, host_name), order) in listener.virtual_hosts.iter().zip(&host_names).zip(host_keys) {
                let value = VirtualHostPart {
                    name: host.name.clone(),
                    domains: host.domains.clone(),
                    https_redirect: host.https_redirect,
                };
                parts.virtual_hosts.insert(host_name.clone(), Placed { parent: listener.name.clone(), order, value });
                let route_names = unique_route_names(host_name, &host.routes);
                let route_keys = history.keys_for(host_name, &route_names, &mut next_keys);
                for ((route, name), order) in host.routes.iter().zip(route_names).zip(route_keys) {
                    parts.routes.insert(name, Placed { parent: host_name.clone(), order, value: route.clone() });
                }
            }
        }
        history.keys = next_keys;
        parts
    }

    /// The table these pieces describe. Pieces whose parent is missing are
    /// left out (the receiver checks parents before accepting a piece).
    pub fn assemble(&self, version: &str) -> RouteTable {
        let mut hosts_by_listener: HashMap<&str, Vec<(&str, &Placed<VirtualHostPart>)>> = HashMap::new();
        for (name, host) in &self.virtual_hosts {
            hosts_by_listener.entry(host.parent.as_str()).or_default().push((name, host));
        }
        let mut routes_by_host: HashMap<&str, Vec<&Placed<Route>>> = HashMap::new();
        for route in self.routes.values() {
            routes_by_host.entry(route.parent.as_str()).or_default().push(route);
        }
        let mut listeners: Vec<&Placed<ListenerPart>> = self.listeners.values().collect();
        listeners.sort_by(|a, b| a.order.cmp(&b.order));
        let path_normalization = listeners.first().map(|l| l.value.path_normalization).unwrap_or_default();
        let security = listeners.first().map(|l| l.value.security.clone()).unwrap_or_default();
        let listeners = listeners
            .into_iter()
            .map(|listener| {
                let mut hosts = hosts_by_listener.remove(listener.value.name.as_str()).unwrap_or_default();
                hosts.sort_by(|a, b| a.1.order.cmp(&b.1.order));
                let virtual_hosts = hosts
                    .into_iter()
                    .map(|(name, host)| {
                        let mut routes = routes_by_host.remove(name).unwrap_or_default();
                        routes.sort_by(|a, b| a.order.cmp(&b.order));
                        VirtualHost {
                            name: host.value.name.clone(),
                            domains: host.value.domains.clone(),
                            https_redirect: host.value.https_redirect,
                            routes: routes.into_iter().map(|r| r.value.clone()).collect(),
                        }
                    })
                    .collect();
                Listener {
                    name: listener.value.name.clone(),
                    port: listener.value.port,
                    protocol: listener.value.protocol,
                    tls: listener.value.tls.clone(),
                    error_pages: listener.value.error_pages.clone(),
                    virtual_hosts,
                }
            })
            .collect();
        RouteTable {
            version: version.to_string(),
            path_normalization,
            listeners,
            clusters: self.clusters.clone(),
            security,
        }
    }
}

impl OrderHistory {
    /// Keys for `names` under `parent`, recorded into `next` (keyed by
    /// parent and name, so equal names under different parents differ).
    fn keys_for<S: AsRef<str>>(&self, parent: &str, names: &[S], next: &mut HashMap<String, String>) -> Vec<String> {
        let scoped: Vec<String> = names.iter().map(|n| format!("{parent}\u{0}{}", n.as_ref())).collect();
        let keys = order_key::assign(&scoped, &self.keys);
        for (name, key) in scoped.into_iter().zip(&keys) {
            next.insert(name, key.clone());
        }
        keys
    }
}

/// `<listener>/<virtual host>`: unique across the table.
pub fn virtual_host_name(listener: &str, host: &str) -> String {
    format!("{listener}/{host}")
}

/// `<virtual host>/<route name>`, with `#2`, `#3`... for repeated rule names.
fn unique_route_names(host_name: &str, routes: &[Route]) -> Vec<String> {
    let mut seen = HashSet::new();
    routes
        .iter()
        .map(|route| {
            let base = format!("{host_name}/{}", route.name);
            let mut name = base.clone();
            let mut copy = 1;
            while !seen.insert(name.clone()) {
                copy += 1;
                name = format!("{base}#{copy}");
            }
            name
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GatewayIdentity, Resources, translate};

    fn table(notebooks: usize) -> RouteTable {
        let mut yaml = String::from(
            r#"
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: kubeflow-gateway, namespace: kubeflow}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: 8080, name: http2, protocol: HTTP}, hosts: ["*"]}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: dashboard, namespace: kubeflow}
spec:
  hosts: ["*"]
  gateways: [kubeflow/kubeflow-gateway]
  http: [{match: [{uri: {prefix: /}}], route: [{destination: {host: dashboard.kubeflow.svc.cluster.local, port: {number: 80}}}]}]
"#,
        );
        for i in 0..notebooks {
            yaml.push_str(&format!(
                r#"---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: notebook-nb{i}, namespace: team, creationTimestamp: "2026-01-01T00:{:02}:{:02}Z"}}
spec:
  hosts: ["*"]
  gateways: [kubeflow/kubeflow-gateway]
  http: [{{match: [{{uri: {{prefix: /notebook/team/nb{i}/}}}}], route: [{{destination: {{host: nb{i}.team.svc.cluster.local, port: {{number: 80}}}}}}]}}]
"#,
                i / 60,
                i % 60
            ));
        }
        let mut resources = Resources::default();
        assert_eq!(resources.add_yaml(&yaml, "test"), vec![]);
        let (table, diagnostics) = translate(&resources, &GatewayIdentity::default());
        assert_eq!(diagnostics, vec![]);
        table
    }

    #[test]
    fn split_then_assemble_is_the_identity() {
        let mut original = table(30);
        original.version = "7".to_string();
        let parts = TableParts::split(&original, &mut OrderHistory::default());
        assert_eq!(parts.listeners.len(), 2);
        assert_eq!(parts.routes.len(), original.route_count(), "{:?}", parts.routes.keys().take(3).collect::<Vec<_>>());
        assert_eq!(parts.assemble("7"), original);
    }

    #[test]
    fn a_new_notebook_is_one_new_route_per_listener() {
        let mut history = OrderHistory::default();
        let before = TableParts::split(&table(200), &mut history);
        let after = TableParts::split(&table(201), &mut history);
        let changed: Vec<&String> = after
            .routes
            .iter()
            .filter(|(name, route)| before.routes.get(*name) != Some(route))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(after.routes.len(), 2 * 202);
        assert!(changed.iter().all(|name| name.ends_with("/team.notebook-nb200.0")), "{changed:?}");
        assert_eq!(after.assemble(""), table(201));
    }
}
