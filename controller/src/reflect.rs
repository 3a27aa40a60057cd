//! Watched caches (kube-runtime reflectors) with a change signal.
//!
//! A watch that breaks (API server restart, `410 Gone` after compaction) is
//! re-established by kube-runtime's watcher with its default backoff, and the
//! store is swapped in whole after the relist, so readers never see a
//! half-filled cache.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// `Api<K>` over all namespaces, or over `namespace` when one is given
/// (`--watch-namespace`).
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// A watch of `api` (filtered by `config`) that fills `writer` as it is
/// polled. `managedFields` are dropped: nobody here reads them and they are
/// often the larger half of an object. Events reach the stream's consumer
/// after the store has them, so a reconcile triggered by an event always
/// reads a cache at least that new.
pub fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    watcher(api, config).default_backoff().modify(|object| object.managed_fields_mut().clear()).reflect(writer)
}

/// Drives [`reflected`] until the process ends, calling `changed.notify_one()`
/// after the initial list and after every change.
pub async fn reflect<K>(api: Api<K>, config: watcher::Config, writer: Writer<K>, changed: Option<Arc<Notify>>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let stream = reflected(api, config, writer);
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                if let Some(changed) = &changed {
                    changed.notify_one();
                }
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            // The watcher retries with backoff by itself; say why it has to.
            Err(error) => tracing::warn!(%kind, %error, "watch failed; retrying"),
        }
    }
}
