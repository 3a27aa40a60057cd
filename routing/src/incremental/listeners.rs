//! What every route depends on: the listeners (Gateways, Secrets) and the
//! security table. A change here re-places every VirtualService, in one pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use portico_api::istio::Gateway;
use portico_api::k8s_openapi::api::core::v1::Secret;

use super::keys;
use super::placement::VirtualHostSlot;
use super::{IncrementalTranslator, Key};
use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::parts::{ListenerPart, Placed};
use crate::resources::Resources;
use crate::table::ListenerProtocol;
use crate::translate::listeners::listeners;
use crate::translate::{gateway_ref, selects};

impl IncrementalTranslator {
    /// Recomputes the listeners (Gateways, Secrets, settings) and re-places
    /// every VirtualService under them.
    pub(super) fn rebuild(&mut self) {
        let mut diagnostics = Vec::new();
        let secrets: Vec<Secret> = self.inputs.secrets.values().map(|s| (**s).clone()).collect();
        let (effective, fallback_notes) = self.effective_gateways(&secrets);
        let mut selected: Vec<&Gateway> =
            effective.values().map(Arc::as_ref).filter(|g| selects(g, &self.identity)).collect();
        selected.sort_by_key(|g| (g.metadata.namespace.clone(), g.metadata.name.clone()));
        let drafts = listeners(&selected, &secrets, &self.identity.namespace, &mut diagnostics);
        // A fallback's own diagnostics would be about its old version.
        let fallbacks: BTreeSet<&ObjectRef> = fallback_notes.iter().map(|d| &d.object).collect();
        diagnostics.retain(|d| !fallbacks.contains(&d.object));
        diagnostics.extend(fallback_notes.iter().cloned());
        let known_gateways = self.inputs.gateways.values().map(|g| gateway_ref(g)).collect();
        let mut redirect_domains = BTreeMap::new();
        for draft in drafts.values() {
            for server in draft.servers.iter().filter(|s| s.https_redirect) {
                for host in &server.hosts {
                    let slot = VirtualHostSlot::new(draft, &host.host);
                    redirect_domains.insert(slot.piece_name(), slot);
                }
            }
        }
        let old_redirects = std::mem::replace(&mut self.global.redirect_domains, redirect_domains);
        self.global.drafts = drafts;
        self.global.known_gateways = known_gateways;
        self.global.listener_diagnostics = diagnostics;
        self.diagnostics_changed = true;
        self.compile_security();

        let mut keys: BTreeSet<Key> = self.virtual_services.keys().cloned().collect();
        keys.extend(self.inputs.virtual_services.keys().cloned());
        keys.extend(self.inputs.notebooks.keys().map(super::inputs::derived_key));
        for key in &keys {
            self.refresh_virtual_service(key);
        }
        let touched: BTreeSet<String> = old_redirects
            .into_keys()
            .chain(self.global.redirect_domains.keys().cloned())
            .chain(self.domains.keys().cloned())
            .chain(self.virtual_host_parts.iter().map(|(name, _)| name.clone()))
            .collect();
        for name in touched {
            self.update_virtual_host(&name);
        }
        self.update_listeners();
    }

    /// The Gateways in effect: with `keep_last_good`, a Gateway with errors
    /// that was clean before is replaced by its clean version; the broken
    /// version's diagnostics and a note stand for it (as [`crate::LastGood`]).
    fn effective_gateways(&mut self, secrets: &[Secret]) -> (BTreeMap<Key, Arc<Gateway>>, Vec<Diagnostic>) {
        let mut effective = self.inputs.gateways.clone();
        let mut notes = Vec::new();
        if !self.keep_last_good {
            return (effective, notes);
        }
        self.last_good_gateways.retain(|key, _| self.inputs.gateways.contains_key(key));
        for (key, gateway) in &self.inputs.gateways {
            let mut own = Vec::new();
            listeners(&[gateway.as_ref()], secrets, &self.identity.namespace, &mut own);
            if !own.iter().any(Diagnostic::is_error) {
                self.last_good_gateways.insert(key.clone(), gateway.clone());
                continue;
            }
            match self.last_good_gateways.get(key) {
                Some(previous) => {
                    let object = ObjectRef::new("Gateway", &key.0, &key.1);
                    notes.extend(own);
                    notes.push(Diagnostic::warning(&object, "", "invalid; its last good version keeps serving"));
                    effective.insert(key.clone(), previous.clone());
                }
                None => {
                    self.last_good_gateways.remove(key);
                }
            }
        }
        (effective, notes)
    }

    fn compile_security(&mut self) {
        let resources = Resources {
            request_authentications: self.inputs.request_authentications.values().map(|o| (**o).clone()).collect(),
            authorization_policies: self.inputs.authorization_policies.values().map(|o| (**o).clone()).collect(),
            mesh_config: self.inputs.mesh_config.clone(),
            ..Resources::default()
        };
        let mut diagnostics = Vec::new();
        self.global.security = crate::security::compile(&resources, &self.identity, &mut diagnostics);
        self.global.security_diagnostics = diagnostics;
        self.diagnostics_changed = true;
    }

    pub(super) fn refresh_security(&mut self) {
        self.compile_security();
        self.update_listeners();
    }

    /// Sets every listener piece from the drafts and the security table.
    fn update_listeners(&mut self) {
        let mut wanted: BTreeMap<String, Placed<ListenerPart>> = BTreeMap::new();
        for draft in self.global.drafts.values() {
            let name = listener_name(draft.port, draft.protocol);
            let value = ListenerPart {
                name: name.clone(),
                port: draft.port,
                protocol: draft.protocol,
                tls: draft.tls.clone(),
                path_normalization: self.path_normalization,
                security: self.global.security.clone(),
                error_pages: None,
            };
            wanted.insert(name, Placed { parent: String::new(), order: keys::listener_order(draft.port), value });
        }
        let stale: Vec<String> =
            self.listener_parts.iter().map(|(n, _)| n.clone()).filter(|n| !wanted.contains_key(n)).collect();
        for name in stale {
            self.listener_parts.set(&name, None);
        }
        for (name, part) in wanted {
            if self.listener_parts.get(&name) != Some(&part) {
                self.listener_parts.set(&name, Some(part));
            }
        }
    }
}

/// `http.80`, `https.443`: like Istio's route configuration names.
pub(crate) fn listener_name(port: u16, protocol: ListenerProtocol) -> String {
    match protocol {
        ListenerProtocol::Http => format!("http.{port}"),
        ListenerProtocol::Https => format!("https.{port}"),
    }
}
