//! Waking a stopped notebook when its user comes back.
//!
//! A gateway asks only after authorizing the request exactly as if the
//! notebook were running (an anonymous or foreign request never gets this
//! far), and bounds how often it asks per destination. Here each notebook
//! is woken at most once per `--wake-min-interval`, whatever the number of
//! gateways asking, and only when it is stopped: the request removes
//! `kubeflow-resource-stopped`, which is what Kubeflow's UI does on "start".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use portico_api::notebook::{Notebook, STOP_ANNOTATION};
use serde_json::json;

use super::notebook_of_host;
use crate::metrics::Metrics;

/// Wakes notebooks on behalf of gateways.
pub struct Waker {
    pub client: Client,
    pub notebooks: Store<Notebook>,
    pub cluster_domain: String,
    /// `None`: waking is off (`--wake-min-interval 0`).
    pub min_interval: Option<Duration>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// When each notebook was last woken by this replica.
    pub woken: Mutex<HashMap<(String, String), Instant>>,
}

/// Why a wake request did nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Skipped {
    Disabled,
    NotANotebook,
    Unknown,
    NotStopped,
    TooSoon,
}

impl Waker {
    /// Handles a wake request from `gateway` for the destination `host`, on a
    /// task of its own (the discovery stream never waits for the API server).
    pub fn request(self: &Arc<Self>, gateway: &str, host: &str) {
        let (waker, gateway, host) = (Arc::clone(self), gateway.to_string(), host.to_string());
        tokio::spawn(async move {
            match waker.wake(&gateway, &host).await {
                Ok(Ok(())) => {}
                Ok(Err(skipped)) => tracing::debug!(%host, %gateway, ?skipped, "wake request ignored"),
                Err(error) => tracing::warn!(%host, %gateway, %error, "waking a notebook failed"),
            }
        });
    }

    async fn wake(&self, gateway: &str, host: &str) -> Result<Result<(), Skipped>, kube::Error> {
        let Some(min_interval) = self.min_interval else { return Ok(Err(Skipped::Disabled)) };
        let Some((namespace, name)) = notebook_of_host(host, &self.cluster_domain) else {
            return Ok(Err(Skipped::NotANotebook));
        };
        let Some(notebook) = self.notebooks.get(&ObjectRef::new(name).within(namespace)) else {
            return Ok(Err(Skipped::Unknown));
        };
        if !notebook.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(STOP_ANNOTATION)) {
            return Ok(Err(Skipped::NotStopped));
        }
        {
            let mut woken = self.woken.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            woken.retain(|_, at| at.elapsed() < min_interval);
            let key = (namespace.to_string(), name.to_string());
            if woken.contains_key(&key) {
                return Ok(Err(Skipped::TooSoon));
            }
            woken.insert(key, Instant::now());
        }
        let api: Api<Notebook> = Api::namespaced(self.client.clone(), namespace);
        let patch = json!({ "metadata": { "annotations": { STOP_ANNOTATION: null } } });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        self.metrics.notebooks_woken.inc();
        tracing::info!(notebook = %format!("{namespace}/{name}"), %gateway, "woken by a request");
        let note = format!("started again by a request for {host} through gateway {gateway}");
        let event = Event {
            type_: EventType::Normal,
            reason: "Woken".into(),
            note: Some(note),
            action: "Wake".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &notebook.object_ref(&())).await {
            tracing::warn!(notebook = %name, %error, "publishing the Woken event failed");
        }
        Ok(Ok(()))
    }
}
