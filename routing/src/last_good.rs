//! "A bad edit never takes routes down": translation that falls back to the
//! last good version of an object that stopped translating cleanly.
//!
//! Istio's validating webhook refuses a broken VirtualService before it is
//! stored; a folder of YAML (or a cluster without that webhook) has no such
//! gate, so a typo in a regex would otherwise silently drop every route of
//! that object. Here the broken version is reported and the previous version
//! keeps serving until the object is fixed or deleted.

use std::collections::{BTreeMap, BTreeSet};

use portico_api::istio::{Gateway, VirtualService};

use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::resources::Resources;
use crate::table::RouteTable;
use crate::translate::{GatewayIdentity, translate};

/// The last cleanly translated version of each Gateway and VirtualService.
#[derive(Clone, Debug, Default)]
pub struct LastGood {
    virtual_services: BTreeMap<(String, String), VirtualService>,
    gateways: BTreeMap<(String, String), Gateway>,
}

fn key(namespace: &Option<String>, name: &Option<String>) -> (String, String) {
    (namespace.clone().unwrap_or_default(), name.clone().unwrap_or_default())
}

impl LastGood {
    /// Translates `resources`; objects with errors that translated cleanly
    /// before are replaced by that version, with a warning saying so.
    pub fn translate(&mut self, resources: &Resources, identity: &GatewayIdentity) -> (RouteTable, Vec<Diagnostic>) {
        let (table, diagnostics) = translate(resources, identity);
        let failed: BTreeSet<ObjectRef> = diagnostics
            .iter()
            .filter(|d| d.is_error() && matches!(d.object.kind.as_str(), "VirtualService" | "Gateway"))
            .map(|d| d.object.clone())
            .collect();
        let is_failed = |kind: &str, k: &(String, String)| failed.contains(&ObjectRef::new(kind, &k.0, &k.1));

        // The previous versions of the objects that broke; the inputs are
        // cloned only when there is one to substitute (rare), not on every
        // translation.
        let fallback_vs: BTreeMap<(String, String), VirtualService> = resources
            .virtual_services
            .iter()
            .map(|vs| key(&vs.metadata.namespace, &vs.metadata.name))
            .filter(|k| is_failed("VirtualService", k))
            .filter_map(|k| self.virtual_services.get(&k).map(|previous| (k, previous.clone())))
            .collect();
        let fallback_gateways: BTreeMap<(String, String), Gateway> = resources
            .gateways
            .iter()
            .map(|g| key(&g.metadata.namespace, &g.metadata.name))
            .filter(|k| is_failed("Gateway", k))
            .filter_map(|k| self.gateways.get(&k).map(|previous| (k, previous.clone())))
            .collect();
        let fallbacks: Vec<ObjectRef> = fallback_vs
            .keys()
            .map(|k| ObjectRef::new("VirtualService", &k.0, &k.1))
            .chain(fallback_gateways.keys().map(|k| ObjectRef::new("Gateway", &k.0, &k.1)))
            .collect();

        let (table, all) = if fallbacks.is_empty() {
            (table, diagnostics)
        } else {
            let mut effective = resources.clone();
            for vs in &mut effective.virtual_services {
                if let Some(previous) = fallback_vs.get(&key(&vs.metadata.namespace, &vs.metadata.name)) {
                    *vs = previous.clone();
                }
            }
            for gateway in &mut effective.gateways {
                if let Some(previous) = fallback_gateways.get(&key(&gateway.metadata.namespace, &gateway.metadata.name))
                {
                    *gateway = previous.clone();
                }
            }
            let (table, retranslated) = translate(&effective, identity);
            // The broken versions' errors, the fallbacks' notes, and every
            // other object's current diagnostics (the fallbacks' own would be
            // about old versions).
            let mut all: Vec<Diagnostic> = diagnostics.into_iter().filter(|d| fallbacks.contains(&d.object)).collect();
            all.extend(retranslated.into_iter().filter(|d| !fallbacks.contains(&d.object)));
            all.extend(
                fallbacks.iter().map(|o| Diagnostic::warning(o, "", "invalid; its last good version keeps serving")),
            );
            all.sort();
            all.dedup();
            (table, all)
        };

        // Remember what serves now: clean objects and the fallbacks.
        let mut virtual_services = BTreeMap::new();
        for vs in &resources.virtual_services {
            let k = key(&vs.metadata.namespace, &vs.metadata.name);
            if let Some(previous) = fallback_vs.get(&k) {
                virtual_services.insert(k, previous.clone());
            } else if !is_failed("VirtualService", &k) {
                virtual_services.insert(k, vs.clone());
            }
        }
        let mut gateways = BTreeMap::new();
        for gateway in &resources.gateways {
            let k = key(&gateway.metadata.namespace, &gateway.metadata.name);
            if let Some(previous) = fallback_gateways.get(&k) {
                gateways.insert(k, previous.clone());
            } else if !is_failed("Gateway", &k) {
                gateways.insert(k, gateway.clone());
            }
        }
        self.virtual_services = virtual_services;
        self.gateways = gateways;
        (table, all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: kubeflow-gateway, namespace: kubeflow}
spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]}
"#;

    fn vs(regex: &str) -> String {
        format!(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: team}}
spec:
  hosts: ["*"]
  gateways: [kubeflow/kubeflow-gateway]
  http:
  - match: [{{uri: {{regex: "{regex}"}}}}]
    route: [{{destination: {{host: app.team.svc.cluster.local, port: {{number: 80}}}}}}]
"#
        )
    }

    fn resources(yaml: &str) -> Resources {
        let mut resources = Resources::default();
        assert!(resources.add_yaml(&format!("{GATEWAY}\n---\n{yaml}"), "test.yaml").is_empty());
        resources
    }

    #[test]
    fn a_broken_edit_keeps_the_previous_version_serving() {
        let identity = GatewayIdentity::default();
        let mut last_good = LastGood::default();
        let (table, diagnostics) = last_good.translate(&resources(&vs("/app/.*")), &identity);
        assert_eq!(table.route_count(), 1);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");

        let (table, diagnostics) = last_good.translate(&resources(&vs("/app/(")), &identity);
        assert_eq!(table.route_count(), 1, "the last good route keeps serving");
        let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|d| d.contains("invalid regex")), "{text:?}");
        assert!(text.iter().any(|d| d.contains("last good version keeps serving")), "{text:?}");

        // Fixed: the new version applies and the fallback note disappears.
        let (table, diagnostics) = last_good.translate(&resources(&vs("/app2/.*")), &identity);
        assert_eq!(table.route_count(), 1);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
    }

    #[test]
    fn a_never_valid_object_is_simply_skipped() {
        let mut last_good = LastGood::default();
        let (table, diagnostics) = last_good.translate(&resources(&vs("(")), &GatewayIdentity::default());
        assert_eq!(table.route_count(), 0);
        assert!(diagnostics.iter().any(Diagnostic::is_error));
    }
}
