//! What every reconcile shares: the client, settings, caches, metrics, the
//! event recorder, what was last applied, and the per-Notebook failure
//! counts behind the backoff.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use portico_api::istio::VirtualService;
use portico_api::notebook::Notebook;
use portico_routing::NotebookSettings;

use crate::metrics::Metrics;
use crate::workload::WorkloadSettings;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "portico-controller";

/// Shared state of the Notebook reconciler (one per leadership term).
pub struct Context {
    pub client: Client,
    pub settings: NotebookSettings,
    pub workload: WorkloadSettings,
    /// `--manage-workloads`.
    pub manage_workloads: bool,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// The caches of the watches that trigger the reconciler: derived
    /// objects (skipping no-op applies, create detection, status) and pods
    /// labelled `notebook-name` (status).
    pub virtual_services: Store<VirtualService>,
    pub services: Store<Service>,
    pub stateful_sets: Store<StatefulSet>,
    pub pods: Store<Pod>,
    pub applied: AppliedCache,
    pub backoff: Backoff,
}

impl Context {
    /// Publishes an Event about `notebook`; a failure is logged, never fatal
    /// (an Event is a courtesy, the status and logs carry the same news).
    pub async fn event(&self, notebook: &Notebook, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &notebook.object_ref(&())).await {
            tracing::warn!(notebook = %notebook.name_any(), %error, reason, "publishing an event failed");
        }
    }
}

/// What this leadership term last applied per object: a hash of the body
/// and the `resourceVersion` the API server answered with.
///
/// A reconcile whose desired body hashes the same while the cache still
/// holds that very version has nothing to do for the object: nobody changed
/// it since (any change, a hand edit included, moves the version, and the
/// cache has seen every change whose event triggered this reconcile). This
/// saves the no-op applies of the reconciles that the controller's own
/// writes trigger.
#[derive(Debug, Default)]
pub struct AppliedCache {
    entries: Mutex<HashMap<AppliedKey, (u64, String)>>,
}

/// Kind, namespace, name.
type AppliedKey = (&'static str, String, String);

impl AppliedCache {
    /// The hash of an apply body.
    pub fn hash(body: &serde_json::Value) -> u64 {
        let mut hasher = DefaultHasher::new();
        body.to_string().hash(&mut hasher);
        hasher.finish()
    }

    /// Whether `body_hash` was applied to `kind` `namespace/name` and the
    /// object is still at the version that apply returned.
    pub fn unchanged(&self, key: (&'static str, &str, &str), body_hash: u64, cached_version: Option<&str>) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (kind, namespace, name) = key;
        entries
            .get(&(kind, namespace.to_string(), name.to_string()))
            .is_some_and(|(hash, version)| *hash == body_hash && cached_version == Some(version.as_str()))
    }

    /// Whether this term has applied `kind` `namespace/name`.
    pub fn contains(&self, key: (&'static str, &str, &str)) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (kind, namespace, name) = key;
        entries.contains_key(&(kind, namespace.to_string(), name.to_string()))
    }

    /// Remembers an apply of `body_hash` that left the object at `version`.
    pub fn record(&self, key: (&'static str, &str, &str), body_hash: u64, version: Option<String>) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (kind, namespace, name) = key;
        let key = (kind, namespace.to_string(), name.to_string());
        match version {
            Some(version) => entries.insert(key, (body_hash, version)),
            None => entries.remove(&key),
        };
    }
}

/// Per-Notebook exponential backoff after failures: 0.5 s, 1 s, 2 s, ...
/// up to [`Backoff::MAX`]; a success resets it.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<ObjectRef<Notebook>, u32>>,
}

impl Backoff {
    pub const BASE: Duration = Duration::from_millis(500);
    pub const MAX: Duration = Duration::from_secs(300);

    /// Counts a failure of `notebook` and returns how long to wait.
    pub fn failed(&self, notebook: ObjectRef<Notebook>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(notebook).or_insert(0);
        *count = count.saturating_add(1);
        let exponent = (*count - 1).min(16);
        Self::BASE.saturating_mul(1 << exponent).min(Self::MAX)
    }

    /// Forgets the failures of `notebook`.
    pub fn succeeded(&self, notebook: &ObjectRef<Notebook>) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(notebook);
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let backoff = Backoff::default();
        let a = ObjectRef::<Notebook>::new("a").within("team");
        let delays: Vec<_> = (0..4).map(|_| backoff.failed(a.clone())).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000].map(Duration::from_millis));
        for _ in 0..30 {
            backoff.failed(a.clone());
        }
        assert_eq!(backoff.failed(a.clone()), Backoff::MAX);
        let b = ObjectRef::<Notebook>::new("b").within("team");
        assert_eq!(backoff.failed(b), Backoff::BASE, "counts are per Notebook");
        backoff.succeeded(&a);
        assert_eq!(backoff.failed(a), Backoff::BASE);
    }

    #[test]
    fn an_apply_is_skipped_only_for_the_same_body_at_the_same_version() {
        let applied = AppliedCache::default();
        let key = ("Service", "team", "nb");
        let body = serde_json::json!({"spec": {"type": "ClusterIP"}});
        let hash = AppliedCache::hash(&body);
        assert!(!applied.unchanged(key, hash, Some("7")), "never applied");
        assert!(!applied.contains(key));
        applied.record(key, hash, Some("7".to_string()));
        assert!(applied.unchanged(key, hash, Some("7")));
        assert!(applied.contains(key));
        assert!(!applied.unchanged(key, hash, Some("8")), "changed by someone since");
        assert!(!applied.unchanged(key, hash, None), "deleted since");
        let other = AppliedCache::hash(&serde_json::json!({"spec": {"type": "NodePort"}}));
        assert!(!applied.unchanged(key, other, Some("7")), "a new desired state");
        assert!(!applied.unchanged(("VirtualService", "team", "nb"), hash, Some("7")), "per kind");
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo".to_string(), 2), "h");
        assert_eq!(truncate("hello".to_string(), 10), "hello");
    }
}
