//! CustomResourceDefinitions for the API types, with every upstream version.
//!
//! Each kind has one Rust type (its storage version); the older versions
//! upstream serves have the identical schema, so they are emitted as copies
//! marked `served: true, storage: false`. With no conversion webhook the API
//! server converts between them by changing `apiVersion` only, which is
//! exactly right for identical schemas.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::istio::{self, Gateway, VirtualService};
use crate::notebook::{self, Notebook};

/// The Notebook CRD: v1 (storage), v1beta1, v1alpha1.
pub fn notebook() -> CustomResourceDefinition {
    with_versions(Notebook::crd(), &notebook::VERSIONS)
}

/// The Gateway CRD: v1 (storage), v1beta1, v1alpha3.
pub fn gateway() -> CustomResourceDefinition {
    with_versions(Gateway::crd(), &istio::VERSIONS)
}

/// The VirtualService CRD: v1 (storage), v1beta1, v1alpha3.
pub fn virtual_service() -> CustomResourceDefinition {
    with_versions(VirtualService::crd(), &istio::VERSIONS)
}

/// Every CRD Portico defines, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![notebook(), gateway(), virtual_service()]
}

fn with_versions(mut crd: CustomResourceDefinition, versions: &[&str]) -> CustomResourceDefinition {
    let Some(storage) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    crd.spec.versions = versions
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let mut version = storage.clone();
            version.name = (*name).to_string();
            version.served = true;
            version.storage = index == 0;
            version
        })
        .collect();
    crd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_version_is_first_and_unique() {
        for crd in all() {
            let storage: Vec<_> = crd.spec.versions.iter().filter(|v| v.storage).map(|v| v.name.as_str()).collect();
            assert_eq!(storage, ["v1"], "{}", crd.metadata.name.unwrap_or_default());
            assert_eq!(crd.spec.versions.len(), 3);
        }
    }

    #[test]
    fn names_match_upstream() {
        let names: Vec<_> = all().into_iter().filter_map(|c| c.metadata.name).collect();
        assert_eq!(
            names,
            ["notebooks.kubeflow.org", "gateways.networking.istio.io", "virtualservices.networking.istio.io"]
        );
    }
}
