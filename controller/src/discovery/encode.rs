//! Route snapshots as protocol resources, encoded once per table and shared
//! by every stream of the gateways that use that table.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use portico_api::discovery::{Kind, Resource};
use portico_routing::RouteTable;
use portico_routing::parts::{OrderHistory, TableParts};
use serde::Serialize;
use tokio::sync::watch;

use crate::demand::{IdentityKey, key_of};
use crate::snapshot::Snapshot;

/// The kinds, in the order a response lists them.
pub const KINDS: [Kind; 3] = [Kind::Listeners, Kind::Routes, Kind::Endpoints];

/// One resource and a digest of everything in it.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub resource: Resource,
    pub digest: u64,
}

/// One table's resources, per kind (indexed like [`KINDS`]).
#[derive(Debug, Default)]
pub struct EncodedTable {
    pub kinds: [BTreeMap<String, Encoded>; 3],
}

impl EncodedTable {
    /// Resource count of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        kind_index(kind).map_or(0, |index| self.kinds[index].len())
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

/// Position of `kind` in [`KINDS`].
pub fn kind_index(kind: Kind) -> Option<usize> {
    KINDS.iter().position(|k| *k == kind)
}

/// What is kept per table between versions: the sort keys handed out, and
/// the previous pieces with their encodings, so that a new version encodes
/// only the pieces that changed.
#[derive(Default)]
pub struct TableEncoder {
    history: OrderHistory,
    table: Option<Arc<RouteTable>>,
    parts: TableParts,
    encoded: Arc<EncodedTable>,
}

impl TableEncoder {
    /// The encoding of `table`.
    pub fn encode(&mut self, table: &Arc<RouteTable>) -> Arc<EncodedTable> {
        if self.table.as_ref().is_some_and(|previous| Arc::ptr_eq(previous, table)) {
            return self.encoded.clone();
        }
        let parts = TableParts::split(table, &mut self.history);
        let encoded = Arc::new(encode_parts(&parts, Some((&self.parts, &self.encoded))));
        self.parts = parts;
        self.table = Some(table.clone());
        self.encoded = encoded.clone();
        encoded
    }
}

/// Follows `snapshots`, re-encoding only what changed, and publishes the
/// results. Sort keys persist per table across versions so that one new
/// route is one new resource.
pub async fn encode_loop(mut snapshots: watch::Receiver<Arc<Snapshot>>, encoded: watch::Sender<Arc<EncodedSnapshot>>) {
    let mut encoders: HashMap<IdentityKey, TableEncoder> = HashMap::new();
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.version > 0 {
            let work: Vec<(IdentityKey, Arc<RouteTable>, TableEncoder)> = snapshot
                .gateways
                .iter()
                .map(|gateway| {
                    let key = key_of(&gateway.identity);
                    let encoder = encoders.remove(&key).unwrap_or_default();
                    (key, gateway.table.clone(), encoder)
                })
                .collect();
            // Splitting and JSON-encoding 10k routes is CPU work: off the I/O threads.
            let done = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let done = work
                    .into_iter()
                    .map(|(key, table, mut encoder)| {
                        let encoded = encoder.encode(&table);
                        (key, encoded, encoder)
                    })
                    .collect::<Vec<_>>();
                tracing::debug!(encode_ms = started.elapsed().as_millis() as u64, "encoded route tables");
                done
            })
            .await;
            match done {
                Ok(done) => {
                    // Tables no gateway wants any more are forgotten here.
                    encoders.clear();
                    let mut tables = HashMap::new();
                    for (key, table, encoder) in done {
                        encoders.insert(key.clone(), encoder);
                        tables.insert(key, table);
                    }
                    encoded.send_replace(Arc::new(EncodedSnapshot {
                        version: snapshot.version,
                        tables,
                        ready_at: Some(Instant::now()),
                    }));
                }
                Err(error) => tracing::error!(%error, "encoding route tables panicked; keeping the last encoding"),
            }
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

/// Splits `table` into resources (no history: fresh sort keys).
pub fn encode_table(table: &RouteTable, history: &mut OrderHistory) -> EncodedTable {
    encode_parts(&TableParts::split(table, history), None)
}

/// Encodes `parts`, reusing the encoding of every piece equal to its
/// previous version in `previous`.
fn encode_parts(parts: &TableParts, previous: Option<(&TableParts, &EncodedTable)>) -> EncodedTable {
    let mut encoded = EncodedTable::default();
    let reuse = |kind: Kind, name: &str, unchanged: bool| -> Option<Encoded> {
        let (_, old) = previous?;
        if !unchanged {
            return None;
        }
        old.kinds[kind_index(kind)?].get(name).cloned()
    };
    for (name, listener) in &parts.listeners {
        let same = previous.is_some_and(|(old, _)| old.listeners.get(name) == Some(listener));
        match reuse(Kind::Listeners, name, same) {
            Some(old) => put(&mut encoded, Kind::Listeners, name, old),
            None => insert(
                &mut encoded,
                Kind::Listeners,
                name,
                "listener",
                &listener.parent,
                &listener.order,
                &listener.value,
            ),
        }
    }
    for (name, host) in &parts.virtual_hosts {
        let same = previous.is_some_and(|(old, _)| old.virtual_hosts.get(name) == Some(host));
        match reuse(Kind::Routes, name, same) {
            Some(old) => put(&mut encoded, Kind::Routes, name, old),
            None => insert(&mut encoded, Kind::Routes, name, "vhost", &host.parent, &host.order, &host.value),
        }
    }
    for (name, route) in &parts.routes {
        let same = previous.is_some_and(|(old, _)| old.routes.get(name) == Some(route));
        match reuse(Kind::Routes, name, same) {
            Some(old) => put(&mut encoded, Kind::Routes, name, old),
            None => insert(&mut encoded, Kind::Routes, name, "route", &route.parent, &route.order, &route.value),
        }
    }
    for (name, cluster) in &parts.clusters {
        let same = previous.is_some_and(|(old, _)| old.clusters.get(name) == Some(cluster));
        match reuse(Kind::Endpoints, name, same) {
            Some(old) => put(&mut encoded, Kind::Endpoints, name, old),
            None => insert(&mut encoded, Kind::Endpoints, name, "cluster", "", "", cluster),
        }
    }
    encoded
}

fn put(encoded: &mut EncodedTable, kind: Kind, name: &str, resource: Encoded) {
    if let Some(index) = kind_index(kind) {
        encoded.kinds[index].insert(name.to_string(), resource);
    }
}

fn insert<T: Serialize>(
    encoded: &mut EncodedTable,
    kind: Kind,
    name: &str,
    kind_type: &str,
    parent: &str,
    order: &str,
    value: &T,
) {
    let body = match serde_json::to_vec(value) {
        Ok(body) => body,
        Err(error) => {
            // Our own types always serialize; never send half a table.
            tracing::error!(%error, name, "could not encode a resource; it is left out");
            return;
        }
    };
    let resource = Resource {
        name: name.to_string(),
        r#type: kind_type.to_string(),
        parent: parent.to_string(),
        order: order.to_string(),
        body,
    };
    let mut hasher = DefaultHasher::new();
    (&resource.r#type, &resource.parent, &resource.order, &resource.body).hash(&mut hasher);
    let digest = hasher.finish();
    if let Some(index) = kind_index(kind) {
        encoded.kinds[index].insert(name.to_string(), Encoded { resource, digest });
    }
}

#[cfg(test)]
mod tests {
    use portico_routing::{GatewayIdentity, Resources, translate};

    use super::*;

    fn table(notebooks: usize) -> Arc<RouteTable> {
        let mut yaml = String::from(
            "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: kubeflow-gateway, namespace: kubeflow}\n\
             spec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"*\"]}]\n",
        );
        for i in 0..notebooks {
            yaml.push_str(&format!(
                "---\napiVersion: kubeflow.org/v1\nkind: Notebook\nmetadata: {{name: nb{i}, namespace: team}}\n\
                 spec: {{template: {{spec: {{containers: [{{name: nb, image: x}}]}}}}}}\n"
            ));
        }
        let mut resources = Resources::default();
        assert_eq!(resources.add_yaml(&yaml, "test"), vec![]);
        Arc::new(translate(&resources, &GatewayIdentity::default()).0)
    }

    #[test]
    fn a_new_version_reuses_every_unchanged_encoding() {
        let mut encoder = TableEncoder::default();
        let first = encoder.encode(&table(50));
        let second = encoder.encode(&table(51));
        let routes = kind_index(Kind::Routes).unwrap_or_default();
        assert_eq!(first.kinds[routes].len(), 51, "a virtual host and 50 routes");
        let changed: Vec<&String> = second.kinds[routes]
            .iter()
            .filter(|(name, resource)| first.kinds[routes].get(*name).map(|r| r.digest) != Some(resource.digest))
            .map(|(name, _)| name)
            .collect();
        assert_eq!(changed, vec!["http.80/*:80/team.notebook-team-nb50.0"]);
        // A fresh encoding of the same table is byte for byte what was reused.
        let fresh = encode_table(&table(51), &mut OrderHistory::default());
        assert_eq!(fresh.count(Kind::Routes), second.count(Kind::Routes));
    }
}
