//! What runs behind each notebook's destination host, sent to every gateway
//! beside the endpoints (see `portico_routing::workload`): a Notebook event
//! re-derives that one notebook's state, and only a state that changed
//! becomes a piece of the next delta.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use portico_api::notebook::Notebook;
use portico_routing::{NotebookSettings, WorkloadState, notebook_workload};

/// Destination host -> state; `None` removes it.
pub type WorkloadDelta = BTreeMap<String, Option<Arc<WorkloadState>>>;

/// Every Notebook's current state, by (namespace, name).
#[derive(Debug, Default)]
pub struct Workloads {
    by_notebook: HashMap<(String, String), (String, Arc<WorkloadState>)>,
}

impl Workloads {
    /// Records `notebook`'s state; a change goes into `delta`.
    pub fn upsert(&mut self, notebook: &Notebook, settings: &NotebookSettings, delta: &mut WorkloadDelta) {
        let (host, state) = notebook_workload(notebook, settings);
        let key = (state.namespace.clone(), state.notebook.clone());
        match self.by_notebook.get(&key) {
            Some((known_host, known)) if *known_host == host && **known == state => {}
            _ => {
                let state = Arc::new(state);
                delta.insert(host.clone(), Some(Arc::clone(&state)));
                self.by_notebook.insert(key, (host, state));
            }
        }
    }

    /// Forgets the Notebook `namespace/name`.
    pub fn remove(&mut self, namespace: &str, name: &str, delta: &mut WorkloadDelta) {
        if let Some((host, _)) = self.by_notebook.remove(&(namespace.to_string(), name.to_string())) {
            delta.insert(host, None);
        }
    }

    /// Replaces everything with `notebooks` (a relist), recording only
    /// the differences.
    pub fn replace(&mut self, notebooks: &[Arc<Notebook>], settings: &NotebookSettings, delta: &mut WorkloadDelta) {
        let mut previous = std::mem::take(&mut self.by_notebook);
        for notebook in notebooks {
            let (host, state) = notebook_workload(notebook, settings);
            let key = (state.namespace.clone(), state.notebook.clone());
            match previous.remove(&key) {
                Some((known_host, known)) if known_host == host && *known == state => {
                    self.by_notebook.insert(key, (known_host, known));
                }
                _ => {
                    let state = Arc::new(state);
                    delta.insert(host.clone(), Some(Arc::clone(&state)));
                    self.by_notebook.insert(key, (host, state));
                }
            }
        }
        for (host, _) in previous.into_values() {
            delta.entry(host).or_insert(None);
        }
    }

    /// Every state, as additions (a new kind of gateway's full state).
    pub fn everything(&self) -> WorkloadDelta {
        self.by_notebook.values().map(|(host, state)| (host.clone(), Some(Arc::clone(state)))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_routing::WorkloadPhase;
    use serde_json::json;

    fn notebook(name: &str, stopped: bool) -> Arc<Notebook> {
        let annotations =
            if stopped { json!({"kubeflow-resource-stopped": "2026-12-05T00:00:00Z"}) } else { json!({}) };
        let object = json!({
            "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
            "metadata": {"name": name, "namespace": "team", "annotations": annotations},
            "spec": {"template": {"spec": {"containers": [{"name": "nb", "image": "x"}]}}},
        });
        Arc::new(serde_json::from_value(object).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn only_a_changed_state_is_sent() {
        let settings = NotebookSettings::default();
        let mut workloads = Workloads::default();
        let mut delta = WorkloadDelta::new();
        workloads.upsert(&notebook("a", false), &settings, &mut delta);
        assert_eq!(delta.len(), 1);
        let mut delta = WorkloadDelta::new();
        workloads.upsert(&notebook("a", false), &settings, &mut delta);
        assert!(delta.is_empty(), "same state: nothing to send");
        workloads.upsert(&notebook("a", true), &settings, &mut delta);
        let sent = delta.get("a.team.svc.cluster.local").cloned().flatten().map(|s| s.phase);
        assert_eq!(sent, Some(WorkloadPhase::Stopped));
    }

    #[test]
    fn a_relist_sends_the_differences_and_the_removals() {
        let settings = NotebookSettings::default();
        let mut workloads = Workloads::default();
        let mut delta = WorkloadDelta::new();
        workloads.replace(&[notebook("a", false), notebook("b", false)], &settings, &mut delta);
        assert_eq!(delta.len(), 2);
        let mut delta = WorkloadDelta::new();
        workloads.replace(&[notebook("a", false), notebook("c", true)], &settings, &mut delta);
        let keys: Vec<(&str, bool)> = delta.iter().map(|(k, v)| (k.as_str(), v.is_some())).collect();
        assert_eq!(keys, vec![("b.team.svc.cluster.local", false), ("c.team.svc.cluster.local", true)]);
        assert_eq!(workloads.everything().len(), 2);
    }
}
