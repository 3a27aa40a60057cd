//! Versioned route snapshots: what the route index publishes.
//!
//! A [`Snapshot`] holds, per known gateway instance, the [`RouteTable`]
//! `translate` built and the diagnostics of what it skipped. The
//! [`Publisher`] numbers them: the version goes up only when some table or
//! diagnostic changed, so a consumer (the discovery server) can use the
//! version alone to decide whether to push.

use std::sync::Arc;

use portico_routing::{Diagnostic, GatewayIdentity, RouteTable};
use serde_json::{Value, json};
use tokio::sync::watch;

/// One gateway instance's routes.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayRoutes {
    pub identity: GatewayIdentity,
    /// `version` is set to the snapshot's version.
    pub table: Arc<RouteTable>,
    pub diagnostics: Arc<[Diagnostic]>,
}

/// Everything the route index knows at one version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// 0 until the caches have filled and the first tables were built.
    pub version: u64,
    pub gateways: Vec<GatewayRoutes>,
}

impl Snapshot {
    /// The routes built for gateways with `identity`'s namespace and labels.
    pub fn find(&self, key: &crate::demand::IdentityKey) -> Option<&GatewayRoutes> {
        self.gateways.iter().find(|g| crate::demand::key_of(&g.identity) == *key)
    }

    /// The JSON `/debug/snapshot` serves: version, and per gateway instance
    /// its labels, listener/virtual host/route counts and diagnostics.
    pub fn summary(&self) -> Value {
        let gateways: Vec<Value> = self
            .gateways
            .iter()
            .map(|gateway| {
                let virtual_hosts: usize = gateway.table.listeners.iter().map(|l| l.virtual_hosts.len()).sum();
                json!({
                    "name": gateway.identity.name,
                    "namespace": gateway.identity.namespace,
                    "labels": gateway.identity.labels,
                    "listeners": gateway.table.listeners.len(),
                    "virtualHosts": virtual_hosts,
                    "routes": route_count(&gateway.table),
                    "clusters": gateway.table.clusters.len(),
                    "diagnostics": gateway.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "version": self.version,
            "routes": self.gateways.iter().map(|g| route_count(&g.table)).sum::<usize>(),
            "diagnostics": self.gateways.iter().map(|g| g.diagnostics.len()).sum::<usize>(),
            "gateways": gateways,
        })
    }
}

/// Routes over all listeners and virtual hosts of `table`.
pub fn route_count(table: &RouteTable) -> usize {
    table.listeners.iter().flat_map(|l| &l.virtual_hosts).map(|v| v.routes.len()).sum()
}

/// Publishes snapshots on a `watch` channel, numbering the ones that differ.
#[derive(Debug)]
pub struct Publisher {
    sender: watch::Sender<Arc<Snapshot>>,
}

impl Publisher {
    /// A publisher and the receiver of its snapshots (version 0 at first).
    pub fn new() -> (Publisher, watch::Receiver<Arc<Snapshot>>) {
        let (sender, receiver) = watch::channel(Arc::new(Snapshot::default()));
        (Publisher { sender }, receiver)
    }

    /// Publishes `built` (tables as `translate` returned them) as the next
    /// version unless it equals the current snapshot's content. Returns the
    /// version now current.
    pub fn publish(&self, built: Vec<(GatewayIdentity, RouteTable, Vec<Diagnostic>)>) -> u64 {
        let current = self.sender.borrow().clone();
        let unchanged = current.version > 0
            && current.gateways.len() == built.len()
            && current.gateways.iter().zip(&built).all(|(old, (identity, table, diagnostics))| {
                old.identity == *identity && old.table.same_content(table) && *old.diagnostics == **diagnostics
            });
        if unchanged {
            return current.version;
        }
        let version = current.version + 1;
        let gateways = built
            .into_iter()
            .map(|(identity, mut table, diagnostics)| {
                table.version = version.to_string();
                GatewayRoutes { identity, table: Arc::new(table), diagnostics: diagnostics.into() }
            })
            .collect();
        self.sender.send_replace(Arc::new(Snapshot { version, gateways }));
        version
    }

    /// Another receiver of the snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use portico_routing::{ObjectRef, Resources, translate};

    use super::*;

    fn built(yaml: &str) -> Vec<(GatewayIdentity, RouteTable, Vec<Diagnostic>)> {
        let mut resources = Resources::default();
        assert_eq!(resources.add_yaml(yaml, "test"), vec![]);
        let identity = GatewayIdentity::default();
        let (table, diagnostics) = translate(&resources, &identity);
        vec![(identity, table, diagnostics)]
    }

    const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: kubeflow-gateway, namespace: kubeflow}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"#;

    fn with_route(prefix: &str) -> String {
        format!(
            r#"{GATEWAY}---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: a, namespace: team}}
spec:
  hosts: ["*"]
  gateways: [kubeflow/kubeflow-gateway]
  http: [{{match: [{{uri: {{prefix: "{prefix}"}}}}], route: [{{destination: {{host: a.team.svc.cluster.local, port: {{number: 80}}}}}}]}}]
"#
        )
    }

    #[test]
    fn versions_go_up_only_on_change() {
        let (publisher, receiver) = Publisher::new();
        assert_eq!(receiver.borrow().version, 0);
        assert_eq!(publisher.publish(built(GATEWAY)), 1);
        assert_eq!(publisher.publish(built(GATEWAY)), 1, "an identical table is not a new version");
        assert_eq!(publisher.publish(built(&with_route("/a/"))), 2);
        let snapshot = receiver.borrow().clone();
        assert_eq!(snapshot.version, 2);
        assert_eq!(snapshot.gateways[0].table.version, "2");
        let summary = snapshot.summary();
        assert_eq!(summary["version"], 2);
        assert_eq!(summary["routes"], 1);
        assert_eq!(summary["gateways"][0]["routes"], 1);
        assert_eq!(summary["gateways"][0]["name"], "portico-gateway");
        assert_eq!(publisher.publish(built(&with_route("/b/"))), 3);
    }

    #[test]
    fn the_first_build_is_published_even_when_empty() {
        let (publisher, receiver) = Publisher::new();
        assert_eq!(publisher.publish(built("")), 1);
        assert_eq!(receiver.borrow().summary()["routes"], 0);
    }

    #[test]
    fn diagnostics_changes_are_new_versions() {
        let (publisher, _receiver) = Publisher::new();
        let mut first = built(GATEWAY);
        assert_eq!(publisher.publish(first.clone()), 1);
        first[0].2.push(Diagnostic::warning(&ObjectRef::new("VirtualService", "team", "x"), "spec", "odd"));
        assert_eq!(publisher.publish(first), 2);
        assert_eq!(publisher.subscribe().borrow().summary()["diagnostics"], 1);
    }
}
