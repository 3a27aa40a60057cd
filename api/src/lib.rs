//! Portico's contracts: the Kubernetes resource types that every other crate
//! speaks, with no logic attached.
//!
//! * [`notebook`]: Kubeflow's `Notebook` (`kubeflow.org` v1, v1beta1, v1alpha1;
//!   one schema, v1 stored).
//! * [`istio`]: Istio's `Gateway` and `VirtualService` (`networking.istio.io`
//!   v1, v1beta1, v1alpha3; one schema).
//! * [`chp`]: Portico's own `ChpRoute` (`proxy.portico.dev` v1alpha1): a
//!   JupyterHub proxy route in cluster mode.
//!
//! Field names and shapes follow the upstream APIs exactly so that objects
//! written for Kubeflow and Istio parse unchanged. Fields we do not model are
//! ignored on read and preserved by the generated CRDs
//! (`x-kubernetes-preserve-unknown-fields`), so a newer upstream field never
//! fails a whole file.
#![forbid(unsafe_code)]

pub mod chp;
pub mod crd;
pub mod istio;
pub mod notebook;
mod schema;

pub use k8s_openapi;
pub use kube::Resource;
pub use kube::core::ObjectMeta;

/// The discovery protocol (`proto/portico/discovery/v1/discovery.proto`):
/// generated message types and the tonic client and server of
/// `RouteDiscovery`. Feature `discovery`.
#[cfg(feature = "discovery")]
pub mod discovery {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("portico.discovery.v1");
}

/// The certificate service (`proto/portico/ca/v1/ca.proto`): workload
/// certificates for service-account tokens. Feature `discovery`.
#[cfg(feature = "discovery")]
pub mod ca {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("portico.ca.v1");
}
