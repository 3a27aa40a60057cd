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
            if let Some(table) = snapshot.tables.get(&self.key)
                && let Some(response) = self.delta(&snapshot, table)
            {
                let bytes = response.encoded_len();
                if responses.send(Ok(response)).await.is_err() {
                    return Ok(());
                }
                self.shared.metrics.xds_config_size.observe(bytes as f64);
                if let Some(ready_at) = snapshot.ready_at {
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
    /// further behind than the log reaches. `None` when nothing changed.
    fn delta(&mut self, snapshot: &EncodedSnapshot, table: &EncodedTable) -> Option<DeltaResponse> {
        let since = self.sent.and_then(|sent| table.changes_since(sent));
        if self.sent.is_some() && since.as_ref().is_some_and(BTreeSet::is_empty) {
            return None;
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
            return None;
        }
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
        };
        self.entry.sent(&version, &sent_kinds, table.counts(), response.encoded_len());
        self.pending.insert(self.nonce, (version, sent_kinds));
        Some(response)
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
