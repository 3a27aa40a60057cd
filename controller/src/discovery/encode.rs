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

/// One table to encode: its key, the table, the previous encoding if the
/// table is unchanged, and its sort-key history.
type Work = (IdentityKey, Arc<RouteTable>, Option<Arc<EncodedTable>>, OrderHistory);

/// Follows `snapshots`, re-encoding only the tables that changed, and
/// publishes the results. Sort keys persist per table across versions so
/// that one new route is one new resource.
pub async fn encode_loop(mut snapshots: watch::Receiver<Arc<Snapshot>>, encoded: watch::Sender<Arc<EncodedSnapshot>>) {
    let mut histories: HashMap<IdentityKey, OrderHistory> = HashMap::new();
    let mut previous: HashMap<IdentityKey, (Arc<RouteTable>, Arc<EncodedTable>)> = HashMap::new();
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.version > 0 {
            let work: Vec<Work> = snapshot
                .gateways
                .iter()
                .map(|gateway| {
                    let key = key_of(&gateway.identity);
                    let reuse = previous
                        .get(&key)
                        .filter(|(table, _)| Arc::ptr_eq(table, &gateway.table))
                        .map(|(_, encoded)| encoded.clone());
                    let history = histories.remove(&key).unwrap_or_default();
                    (key, gateway.table.clone(), reuse, history)
                })
                .collect();
            // Splitting and JSON-encoding 10k routes is CPU work: off the I/O threads.
            let done = tokio::task::spawn_blocking(move || {
                work.into_iter()
                    .map(|(key, table, reuse, mut history)| {
                        let encoded = reuse.unwrap_or_else(|| Arc::new(encode_table(&table, &mut history)));
                        (key, table, encoded, history)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            match done {
                Ok(done) => {
                    previous.clear();
                    let mut tables = HashMap::new();
                    for (key, table, encoded, history) in done {
                        histories.insert(key.clone(), history);
                        previous.insert(key.clone(), (table, encoded.clone()));
                        tables.insert(key, encoded);
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

/// Splits `table` into resources.
pub fn encode_table(table: &RouteTable, history: &mut OrderHistory) -> EncodedTable {
    let parts = TableParts::split(table, history);
    let mut encoded = EncodedTable::default();
    for (name, listener) in &parts.listeners {
        insert(&mut encoded, Kind::Listeners, name, "listener", &listener.parent, &listener.order, &listener.value);
    }
    for (name, host) in &parts.virtual_hosts {
        insert(&mut encoded, Kind::Routes, name, "vhost", &host.parent, &host.order, &host.value);
    }
    for (name, route) in &parts.routes {
        insert(&mut encoded, Kind::Routes, name, "route", &route.parent, &route.order, &route.value);
    }
    for (name, cluster) in &parts.clusters {
        insert(&mut encoded, Kind::Endpoints, name, "cluster", "", "", cluster);
    }
    encoded
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
