//! The route index: Gateways, VirtualServices, Services, EndpointSlices and
//! the security policies, watched into caches and kept translated, one
//! [`IncrementalTranslator`] per kind of gateway; with `--chp-api`, also
//! JupyterHub's ChpRoutes (`crate::chp::table`), served to every gateway.
//!
//! Every replica runs it (leader or not), so a standby can serve discovery at
//! once. Each watch event becomes a [`Change`] ([`changes`]); the build loop
//! ([`builder`]) applies a burst of them to the translators, so one new
//! Notebook re-translates one VirtualService, and publishes the resulting
//! deltas as the next version of the discovery encoding. Bursts are
//! coalesced: the first change starts a quiet period (`--debounce`, 10 ms by
//! default) that each further change restarts, bounded by [`MAX_DELAY`].

pub mod builder;
pub mod changes;
pub mod workloads;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use portico_api::chp::ChpRoute;
use portico_api::istio::{AuthorizationPolicy, Gateway, MeshConfig, RequestAuthentication, VirtualService};
use portico_api::notebook::Notebook;
use portico_routing::incremental::{Object, ObjectKind};
use portico_routing::resources::{INJECTED_POD_LABEL, INJECTED_POD_VALUE, MESH_NAMESPACE_LABEL};
use portico_routing::{GatewayIdentity, IncrementalTranslator, NotebookSettings, Resources};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use self::changes::{ChangeSink, watch as watch_kind};
use crate::chp::ChpSettings;
use crate::chp::propagation::Propagation;
use crate::demand::Demand;
use crate::discovery::encode::EncodedSnapshot;
use crate::metrics::Metrics;
use crate::reflect::scoped_api;
use crate::snapshot::{Publisher, Snapshot};

/// Longest a burst of changes can hold back a rebuild. Each change restarts
/// the quiet period, so under a steady trickle of changes (pods becoming
/// ready one after another, 100 notebooks woken at once) this bound, not the
/// debounce, is what a change waits: it was 1 s, which put whole seconds
/// into the tail of propagation whenever changes kept coming. A step costs
/// what it changes, and the build loop rests as long as it builds, so a
/// short bound costs little CPU.
pub const MAX_DELAY: Duration = Duration::from_millis(100);

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
    /// `--chp-api`: watch ChpRoutes and serve them to every gateway.
    pub chp: Option<ChpSettings>,
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
    /// Notebooks: their phase goes to gateways beside their endpoints
    /// (waking, starting pages), and the admin endpoint counts them.
    pub notebooks: Store<Notebook>,
    /// JupyterHub's proxy routes (`--chp-api` only: without it the CRD
    /// need not be installed).
    pub chp_routes: Option<Store<ChpRoute>>,
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
            && self.notebooks.wait_until_ready().await.is_ok()
            && match &self.mesh_config {
                Some(store) => store.wait_until_ready().await.is_ok(),
                None => true,
            }
            && match &self.chp_routes {
                Some(store) => store.wait_until_ready().await.is_ok(),
                None => true,
            }
    }

    /// A translator for `identity` holding everything in the caches.
    pub fn translator(&self, identity: GatewayIdentity, settings: &NotebookSettings) -> IncrementalTranslator {
        let mut translator = IncrementalTranslator::new(identity, settings.clone(), Default::default(), true, false);
        let mut objects = Vec::new();
        for kind in OBJECT_KINDS {
            objects.extend(self.objects(kind));
        }
        translator.load_all(objects, self.meshed_namespaces(), Some(self.injected_pods()), self.mesh_config());
        translator
    }

    /// The cached objects of `kind` (the caches' own `Arc`s).
    pub fn objects(&self, kind: ObjectKind) -> Vec<Object> {
        match kind {
            ObjectKind::Gateway => self.gateways.state().into_iter().map(Object::Gateway).collect(),
            ObjectKind::VirtualService => {
                self.virtual_services.state().into_iter().map(Object::VirtualService).collect()
            }
            ObjectKind::Service => self.services.state().into_iter().map(|s| Object::Service(s.into())).collect(),
            ObjectKind::EndpointSlice => {
                self.endpoint_slices.state().into_iter().map(|s| Object::EndpointSlice(s.into())).collect()
            }
            ObjectKind::RequestAuthentication => {
                self.request_authentications.state().into_iter().map(Object::RequestAuthentication).collect()
            }
            ObjectKind::AuthorizationPolicy => {
                self.authorization_policies.state().into_iter().map(Object::AuthorizationPolicy).collect()
            }
            // Not watched in a cluster: the controller writes Notebooks'
            // VirtualServices, which are.
            ObjectKind::Notebook | ObjectKind::Secret => Vec::new(),
        }
    }

    pub fn meshed_namespaces(&self) -> std::collections::BTreeSet<String> {
        self.meshed_namespaces.state().iter().filter_map(|n| n.metadata.name.clone()).collect()
    }

    pub fn injected_pods(&self) -> portico_routing::resources::InjectedPods {
        self.injected_pods
            .state()
            .iter()
            .filter_map(|pod| {
                let key = (pod.metadata.namespace.clone()?, pod.metadata.name.clone()?);
                Some((key, changes::service_account(pod)))
            })
            .collect()
    }

    pub fn mesh_config(&self) -> Option<MeshConfig> {
        self.mesh_config.as_ref().and_then(|store| mesh_config(&store.state()))
    }

    /// A copy of the caches as `translate`'s input (the reference path:
    /// tests and `/debug`).
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
            meshed_namespaces: self.meshed_namespaces(),
            injected_pods: Some(self.injected_pods()),
            request_authentications: owned(&self.request_authentications),
            authorization_policies: owned(&self.authorization_policies),
            mesh_config: self.mesh_config(),
            settings: settings.clone(),
            ..Resources::default()
        }
    }
}

/// The object kinds a cluster index watches.
pub const OBJECT_KINDS: [ObjectKind; 6] = [
    ObjectKind::Gateway,
    ObjectKind::VirtualService,
    ObjectKind::Service,
    ObjectKind::EndpointSlice,
    ObjectKind::RequestAuthentication,
    ObjectKind::AuthorizationPolicy,
];

/// A running index.
pub struct Index {
    pub stores: IndexStores,
    /// Version 0 until the first build.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The tables as discovery sends them.
    pub encoded: watch::Receiver<Arc<EncodedSnapshot>>,
    /// Where discovery registers the gateways it serves.
    pub demand: Demand,
    /// Which ChpRoutes the gateway streams have been sent.
    pub propagation: Arc<Propagation>,
}

/// Starts the watches and the builder on `tasks`.
pub fn spawn(client: &Client, settings: IndexSettings, metrics: Metrics, tasks: &mut JoinSet<()>) -> Index {
    let wake = Arc::new(Notify::new());
    let (sender, receiver) = mpsc::unbounded_channel();
    let sink = ChangeSink { sender, wake: wake.clone() };
    let demand = Demand::new(settings.identities.clone(), wake.clone());
    let namespace = settings.namespace.as_deref();
    let config = watcher::Config::default;
    let (gateways, writer) = reflector::store();
    tasks.spawn(watch_kind(scoped_api::<Gateway>(client, namespace), config(), writer, sink.clone()));
    let (virtual_services, writer) = reflector::store();
    tasks.spawn(watch_kind(scoped_api::<VirtualService>(client, namespace), config(), writer, sink.clone()));
    let (services, writer) = reflector::store();
    tasks.spawn(watch_kind(scoped_api::<Service>(client, namespace), config(), writer, sink.clone()));
    let (endpoint_slices, writer) = reflector::store();
    tasks.spawn(watch_kind(scoped_api::<EndpointSlice>(client, namespace), config(), writer, sink.clone()));
    // Cluster-scoped, so watched whole even with --watch-namespace; only the
    // labelled ones.
    let (meshed_namespaces, writer) = reflector::store();
    let selector = format!("{MESH_NAMESPACE_LABEL}=enabled");
    tasks.spawn(watch_kind(
        kube::Api::<Namespace>::all(client.clone()),
        watcher::Config::default().labels(&selector),
        writer,
        sink.clone(),
    ));
    // Metadata only: an Api of PartialObjectMeta makes metadata requests.
    let (injected_pods, writer) = reflector::store();
    tasks.spawn(watch_kind(
        scoped_api::<PartialObjectMeta<Pod>>(client, namespace),
        watcher::Config::default().labels(&format!("{INJECTED_POD_LABEL}={INJECTED_POD_VALUE}")),
        writer,
        sink.clone(),
    ));
    let (request_authentications, writer) = reflector::store();
    tasks.spawn(watch_kind(scoped_api::<RequestAuthentication>(client, namespace), config(), writer, sink.clone()));
    let (authorization_policies, writer) = reflector::store();
    tasks.spawn(watch_kind(scoped_api::<AuthorizationPolicy>(client, namespace), config(), writer, sink.clone()));
    let (notebooks, writer) = reflector::store();
    tasks.spawn(watch_kind(scoped_api::<Notebook>(client, namespace), config(), writer, sink.clone()));
    let mesh_config = settings.mesh_config.as_ref().map(|(config_namespace, name)| {
        let (store, writer) = reflector::store();
        tasks.spawn(watch_kind(
            kube::Api::<ConfigMap>::namespaced(client.clone(), config_namespace),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            writer,
            sink.clone(),
        ));
        store
    });
    let chp_routes = settings.chp.as_ref().map(|chp| {
        let (store, writer) = reflector::store();
        let api = kube::Api::<ChpRoute>::namespaced(client.clone(), &chp.namespace);
        tasks.spawn(watch_kind(api, config(), writer, sink.clone()));
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
        notebooks,
        chp_routes,
    };
    let propagation = Arc::new(Propagation::default());
    let (publisher, snapshots) = Publisher::new();
    let (encoded_sender, encoded) = watch::channel(Arc::new(EncodedSnapshot::default()));
    let builder = builder::Builder {
        stores: stores.clone(),
        settings,
        demand: demand.clone(),
        wake,
        changes: receiver,
        publisher,
        encoded: encoded_sender,
        metrics,
        propagation: propagation.clone(),
    };
    tasks.spawn(builder.run());
    Index { stores, snapshots, encoded, demand, propagation }
}

/// The mesh config in the watched ConfigMap's `mesh` key. A config that
/// does not parse is logged and ignored: CUSTOM policies then name an
/// unknown provider and deny, which is the safe side.
pub fn mesh_config(config_maps: &[Arc<ConfigMap>]) -> Option<MeshConfig> {
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
