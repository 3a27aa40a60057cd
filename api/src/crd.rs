//! CustomResourceDefinitions for the API types, with every upstream version.
//!
//! Each kind has one Rust type (its storage version); the older versions
//! upstream serves have the identical schema, so they are emitted as copies
//! marked `served: true, storage: false`. With no conversion webhook the API
//! server converts between them by changing `apiVersion` only, which is
//! exactly right for identical schemas.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::chp::ChpRoute;
use crate::istio::{self, AuthorizationPolicy, Gateway, RequestAuthentication, VirtualService};
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

/// The RequestAuthentication CRD: v1 (storage), v1beta1.
pub fn request_authentication() -> CustomResourceDefinition {
    with_versions(RequestAuthentication::crd(), &istio::SECURITY_VERSIONS)
}

/// The AuthorizationPolicy CRD: v1 (storage), v1beta1.
pub fn authorization_policy() -> CustomResourceDefinition {
    with_versions(AuthorizationPolicy::crd(), &istio::SECURITY_VERSIONS)
}

/// The ChpRoute CRD: v1alpha1, Portico's own.
pub fn chp_route() -> CustomResourceDefinition {
    with_versions(ChpRoute::crd(), &["v1alpha1"])
}

/// Every CRD Portico defines, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![notebook(), gateway(), virtual_service(), request_authentication(), authorization_policy(), chp_route()]
}

fn with_versions(mut crd: CustomResourceDefinition, versions: &[&str]) -> CustomResourceDefinition {
    let Some(mut storage) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    if let Some(validation) = storage.schema.as_mut()
        && let Some(schema) = validation.open_api_v3_schema.as_mut()
        && let Ok(mut value) = serde_json::to_value(&*schema)
    {
        strip_defaults(&mut value);
        if let Ok(stripped) = serde_json::from_value(value) {
            *schema = stripped;
        }
    }
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

/// Removes `default` from every schema node. Serde's `#[serde(default)]`
/// makes schemars emit defaults, and the API server would then write them
/// into stored objects (`ignoreUriCase: false` on every VirtualService), which
/// Istio's and Kubeflow's own CRDs never do.
fn strip_defaults(schema: &mut serde_json::Value) {
    let Some(object) = schema.as_object_mut() else { return };
    object.remove("default");
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = object.get_mut(key) {
            strip_defaults(child);
        }
    }
    if let Some(serde_json::Value::Object(properties)) = object.get_mut("properties") {
        properties.values_mut().for_each(strip_defaults);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(serde_json::Value::Array(items)) = object.get_mut(key) {
            items.iter_mut().for_each(strip_defaults);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_version_is_first_and_unique() {
        for crd in all() {
            let storage: Vec<_> = crd.spec.versions.iter().filter(|v| v.storage).map(|v| v.name.as_str()).collect();
            if crd.spec.group == "proxy.portico.dev" {
                // Portico's own: one version so far.
                assert_eq!(storage, ["v1alpha1"]);
                assert_eq!(crd.spec.versions.len(), 1);
                continue;
            }
            assert_eq!(storage, ["v1"], "{}", crd.metadata.name.unwrap_or_default());
            let expected = if crd.spec.group == istio::SECURITY_GROUP { 2 } else { 3 };
            assert_eq!(crd.spec.versions.len(), expected);
        }
    }

    #[test]
    fn schemas_carry_no_defaults() {
        for crd in all() {
            let yaml = serde_yaml::to_string(&crd).unwrap();
            assert!(!yaml.contains("default:"), "{}", crd.metadata.name.unwrap_or_default());
        }
    }

    #[test]
    fn names_match_upstream() {
        let names: Vec<_> = all().into_iter().filter_map(|c| c.metadata.name).collect();
        assert_eq!(
            names,
            [
                "notebooks.kubeflow.org",
                "gateways.networking.istio.io",
                "virtualservices.networking.istio.io",
                "requestauthentications.security.istio.io",
                "authorizationpolicies.security.istio.io",
                "chproutes.proxy.portico.dev"
            ]
        );
    }
}
