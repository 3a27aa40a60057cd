//! Which gateway instances the route index builds tables for: the one
//! configured by flags, plus every gateway connected to discovery.
//!
//! A table depends only on an instance's namespace and labels, so gateways
//! that share them (the replicas of one Deployment) share one table and one
//! translation. A new kind of gateway triggers a rebuild; when its last
//! stream closes its table is dropped at the next build.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use portico_routing::GatewayIdentity;
use tokio::sync::Notify;

/// What a table is built from: `(namespace, labels)`.
pub type IdentityKey = (String, BTreeMap<String, String>);

/// The key of `identity`'s table.
pub fn key_of(identity: &GatewayIdentity) -> IdentityKey {
    (identity.namespace.clone(), identity.labels.clone())
}

/// Shared by the index (reads) and the discovery server (registers).
#[derive(Clone)]
pub struct Demand {
    configured: Vec<GatewayIdentity>,
    connected: Arc<Mutex<BTreeMap<IdentityKey, (GatewayIdentity, usize)>>>,
    changed: Arc<Notify>,
}

impl Demand {
    /// `configured` tables are always built; `changed` wakes the index.
    pub fn new(configured: Vec<GatewayIdentity>, changed: Arc<Notify>) -> Self {
        Self { configured, connected: Arc::default(), changed }
    }

    /// Registers a connected gateway until the guard is dropped.
    pub fn acquire(&self, identity: &GatewayIdentity) -> DemandGuard {
        let key = key_of(identity);
        let new = {
            let mut connected = self.lock();
            let entry = connected.entry(key.clone()).or_insert_with(|| (identity.clone(), 0));
            entry.1 += 1;
            entry.1 == 1
        };
        if new && !self.configured.iter().any(|c| key_of(c) == key) {
            self.changed.notify_one();
        }
        DemandGuard { demand: self.clone(), key }
    }

    /// Every identity to build a table for, one per key, configured first.
    pub fn identities(&self) -> Vec<GatewayIdentity> {
        let mut identities = self.configured.clone();
        for (key, (identity, _)) in self.lock().iter() {
            if !identities.iter().any(|i| key_of(i) == *key) {
                identities.push(identity.clone());
            }
        }
        identities
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<IdentityKey, (GatewayIdentity, usize)>> {
        self.connected.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps a connected gateway's table built.
pub struct DemandGuard {
    demand: Demand,
    key: IdentityKey,
}

impl Drop for DemandGuard {
    fn drop(&mut self) {
        let mut connected = self.demand.lock();
        if let Some(entry) = connected.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                connected.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, app: &str) -> GatewayIdentity {
        GatewayIdentity {
            name: name.to_string(),
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            ..GatewayIdentity::default()
        }
    }

    #[test]
    fn replicas_share_a_table_and_the_last_one_out_drops_it() {
        let demand = Demand::new(vec![GatewayIdentity::default()], Arc::new(Notify::new()));
        let first = demand.acquire(&identity("gw-1", "public"));
        let second = demand.acquire(&identity("gw-2", "public"));
        let other = demand.acquire(&identity("gw-3", "internal"));
        assert_eq!(demand.identities().len(), 3);
        drop(first);
        assert_eq!(demand.identities().len(), 3);
        drop(second);
        drop(other);
        assert_eq!(demand.identities(), vec![GatewayIdentity::default()]);
    }
}
