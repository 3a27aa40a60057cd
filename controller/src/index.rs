//! The route index: Gateways, VirtualServices, Services and EndpointSlices,
//! watched into caches and turned into versioned route snapshots.
//!
//! Every replica runs it (leader or not), so a standby can serve discovery at
//! once. Changes are debounced: the first change of a burst starts a quiet
//! period (`--debounce`, 10 ms by default) that each further change restarts,
//! bounded by [`MAX_DELAY`] so that constant churn still publishes. Then one
//! `translate` per gateway instance runs on a copy of the caches, off the
//! watch tasks, and the [`Publisher`] numbers the result. Under constant
//! churn a build is followed by at least as long a rest, so the index never
//! takes more than half a core from the reconciler and the API server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use portico_api::istio::{AuthorizationPolicy, Gateway, MeshConfig, RequestAuthentication, VirtualService};
use portico_routing::resources::{
    INJECTED_POD_LABEL, INJECTED_POD_VALUE, MESH_NAMESPACE_LABEL, SERVICE_ACCOUNT_ANNOTATION,
};
use portico_routing::{GatewayIdentity, NotebookSettings, Resources, translate};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::demand::Demand;
use crate::metrics::Metrics;
use crate::reflect::{reflect, scoped_api};
use crate::snapshot::{Publisher, Snapshot};

/// Longest a burst of changes can hold back a rebuild.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// What the index builds tables for.
#[derive(Clone, Debug)]
pub struct IndexSettings {
    /// Always built, connected or not (`--gateway-labels`).
    pub identities: Vec<GatewayIdentity>,
    pub notebook_settings: NotebookSettings,
    pub debounce: Duration,
    /// `--watch-namespace`.
    pub namespace: Option<String>,
    /// `--mesh-config`: the ConfigMap (namespace, name) whose `mesh` key
    /// holds Istio's mesh config (CUSTOM policies' extension providers).
    pub mesh_config: Option<(String, String)>,
}

/// The index's caches, readable by others (the reconciler reads nothing
/// from them today; `/debug` and tests may).
#[derive(Clone)]
pub struct IndexStores {
    pub gateways: Store<Gateway>,
    pub virtual_services: Store<VirtualService>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    /// Namespaces labelled for the mesh (their pods get mutual TLS).
    pub meshed_namespaces: Store<Namespace>,
    /// Pods carrying the sidecar (metadata only): the others in a meshed
    /// namespace are reached without mutual TLS.
    pub injected_pods: Store<PartialObjectMeta<Pod>>,
    pub request_authentications: Store<RequestAuthentication>,
    pub authorization_policies: Store<AuthorizationPolicy>,
    /// The `--mesh-config` ConfigMap, when one is named.
    pub mesh_config: Option<Store<ConfigMap>>,
}

impl IndexStores {
    /// Waits until every cache has completed its first list.
    pub async fn ready(&self) -> bool {
        self.gateways.wait_until_ready().await.is_ok()
            && self.virtual_services.wait_until_ready().await.is_ok()
            && self.services.wait_until_ready().await.is_ok()
            && self.endpoint_slices.wait_until_ready().await.is_ok()
            && self.meshed_namespaces.wait_until_ready().await.is_ok()
            && self.injected_pods.wait_until_ready().await.is_ok()
            // Policies gate the first snapshot too: publishing routes
            // before the policies that protect them would open the door.
            && self.request_authentications.wait_until_ready().await.is_ok()
            && self.authorization_policies.wait_until_ready().await.is_ok()
            && match &self.mesh_config {
                Some(store) => store.wait_until_ready().await.is_ok(),
                None => true,
            }
    }

    /// A copy of the caches as `translate`'s input.
    pub fn resources(&self, settings: &NotebookSettings) -> Resources {
        fn owned<K>(store: &Store<K>) -> Vec<K>
        where
            K: kube::runtime::reflector::Lookup + Clone + 'static,
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            store.state().iter().map(|object| (**object).clone()).collect()
        }
        Resources {
            gateways: owned(&self.gateways),
            virtual_services: owned(&self.virtual_services),
            services: owned(&self.services),
            endpoint_slices: owned(&self.endpoint_slices),
            meshed_namespaces: self.meshed_namespaces.state().iter().filter_map(|n| n.metadata.name.clone()).collect(),
            injected_pods: Some(
                self.injected_pods
                    .state()
                    .iter()
                    .filter_map(|pod| {
                        let key = (pod.metadata.namespace.clone()?, pod.metadata.name.clone()?);
                        // Pods injected before the annotation existed (or by
                        // another injector) run as the namespace's default.
                        let service_account = pod
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(SERVICE_ACCOUNT_ANNOTATION))
                            .cloned()
                            .unwrap_or_else(|| "default".to_string());
                        Some((key, service_account))
                    })
                    .collect(),
            ),
            request_authentications: owned(&self.request_authentications),
            authorization_policies: owned(&self.authorization_policies),
            mesh_config: self.mesh_config.as_ref().and_then(|store| mesh_config(&store.state())),
            settings: settings.clone(),
            ..Resources::default()
        }
    }
}

/// A running index.
pub struct Index {
    pub stores: IndexStores,
    /// Version 0 until the first build.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Where discovery registers the gateways it serves.
    pub demand: Demand,
}

/// Starts the watches and the builder on `tasks`.
pub fn spawn(client: &Client, settings: IndexSettings, metrics: Metrics, tasks: &mut JoinSet<()>) -> Index {
    let changed = Arc::new(Notify::new());
    let demand = Demand::new(settings.identities.clone(), changed.clone());
    let namespace = settings.namespace.as_deref();
    let (gateways, gateways_writer) = reflector::store();
    let (virtual_services, virtual_services_writer) = reflector::store();
    let (services, services_writer) = reflector::store();
    let (endpoint_slices, endpoint_slices_writer) = reflector::store();
    let config = watcher::Config::default;
    tasks.spawn(reflect(scoped_api::<Gateway>(client, namespace), config(), gateways_writer, Some(changed.clone())));
    tasks.spawn(reflect(
        scoped_api::<VirtualService>(client, namespace),
        config(),
        virtual_services_writer,
        Some(changed.clone()),
    ));
    tasks.spawn(reflect(scoped_api::<Service>(client, namespace), config(), services_writer, Some(changed.clone())));
    tasks.spawn(reflect(
        scoped_api::<EndpointSlice>(client, namespace),
        config(),
        endpoint_slices_writer,
        Some(changed.clone()),
    ));
    // Cluster-scoped, so watched whole even with --watch-namespace; only the
    // labelled ones.
    let (meshed_namespaces, namespaces_writer) = reflector::store();
    let selector = format!("{MESH_NAMESPACE_LABEL}=enabled");
    tasks.spawn(reflect(
        kube::Api::<Namespace>::all(client.clone()),
        watcher::Config::default().labels(&selector),
        namespaces_writer,
        Some(changed.clone()),
    ));
    let (injected_pods, injected_pods_writer) = reflector::store();
    // Metadata only: an Api of PartialObjectMeta makes metadata requests.
    tasks.spawn(reflect(
        scoped_api::<PartialObjectMeta<Pod>>(client, namespace),
        watcher::Config::default().labels(&format!("{INJECTED_POD_LABEL}={INJECTED_POD_VALUE}")),
        injected_pods_writer,
        Some(changed.clone()),
    ));
    let (request_authentications, request_authentications_writer) = reflector::store();
    tasks.spawn(reflect(
        scoped_api::<RequestAuthentication>(client, namespace),
        config(),
        request_authentications_writer,
        Some(changed.clone()),
    ));
    let (authorization_policies, authorization_policies_writer) = reflector::store();
    tasks.spawn(reflect(
        scoped_api::<AuthorizationPolicy>(client, namespace),
        config(),
        authorization_policies_writer,
        Some(changed.clone()),
    ));
    let mesh_config = settings.mesh_config.as_ref().map(|(config_namespace, name)| {
        let (store, writer) = reflector::store();
        tasks.spawn(reflect(
            kube::Api::<ConfigMap>::namespaced(client.clone(), config_namespace),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            writer,
            Some(changed.clone()),
        ));
        store
    });
    let stores = IndexStores {
        gateways,
        virtual_services,
        services,
        endpoint_slices,
        meshed_namespaces,
        injected_pods,
        request_authentications,
        authorization_policies,
        mesh_config,
    };
    let (publisher, snapshots) = Publisher::new();
    tasks.spawn(build_loop(stores.clone(), settings, demand.clone(), changed, publisher, metrics));
    Index { stores, snapshots, demand }
}

/// The mesh config in the watched ConfigMap's `mesh` key. A config that
/// does not parse is logged and ignored: CUSTOM policies then name an
/// unknown provider and deny, which is the safe side.
fn mesh_config(config_maps: &[Arc<ConfigMap>]) -> Option<MeshConfig> {
    let config_map = config_maps.first()?;
    let mesh = config_map.data.as_ref()?.get("mesh")?;
    match portico_routing::security::parse_mesh_config(mesh) {
        Ok(config) => Some(config),
        Err(error) => {
            let name = config_map.metadata.name.as_deref().unwrap_or_default();
            tracing::warn!(config_map = name, %error, "cannot read the mesh config's `mesh` key; no extension providers");
            None
        }
    }
}

/// Builds and publishes after the caches fill and after every burst of changes.
async fn build_loop(
    stores: IndexStores,
    settings: IndexSettings,
    demand: Demand,
    changed: Arc<Notify>,
    publisher: Publisher,
    metrics: Metrics,
) {
    if !stores.ready().await {
        tracing::error!("route index caches were dropped before they filled");
        return;
    }
    loop {
        let started = Instant::now();
        let resources = stores.resources(&settings.notebook_settings);
        let copied = started.elapsed();
        let identities = demand.identities();
        // translate is CPU-bound: keep it off the runtime's I/O threads.
        let built = tokio::task::spawn_blocking(move || {
            let built = identities
                .into_iter()
                .map(|identity| {
                    let (table, diagnostics) = translate(&resources, &identity);
                    (identity, table, diagnostics)
                })
                .collect::<Vec<_>>();
            // Drop the copied objects here, not on an I/O thread.
            drop(resources);
            built
        })
        .await;
        let translated = started.elapsed();
        match built {
            Ok(built) => {
                let before = publisher.subscribe().borrow().version;
                let version = publisher.publish(built);
                tracing::debug!(
                    copy_ms = copied.as_millis() as u64,
                    translate_ms = (translated - copied).as_millis() as u64,
                    publish_ms = (started.elapsed() - translated).as_millis() as u64,
                    "route index build"
                );
                metrics.snapshot_builds.inc();
                metrics.snapshot_version.set(i64::try_from(version).unwrap_or(i64::MAX));
                if version != before {
                    let snapshot = publisher.subscribe().borrow().clone();
                    let summary = snapshot.summary();
                    tracing::info!(
                        version,
                        routes = %summary["routes"],
                        diagnostics = %summary["diagnostics"],
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "published route snapshot"
                    );
                }
            }
            Err(error) => tracing::error!(%error, "building route tables panicked; keeping the last snapshot"),
        }
        // Under constant churn, build at most half the time: a build that
        // took B is followed by at least B of rest (the changes meanwhile
        // coalesce into the next build).
        let took = started.elapsed();
        next_burst(&changed, settings.debounce, MAX_DELAY.max(took)).await;
        let rested = started.elapsed().saturating_sub(took);
        if rested < took {
            tokio::time::sleep(took - rested).await;
        }
    }
}

/// Waits for a change, then until `quiet` passes with no further change or
/// `max_delay` has passed since the first.
pub async fn next_burst(changed: &Notify, quiet: Duration, max_delay: Duration) {
    changed.notified().await;
    let first = Instant::now();
    loop {
        let remaining = max_delay.saturating_sub(first.elapsed());
        if remaining.is_zero() {
            return;
        }
        tokio::select! {
            () = changed.notified() => continue,
            () = tokio::time::sleep(quiet.min(remaining)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_is_coalesced_into_one_wakeup() {
        let changed = Arc::new(Notify::new());
        let notifier = changed.clone();
        let burst = tokio::spawn(async move {
            for _ in 0..20 {
                notifier.notify_one();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        let started = Instant::now();
        next_burst(&changed, Duration::from_millis(200), Duration::from_secs(5)).await;
        // 20 changes 2 ms apart, then 200 ms of quiet: one wake-up, after the burst.
        assert!(burst.is_finished(), "woke up in the middle of the burst");
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn constant_churn_still_wakes_up_after_max_delay() {
        let changed = Arc::new(Notify::new());
        let notifier = changed.clone();
        let churn = tokio::spawn(async move {
            loop {
                notifier.notify_one();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let started = Instant::now();
        next_burst(&changed, Duration::from_millis(150), Duration::from_millis(300)).await;
        churn.abort();
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    }
}
