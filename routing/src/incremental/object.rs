//! The objects an incremental translation takes, by kind and identity.

use std::sync::Arc;

use portico_api::istio::{AuthorizationPolicy, Gateway, RequestAuthentication, VirtualService};
use portico_api::k8s_openapi::api::core::v1::{Secret, Service};
use portico_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use portico_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use portico_api::notebook::Notebook;

use crate::resources::Resources;

/// `(namespace, name)`; a missing namespace is `default`, as in translate.
pub type Key = (String, String);

pub(super) fn key_of(metadata: &ObjectMeta) -> Key {
    (metadata.namespace.clone().unwrap_or_else(|| "default".to_string()), metadata.name.clone().unwrap_or_default())
}

/// An input object, shared (the controller's caches hold the same `Arc`s).
#[derive(Clone, Debug)]
pub enum Object {
    Gateway(Arc<Gateway>),
    VirtualService(Arc<VirtualService>),
    Notebook(Arc<Notebook>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
    RequestAuthentication(Arc<RequestAuthentication>),
    AuthorizationPolicy(Arc<AuthorizationPolicy>),
}

impl Object {
    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Gateway(o) => &o.metadata,
            Object::VirtualService(o) => &o.metadata,
            Object::Notebook(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::RequestAuthentication(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
        }
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

    /// What routing reads of the object, and nothing more: a Notebook's
    /// route comes from its metadata alone, so its pod template (the bulk
    /// of it) is dropped. A source that holds thousands of Notebooks (folder
    /// mode) keeps this instead of the whole object.
    pub fn routing_view(self) -> Object {
        match self {
            Object::Notebook(notebook) if notebook.spec != Default::default() || notebook.status.is_some() => {
                let slim = Notebook { metadata: notebook.metadata.clone(), spec: Default::default(), status: None };
                Object::Notebook(Arc::new(slim))
            }
            other => other,
        }
    }

    /// `(kind, namespace, name)`: what identifies it.
    pub fn identity(&self) -> (ObjectKind, String, String) {
        let (namespace, name) = key_of(self.metadata());
        (self.kind(), namespace, name)
    }

    /// Equal content (what routing reads: metadata and spec), so a file
    /// saved again unchanged re-translates nothing.
    pub fn same_as(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::Gateway(a), Object::Gateway(b)) => a.metadata == b.metadata && a.spec == b.spec,
            (Object::VirtualService(a), Object::VirtualService(b)) => a.metadata == b.metadata && a.spec == b.spec,
            (Object::Notebook(a), Object::Notebook(b)) => a.metadata == b.metadata && a.spec == b.spec,
            (Object::Service(a), Object::Service(b)) => a == b,
            (Object::EndpointSlice(a), Object::EndpointSlice(b)) => a == b,
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

/// Every object of `resources` as inputs.
pub fn objects_of(resources: &Resources) -> Vec<Object> {
    let mut objects = Vec::new();
    objects.extend(resources.gateways.iter().map(|o| Object::Gateway(Arc::new(o.clone()))));
    objects.extend(resources.virtual_services.iter().map(|o| Object::VirtualService(Arc::new(o.clone()))));
    objects.extend(resources.notebooks.iter().map(|o| Object::Notebook(Arc::new(o.clone()))));
    objects.extend(resources.services.iter().map(|o| Object::Service(Arc::new(o.clone()))));
    objects.extend(resources.endpoint_slices.iter().map(|o| Object::EndpointSlice(Arc::new(o.clone()))));
    objects.extend(resources.secrets.iter().map(|o| Object::Secret(Arc::new(o.clone()))));
    objects
        .extend(resources.request_authentications.iter().map(|o| Object::RequestAuthentication(Arc::new(o.clone()))));
    objects.extend(resources.authorization_policies.iter().map(|o| Object::AuthorizationPolicy(Arc::new(o.clone()))));
    objects
}
