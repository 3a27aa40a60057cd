//! What routing reads of a Notebook, a Service and an EndpointSlice, and
//! nothing more.
//!
//! A `k8s-openapi` Service is 824 bytes before any of its strings, an
//! EndpointSlice 432 plus 352 per endpoint, a Notebook 608 before its pod
//! template: most of it fields routing never reads. Where a cache holds the objects anyway (the controller's reflector
//! stores), the translator shares that cache's `Arc` ([`Input::Object`]).
//! Where nothing else would hold them (folder mode, 10,000 notebooks), the
//! source keeps these views instead ([`Input::View`]): about 1.5 KB less per
//! Service and per EndpointSlice.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use portico_api::k8s_openapi::api::core::v1::Service;
use portico_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use portico_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use portico_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use portico_api::notebook::{HEADERS_REQUEST_SET_ANNOTATION, Notebook, REWRITE_URI_ANNOTATION};

use super::object::key_of;
use super::{Key, Name};
use crate::translate::endpoints::SERVICE_NAME_LABEL;

/// An input as its source holds it: the whole object, shared, or its view.
#[derive(Clone, Debug)]
pub enum Input<T, V> {
    Object(Arc<T>),
    View(Arc<V>),
}

impl<T, V: Clone> Input<T, V>
where
    for<'a> V: From<&'a T>,
{
    /// What routing reads (borrowed from a view, computed from an object).
    pub fn view(&self) -> Cow<'_, V> {
        match self {
            Input::Object(object) => Cow::Owned(V::from(object.as_ref())),
            Input::View(view) => Cow::Borrowed(view),
        }
    }

    /// The view alone, for a source that keeps nothing else.
    pub fn into_view(self) -> Self {
        match self {
            Input::Object(object) => Input::View(Arc::new(V::from(object.as_ref()))),
            view => view,
        }
    }
}

/// What every object and view has: its resourceVersion.
pub trait Versioned {
    fn resource_version(&self) -> Option<&str>;
}

impl<T: Versioned, V: Versioned> Input<T, V> {
    /// The resourceVersion, read where it is (no view is built for it:
    /// a relist asks for every object's).
    pub fn resource_version(&self) -> Option<&str> {
        match self {
            Input::Object(object) => object.resource_version(),
            Input::View(view) => view.resource_version(),
        }
    }
}

macro_rules! versioned {
    ($($view:ty),*) => {$(
        impl Versioned for $view {
            fn resource_version(&self) -> Option<&str> {
                self.resource_version.as_deref()
            }
        }
    )*};
}
versioned!(NotebookView, ServiceView, SliceView);

macro_rules! versioned_object {
    ($($object:ty),*) => {$(
        impl Versioned for $object {
            fn resource_version(&self) -> Option<&str> {
                self.metadata.resource_version.as_deref()
            }
        }
    )*};
}
versioned_object!(Notebook, Service, EndpointSlice);

impl<T, V> From<Arc<T>> for Input<T, V> {
    fn from(object: Arc<T>) -> Self {
        Input::Object(object)
    }
}

/// A Notebook's identity and the metadata its VirtualService is derived
/// from.
#[derive(Clone, Debug, PartialEq)]
pub struct NotebookView {
    pub key: Key,
    pub resource_version: Option<Box<str>>,
    /// For the owner reference of what is derived from it.
    pub uid: Option<Box<str>>,
    pub creation_timestamp: Option<Time>,
    /// The annotations routing reads, by name.
    pub annotations: Box<[(Box<str>, Box<str>)]>,
}

/// The annotations of a Notebook that its route depends on.
const ROUTING_ANNOTATIONS: [&str; 2] = [REWRITE_URI_ANNOTATION, HEADERS_REQUEST_SET_ANNOTATION];

impl From<&Notebook> for NotebookView {
    fn from(notebook: &Notebook) -> Self {
        let metadata = &notebook.metadata;
        let annotations = metadata.annotations.iter().flatten();
        Self {
            key: key_of(metadata),
            resource_version: boxed(&metadata.resource_version),
            uid: boxed(&metadata.uid),
            creation_timestamp: metadata.creation_timestamp.clone(),
            annotations: annotations
                .filter(|(name, _)| ROUTING_ANNOTATIONS.contains(&name.as_str()))
                .map(|(name, value)| (Box::from(name.as_str()), Box::from(value.as_str())))
                .collect(),
        }
    }
}

impl NotebookView {
    /// A Notebook with this metadata and an empty spec: what deriving its
    /// VirtualService reads.
    pub fn to_notebook(&self) -> Notebook {
        let annotations = self.annotations.iter().map(|(name, value)| (name.to_string(), value.to_string()));
        Notebook {
            metadata: ObjectMeta {
                name: Some(self.key.1.to_string()),
                namespace: Some(self.key.0.to_string()),
                resource_version: self.resource_version.as_deref().map(str::to_string),
                uid: self.uid.as_deref().map(str::to_string),
                creation_timestamp: self.creation_timestamp.clone(),
                annotations: (!self.annotations.is_empty()).then(|| annotations.collect()),
                ..ObjectMeta::default()
            },
            spec: Default::default(),
            status: None,
        }
    }
}

/// A Service's identity and ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    pub key: Key,
    pub resource_version: Option<Box<str>>,
    pub ports: Box<[ServicePortView]>,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortView {
    pub name: Option<Name>,
    pub port: i32,
    pub target_port: Option<IntOrString>,
}

/// An EndpointSlice's identity, Service, ports and endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceView {
    pub key: Key,
    pub resource_version: Option<Box<str>>,
    /// Its `kubernetes.io/service-name` label.
    pub service: Option<Name>,
    pub ports: Box<[SlicePort]>,
    pub endpoints: Box<[EndpointView]>,
}

/// `(name, port)` of one port of a slice.
pub type SlicePort = (Option<Name>, Option<i32>);

/// One endpoint of a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointView {
    /// The addresses that parse (others are skipped, as before); nearly
    /// always one, held inline.
    pub addresses: SmallVec<[IpAddr; 1]>,
    pub ready: Option<bool>,
    /// The Pod behind it, when its `targetRef` names one.
    pub pod: Option<PodRef>,
}

/// A Pod named by an endpoint's `targetRef`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: Option<Box<str>>,
    pub name: Box<str>,
}

impl ServiceView {
    /// The port of a Service that has exactly one.
    pub fn only_port(&self) -> Option<u16> {
        match &*self.ports {
            [only] => u16::try_from(only.port).ok(),
            _ => None,
        }
    }
}

impl SliceView {
    /// The key of the Service the slice belongs to.
    pub fn service_key(&self) -> Option<Key> {
        Some((self.key.0.clone(), self.service.clone()?))
    }
}

fn boxed(text: &Option<String>) -> Option<Box<str>> {
    text.as_deref().map(Box::from)
}

/// Names of ports and Services are short: inline, no allocation.
fn name(text: &Option<String>) -> Option<Name> {
    text.as_deref().map(Name::from)
}

impl From<&Service> for ServiceView {
    fn from(service: &Service) -> Self {
        let ports = service.spec.as_ref().and_then(|spec| spec.ports.as_ref());
        Self {
            key: key_of(&service.metadata),
            resource_version: boxed(&service.metadata.resource_version),
            ports: ports
                .into_iter()
                .flatten()
                .map(|p| ServicePortView { name: name(&p.name), port: p.port, target_port: p.target_port.clone() })
                .collect(),
        }
    }
}

impl From<&EndpointSlice> for SliceView {
    fn from(slice: &EndpointSlice) -> Self {
        let service = slice.metadata.labels.as_ref().and_then(|labels| labels.get(SERVICE_NAME_LABEL));
        Self {
            key: key_of(&slice.metadata),
            resource_version: boxed(&slice.metadata.resource_version),
            service: service.map(|service| Name::from(service.as_str())),
            ports: slice.ports.iter().flatten().map(|p| (name(&p.name), p.port)).collect(),
            endpoints: slice
                .endpoints
                .iter()
                .map(|endpoint| EndpointView {
                    addresses: endpoint.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()).collect(),
                    ready: endpoint.conditions.as_ref().and_then(|c| c.ready),
                    pod: endpoint.target_ref.as_ref().filter(|target| target.kind.as_deref() == Some("Pod")).and_then(
                        |target| {
                            Some(PodRef { namespace: boxed(&target.namespace), name: target.name.as_deref()?.into() })
                        },
                    ),
                })
                .collect(),
        }
    }
}
