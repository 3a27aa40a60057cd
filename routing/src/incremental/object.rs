//! The objects an incremental translation takes, by kind and identity.

use std::sync::Arc;

use portico_api::istio::{AuthorizationPolicy, Gateway, RequestAuthentication, VirtualService};
use portico_api::k8s_openapi::api::core::v1::{Secret, Service};
use portico_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use portico_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use portico_api::notebook::Notebook;

use super::views::{Input, NotebookView, ServiceView, SliceView};
use crate::resources::Resources;

/// A namespace or an object's name: inline up to 24 bytes, so that the
/// keys a translation keeps of each object (a dozen per notebook in folder
/// mode) allocate nothing for the names Kubernetes objects usually have.
pub type Name = compact_str::CompactString;

/// `(namespace, name)`; a missing namespace is `default`, as in translate.
pub type Key = (Name, Name);

pub(super) fn key_of(metadata: &ObjectMeta) -> Key {
    (
        Name::from(metadata.namespace.as_deref().unwrap_or("default")),
        Name::from(metadata.name.as_deref().unwrap_or_default()),
    )
}

/// An input object, shared (the controller's caches hold the same `Arc`s).
#[derive(Clone, Debug)]
pub enum Object {
    Gateway(Arc<Gateway>),
    VirtualService(Arc<VirtualService>),
    Notebook(Input<Notebook, NotebookView>),
    Service(Input<Service, ServiceView>),
    EndpointSlice(Input<EndpointSlice, SliceView>),
    Secret(Arc<Secret>),
    RequestAuthentication(Arc<RequestAuthentication>),
    AuthorizationPolicy(Arc<AuthorizationPolicy>),
}

impl Object {
    /// `(namespace, name)`.
    pub fn key(&self) -> Key {
        match self {
            Object::Notebook(Input::View(view)) => view.key.clone(),
            Object::Service(Input::View(view)) => view.key.clone(),
            Object::EndpointSlice(Input::View(view)) => view.key.clone(),
            other => key_of(other.metadata().unwrap_or(&ObjectMeta::default())),
        }
    }

    /// The object's resourceVersion.
    pub fn resource_version(&self) -> Option<&str> {
        match self {
            Object::Notebook(notebook) => notebook.resource_version(),
            Object::Service(service) => service.resource_version(),
            Object::EndpointSlice(slice) => slice.resource_version(),
            other => other.metadata()?.resource_version.as_deref(),
        }
    }

    /// The object's metadata (`None` for a view, which keeps none).
    fn metadata(&self) -> Option<&ObjectMeta> {
        Some(match self {
            Object::Gateway(o) => &o.metadata,
            Object::VirtualService(o) => &o.metadata,
            Object::Notebook(Input::Object(o)) => &o.metadata,
            Object::Service(Input::Object(o)) => &o.metadata,
            Object::EndpointSlice(Input::Object(o)) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::RequestAuthentication(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::Notebook(Input::View(_))
            | Object::Service(Input::View(_))
            | Object::EndpointSlice(Input::View(_)) => {
                return None;
            }
        })
    }
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Gateway(_) => ObjectKind::Gateway,
            Object::VirtualService(_) => ObjectKind::VirtualService,
            Object::Notebook(_) => ObjectKind::Notebook,
            Object::Service(_) => ObjectKind::Service,
            Object::EndpointSlice(_) => ObjectKind::EndpointSlice,
            Object::Secret(_) => ObjectKind::Secret,
            Object::RequestAuthentication(_) => ObjectKind::RequestAuthentication,
            Object::AuthorizationPolicy(_) => ObjectKind::AuthorizationPolicy,
        }
    }

    /// What routing reads of the object, and nothing more: Notebooks,
    /// Services and EndpointSlices become their [`super::views`] (a
    /// Notebook's route comes from a few fields of its metadata). A source
    /// that holds thousands of notebooks (folder mode) keeps this instead of
    /// the whole object.
    pub fn routing_view(self) -> Object {
        match self {
            Object::Notebook(notebook) => Object::Notebook(notebook.into_view()),
            Object::Service(service) => Object::Service(service.into_view()),
            Object::EndpointSlice(slice) => Object::EndpointSlice(slice.into_view()),
            other => other,
        }
    }

    /// `(kind, namespace, name)`: what identifies it.
    pub fn identity(&self) -> (ObjectKind, Name, Name) {
        let (namespace, name) = self.key();
        (self.kind(), namespace, name)
    }

    /// Equal content (what routing reads: metadata and spec), so a file
    /// saved again unchanged re-translates nothing.
    pub fn same_as(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::Gateway(a), Object::Gateway(b)) => a.metadata == b.metadata && a.spec == b.spec,
            (Object::VirtualService(a), Object::VirtualService(b)) => a.metadata == b.metadata && a.spec == b.spec,
            (Object::Notebook(a), Object::Notebook(b)) => a.view() == b.view(),
            (Object::Service(a), Object::Service(b)) => a.view() == b.view(),
            (Object::EndpointSlice(a), Object::EndpointSlice(b)) => a.view() == b.view(),
            (Object::Secret(a), Object::Secret(b)) => a == b,
            (Object::RequestAuthentication(a), Object::RequestAuthentication(b)) => {
                a.metadata == b.metadata && a.spec == b.spec
            }
            (Object::AuthorizationPolicy(a), Object::AuthorizationPolicy(b)) => {
                a.metadata == b.metadata && a.spec == b.spec
            }
            _ => false,
        }
    }
}

/// The kind of an input object, to delete it by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Gateway,
    VirtualService,
    Notebook,
    Service,
    EndpointSlice,
    Secret,
    RequestAuthentication,
    AuthorizationPolicy,
}

/// Moves every object out of `resources`, as inputs (its mesh settings
/// stay).
pub fn take_objects(resources: &mut Resources) -> Vec<Object> {
    fn shared<T>(list: &mut Vec<T>) -> impl Iterator<Item = Arc<T>> {
        std::mem::take(list).into_iter().map(Arc::new)
    }
    let mut objects = Vec::new();
    objects.extend(shared(&mut resources.gateways).map(Object::Gateway));
    objects.extend(shared(&mut resources.virtual_services).map(Object::VirtualService));
    objects.extend(shared(&mut resources.notebooks).map(|o| Object::Notebook(Input::Object(o))));
    objects.extend(shared(&mut resources.services).map(|o| Object::Service(Input::Object(o))));
    objects.extend(shared(&mut resources.endpoint_slices).map(|o| Object::EndpointSlice(Input::Object(o))));
    objects.extend(shared(&mut resources.secrets).map(Object::Secret));
    objects.extend(shared(&mut resources.request_authentications).map(Object::RequestAuthentication));
    objects.extend(shared(&mut resources.authorization_policies).map(Object::AuthorizationPolicy));
    objects
}

/// Every object of `resources` as inputs.
pub fn objects_of(resources: &Resources) -> Vec<Object> {
    let mut objects = Vec::new();
    objects.extend(resources.gateways.iter().map(|o| Object::Gateway(Arc::new(o.clone()))));
    objects.extend(resources.virtual_services.iter().map(|o| Object::VirtualService(Arc::new(o.clone()))));
    objects.extend(resources.notebooks.iter().map(|o| Object::Notebook(Input::Object(Arc::new(o.clone())))));
    objects.extend(resources.services.iter().map(|o| Object::Service(Input::Object(Arc::new(o.clone())))));
    objects.extend(resources.endpoint_slices.iter().map(|o| Object::EndpointSlice(Input::Object(Arc::new(o.clone())))));
    objects.extend(resources.secrets.iter().map(|o| Object::Secret(Arc::new(o.clone()))));
    objects
        .extend(resources.request_authentications.iter().map(|o| Object::RequestAuthentication(Arc::new(o.clone()))));
    objects.extend(resources.authorization_policies.iter().map(|o| Object::AuthorizationPolicy(Arc::new(o.clone()))));
    objects
}
