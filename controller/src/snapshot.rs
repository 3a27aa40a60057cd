//! Versioned route snapshots: what the route index publishes for
//! `/debug/snapshot`, readiness and tests.
//!
//! A [`Snapshot`] holds, per known gateway instance, the size of its table
//! and the diagnostics of what translation skipped. The tables themselves
//! live in the discovery encoding ([`crate::discovery::encode`]), changed
//! piece by piece; this is the summary. The version goes up only when some
//! table or diagnostic changed, so a consumer can use it alone to decide
//! whether anything happened.

use std::sync::Arc;

use portico_routing::{Diagnostic, GatewayIdentity};
use serde_json::{Value, json};
use tokio::sync::watch;

/// How many pieces one table has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub listeners: usize,
    pub virtual_hosts: usize,
    pub routes: usize,
    pub clusters: usize,
}

/// One gateway instance's routes.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayRoutes {
    pub identity: GatewayIdentity,
    pub counts: TableCounts,
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
    /// The JSON `/debug/snapshot` serves: version, and per gateway instance
    /// its labels, listener/virtual host/route counts and diagnostics.
    pub fn summary(&self) -> Value {
        let gateways: Vec<Value> = self
            .gateways
            .iter()
            .map(|gateway| {
                json!({
                    "name": gateway.identity.name,
                    "namespace": gateway.identity.namespace,
                    "labels": gateway.identity.labels,
                    "listeners": gateway.counts.listeners,
                    "virtualHosts": gateway.counts.virtual_hosts,
                    "routes": gateway.counts.routes,
                    "clusters": gateway.counts.clusters,
                    "diagnostics": gateway.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "version": self.version,
            "routes": self.gateways.iter().map(|g| g.counts.routes).sum::<usize>(),
            "diagnostics": self.gateways.iter().map(|g| g.diagnostics.len()).sum::<usize>(),
            "gateways": gateways,
        })
    }
}

/// Publishes snapshots on a `watch` channel.
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

    /// Publishes `snapshot` (its version numbered by the caller).
    pub fn publish(&self, snapshot: Snapshot) {
        self.sender.send_replace(Arc::new(snapshot));
    }

    /// Another receiver of the snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use portico_routing::ObjectRef;

    use super::*;

    #[test]
    fn the_summary_counts_every_gateway() {
        let (publisher, receiver) = Publisher::new();
        assert_eq!(receiver.borrow().version, 0);
        let diagnostic = Diagnostic::warning(&ObjectRef::new("VirtualService", "team", "x"), "spec", "odd");
        publisher.publish(Snapshot {
            version: 2,
            gateways: vec![GatewayRoutes {
                identity: GatewayIdentity::default(),
                counts: TableCounts { listeners: 1, virtual_hosts: 1, routes: 3, clusters: 2 },
                diagnostics: vec![diagnostic].into(),
            }],
        });
        let summary = receiver.borrow().summary();
        assert_eq!(summary["version"], 2);
        assert_eq!(summary["routes"], 3);
        assert_eq!(summary["diagnostics"], 1);
        assert_eq!(summary["gateways"][0]["name"], "portico-gateway");
        assert_eq!(summary["gateways"][0]["clusters"], 2);
    }
}
