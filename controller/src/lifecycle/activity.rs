//! What every connected gateway replica reported, merged per destination.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use portico_api::discovery::DestinationActivity;
use serde_json::{Value, json};

/// One destination's merged activity.
#[derive(Debug, Default)]
struct Merged {
    /// Unix milliseconds: the latest any replica reported.
    last_activity_ms: i64,
    /// Per gateway replica: its latest figures (open websockets, busy kernels).
    replicas: HashMap<String, DestinationActivity>,
}

/// Activity by destination host.
#[derive(Debug, Default)]
pub struct ActivityBook {
    hosts: Mutex<HashMap<String, Merged>>,
}

impl ActivityBook {
    /// Records one report of the gateway replica `gateway`.
    pub fn record(&self, gateway: &str, report: &[DestinationActivity]) {
        let mut hosts = self.lock();
        for activity in report {
            let merged = hosts.entry(activity.host.clone()).or_default();
            merged.last_activity_ms = merged.last_activity_ms.max(activity.last_activity_unix_ms);
            merged.replicas.insert(gateway.to_string(), activity.clone());
        }
    }

    /// A gateway replica went away: its open websockets are closed.
    pub fn forget(&self, gateway: &str) {
        for merged in self.lock().values_mut() {
            merged.replicas.remove(gateway);
        }
    }

    /// The last activity any replica saw at `host` (unix milliseconds).
    pub fn last_activity_ms(&self, host: &str) -> Option<i64> {
        self.lock().get(host).map(|m| m.last_activity_ms).filter(|ms| *ms > 0)
    }

    /// Every destination, for `/debug/activity`.
    pub fn to_json(&self) -> Value {
        let hosts = self.lock();
        let mut names: Vec<&String> = hosts.keys().collect();
        names.sort();
        let entries: Vec<Value> = names
            .into_iter()
            .map(|host| {
                let merged = &hosts[host];
                let sum = |f: fn(&DestinationActivity) -> u32| merged.replicas.values().map(f).sum::<u32>();
                json!({
                    "host": host,
                    "lastActivityUnixMs": merged.last_activity_ms,
                    "kernelWebsockets": sum(|a| a.kernel_websockets),
                    "terminalWebsockets": sum(|a| a.terminal_websockets),
                    "otherWebsockets": sum(|a| a.other_websockets),
                    "busyKernels": sum(|a| a.busy_kernels),
                    "gateways": merged.replicas.len(),
                })
            })
            .collect();
        json!({ "destinations": entries })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Merged>> {
        // A panic elsewhere while holding the lock leaves plain data behind.
        self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(host: &str, last: i64, kernels: u32) -> DestinationActivity {
        DestinationActivity {
            host: host.to_string(),
            last_activity_unix_ms: last,
            kernel_websockets: kernels,
            ..DestinationActivity::default()
        }
    }

    #[test]
    fn the_latest_of_every_replica_wins_and_an_older_report_never_moves_it_back() {
        let book = ActivityBook::default();
        book.record("gw-a", &[report("nb.team.svc.cluster.local", 2_000, 1)]);
        book.record("gw-b", &[report("nb.team.svc.cluster.local", 1_000, 2)]);
        assert_eq!(book.last_activity_ms("nb.team.svc.cluster.local"), Some(2_000));
        assert_eq!(book.to_json()["destinations"][0]["kernelWebsockets"], 3);
        book.forget("gw-a");
        assert_eq!(book.to_json()["destinations"][0]["kernelWebsockets"], 2);
        assert_eq!(book.last_activity_ms("nb.team.svc.cluster.local"), Some(2_000), "what was seen stays seen");
        assert_eq!(book.last_activity_ms("other"), None);
    }
}
