//! The translator's inputs: every object by kind and key, with the reverse
//! indexes a change needs (a Service's slices, a host's Service), and how a
//! Notebook's VirtualService is derived from what is kept of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use portico_api::istio::{AuthorizationPolicy, Gateway, MeshConfig, RequestAuthentication, VirtualService};
use portico_api::k8s_openapi::api::core::v1::{Secret, Service};
use portico_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use portico_api::notebook::Notebook;

use super::object::key_of;
use super::small_set::SmallSet;
use super::views::{Input, NotebookView, ServiceView, SliceView};
use super::{IncrementalTranslator, Key, Name, Object, ObjectKind};
use crate::diagnostic::Diagnostic;
use crate::notebook::notebook_virtual_service;
use crate::resources::InjectedPods;

/// Every input, by kind and key.
#[derive(Default)]
pub(super) struct Inputs {
    pub gateways: BTreeMap<Key, Arc<Gateway>>,
    /// Explicit VirtualServices.
    pub virtual_services: BTreeMap<Key, Arc<VirtualService>>,
    pub notebooks: BTreeMap<Key, Input<Notebook, NotebookView>>,
    /// Notebook key -> what deriving its VirtualService noted.
    pub notebook_notes: BTreeMap<Key, Vec<Diagnostic>>,
    pub services: HashMap<Key, Input<Service, ServiceView>>,
    pub services_by_namespace: HashMap<Name, BTreeSet<Name>>,
    pub endpoint_slices: HashMap<Key, Input<EndpointSlice, SliceView>>,
    /// Service key -> slice names.
    pub slices_by_service: HashMap<Key, SmallSet<Name>>,
    pub secrets: BTreeMap<Key, Arc<Secret>>,
    pub request_authentications: BTreeMap<Key, Arc<RequestAuthentication>>,
    pub authorization_policies: BTreeMap<Key, Arc<AuthorizationPolicy>>,
    pub mesh_config: Option<MeshConfig>,
    pub meshed_namespaces: BTreeSet<String>,
    pub injected_pods: Option<InjectedPods>,
}

impl IncrementalTranslator {
    /// Puts `object` in the inputs; for a Notebook, returns its derived
    /// VirtualService's key.
    pub(super) fn store(&mut self, object: Object) -> Option<Key> {
        let inputs = &mut self.inputs;
        match object {
            Object::Gateway(gateway) => {
                inputs.gateways.insert(key_of(&gateway.metadata), gateway);
            }
            Object::VirtualService(vs) => {
                inputs.virtual_services.insert(key_of(&vs.metadata), vs);
            }
            Object::Notebook(notebook) => {
                let whole = whole_notebook(&notebook);
                let key = key_of(&whole.metadata);
                // Deriving here reports the notes; the object is derived
                // again when translated (see `effective`).
                let (_, notes) = notebook_virtual_service(&whole, &self.settings);
                drop(whole);
                let inputs = &mut self.inputs;
                if inputs.notebook_notes.get(&key).map(Vec::as_slice).unwrap_or_default() != notes.as_slice() {
                    self.diagnostics_changed = true;
                }
                if notes.is_empty() {
                    inputs.notebook_notes.remove(&key);
                } else {
                    inputs.notebook_notes.insert(key.clone(), notes);
                }
                let derived = derived_key(&key);
                inputs.notebooks.insert(key, notebook);
                return Some(derived);
            }
            Object::Service(service) => {
                let key = service.view().key.clone();
                inputs.services_by_namespace.entry(key.0.clone()).or_default().insert(key.1.clone());
                inputs.services.insert(key, service);
            }
            Object::EndpointSlice(slice) => {
                let (key, service) = {
                    let view = slice.view();
                    (view.key.clone(), view.service_key())
                };
                if let Some(old_service) = inputs.endpoint_slices.get(&key).and_then(|s| s.view().service_key())
                    && let Some(names) = inputs.slices_by_service.get_mut(&old_service)
                {
                    names.remove(&key.1);
                }
                if let Some(service) = service {
                    inputs.slices_by_service.entry(service).or_default().insert(key.1.clone());
                }
                inputs.endpoint_slices.insert(key, slice);
            }
            Object::Secret(secret) => {
                inputs.secrets.insert(key_of(&secret.metadata), secret);
            }
            Object::RequestAuthentication(authentication) => {
                inputs.request_authentications.insert(key_of(&authentication.metadata), authentication);
            }
            Object::AuthorizationPolicy(policy) => {
                inputs.authorization_policies.insert(key_of(&policy.metadata), policy);
            }
        }
        None
    }

    /// The object of `kind` stored at `key`: the last version upserted.
    pub fn get(&self, kind: ObjectKind, key: &Key) -> Option<Object> {
        let inputs = &self.inputs;
        Some(match kind {
            ObjectKind::Gateway => Object::Gateway(Arc::clone(inputs.gateways.get(key)?)),
            ObjectKind::VirtualService => Object::VirtualService(Arc::clone(inputs.virtual_services.get(key)?)),
            ObjectKind::Notebook => Object::Notebook(inputs.notebooks.get(key)?.clone()),
            ObjectKind::Service => Object::Service(inputs.services.get(key)?.clone()),
            ObjectKind::EndpointSlice => Object::EndpointSlice(inputs.endpoint_slices.get(key)?.clone()),
            ObjectKind::Secret => Object::Secret(Arc::clone(inputs.secrets.get(key)?)),
            ObjectKind::RequestAuthentication => {
                Object::RequestAuthentication(Arc::clone(inputs.request_authentications.get(key)?))
            }
            ObjectKind::AuthorizationPolicy => {
                Object::AuthorizationPolicy(Arc::clone(inputs.authorization_policies.get(key)?))
            }
        })
    }

    pub(super) fn derived_key_of(&self, notebook: &Key) -> Option<Key> {
        self.inputs.notebooks.contains_key(notebook).then(|| derived_key(notebook))
    }

    /// The Notebook whose derived VirtualService is `key`
    /// (`notebook-<namespace>-<name>`), when one is stored. Computed, not
    /// kept: a map for it was four strings per notebook.
    pub(super) fn notebook_deriving(&self, (namespace, name): &Key) -> Option<Key> {
        let notebook = name.strip_prefix("notebook-")?.strip_prefix(namespace.as_str())?.strip_prefix('-')?;
        let key = (namespace.clone(), Name::from(notebook));
        self.inputs.notebooks.contains_key(&key).then_some(key)
    }

    /// The key of the Service reached at `host` (`name.namespace.svc.<domain>`),
    /// when one is stored. Parsed, not kept in a map (three strings per
    /// Service).
    pub(super) fn service_at(&self, host: &str) -> Option<Key> {
        let rest = host.strip_suffix(self.settings.cluster_domain.as_str())?.strip_suffix(".svc.")?;
        let (name, namespace) = rest.split_once('.')?;
        if namespace.contains('.') {
            return None;
        }
        let key = (Name::from(namespace), Name::from(name));
        self.inputs.services.contains_key(&key).then_some(key)
    }

    /// The VirtualService in effect at `key`: an explicit object wins over
    /// one derived from a Notebook (derived again each time: it is a pure
    /// function of the Notebook's metadata, and kept it was 1.6 KB per
    /// notebook).
    pub(super) fn effective(&self, key: &Key) -> Option<Arc<VirtualService>> {
        if let Some(explicit) = self.inputs.virtual_services.get(key) {
            return Some(Arc::clone(explicit));
        }
        let notebook = whole_notebook(self.inputs.notebooks.get(&self.notebook_deriving(key)?)?);
        let (mut derived, _) = notebook_virtual_service(&notebook, &self.settings);
        // As in translate: the Notebook's time stands in for the
        // VirtualService the controller creates right after it.
        derived.metadata.creation_timestamp = notebook.metadata.creation_timestamp.clone();
        Some(Arc::new(derived))
    }
}

/// The key of the VirtualService Kubeflow derives from the Notebook `notebook`.
pub(super) fn derived_key((namespace, name): &Key) -> Key {
    (namespace.clone(), Name::from(crate::notebook::virtual_service_name(namespace, name)))
}

/// The Notebook that deriving its VirtualService reads: the object itself,
/// or one rebuilt from its view (the same fields).
fn whole_notebook(notebook: &Input<Notebook, NotebookView>) -> std::borrow::Cow<'_, Notebook> {
    match notebook {
        Input::Object(object) => std::borrow::Cow::Borrowed(object.as_ref()),
        Input::View(view) => std::borrow::Cow::Owned(view.to_notebook()),
    }
}
