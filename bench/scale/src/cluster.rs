//! The controller side, fed from memory: the route index's caches are
//! filled directly (as a watch would fill them), and each change is handed
//! to the real build loop as the watch task would hand it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::Event;
use portico_api::istio::{AuthorizationPolicy, Gateway, RequestAuthentication, VirtualService};
use portico_controller::demand::Demand;
use portico_controller::discovery::encode::EncodedSnapshot;
use portico_controller::discovery::registry::Registry;
use portico_controller::discovery::{DiscoveryService, Shared};
use portico_controller::index::builder::Builder;
use portico_controller::index::changes::Change;
use portico_controller::index::{IndexSettings, IndexStores};
use portico_controller::metrics::Metrics;
use portico_controller::snapshot::{Publisher, Snapshot};
use portico_routing::incremental::{Object, ObjectKind};
use portico_routing::{GatewayIdentity, NotebookSettings};
use serde_json::json;
use tokio::sync::{Notify, mpsc, watch};

/// Namespace of the routes that come and go.
const CHURN_NAMESPACE: &str = "scale";

/// A route index and discovery server with `routes` notebook routes.
pub struct SimulatedCluster {
    virtual_services: std::sync::Mutex<Writer<VirtualService>>,
    virtual_service_store: Store<VirtualService>,
    changes: mpsc::UnboundedSender<Change>,
    wake: Arc<Notify>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

/// A store filled with `objects` as a completed first list.
fn filled<K>(objects: impl IntoIterator<Item = K>) -> (Store<K>, Writer<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    for object in objects {
        writer.apply_watcher_event(&Event::InitApply(object));
    }
    writer.apply_watcher_event(&Event::InitDone);
    (store, writer)
}

fn notebook_objects(
    namespace: &str,
    name: &str,
    address: usize,
) -> anyhow::Result<(VirtualService, Service, EndpointSlice)> {
    let prefix = format!("/notebook/{namespace}/{name}/");
    let host = format!("{name}.{namespace}.svc.cluster.local");
    let vs = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": format!("notebook-{namespace}-{name}"), "namespace": namespace, "resourceVersion": "1",
                     "creationTimestamp": "2026-12-01T00:00:00Z"},
        "spec": {"hosts": ["*"], "gateways": ["kubeflow/kubeflow-gateway"],
                 "http": [{"match": [{"uri": {"prefix": prefix}}], "rewrite": {"uri": prefix},
                           "route": [{"destination": {"host": host, "port": {"number": 80}}}]}]}
    }))?;
    let service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "spec": {"ports": [{"name": format!("http-{name}"), "port": 80, "targetPort": 8888}],
                 "selector": {"statefulset": name}}
    }))?;
    let slice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": format!("{name}-x"), "namespace": namespace, "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": name}},
        "ports": [{"name": format!("http-{name}"), "port": 8888}],
        "endpoints": [{"addresses": [format!("198.18.{}.{}", address / 250 % 250, address % 250 + 1)],
                       "conditions": {"ready": true}}]
    }))?;
    Ok((vs, service, slice))
}

impl SimulatedCluster {
    /// Loads `routes` notebooks (VirtualService, Service, EndpointSlice
    /// each, across 1,000 namespaces) and starts the build loop and the
    /// discovery server.
    pub async fn start(routes: usize) -> anyhow::Result<SimulatedCluster> {
        Self::start_on(routes, "127.0.0.1:0".parse()?).await
    }

    /// [`Self::start`], serving discovery on `address`.
    pub async fn start_on(routes: usize, address: std::net::SocketAddr) -> anyhow::Result<SimulatedCluster> {
        let gateway: Gateway = serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "kubeflow-gateway", "namespace": "kubeflow", "resourceVersion": "1"},
            "spec": {"selector": {"istio": "ingressgateway"},
                     "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}
        }))?;
        let (mut virtual_services, mut services, mut slices) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..routes {
            let (vs, service, slice) = notebook_objects(&format!("user{}", i % 1000), &format!("nb{i}"), i)?;
            virtual_services.push(vs);
            services.push(service);
            slices.push(slice);
        }
        let (gateways, _) = filled([gateway]);
        let (virtual_service_store, virtual_service_writer) = filled(virtual_services);
        let (services, _) = filled(services);
        let (endpoint_slices, _) = filled(slices);
        let (meshed_namespaces, _) = filled(Vec::<Namespace>::new());
        let (injected_pods, _) = filled(Vec::<PartialObjectMeta<Pod>>::new());
        let (request_authentications, _) = filled(Vec::<RequestAuthentication>::new());
        let (authorization_policies, _) = filled(Vec::<AuthorizationPolicy>::new());
        // The simulation feeds VirtualServices, as the reconciler writes
        // them; Notebooks (their phase for waking) are not part of it.
        let (notebooks, _) = filled(Vec::<portico_api::notebook::Notebook>::new());
        let stores = IndexStores {
            gateways,
            virtual_services: virtual_service_store.clone(),
            services,
            endpoint_slices,
            meshed_namespaces,
            injected_pods,
            request_authentications,
            authorization_policies,
            mesh_config: None,
            notebooks,
            chp_routes: None,
        };
        let identity = GatewayIdentity::default();
        let wake = Arc::new(Notify::new());
        let demand = Demand::new(vec![identity.clone()], wake.clone());
        let (sender, receiver) = mpsc::unbounded_channel();
        let (publisher, snapshots) = Publisher::new();
        let (encoded_sender, encoded) = watch::channel(Arc::new(EncodedSnapshot::default()));
        let metrics = Metrics::new().context("metrics")?;
        let builder = Builder {
            stores,
            settings: IndexSettings {
                identities: vec![identity],
                notebook_settings: NotebookSettings::default(),
                // The controller's default --debounce.
                debounce: Duration::from_millis(10),
                namespace: None,
                mesh_config: None,
                chp: None,
            },
            demand: demand.clone(),
            wake: wake.clone(),
            changes: receiver,
            publisher,
            encoded: encoded_sender,
            metrics: metrics.clone(),
            propagation: Arc::default(),
        };
        let mut tasks = vec![tokio::spawn(builder.run())];
        let mut ready = snapshots.clone();
        ready.wait_for(|s| s.version > 0).await.context("the build loop stopped")?;

        let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let service = DiscoveryService::new(Shared {
            demand,
            encoded,
            registry: Arc::new(Registry::default()),
            metrics,
            controller: "portico-scale".to_string(),
            activity: Default::default(),
            waker: None,
        });
        let (shutdown, shutdown_receiver) = watch::channel(false);
        tasks.push(tokio::spawn(portico_controller::discovery::serve(listener, service, None, shutdown_receiver)));
        Ok(SimulatedCluster {
            virtual_services: std::sync::Mutex::new(virtual_service_writer),
            virtual_service_store,
            changes: sender,
            wake,
            snapshots,
            url,
            tasks,
            shutdown,
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer<VirtualService>> {
        self.virtual_services.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn discovery_url(&self) -> String {
        self.url.clone()
    }

    /// Routes the table holds now.
    pub fn route_count(&self) -> usize {
        self.snapshots.borrow().summary()["routes"].as_u64().unwrap_or(0) as usize
    }

    /// Change `i`: even ones create notebook route `churn<i/2>`, odd ones
    /// delete it again. Returns the route's resource name.
    pub async fn change(&self, i: usize) -> anyhow::Result<String> {
        let name = format!("churn{}", i / 2);
        let (vs, _, _) = notebook_objects(CHURN_NAMESPACE, &name, i)?;
        let vs_name = format!("notebook-{CHURN_NAMESPACE}-{name}");
        let change = if i.is_multiple_of(2) {
            self.writer().apply_watcher_event(&Event::Apply(vs.clone()));
            let shared = self.virtual_service_store.get(&ObjectRef::from_obj(&vs)).unwrap_or_else(|| Arc::new(vs));
            Change::Upsert(Object::VirtualService(shared))
        } else {
            self.writer().apply_watcher_event(&Event::Delete(vs));
            Change::Delete(ObjectKind::VirtualService, CHURN_NAMESPACE.to_string(), vs_name.clone())
        };
        self.changes.send(change).context("the build loop stopped")?;
        self.wake.notify_one();
        Ok(format!("http.80/*:80/{CHURN_NAMESPACE}.{vs_name}.0"))
    }

    /// Waits until the build loop has published the last change.
    pub async fn wait_version_settled(&self) {
        let mut snapshots = self.snapshots.clone();
        let before = snapshots.borrow_and_update().version;
        let _ = tokio::time::timeout(Duration::from_secs(10), snapshots.wait_for(|s| s.version > before)).await;
    }

    pub fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.abort();
        }
    }
}
