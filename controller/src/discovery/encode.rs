//! Route tables as protocol resources, encoded once per change and shared
//! by every stream of the gateways that use that table.
//!
//! An [`EncodedTable`] is persistent: the next version is the previous one
//! with the changed pieces replaced (structural sharing, O(log n) a piece),
//! and it keeps a log of which pieces each recent version changed. A stream
//! that has sent version `v` sends exactly the pieces the log names after
//! `v`; one that is further behind than the log reaches gets the full state
//! again.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use portico_api::discovery::{Kind, Resource};
use portico_routing::parts::TableDelta;
use serde::Serialize;

use crate::demand::IdentityKey;

/// The kinds, in the order a response lists them.
pub const KINDS: [Kind; 4] = [Kind::Listeners, Kind::Routes, Kind::Endpoints, Kind::Workloads];

/// Versions the change log keeps at most.
const LOG_VERSIONS: usize = 4096;

/// Position of `kind` in [`KINDS`].
pub fn kind_index(kind: Kind) -> Option<usize> {
    KINDS.iter().position(|k| *k == kind)
}

/// The pieces one version changed: (kind index, name).
type Changed = Arc<[(usize, String)]>;

/// One table's resources and recent changes.
#[derive(Clone, Debug, Default)]
pub struct EncodedTable {
    /// The version this table last changed at (0: empty, never built).
    pub version: u64,
    /// The version the log starts after: a stream that has sent a version
    /// before it needs the full state.
    base: u64,
    /// Per kind (indexed like [`KINDS`]): name -> resource.
    pub kinds: [imbl::OrdMap<String, Resource>; 4],
    /// Versions after `base`, oldest first, with the pieces each changed.
    log: VecDeque<(u64, Changed)>,
    /// Names across the log (it is trimmed to a multiple of the table).
    logged: usize,
}

impl EncodedTable {
    /// Resource count of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        kind_index(kind).map_or(0, |index| self.kinds[index].len())
    }

    /// Every resource count, indexed like [`KINDS`].
    pub fn counts(&self) -> [usize; 4] {
        [0, 1, 2, 3].map(|i| self.kinds[i].len())
    }

    /// A table built from scratch at `version` from a full state.
    pub fn full(version: u64, delta: &TableDelta) -> EncodedTable {
        let mut table = EncodedTable { version, base: version, ..EncodedTable::default() };
        table.put_all(delta);
        table
    }

    /// This table with `delta` applied as `version`. The log bounds memory:
    /// it keeps at most [`LOG_VERSIONS`] versions and about twice the
    /// table's size in names.
    pub fn next(&self, version: u64, delta: &TableDelta) -> EncodedTable {
        let mut table = self.clone();
        let changed = table.put_all(delta);
        table.version = version;
        table.logged += changed.len();
        table.log.push_back((version, changed.into()));
        let size: usize = table.counts().iter().sum();
        let budget = (2 * size).max(10_000);
        while table.log.len() > LOG_VERSIONS || (table.logged > budget && table.log.len() > 1) {
            if let Some((dropped, names)) = table.log.pop_front() {
                table.base = dropped;
                table.logged -= names.len();
            }
        }
        table
    }

    /// The pieces changed after `version`, or `None` when the log does not
    /// reach back that far (the stream then needs the full state).
    pub fn changes_since(&self, version: u64) -> Option<BTreeSet<(usize, String)>> {
        if version == self.version {
            return Some(BTreeSet::new());
        }
        if version < self.base || version > self.version {
            return None;
        }
        let mut names = BTreeSet::new();
        for (_, changed) in self.log.iter().filter(|(at, _)| *at > version) {
            names.extend(changed.iter().cloned());
        }
        Some(names)
    }

    /// Applies `delta`; returns the (kind, name) of every piece it touched.
    fn put_all(&mut self, delta: &TableDelta) -> Vec<(usize, String)> {
        let mut changed = Vec::with_capacity(delta.len());
        for (name, listener) in &delta.listeners {
            let resource = listener.as_ref().and_then(|p| encode(name, "listener", &p.parent, &p.order, &p.value));
            changed.push(self.put(Kind::Listeners, name, resource));
        }
        for (name, host) in &delta.virtual_hosts {
            let resource = host.as_ref().and_then(|p| encode(name, "vhost", &p.parent, &p.order, &p.value));
            changed.push(self.put(Kind::Routes, name, resource));
        }
        for (name, route) in &delta.routes {
            let resource = route.as_ref().and_then(|p| encode(name, "route", &p.parent, &p.order, &*p.value));
            changed.push(self.put(Kind::Routes, name, resource));
        }
        for (name, cluster) in &delta.clusters {
            let resource = cluster.as_ref().and_then(|c| encode(name, "cluster", "", "", &**c));
            changed.push(self.put(Kind::Endpoints, name, resource));
        }
        for (host, workload) in &delta.workloads {
            let resource = workload.as_ref().and_then(|w| encode(host, "workload", "", "", &**w));
            changed.push(self.put(Kind::Workloads, host, resource));
        }
        changed
    }

    fn put(&mut self, kind: Kind, name: &str, resource: Option<Resource>) -> (usize, String) {
        let index = kind_index(kind).unwrap_or_default();
        match resource {
            Some(resource) => {
                self.kinds[index].insert(name.to_string(), resource);
            }
            None => {
                self.kinds[index].remove(name);
            }
        }
        (index, name.to_string())
    }
}

/// Every table of one route snapshot, encoded.
#[derive(Debug, Default)]
pub struct EncodedSnapshot {
    /// The route snapshot's version (0: nothing built yet).
    pub version: u64,
    pub tables: HashMap<IdentityKey, Arc<EncodedTable>>,
    /// When this snapshot was ready to send (the start of push latency).
    pub ready_at: Option<Instant>,
}

fn encode<T: Serialize + ?Sized>(name: &str, type_: &str, parent: &str, order: &str, value: &T) -> Option<Resource> {
    match serde_json::to_vec(value) {
        Ok(body) => Some(Resource {
            name: name.to_string(),
            r#type: type_.to_string(),
            parent: parent.to_string(),
            order: order.to_string(),
            body,
        }),
        Err(error) => {
            // Our own types always serialize; never send half a piece.
            tracing::error!(%error, name, "could not encode a resource; it is left out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use portico_routing::{GatewayIdentity, IncrementalTranslator, Resources};

    use super::*;

    fn notebooks(range: std::ops::Range<usize>) -> Resources {
        let mut yaml = String::from(
            "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: kubeflow-gateway, namespace: kubeflow}\n\
             spec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"*\"]}]\n",
        );
        for i in range {
            yaml.push_str(&format!(
                "---\napiVersion: kubeflow.org/v1\nkind: Notebook\nmetadata: {{name: nb{i}, namespace: team}}\n\
                 spec: {{template: {{spec: {{containers: [{{name: nb, image: x}}]}}}}}}\n"
            ));
        }
        let mut resources = Resources::default();
        assert_eq!(resources.add_yaml(&yaml, "test"), vec![]);
        resources
    }

    #[test]
    fn a_new_version_logs_only_what_changed() {
        let mut translator =
            IncrementalTranslator::from_resources(&notebooks(0..50), GatewayIdentity::default(), false);
        let first = EncodedTable::full(1, &translator.take_delta());
        let routes = kind_index(Kind::Routes).unwrap_or_default();
        assert_eq!(first.kinds[routes].len(), 51, "a virtual host and 50 routes");
        for object in portico_routing::incremental::objects_of(&notebooks(50..51)) {
            translator.upsert(object);
        }
        let second = first.next(2, &translator.take_delta());
        let changed = second.changes_since(1).unwrap_or_default();
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            vec![(routes, "http.80/*:80/team.notebook-team-nb50.0".to_string())]
        );
        assert_eq!(second.changes_since(2), Some(BTreeSet::new()));
        assert_eq!(second.changes_since(0), None, "before the base: full state");
        assert_eq!(first.kinds[routes].len(), 51, "the previous version is untouched");
    }

    #[test]
    fn the_log_is_bounded() {
        let mut translator = IncrementalTranslator::from_resources(&notebooks(0..1), GatewayIdentity::default(), false);
        let mut table = EncodedTable::full(1, &translator.take_delta());
        for version in 2..(LOG_VERSIONS as u64 + 100) {
            let delta = if version % 2 == 0 {
                for object in portico_routing::incremental::objects_of(&notebooks(1..2)) {
                    translator.upsert(object);
                }
                translator.take_delta()
            } else {
                translator.delete(portico_routing::incremental::ObjectKind::Notebook, "team", "nb1");
                translator.take_delta()
            };
            table = table.next(version, &delta);
        }
        assert!(table.log.len() <= LOG_VERSIONS);
        assert_eq!(table.changes_since(1), None);
        assert!(table.changes_since(table.version - 10).is_some());
    }
}
