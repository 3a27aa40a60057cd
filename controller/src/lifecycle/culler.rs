//! Kubeflow's culling, fed by what the gateways saw instead of by polling
//! Jupyter's `/api/kernels` (which misses terminals, VS Code and RStudio).
//!
//! Every `IDLENESS_CHECK_PERIOD`, for every Notebook:
//! - stopped: the leader removes `last-activity` and
//!   `last_activity_check_timestamp`, as Kubeflow does while stopped;
//! - no `last-activity` yet (new, or just started): once the notebook
//!   serves (`readyReplicas` > 0), the leader sets it to now. Kubeflow starts
//!   the clock as soon as the pod exists, so a notebook whose image takes
//!   longer to pull than `CULL_IDLE_TIME` is culled the moment it comes up,
//!   before anyone could use it; here the clock starts when it can be used;
//! - the gateways saw something newer than the annotation: this replica
//!   writes it, at most once per `--activity-annotation-interval`;
//! - culling enabled and idle longer than `CULL_IDLE_TIME`: the leader sets
//!   `kubeflow-resource-stopped` to now (RFC 3339) and records an Event.
//!
//! Unlike Kubeflow's culler it does not write `last_activity_check_timestamp`
//! on every check: that is one write per notebook per period whatever
//! happens, 170 writes/s at 10,000 notebooks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use portico_api::notebook::{LAST_ACTIVITY_ANNOTATION, Notebook, STOP_ANNOTATION};
use portico_routing::notebook::notebook_host;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::LifecycleSettings;
use super::activity::ActivityBook;
use crate::metrics::Metrics;

/// Kubeflow's annotation of when the culler last looked (removed while stopped).
pub const LAST_ACTIVITY_CHECK_ANNOTATION: &str = "notebooks.kubeflow.org/last_activity_check_timestamp";

/// The culler of one controller replica.
pub struct Culler {
    pub client: Client,
    pub notebooks: Store<Notebook>,
    pub book: Arc<ActivityBook>,
    pub settings: LifecycleSettings,
    /// True while this replica leads: only the leader stops notebooks.
    pub leading: watch::Receiver<bool>,
    pub metrics: Metrics,
    pub recorder: Recorder,
}

/// What one check decided for one Notebook: annotations to set (`None`
/// removes one), and whether it culls.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    pub annotations: Vec<(&'static str, Option<String>)>,
    pub culled: bool,
}

impl Culler {
    /// Checks every Notebook every `IDLENESS_CHECK_PERIOD`, until the process ends.
    pub async fn run(self) {
        let mut written: HashMap<(String, String), Instant> = HashMap::new();
        let mut ticker = tokio::time::interval(self.settings.idleness_check_period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let leading = *self.leading.borrow();
            let now = Timestamp::now();
            written.retain(|_, at| at.elapsed() < self.settings.annotation_interval);
            for notebook in self.notebooks.state() {
                let key = (notebook.namespace().unwrap_or_default(), notebook.name_any());
                let host = notebook_host(&key.0, &key.1, &self.settings.cluster_domain);
                let seen = self.book.last_activity_ms(&host).and_then(|ms| Timestamp::from_millisecond(ms).ok());
                let may_write = !written.contains_key(&key);
                let decision = decide(&notebook, seen, now, leading, may_write, &self.settings);
                if decision.annotations.is_empty() {
                    continue;
                }
                if let Err(error) = self.write(&notebook, &decision).await {
                    tracing::warn!(notebook = %format!("{}/{}", key.0, key.1), %error, "writing lifecycle annotations failed");
                    continue;
                }
                if decision.annotations.iter().any(|(name, value)| *name == LAST_ACTIVITY_ANNOTATION && value.is_some())
                {
                    written.insert(key.clone(), Instant::now());
                }
                if decision.culled {
                    self.culled(&notebook, seen, now).await;
                }
            }
        }
    }

    async fn write(&self, notebook: &Notebook, decision: &Decision) -> Result<(), kube::Error> {
        let mut annotations = Map::new();
        for (name, value) in &decision.annotations {
            annotations.insert((*name).to_string(), value.clone().map_or(Value::Null, Value::String));
        }
        let api: Api<Notebook> = Api::namespaced(self.client.clone(), &notebook.namespace().unwrap_or_default());
        let patch = json!({ "metadata": { "annotations": annotations } });
        api.patch(&notebook.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
    }

    async fn culled(&self, notebook: &Notebook, seen: Option<Timestamp>, now: Timestamp) {
        self.metrics.notebooks_culled.inc();
        let idle = seen.map_or_else(|| "no activity seen".to_string(), |at| format!("last activity {}", rfc3339(at)));
        let note = format!(
            "stopped after {} idle ({idle}; CULL_IDLE_TIME {}s) at {}",
            humanize(self.settings.cull_idle_time),
            self.settings.cull_idle_time.as_secs(),
            rfc3339(now)
        );
        tracing::info!(notebook = %format!("{}/{}", notebook.namespace().unwrap_or_default(), notebook.name_any()), %note, "culled");
        let event = Event {
            type_: EventType::Normal,
            reason: "Culled".into(),
            note: Some(note),
            action: "Cull".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &notebook.object_ref(&())).await {
            tracing::warn!(notebook = %notebook.name_any(), %error, "publishing the Culled event failed");
        }
    }
}

/// The culler's decision for `notebook` (pure; see the module docs).
pub fn decide(
    notebook: &Notebook,
    seen: Option<Timestamp>,
    now: Timestamp,
    leading: bool,
    may_write: bool,
    settings: &LifecycleSettings,
) -> Decision {
    let annotations = notebook.metadata.annotations.clone().unwrap_or_default();
    let mut decision = Decision::default();
    if annotations.contains_key(STOP_ANNOTATION) {
        if leading {
            for name in [LAST_ACTIVITY_ANNOTATION, LAST_ACTIVITY_CHECK_ANNOTATION] {
                if annotations.contains_key(name) {
                    decision.annotations.push((name, None));
                }
            }
        }
        return decision;
    }
    let annotated = annotations.get(LAST_ACTIVITY_ANNOTATION).and_then(|value| value.parse::<Timestamp>().ok());
    let Some(annotated) = annotated else {
        // The idle clock starts now, if the notebook serves (see the module
        // docs); activity seen while it started is older than now.
        let serving = notebook.status.as_ref().is_some_and(|status| status.ready_replicas > 0);
        if leading && serving {
            decision.annotations.push((LAST_ACTIVITY_ANNOTATION, Some(rfc3339(now))));
        }
        return decision;
    };
    if let Some(seen) = seen
        && may_write
        && seen.as_second() > annotated.as_second()
    {
        decision.annotations.push((LAST_ACTIVITY_ANNOTATION, Some(rfc3339(seen))));
    }
    let last = seen.map_or(annotated, |seen| annotated.max(seen));
    let idle_for = now.duration_since(last);
    let limit = SignedDuration::try_from(settings.cull_idle_time).unwrap_or(SignedDuration::MAX);
    if leading && settings.enable_culling && idle_for > limit {
        decision.annotations.push((STOP_ANNOTATION, Some(rfc3339(now))));
        decision.culled = true;
    }
    decision
}

/// RFC 3339 in whole seconds, as Kubeflow's Go code writes it.
pub fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LifecycleSettings {
        LifecycleSettings {
            enable_culling: true,
            cull_idle_time: Duration::from_secs(600),
            idleness_check_period: Duration::from_secs(60),
            annotation_interval: Duration::from_secs(60),
            wake_min_interval: Some(Duration::from_secs(30)),
            cluster_domain: "cluster.local".to_string(),
        }
    }

    /// A serving notebook with `annotations`.
    fn notebook(annotations: &[(&str, &str)]) -> Notebook {
        notebook_ready(annotations, 1)
    }

    fn notebook_ready(annotations: &[(&str, &str)], ready_replicas: i32) -> Notebook {
        let annotations: serde_json::Map<String, Value> =
            annotations.iter().map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string()))).collect();
        serde_json::from_value(json!({
            "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
            "metadata": {"name": "nb", "namespace": "team", "annotations": annotations},
            "spec": {"template": {"spec": {"containers": [{"name": "nb", "image": "x"}]}}},
            "status": {"readyReplicas": ready_replicas},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_new_notebook_starts_its_idle_clock_now() {
        let now = at("2026-12-05T10:00:00Z");
        let decision = decide(&notebook(&[]), None, now, true, true, &settings());
        assert_eq!(decision.annotations, vec![(LAST_ACTIVITY_ANNOTATION, Some("2026-12-05T10:00:00Z".to_string()))]);
        assert!(!decide(&notebook(&[]), None, now, false, true, &settings()).culled, "only the leader initialises");
    }

    #[test]
    fn the_idle_clock_waits_for_the_notebook_to_serve() {
        let now = at("2026-12-05T10:00:00Z");
        // Activity seen long ago (before a stop, or at the wake) is no reason
        // to cull a notebook still starting, nor one that has just started.
        let seen = Some(at("2026-12-05T08:00:00Z"));
        let starting = notebook_ready(&[], 0);
        assert_eq!(decide(&starting, seen, now, true, true, &settings()), Decision::default());
        let decision = decide(&notebook(&[]), seen, now, true, true, &settings());
        assert_eq!(decision.annotations, vec![(LAST_ACTIVITY_ANNOTATION, Some("2026-12-05T10:00:00Z".to_string()))]);
        assert!(!decision.culled);
    }

    #[test]
    fn activity_seen_by_the_gateways_moves_the_annotation_at_most_once_per_interval() {
        let nb = notebook(&[(LAST_ACTIVITY_ANNOTATION, "2026-12-05T10:00:00Z")]);
        let (now, seen) = (at("2026-12-05T10:05:00Z"), Some(at("2026-12-05T10:04:30.250Z")));
        let decision = decide(&nb, seen, now, false, true, &settings());
        assert_eq!(decision.annotations, vec![(LAST_ACTIVITY_ANNOTATION, Some("2026-12-05T10:04:30Z".to_string()))]);
        assert_eq!(decide(&nb, seen, now, false, false, &settings()), Decision::default(), "written recently");
        let older = Some(at("2026-12-05T09:00:00Z"));
        assert_eq!(decide(&nb, older, now, true, true, &settings()), Decision::default(), "never moves back");
    }

    #[test]
    fn an_idle_notebook_is_culled_by_the_leader_only_and_only_when_enabled() {
        let nb = notebook(&[(LAST_ACTIVITY_ANNOTATION, "2026-12-05T10:00:00Z")]);
        let now = at("2026-12-05T10:10:01Z");
        let decision = decide(&nb, None, now, true, true, &settings());
        assert!(decision.culled);
        assert_eq!(decision.annotations, vec![(STOP_ANNOTATION, Some("2026-12-05T10:10:01Z".to_string()))]);
        assert!(!decide(&nb, None, now, false, true, &settings()).culled);
        let disabled = LifecycleSettings { enable_culling: false, ..settings() };
        assert!(!decide(&nb, None, now, true, true, &disabled).culled);
        let recent = Some(at("2026-12-05T10:09:00Z"));
        assert!(!decide(&nb, recent, now, true, true, &settings()).culled, "the gateways saw activity");
    }

    #[test]
    fn a_stopped_notebook_loses_its_activity_annotations_as_in_kubeflow() {
        let nb =
            notebook(&[(STOP_ANNOTATION, "2026-12-05T10:10:01Z"), (LAST_ACTIVITY_ANNOTATION, "2026-12-05T10:00:00Z")]);
        let decision = decide(&nb, None, at("2026-12-05T10:11:00Z"), true, true, &settings());
        assert_eq!(decision.annotations, vec![(LAST_ACTIVITY_ANNOTATION, None)]);
        assert!(!decision.culled);
    }
}
