//! One gateway's stream: the full state first, then deltas as the route
//! snapshots change, with every ACK and NACK recorded. A delta costs the
//! pieces it carries: the table's change log names them, nothing is diffed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use portico_api::discovery::{DeltaRequest, DeltaResponse, Kind, KindDelta, Node};
use portico_routing::GatewayIdentity;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use super::encode::{EncodedSnapshot, EncodedTable, KINDS};
use super::{Shared, registry::Entry};
use crate::demand::{IdentityKey, key_of};

/// Responses buffered per stream before the sender waits for the gateway.
pub const RESPONSE_BUFFER: usize = 4;

/// The size a full state's parts stay under (encoded resources), for
/// gateways that accept parts: a receiver keeps a buffer of its largest
/// message for as long as the stream lasts.
pub const FULL_STATE_PART_BYTES: usize = 1 << 20;

/// The gateway of a node.
pub fn identity_of(node: &Node) -> GatewayIdentity {
    GatewayIdentity {
        name: node.name.clone(),
        namespace: node.namespace.clone(),
        labels: node.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// Serves one stream until the gateway goes away or the controller stops.
pub async fn serve(
    shared: Arc<Shared>,
    mut requests: Streaming<DeltaRequest>,
    responses: mpsc::Sender<Result<DeltaResponse, Status>>,
    peer: String,
) {
    let node = match requests.message().await {
        Ok(Some(DeltaRequest { node: Some(node), .. })) if !node.name.is_empty() => node,
        Ok(Some(_)) => {
            let _ =
                responses.send(Err(Status::invalid_argument("the first request must carry a node with a name"))).await;
            return;
        }
        Ok(None) | Err(_) => return,
    };
    let identity = identity_of(&node);
    let key = key_of(&identity);
    tracing::info!(gateway = %node.name, namespace = %node.namespace, labels = ?node.labels, %peer, "gateway connected");
    let _demand = shared.demand.acquire(&identity);
    let entry = shared.registry.register(node.clone(), peer.clone(), shared.controller.clone());
    shared.metrics.xds_connected.set(shared.registry.len() as i64);
    let mut stream = Stream {
        shared: shared.clone(),
        key,
        entry,
        gateway: gateway_name(&node),
        sent: None,
        nonce: 0,
        pending: BTreeMap::new(),
        parts: node.accepts_parts,
    };
    let mut encoded = shared.encoded.clone();
    let result = stream.run(&mut requests, &responses, &mut encoded).await;
    drop(stream);
    // Its websockets are gone with it (or counted again when it reconnects).
    shared.activity.forget(&gateway_name(&node));
    shared.metrics.xds_connected.set(shared.registry.len() as i64);
    match result {
        Ok(()) => tracing::info!(gateway = %node.name, %peer, "gateway disconnected"),
        Err(error) => tracing::info!(gateway = %node.name, %peer, %error, "gateway stream ended"),
    }
}

struct Stream {
    shared: Arc<Shared>,
    key: IdentityKey,
    entry: Entry,
    /// `name.namespace` of the gateway replica (activity is kept per replica).
    gateway: String,
    /// The table version this gateway was last sent (`None`: nothing yet).
    sent: Option<u64>,
    nonce: u64,
    /// nonce -> (version, kinds) of responses not answered yet.
    pending: BTreeMap<u64, (String, Vec<Kind>)>,
    /// The gateway accepts a full state in parts.
    parts: bool,
}

impl Stream {
    async fn run(
        &mut self,
        requests: &mut Streaming<DeltaRequest>,
        responses: &mpsc::Sender<Result<DeltaResponse, Status>>,
        encoded: &mut watch::Receiver<Arc<EncodedSnapshot>>,
    ) -> Result<(), Status> {
        loop {
            // Send whatever the current snapshot has that this gateway lacks.
            let snapshot = encoded.borrow_and_update().clone();
            if let Some(table) = snapshot.tables.get(&self.key) {
                let parts = self.delta(&snapshot, table);
                let sent_any = !parts.is_empty();
                for response in parts {
                    let bytes = response.encoded_len();
                    if responses.send(Ok(response)).await.is_err() {
                        return Ok(());
                    }
                    self.shared.metrics.xds_config_size.observe(bytes as f64);
                }
                if sent_any && let Some(ready_at) = snapshot.ready_at {
                    self.shared.metrics.convergence.observe(ready_at.elapsed().as_secs_f64());
                }
            }
            tokio::select! {
                changed = encoded.changed() => {
                    if changed.is_err() {
                        return Err(Status::unavailable("the controller is shutting down"));
                    }
                }
                request = requests.message() => match request? {
                    Some(request) => {
                        self.lifecycle(&request);
                        self.answer(&request);
                    }
                    None => return Ok(()),
                },
            }
        }
    }

    /// The response that brings the gateway from what it was sent to
    /// `table`: the pieces the table's log names since then, or everything
    /// (a full state) on the first response and when the gateway fell
    /// further behind than the log reaches, in parts if the gateway takes
    /// them. Empty when nothing changed.
    fn delta(&mut self, snapshot: &EncodedSnapshot, table: &EncodedTable) -> Vec<DeltaResponse> {
        let since = self.sent.and_then(|sent| table.changes_since(sent));
        if self.sent.is_some() && since.as_ref().is_some_and(BTreeSet::is_empty) {
            return Vec::new();
        }
        let full_state = since.is_none();
        let mut kinds: Vec<KindDelta> =
            KINDS.iter().map(|kind| KindDelta { kind: *kind as i32, ..KindDelta::default() }).collect();
        match since {
            Some(changed) => {
                for (index, name) in changed {
                    match table.kinds[index].get(&name) {
                        Some(resource) => kinds[index].resources.push(resource.clone()),
                        None => kinds[index].removed.push(name),
                    }
                }
                kinds.retain(|k| !k.resources.is_empty() || !k.removed.is_empty());
            }
            None => {
                for (index, delta) in kinds.iter_mut().enumerate() {
                    delta.resources = table.kinds[index].values().cloned().collect();
                }
            }
        }
        self.sent = Some(table.version);
        if kinds.is_empty() {
            return Vec::new();
        }
        let parts = if full_state && self.parts { split(kinds, FULL_STATE_PART_BYTES) } else { vec![kinds] };
        let last = parts.len() - 1;
        parts
            .into_iter()
            .enumerate()
            .map(|(index, kinds)| self.response(snapshot, table, full_state, kinds, index < last))
            .collect()
    }

    /// One response, numbered and recorded as pending.
    fn response(
        &mut self,
        snapshot: &EncodedSnapshot,
        table: &EncodedTable,
        full_state: bool,
        kinds: Vec<KindDelta>,
        more: bool,
    ) -> DeltaResponse {
        self.nonce += 1;
        let version = snapshot.version.to_string();
        let nonce = self.nonce.to_string();
        let sent_kinds: Vec<Kind> = kinds.iter().filter_map(|k| Kind::try_from(k.kind).ok()).collect();
        for kind in &sent_kinds {
            self.shared.metrics.xds_pushes.with_label_values(&[kind_label(*kind)]).inc();
        }
        let response = DeltaResponse {
            version: version.clone(),
            nonce: nonce.clone(),
            full_state,
            kinds,
            controller: self.shared.controller.clone(),
            more,
        };
        self.entry.sent(&version, &sent_kinds, table.counts(), response.encoded_len());
        self.pending.insert(self.nonce, (version, sent_kinds));
        response
    }

    /// Activity reports and wake requests: the lifecycle's way back.
    fn lifecycle(&self, request: &DeltaRequest) {
        if !request.activity.is_empty() {
            self.shared.activity.record(&self.gateway, &request.activity);
        }
        if let Some(waker) = &self.shared.waker {
            for wake in &request.wake {
                waker.request(&self.gateway, &wake.host);
            }
        }
    }

    /// Records an ACK or NACK. The gateway lists every resource it still
    /// rejects in each answer, so the latest answer tells the whole story.
    fn answer(&mut self, request: &DeltaRequest) {
        let Ok(answered) = request.response_nonce.parse::<u64>() else { return };
        let Some((version, kinds)) = self.pending.remove(&answered) else { return };
        // Earlier responses were superseded by this one.
        self.pending.retain(|nonce, _| *nonce > answered);
        let mut rejected_kinds: Vec<Kind> = Vec::new();
        for rejection in &request.rejected {
            let kind = Kind::try_from(rejection.kind).unwrap_or(Kind::Unspecified);
            if !rejected_kinds.contains(&kind) {
                rejected_kinds.push(kind);
                self.shared.metrics.xds_rejects.with_label_values(&[kind_label(kind)]).inc();
            }
            tracing::warn!(kind = kind_label(kind), resource = %rejection.name, reason = %rejection.reason, %version, "gateway rejects a resource (NACK)");
        }
        self.entry.answered(&version, &kinds, &request.rejected);
    }
}

/// Splits a full state into parts of at most `max_bytes` of resources (a
/// larger resource makes a part of its own). The order is kept: kinds in
/// [`KINDS`] order (listeners first), names in order within a kind (a
/// virtual host's name prefixes its routes' names), so every parent arrives
/// in a part before or with its children.
fn split(kinds: Vec<KindDelta>, max_bytes: usize) -> Vec<Vec<KindDelta>> {
    let mut parts: Vec<Vec<KindDelta>> = vec![Vec::new()];
    let mut bytes = 0;
    for delta in kinds {
        if delta.resources.is_empty() {
            // Still sent: an empty kind is part of the full state (the
            // gateway has none of it), and proxy-status shows it synced.
            if let Some(part) = parts.last_mut() {
                part.push(delta);
            }
            continue;
        }
        for resource in delta.resources {
            let size = resource.encoded_len();
            let Some(mut part) = parts.pop() else { continue };
            if bytes + size > max_bytes && !part.is_empty() {
                parts.push(part);
                part = Vec::new();
                bytes = 0;
            }
            match part.last_mut().filter(|last| last.kind == delta.kind) {
                Some(last) => last.resources.push(resource),
                None => part.push(KindDelta { kind: delta.kind, resources: vec![resource], removed: Vec::new() }),
            }
            bytes += size;
            parts.push(part);
        }
    }
    parts
}

/// How a gateway replica is named in activity reports: `name.namespace`.
pub fn gateway_name(node: &Node) -> String {
    format!("{}.{}", node.name, node.namespace)
}

/// Istio's type label for a kind.
pub fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Listeners => "lds",
        Kind::Routes => "rds",
        Kind::Endpoints => "eds",
        Kind::Workloads => "wds",
        Kind::Unspecified => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use portico_api::discovery::Resource;

    use super::*;

    fn resource(name: &str, body: usize) -> Resource {
        Resource { name: name.to_string(), body: vec![b'x'; body], ..Resource::default() }
    }

    #[test]
    fn a_full_state_splits_in_order_under_the_part_size() {
        let kinds = vec![
            KindDelta { kind: Kind::Listeners as i32, resources: vec![resource("l", 10)], removed: vec![] },
            KindDelta {
                kind: Kind::Routes as i32,
                resources: (0..10).map(|i| resource(&format!("v/r{i}"), 100)).collect(),
                removed: vec![],
            },
            KindDelta { kind: Kind::Endpoints as i32, resources: vec![resource("c", 1000)], removed: vec![] },
            KindDelta { kind: Kind::Workloads as i32, resources: vec![], removed: vec![] },
        ];
        let parts = split(kinds.clone(), 350);
        let flat = |parts: &[Vec<KindDelta>]| -> Vec<(i32, String)> {
            parts.iter().flatten().flat_map(|k| k.resources.iter().map(|r| (k.kind, r.name.clone()))).collect()
        };
        assert_eq!(flat(&parts), flat(&[kinds]), "every resource once, in order");
        assert_eq!(parts.len(), 5, "{parts:?}");
        for part in &parts[..parts.len() - 1] {
            let bytes: usize = part.iter().flat_map(|k| &k.resources).map(Message::encoded_len).sum();
            assert!(bytes <= 350, "{bytes}");
        }
        assert_eq!(parts.last().map(|p| p[0].kind), Some(Kind::Endpoints as i32), "a large resource alone");
        let kinds: Vec<i32> = parts.iter().flatten().map(|k| k.kind).collect();
        assert!(kinds.contains(&(Kind::Workloads as i32)), "an empty kind is still sent: {kinds:?}");
    }
}
