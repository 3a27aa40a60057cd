//! One VirtualService translated on its own and placed into the virtual
//! hosts it binds to: the unit of work of an incremental translation.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use portico_api::istio::VirtualService;

use super::keys::{self, RoutePart};
use super::{IncrementalTranslator, Key, listener_name};
use crate::diagnostic::Diagnostic;
use crate::parts::{Placed, VirtualHostPart, virtual_host_name};
use crate::table::{Route, RouteAction, RouteMatch};
use crate::translate::hosts::intersect;
use crate::translate::listeners::ListenerDraft;
use crate::translate::{bind, routes_through};

/// What one VirtualService contributes, remembered to undo it: kept for
/// every VirtualService (10,000 notebooks), so in boxed slices at their
/// exact length, the virtual hosts shared with [`DomainState`].
pub(super) struct VsState {
    pub diagnostics: Vec<Diagnostic>,
    /// Virtual hosts it is placed in, and whether through an
    /// `httpsRedirect` server.
    memberships: Box<[(Arc<VirtualHostSlot>, bool)]>,
    /// Route piece names it placed.
    routes: Box<[String]>,
    /// `(host, port)` of each destination of each placed route.
    destinations: Box<[(String, u16)]>,
    /// Service hosts whose ports its translation read.
    port_reads: Box<[String]>,
    /// The version that translated cleanly, kept with `keep_last_good`.
    last_good: Option<Arc<VirtualService>>,
}

/// A virtual host's place: its listener, port and domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct VirtualHostSlot {
    pub listener: String,
    pub port: u16,
    pub domain: String,
}

impl VirtualHostSlot {
    pub fn new(draft: &ListenerDraft, domain: &str) -> Self {
        Self { listener: listener_name(draft.port, draft.protocol), port: draft.port, domain: domain.to_string() }
    }

    /// `<listener>/<domain>:<port>`.
    pub fn piece_name(&self) -> String {
        virtual_host_name(&self.listener, &self.virtual_host_name())
    }

    /// `<domain>:<port>`, like Istio's virtual host names.
    fn virtual_host_name(&self) -> String {
        format!("{}:{}", self.domain, self.port)
    }
}

/// The VirtualServices placed in one virtual host.
pub(super) struct DomainState {
    slot: Arc<VirtualHostSlot>,
    members: usize,
    /// Members placed through an `httpsRedirect` server.
    redirects: usize,
}

/// A translation's output before it is placed: what becomes its
/// [`VsState`], and its routes.
#[derive(Default)]
struct Translated {
    diagnostics: Vec<Diagnostic>,
    memberships: Vec<(VirtualHostSlot, bool)>,
    destinations: Vec<(String, u16)>,
    port_reads: Vec<String>,
    last_good: Option<Arc<VirtualService>>,
    routes: Vec<(String, Placed<Arc<Route>>)>,
    clean: bool,
}

impl IncrementalTranslator {
    /// Re-translates the VirtualService in effect at `key` (explicit or
    /// derived) and replaces what its previous version placed.
    pub(super) fn refresh_virtual_service(&mut self, key: &Key) {
        let old = self.virtual_services.remove(key);
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let last_good = old.as_ref().and_then(|o| o.last_good.clone());
        let old_diagnostics = old.as_ref().map(|o| o.diagnostics.clone()).unwrap_or_default();
        if let Some(old) = old {
            self.unplace(key, *old, &mut touched);
        }
        let new_diagnostics = match self.effective(key) {
            Some(vs) => {
                let mut translated = self.translate_one(&vs);
                // Only explicit objects keep a last good version: a
                // Notebook's derived VirtualService is regenerated, never
                // edited by hand.
                let explicit = self.inputs.virtual_services.contains_key(key);
                if translated.clean {
                    translated.last_good = (self.keep_last_good && explicit).then_some(vs);
                } else if self.keep_last_good
                    && explicit
                    && let Some(previous) = last_good
                {
                    let broken = std::mem::take(&mut translated.diagnostics);
                    // The broken version's reads too: a Service that appears
                    // may be what fixes it.
                    let broken_reads = std::mem::take(&mut translated.port_reads);
                    let object = crate::diagnostic::ObjectRef::new("VirtualService", &key.0, &key.1);
                    translated = self.translate_one(&previous);
                    translated.diagnostics = broken;
                    translated.port_reads.extend(broken_reads);
                    translated.diagnostics.push(Diagnostic::warning(
                        &object,
                        "",
                        "invalid; its last good version keeps serving",
                    ));
                    translated.last_good = Some(previous);
                }
                let diagnostics = translated.diagnostics.clone();
                self.place(key, translated, &mut touched);
                diagnostics
            }
            None => Vec::new(),
        };
        if old_diagnostics != new_diagnostics {
            self.diagnostics_changed = true;
        }
        for name in touched {
            self.update_virtual_host(&name);
        }
    }

    /// Translates `vs` alone against the current listeners and Services.
    fn translate_one(&self, vs: &VirtualService) -> Translated {
        let mut diagnostics = Vec::new();
        let reads = RefCell::new(Vec::new());
        let service_port = |host: &str| {
            reads.borrow_mut().push(host.to_string());
            let key = self.service_at(host)?;
            self.inputs.services.get(&key)?.view().only_port()
        };
        let bound =
            bind(vs, &self.global.known_gateways, &service_port, &self.settings.cluster_domain, &mut diagnostics);
        let clean = !diagnostics.iter().any(Diagnostic::is_error);
        let mut translated = Translated { diagnostics, port_reads: reads.into_inner(), clean, ..Translated::default() };
        let Some(bound) = bound else { return translated };
        let (namespace, name) = (&bound.object.namespace, &bound.object.name);
        for draft in self.global.drafts.values() {
            // As in translate: per domain, the first server with routes for
            // it decides them; any httpsRedirect server marks it.
            let mut by_domain: BTreeMap<String, (bool, Vec<Route>)> = BTreeMap::new();
            for server in draft.servers.iter().filter(|s| bound.gateways.contains(&s.gateway)) {
                let through = routes_through(&bound.rules, &server.gateway);
                for server_host in server.hosts.iter().filter(|h| h.admits_namespace(namespace)) {
                    for vs_host in &bound.hosts {
                        if let Some(domain) = intersect(&server_host.host, vs_host) {
                            let entry = by_domain.entry(domain).or_default();
                            entry.0 |= server.https_redirect;
                            if entry.1.is_empty() {
                                entry.1 = through.clone();
                            }
                        }
                    }
                }
            }
            for (domain, (redirect, routes)) in by_domain {
                let slot = VirtualHostSlot::new(draft, &domain);
                let parent = slot.piece_name();
                let mut push = |part: RoutePart, index: usize, route: Route| {
                    if let RouteAction::Forward(forward) = &route.action {
                        translated.destinations.extend(forward.destinations.iter().map(|d| (d.host.clone(), d.port)));
                    }
                    let name = keys::route_name(&parent, part, namespace, name, index);
                    let order = keys::route_order(part, &bound.key, index);
                    translated.routes.push((name, Placed { parent: parent.clone(), order, value: Arc::new(route) }));
                };
                // Istio's catch-all rule (see translate::catch_all_last).
                for (index, route) in routes.into_iter().enumerate() {
                    match route.matches.iter().position(RouteMatch::is_catch_all) {
                        None if !route.matches.is_empty() => push(RoutePart::Ordered, index, route),
                        None | Some(0) => push(RoutePart::CatchAll, index, route),
                        Some(first) => {
                            let mut head = route.clone();
                            head.matches.truncate(first);
                            push(RoutePart::Ordered, index, head);
                            push(RoutePart::CatchAll, index, route);
                        }
                    }
                }
                translated.memberships.push((slot, redirect));
            }
        }
        translated
    }

    fn place(&mut self, key: &Key, translated: Translated, touched: &mut BTreeSet<String>) {
        let Translated { diagnostics, memberships, destinations, port_reads, last_good, routes, .. } = translated;
        let memberships = memberships
            .into_iter()
            .map(|(slot, redirect)| {
                let name = slot.piece_name();
                let domain = self.domains.entry(name.clone()).or_insert_with(|| DomainState {
                    slot: Arc::new(slot),
                    members: 0,
                    redirects: 0,
                });
                domain.members += 1;
                domain.redirects += usize::from(redirect);
                let slot = Arc::clone(&domain.slot);
                touched.insert(name);
                (slot, redirect)
            })
            .collect();
        let mut names = Vec::with_capacity(routes.len());
        for (name, placed) in routes {
            self.route_parts.set(&name, Some(placed));
            names.push(name);
        }
        for (host, port) in &destinations {
            self.reference_cluster(host, *port);
        }
        for host in &port_reads {
            self.add_port_reader(host, key);
        }
        let state = VsState {
            diagnostics,
            memberships,
            routes: names.into_boxed_slice(),
            destinations: destinations.into_boxed_slice(),
            port_reads: port_reads.into_boxed_slice(),
            last_good,
        };
        self.virtual_services.insert(key.clone(), Box::new(state));
    }

    fn unplace(&mut self, key: &Key, old: VsState, touched: &mut BTreeSet<String>) {
        for (slot, redirect) in &old.memberships {
            let name = slot.piece_name();
            if let Some(domain) = self.domains.get_mut(&name) {
                domain.members = domain.members.saturating_sub(1);
                domain.redirects = domain.redirects.saturating_sub(usize::from(*redirect));
            }
            touched.insert(name);
        }
        for name in &old.routes {
            self.route_parts.set(name, None);
        }
        for (host, port) in &old.destinations {
            self.release_cluster(host, *port);
        }
        for host in &old.port_reads {
            self.remove_port_reader(host, key);
        }
    }

    /// Sets the virtual host piece `name` from its members and the
    /// `httpsRedirect` servers: present while either holds it.
    pub(super) fn update_virtual_host(&mut self, name: &str) {
        let members = self.domains.get(name).filter(|d| d.members > 0);
        let redirect_slot = self.global.redirect_domains.get(name);
        let slot = match (members, redirect_slot) {
            (Some(domain), _) => VirtualHostSlot::clone(&domain.slot),
            (None, Some(slot)) => slot.clone(),
            (None, None) => {
                self.domains.remove(name);
                if self.virtual_host_parts.get(name).is_some() {
                    self.virtual_host_parts.set(name, None);
                }
                return;
            }
        };
        let https_redirect = redirect_slot.is_some() || members.is_some_and(|d| d.redirects > 0);
        if members.is_none() {
            self.domains.remove(name);
        }
        let part = Placed {
            parent: slot.listener.clone(),
            order: keys::virtual_host_order(&slot.domain),
            value: VirtualHostPart {
                name: slot.virtual_host_name(),
                domains: vec![slot.domain.clone()],
                https_redirect,
            },
        };
        if self.virtual_host_parts.get(name) != Some(&part) {
            self.virtual_host_parts.set(name, Some(part));
        }
    }
}
