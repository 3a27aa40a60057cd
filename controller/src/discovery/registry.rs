//! What the controller knows about each connected gateway: who it is, what
//! it was sent and what it answered. `ProxyStatus` serves it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use portico_api::discovery::{GatewayStatus, Kind, KindStatus, Node, Rejection, SyncState};

use super::encode::{KINDS, kind_index};

/// The connected gateways.
#[derive(Default)]
pub struct Registry {
    next_id: AtomicU64,
    streams: Mutex<BTreeMap<u64, Arc<Mutex<GatewayStatus>>>>,
}

impl Registry {
    /// Records a new stream until the returned entry is dropped.
    pub fn register(self: &Arc<Self>, node: Node, peer: String, controller: String) -> Entry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connected_since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let status = GatewayStatus {
            node: Some(node),
            peer,
            controller,
            connected_since,
            kinds: KINDS
                .iter()
                .map(|kind| KindStatus {
                    kind: *kind as i32,
                    state: SyncState::NotSent as i32,
                    ..KindStatus::default()
                })
                .collect(),
            ..GatewayStatus::default()
        };
        let status = Arc::new(Mutex::new(status));
        self.lock().insert(id, status.clone());
        Entry { registry: self.clone(), id, status }
    }

    /// Every connected gateway, in connection order.
    pub fn statuses(&self) -> Vec<GatewayStatus> {
        self.lock().values().map(|status| lock(status).clone()).collect()
    }

    /// Number of connected gateways.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Mutex<GatewayStatus>>>> {
        self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn lock(status: &Mutex<GatewayStatus>) -> MutexGuard<'_, GatewayStatus> {
    status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One stream's status; removed from the registry when dropped.
pub struct Entry {
    registry: Arc<Registry>,
    id: u64,
    status: Arc<Mutex<GatewayStatus>>,
}

impl Entry {
    /// A response with `kinds` was sent.
    pub fn sent(&self, version: &str, kinds: &[Kind], counts: [usize; 4], bytes: usize) {
        let mut status = lock(&self.status);
        status.last_response_bytes = bytes as u64;
        status.total_bytes += bytes as u64;
        status.responses += 1;
        for kind_status in &mut status.kinds {
            let Ok(kind) = Kind::try_from(kind_status.kind) else { continue };
            if let Some(index) = kind_index(kind) {
                kind_status.resources = counts[index] as u64;
            }
            if kinds.contains(&kind) {
                kind_status.sent_version = version.to_string();
                kind_status.state = SyncState::Stale as i32;
            }
        }
    }

    /// The response of `version` that carried `kinds` was answered.
    pub fn answered(&self, version: &str, kinds: &[Kind], rejected: &[Rejection]) {
        let mut status = lock(&self.status);
        for kind_status in &mut status.kinds {
            let Ok(kind) = Kind::try_from(kind_status.kind) else { continue };
            // Only the answer to the latest response of a kind decides its state.
            if !kinds.contains(&kind) || kind_status.sent_version != version {
                continue;
            }
            let mine: Vec<Rejection> = rejected.iter().filter(|r| r.kind == kind as i32).cloned().collect();
            if mine.is_empty() {
                kind_status.state = SyncState::Synced as i32;
                kind_status.acked_version = version.to_string();
                kind_status.rejected.clear();
            } else {
                kind_status.state = SyncState::Nacked as i32;
                kind_status.rejected = mine;
            }
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}
