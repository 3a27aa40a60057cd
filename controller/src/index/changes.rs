//! Watch events as route-index changes: each watched object, once its cache
//! has it, becomes one [`Change`] for the translators, so that the index
//! re-translates what changed and nothing else.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use portico_api::chp::ChpRoute;
use portico_api::istio::{AuthorizationPolicy, Gateway, RequestAuthentication, VirtualService};
use portico_api::notebook::Notebook;
use portico_routing::incremental::{Object, ObjectKind};
use portico_routing::resources::SERVICE_ACCOUNT_ANNOTATION;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc};

use crate::reflect::reflected;

/// What the build loop applies to its translators.
#[derive(Debug)]
pub enum Change {
    Upsert(Object),
    Delete(ObjectKind, String, String),
    MeshedNamespace(String, bool),
    /// A pod carrying the sidecar, with its service account; `None`: gone.
    InjectedPod(String, String, Option<String>),
    /// The mesh config ConfigMap changed (or went away).
    MeshConfig,
    /// A Notebook changed: what its destination runs may have too.
    Notebook(Arc<Notebook>),
    /// A Notebook was deleted (namespace, name).
    NotebookGone(String, String),
    /// A JupyterHub proxy route was written (cluster mode's `--chp-api`).
    ChpRoute(Arc<ChpRoute>),
    /// A ChpRoute was deleted (its name).
    ChpRouteGone(String),
    /// A watch listed its kind again (start, or after it broke): the cache
    /// was replaced whole, so deletions may have been missed. The build loop
    /// reconciles that kind against the cache.
    Relisted(Watched),
}

/// The kinds the index watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    Object(ObjectKind),
    MeshedNamespaces,
    InjectedPods,
    MeshConfig,
    Notebooks,
    ChpRoutes,
}

/// Where watches send their changes: a channel, and a signal that wakes
/// the build loop (which coalesces bursts).
#[derive(Clone)]
pub struct ChangeSink {
    pub sender: mpsc::UnboundedSender<Change>,
    pub wake: Arc<Notify>,
}

impl ChangeSink {
    fn send(&self, change: Change) {
        if self.sender.send(change).is_ok() {
            self.wake.notify_one();
        }
    }
}

/// How one kind's objects become changes.
pub trait Indexed: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    const WATCHED: Watched;
    /// The change for an object that was added or modified.
    fn applied(object: Arc<Self>) -> Change;
    /// The change for an object that was deleted.
    fn deleted(&self) -> Change {
        match Self::WATCHED {
            Watched::Object(kind) => Change::Delete(kind, namespace(self), self.name_any()),
            Watched::MeshedNamespaces => Change::MeshedNamespace(self.name_any(), false),
            Watched::InjectedPods => Change::InjectedPod(namespace(self), self.name_any(), None),
            Watched::MeshConfig => Change::MeshConfig,
            Watched::Notebooks => Change::NotebookGone(namespace(self), self.name_any()),
            Watched::ChpRoutes => Change::ChpRouteGone(self.name_any()),
        }
    }
}

fn namespace<K: Resource>(object: &K) -> String {
    object.meta().namespace.clone().unwrap_or_else(|| "default".to_string())
}

macro_rules! indexed_object {
    ($type:ty, $kind:ident) => {
        impl Indexed for $type {
            const WATCHED: Watched = Watched::Object(ObjectKind::$kind);
            fn applied(object: Arc<Self>) -> Change {
                Change::Upsert(Object::$kind(object.into()))
            }
        }
    };
}

indexed_object!(Gateway, Gateway);
indexed_object!(VirtualService, VirtualService);
indexed_object!(Service, Service);
indexed_object!(EndpointSlice, EndpointSlice);
indexed_object!(RequestAuthentication, RequestAuthentication);
indexed_object!(AuthorizationPolicy, AuthorizationPolicy);

impl Indexed for Namespace {
    const WATCHED: Watched = Watched::MeshedNamespaces;
    fn applied(object: Arc<Self>) -> Change {
        Change::MeshedNamespace(object.name_any(), true)
    }
}

impl Indexed for PartialObjectMeta<Pod> {
    const WATCHED: Watched = Watched::InjectedPods;
    fn applied(object: Arc<Self>) -> Change {
        Change::InjectedPod(namespace(object.as_ref()), object.name_any(), Some(service_account(object.as_ref())))
    }
}

impl Indexed for Notebook {
    const WATCHED: Watched = Watched::Notebooks;
    fn applied(object: Arc<Self>) -> Change {
        Change::Notebook(object)
    }
}

impl Indexed for ChpRoute {
    const WATCHED: Watched = Watched::ChpRoutes;
    fn applied(object: Arc<Self>) -> Change {
        Change::ChpRoute(object)
    }
}

impl Indexed for ConfigMap {
    const WATCHED: Watched = Watched::MeshConfig;
    fn applied(_: Arc<Self>) -> Change {
        Change::MeshConfig
    }
}

/// The service account an injected pod's sidecar presents. Pods injected
/// before the annotation existed (or by another injector) run as the
/// namespace's default.
pub fn service_account(pod: &PartialObjectMeta<Pod>) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SERVICE_ACCOUNT_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| "default".to_string())
}

/// Drives the watch of `api` into `writer` (the cache) until the process
/// ends, sending each change to `sink` once the cache holds it.
pub async fn watch<K>(api: Api<K>, config: watcher::Config, writer: Writer<K>, sink: ChangeSink)
where
    K: Indexed,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let cache = writer.as_reader();
    let stream = reflected(api, config, writer);
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(object)) => {
                // The cache's own Arc: the translators share it, no copy.
                let reference = kube::runtime::reflector::ObjectRef::from_obj(&object);
                let shared = cache.get(&reference).unwrap_or_else(|| Arc::new(object));
                sink.send(K::applied(shared));
            }
            Ok(watcher::Event::Delete(object)) => sink.send(object.deleted()),
            Ok(watcher::Event::InitDone) => sink.send(Change::Relisted(K::WATCHED)),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            // The watcher retries with backoff by itself; say why it has to.
            Err(error) => tracing::warn!(%kind, %error, "watch failed; retrying"),
        }
    }
}
