//! Incremental translation: the table [`crate::translate()`] would build,
//! kept up to date object by object, and the [`TableDelta`] of each batch.
//!
//! The scale rule: a change costs what it changes. A VirtualService (or a
//! Notebook) is translated alone and placed into the virtual hosts it binds
//! to under keys that encode Istio's merge order ([`keys`]), so adding the
//! 10,001st notebook route touches one route, not the 10,000 others on the
//! same `*` host. An EndpointSlice touches the clusters of its Service; a
//! Service touches its clusters, and the VirtualServices that read its
//! ports only when its ports change. Gateways, Secrets, settings and the
//! security policies apply to every route, so they re-place everything (they
//! change rarely; that is still one pass, never a re-translation per route).
//!
//! [`crate::translate()`] stays the reference: a property test checks that
//! any sequence of changes ends in exactly the table and diagnostics a full
//! translation of the final objects gives.

mod clusters;
mod inputs;
pub mod keys;
mod listeners;
mod object;
mod placement;
mod small_set;
mod tracked;
pub mod views;

pub(crate) use self::listeners::listener_name;
use self::object::key_of;
pub use self::object::{Key, Name, Object, ObjectKind, objects_of, take_objects};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use portico_api::istio::{Gateway, MeshConfig};
use portico_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use self::clusters::HostRefs;
use self::inputs::Inputs;
use self::placement::{DomainState, VirtualHostSlot, VsState};
use self::tracked::Tracked;
use crate::diagnostic::Diagnostic;
use crate::notebook::NotebookSettings;
use crate::parts::{ListenerPart, Placed, TableDelta, TableParts, VirtualHostPart};
use crate::resources::{InjectedPods, Resources};
use crate::security::SecurityTable;
use crate::table::{Cluster, PathNormalizationMode, Route, RouteTable};
use crate::translate::GatewayIdentity;
use crate::translate::listeners::ListenerDraft;

/// What every route depends on: the listeners (from Gateways and Secrets)
/// and the security table.
#[derive(Default)]
struct Global {
    drafts: BTreeMap<u16, ListenerDraft>,
    known_gateways: BTreeSet<String>,
    /// `httpsRedirect` servers' hosts, by virtual host piece name: virtual
    /// hosts even with no route.
    redirect_domains: BTreeMap<String, VirtualHostSlot>,
    listener_diagnostics: Vec<Diagnostic>,
    security: SecurityTable,
    security_diagnostics: Vec<Diagnostic>,
}

/// One gateway instance's route table, maintained incrementally.
pub struct IncrementalTranslator {
    identity: GatewayIdentity,
    settings: NotebookSettings,
    path_normalization: PathNormalizationMode,
    /// Keep the last good version of a VirtualService or Gateway that stops
    /// translating cleanly (folder mode; see [`crate::LastGood`]).
    keep_last_good: bool,
    inputs: Inputs,
    /// Last clean Gateways, when `keep_last_good`.
    last_good_gateways: BTreeMap<Key, Arc<Gateway>>,
    global: Global,
    /// What each VirtualService placed, boxed: the table has a third more
    /// buckets than entries.
    virtual_services: HashMap<Key, Box<VsState>>,
    /// Destination hosts: the routes naming them, the translations that
    /// read their ports.
    clusters: HostRefs,
    /// Virtual host piece name -> the VirtualServices placed there.
    domains: HashMap<String, DomainState>,
    listener_parts: Tracked<Placed<ListenerPart>>,
    virtual_host_parts: Tracked<Placed<VirtualHostPart>>,
    route_parts: Tracked<Placed<Arc<Route>>>,
    cluster_parts: Tracked<Arc<Cluster>>,
    diagnostics_changed: bool,
}

impl IncrementalTranslator {
    /// An empty translator for `identity`. `pods_visible` is whether pod
    /// metadata is fed (cluster mode): otherwise every endpoint of a meshed
    /// namespace counts as meshed, as in [`Resources::injected_pods`].
    pub fn new(
        identity: GatewayIdentity,
        settings: NotebookSettings,
        path_normalization: PathNormalizationMode,
        pods_visible: bool,
        keep_last_good: bool,
    ) -> Self {
        let inputs = Inputs { injected_pods: pods_visible.then(InjectedPods::new), ..Inputs::default() };
        let mut translator = Self {
            identity,
            settings,
            path_normalization,
            keep_last_good,
            inputs,
            last_good_gateways: BTreeMap::new(),
            global: Global::default(),
            virtual_services: HashMap::new(),
            domains: HashMap::new(),
            clusters: HostRefs::default(),
            listener_parts: Tracked::default(),
            virtual_host_parts: Tracked::default(),
            route_parts: Tracked::default(),
            cluster_parts: Tracked::default(),
            diagnostics_changed: true,
        };
        translator.rebuild();
        translator
    }

    /// A translator holding every object of `resources` (one full pass).
    pub fn from_resources(resources: &Resources, identity: GatewayIdentity, keep_last_good: bool) -> Self {
        let mut translator = Self::new(
            identity,
            resources.settings.clone(),
            resources.path_normalization,
            resources.injected_pods.is_some(),
            keep_last_good,
        );
        translator.load(objects_of(resources));
        translator.inputs.meshed_namespaces = resources.meshed_namespaces.clone();
        translator.inputs.injected_pods = resources.injected_pods.clone();
        translator.inputs.mesh_config = resources.mesh_config.clone();
        translator.rebuild();
        translator
    }

    /// Adds many objects with one pass at the end (start-up, relists).
    pub fn load(&mut self, objects: impl IntoIterator<Item = Object>) {
        for object in objects {
            self.store(object);
        }
        self.rebuild();
    }

    /// Everything at once (start-up, a new gateway kind): one pass at the end.
    pub fn load_all(
        &mut self,
        objects: impl IntoIterator<Item = Object>,
        meshed_namespaces: BTreeSet<String>,
        injected_pods: Option<InjectedPods>,
        mesh_config: Option<MeshConfig>,
    ) {
        for object in objects {
            self.store(object);
        }
        self.inputs.meshed_namespaces = meshed_namespaces;
        self.inputs.injected_pods = injected_pods;
        self.inputs.mesh_config = mesh_config;
        self.rebuild();
    }

    /// Makes `kind`'s objects exactly `objects` (after a watch relisted):
    /// objects whose resourceVersion changed are upserted, missing ones
    /// deleted, the rest left alone.
    pub fn replace_kind(&mut self, kind: ObjectKind, objects: Vec<Object>) {
        let present: HashMap<Key, Option<String>> = self.versions_of(kind);
        let mut seen = BTreeSet::new();
        for object in objects {
            let key = object.key();
            let version = object.resource_version().map(str::to_string);
            let unchanged = version.is_some() && present.get(&key) == Some(&version);
            seen.insert(key);
            if !unchanged {
                self.upsert(object);
            }
        }
        for (namespace, name) in present.into_keys().filter(|key| !seen.contains(key)) {
            self.delete(kind, &namespace, &name);
        }
    }

    /// Makes the meshed namespaces exactly `namespaces`.
    pub fn replace_meshed_namespaces(&mut self, namespaces: BTreeSet<String>) {
        let gone: Vec<String> = self.inputs.meshed_namespaces.difference(&namespaces).cloned().collect();
        for namespace in gone {
            self.set_meshed_namespace(&namespace, false);
        }
        for namespace in namespaces {
            self.set_meshed_namespace(&namespace, true);
        }
    }

    /// Makes the injected pods exactly `pods`.
    pub fn replace_injected_pods(&mut self, pods: InjectedPods) {
        let gone: Vec<(String, String)> = self
            .inputs
            .injected_pods
            .iter()
            .flatten()
            .map(|(key, _)| key.clone())
            .filter(|key| !pods.contains_key(key))
            .collect();
        for (namespace, name) in gone {
            self.set_injected_pod(&namespace, &name, None);
        }
        for ((namespace, name), account) in pods {
            self.set_injected_pod(&namespace, &name, Some(account));
        }
    }

    fn versions_of(&self, kind: ObjectKind) -> HashMap<Key, Option<String>> {
        fn versions<'a, T: 'a>(
            objects: impl Iterator<Item = (&'a Key, &'a Arc<T>)>,
            metadata: impl Fn(&T) -> &ObjectMeta,
        ) -> HashMap<Key, Option<String>> {
            objects.map(|(key, object)| (key.clone(), metadata(object).resource_version.clone())).collect()
        }
        let inputs = &self.inputs;
        match kind {
            ObjectKind::Gateway => versions(inputs.gateways.iter(), |o| &o.metadata),
            ObjectKind::VirtualService => versions(inputs.virtual_services.iter(), |o| &o.metadata),
            ObjectKind::Notebook => inputs
                .notebooks
                .iter()
                .map(|(key, notebook)| (key.clone(), notebook.resource_version().map(str::to_string)))
                .collect(),
            ObjectKind::Service => inputs
                .services
                .iter()
                .map(|(key, service)| (key.clone(), service.resource_version().map(str::to_string)))
                .collect(),
            ObjectKind::EndpointSlice => inputs
                .endpoint_slices
                .iter()
                .map(|(key, slice)| (key.clone(), slice.resource_version().map(str::to_string)))
                .collect(),
            ObjectKind::Secret => versions(inputs.secrets.iter(), |o| &o.metadata),
            ObjectKind::RequestAuthentication => versions(inputs.request_authentications.iter(), |o| &o.metadata),
            ObjectKind::AuthorizationPolicy => versions(inputs.authorization_policies.iter(), |o| &o.metadata),
        }
    }

    /// Adds or replaces one object and updates what depends on it.
    pub fn upsert(&mut self, object: Object) {
        match &object {
            Object::Gateway(_) | Object::Secret(_) => {
                self.store(object);
                self.rebuild();
            }
            Object::RequestAuthentication(_) | Object::AuthorizationPolicy(_) => {
                self.store(object);
                self.refresh_security();
            }
            Object::VirtualService(vs) => {
                let key = key_of(&vs.metadata);
                self.store(object);
                self.refresh_virtual_service(&key);
            }
            Object::Notebook(notebook) => {
                let notebook_key = notebook.view().key.clone();
                let previous = self.derived_key_of(&notebook_key);
                let derived = self.store(object);
                for key in previous.into_iter().chain(derived) {
                    self.refresh_virtual_service(&key);
                }
            }
            Object::Service(service) => {
                let new = service.view();
                let key = new.key.clone();
                let old_ports = self.inputs.services.get(&key).map(|s| s.view().ports.clone());
                let new_ports = new.ports.clone();
                drop(new);
                self.store(object);
                self.service_changed(&key, old_ports != Some(new_ports));
            }
            Object::EndpointSlice(slice) => {
                let (key, after) = {
                    let view = slice.view();
                    (view.key.clone(), view.service_key())
                };
                let before = self.inputs.endpoint_slices.get(&key).and_then(|s| s.view().service_key());
                self.store(object);
                for service in before.into_iter().chain(after) {
                    self.refresh_service_clusters(&service);
                }
            }
        }
    }

    /// Removes one object (unknown ones are ignored).
    pub fn delete(&mut self, kind: ObjectKind, namespace: &str, name: &str) {
        let key = (Name::from(namespace), Name::from(name));
        let inputs = &mut self.inputs;
        match kind {
            ObjectKind::Gateway => {
                if inputs.gateways.remove(&key).is_some() {
                    self.last_good_gateways.remove(&key);
                    self.rebuild();
                }
            }
            ObjectKind::Secret => {
                if inputs.secrets.remove(&key).is_some() {
                    self.rebuild();
                }
            }
            ObjectKind::RequestAuthentication => {
                if inputs.request_authentications.remove(&key).is_some() {
                    self.refresh_security();
                }
            }
            ObjectKind::AuthorizationPolicy => {
                if inputs.authorization_policies.remove(&key).is_some() {
                    self.refresh_security();
                }
            }
            ObjectKind::VirtualService => {
                if inputs.virtual_services.remove(&key).is_some() {
                    self.refresh_virtual_service(&key);
                }
            }
            ObjectKind::Notebook => {
                let derived = self.derived_key_of(&key);
                let inputs = &mut self.inputs;
                if inputs.notebooks.remove(&key).is_some() {
                    inputs.notebook_notes.remove(&key);
                    self.diagnostics_changed = true;
                    if let Some(derived) = derived {
                        self.refresh_virtual_service(&derived);
                    }
                }
            }
            ObjectKind::Service => {
                if let Some(old) = inputs.services.remove(&key) {
                    if let Some(names) = inputs.services_by_namespace.get_mut(&key.0) {
                        names.remove(&key.1);
                    }
                    let had_ports = !old.view().ports.is_empty();
                    self.service_changed(&key, had_ports);
                }
            }
            ObjectKind::EndpointSlice => {
                if let Some(old) = inputs.endpoint_slices.remove(&key)
                    && let Some(service) = old.view().service_key()
                {
                    if let Some(names) = inputs.slices_by_service.get_mut(&service) {
                        names.remove(&key.1);
                    }
                    self.refresh_service_clusters(&service);
                }
            }
        }
    }

    /// A namespace joined (or left) the mesh: its endpoints need mutual TLS.
    pub fn set_meshed_namespace(&mut self, namespace: &str, meshed: bool) {
        let changed = match meshed {
            true => self.inputs.meshed_namespaces.insert(namespace.to_string()),
            false => self.inputs.meshed_namespaces.remove(namespace),
        };
        if changed {
            self.refresh_namespace_clusters(namespace);
        }
    }

    /// A pod carrying the sidecar (`Some(service account)`), or no longer.
    pub fn set_injected_pod(&mut self, namespace: &str, name: &str, service_account: Option<String>) {
        let pods = self.inputs.injected_pods.get_or_insert_with(InjectedPods::new);
        let key = (namespace.to_string(), name.to_string());
        let changed = match service_account {
            Some(account) => pods.insert(key, account.clone()) != Some(account),
            None => pods.remove(&key).is_some(),
        };
        if changed && self.inputs.meshed_namespaces.contains(namespace) {
            self.refresh_namespace_clusters(namespace);
        }
    }

    /// Istio's mesh config (CUSTOM policies' extension providers).
    pub fn set_mesh_config(&mut self, mesh_config: Option<MeshConfig>) {
        if self.inputs.mesh_config != mesh_config {
            self.inputs.mesh_config = mesh_config;
            self.refresh_security();
        }
    }

    /// The net changes since the last call.
    pub fn take_delta(&mut self) -> TableDelta {
        TableDelta {
            listeners: self.listener_parts.take(),
            virtual_hosts: self.virtual_host_parts.take(),
            routes: self.route_parts.take(),
            clusters: self.cluster_parts.take(),
            workloads: BTreeMap::new(),
        }
    }

    /// Every piece, as additions: what a gateway that knows nothing needs.
    pub fn full_state(&self) -> TableDelta {
        TableDelta {
            listeners: self.listener_parts.iter().map(|(n, p)| (n.clone(), Some(p.clone()))).collect(),
            virtual_hosts: self.virtual_host_parts.iter().map(|(n, p)| (n.clone(), Some(p.clone()))).collect(),
            routes: self.route_parts.iter().map(|(n, p)| (n.clone(), Some(p.clone()))).collect(),
            clusters: self.cluster_parts.iter().map(|(n, c)| (n.clone(), Some(c.clone()))).collect(),
            workloads: BTreeMap::new(),
        }
    }

    /// The pieces as [`TableParts`] (tests, `/config_dump`-style views).
    pub fn parts(&self) -> TableParts {
        TableParts {
            listeners: self.listener_parts.iter().map(|(n, p)| (n.clone(), p.clone())).collect(),
            virtual_hosts: self.virtual_host_parts.iter().map(|(n, p)| (n.clone(), p.clone())).collect(),
            routes: self
                .route_parts
                .iter()
                .map(|(n, p)| {
                    (n.clone(), Placed { parent: p.parent.clone(), order: p.order.clone(), value: (*p.value).clone() })
                })
                .collect(),
            clusters: self.cluster_parts.iter().map(|(n, c)| (n.clone(), (**c).clone())).collect(),
        }
    }

    /// The whole table (O(routes): tests and start-up only).
    pub fn table(&self) -> RouteTable {
        self.parts().assemble("")
    }

    /// The listeners now (start-up: they decide what gets bound), without
    /// materializing the table.
    pub fn listeners(&self) -> impl Iterator<Item = &ListenerPart> {
        self.listener_parts.iter().map(|(_, placed)| &placed.value)
    }

    /// Number of routes now.
    pub fn route_count(&self) -> usize {
        self.route_parts.len()
    }

    /// Listeners, virtual hosts, routes and clusters now.
    pub fn counts(&self) -> [usize; 4] {
        [self.listener_parts.len(), self.virtual_host_parts.len(), self.route_parts.len(), self.cluster_parts.len()]
    }

    /// Whether the diagnostics may have changed since the last call.
    pub fn take_diagnostics_changed(&mut self) -> bool {
        std::mem::take(&mut self.diagnostics_changed)
    }

    /// Everything skipped or noted, sorted, as [`crate::translate()`] reports it.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = self.global.listener_diagnostics.clone();
        all.extend(self.global.security_diagnostics.iter().cloned());
        all.extend(self.inputs.notebook_notes.values().flatten().cloned());
        all.extend(self.virtual_services.values().flat_map(|vs| vs.diagnostics.iter().cloned()));
        all.sort();
        all.dedup();
        all
    }

    /// A Service was added, changed or removed.
    fn service_changed(&mut self, key: &Key, ports_changed: bool) {
        if ports_changed {
            let host = crate::translate::endpoints::service_host(&key.0, &key.1, &self.settings.cluster_domain);
            for reader in self.port_readers(&host) {
                self.refresh_virtual_service(&reader);
            }
        }
        self.refresh_service_clusters(key);
    }
}

#[cfg(test)]
mod tests;
