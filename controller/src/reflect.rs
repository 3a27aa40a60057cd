//! Watched caches (kube-runtime reflectors).
//!
//! A watch that breaks (API server restart, `410 Gone` after compaction) is
//! re-established by kube-runtime's watcher with its default backoff, and the
//! store is swapped in whole after the relist, so readers never see a
//! half-filled cache.

use std::fmt::Debug;
use std::hash::Hash;

use futures_util::Stream;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

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
