//! `translate`: Kubernetes objects in, one gateway instance's [`RouteTable`]
//! and the [`Diagnostic`]s of whatever was skipped out.
//!
//! Pure and deterministic: the same objects always give the same table, in
//! the same order, so the folder mode, the controller and the golden tests
//! agree byte for byte.
//!
//! Istio's semantics, step by step:
//! 1. Gateways whose `selector` is a subset of this instance's labels apply.
//! 2. Each server port becomes a listener; hosts keep their namespace scope.
//! 3. A VirtualService binds to a server when it names the Gateway in
//!    `gateways` (a bare name is in its own namespace), the server admits its
//!    namespace and their hosts intersect; each intersection is a virtual host.
//! 4. Per virtual host, VirtualServices are merged by creation time, then
//!    name, then namespace; rules keep their `http[]` order; catch-all routes
//!    then move behind all others.
//! 5. An object with any error is skipped whole (a partial VirtualService
//!    could route requests its author meant to be caught by a later rule).

pub(crate) mod endpoints;
pub(crate) mod hosts;
pub(crate) mod http_route;
pub(crate) mod listeners;

use std::collections::{BTreeMap, BTreeSet};

use portico_api::istio::{Gateway, VirtualService};
use portico_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use self::endpoints::ServiceIndex;
use self::http_route::{RuleContext, TranslatedRule, translate_rule};
use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::notebook::notebook_virtual_service;
use crate::resources::Resources;
use crate::table::{Listener, Route, RouteAction, RouteMatch, RouteTable, VirtualHost};

pub use hosts::covers;

/// Who is asking: the gateway instance a table is built for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayIdentity {
    pub name: String,
    /// Where the instance runs; `credentialName` Secrets are looked up here first.
    pub namespace: String,
    /// Matched against Gateway `selector`s.
    pub labels: BTreeMap<String, String>,
}

impl Default for GatewayIdentity {
    /// Kubeflow's ingress gateway: `istio: ingressgateway` in `istio-system`.
    fn default() -> Self {
        Self {
            name: "portico-gateway".to_string(),
            namespace: "istio-system".to_string(),
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
        }
    }
}

/// Parses `k=v,...` labels (the `--gateway-labels` format of the gateway
/// and the controller).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not key=value"))?;
        labels.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(labels)
}

/// `ns/name` of a Gateway, as VirtualServices name it in `gateways`.
pub(crate) fn gateway_ref(gateway: &Gateway) -> String {
    format!(
        "{}/{}",
        gateway.metadata.namespace.as_deref().unwrap_or("default"),
        gateway.metadata.name.as_deref().unwrap_or("")
    )
}

/// Whether `gateway`'s selector picks the instance `identity`.
pub(crate) fn selects(gateway: &Gateway, identity: &GatewayIdentity) -> bool {
    gateway.spec.selector.iter().all(|(k, v)| identity.labels.get(k) == Some(v))
}

/// `ns/name` for a `gateways` entry written in `namespace`.
pub(crate) fn qualify_gateway(reference: &str, namespace: &str) -> String {
    if reference.contains('/') { reference.to_string() } else { format!("{namespace}/{reference}") }
}

/// Creation time, name, namespace: Istio's merge order of VirtualServices.
/// Times compare as times (`00:00:00Z` before `00:00:00.5Z`, which their
/// text would not); no timestamp is Istio's zero time, the oldest of all.
pub(crate) type MergeKey = (Option<Time>, String, String);

/// Per domain of a listener: each bound VirtualService's routes, and whether
/// it arrived through an `httpsRedirect` server.
type DomainRoutes = BTreeMap<String, BTreeMap<MergeKey, (bool, Vec<Route>)>>;

/// A VirtualService ready to merge: its sort key and translated rules.
pub(crate) struct BoundVirtualService {
    pub key: MergeKey,
    pub object: ObjectRef,
    pub hosts: Vec<String>,
    pub gateways: BTreeSet<String>,
    pub rules: Vec<TranslatedRule>,
}

/// Builds the route table `identity` serves from `resources`.
pub fn translate(resources: &Resources, identity: &GatewayIdentity) -> (RouteTable, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let domain = resources.settings.cluster_domain.as_str();
    let services = ServiceIndex::new(
        &resources.services,
        &resources.endpoint_slices,
        &resources.meshed_namespaces,
        resources.injected_pods.as_ref(),
        domain,
    );

    let mut selected: Vec<&Gateway> = resources.gateways.iter().filter(|g| selects(g, identity)).collect();
    selected.sort_by_key(|g| (g.metadata.namespace.clone(), g.metadata.name.clone()));
    let known_gateways: BTreeSet<String> = resources.gateways.iter().map(gateway_ref).collect();
    let drafts = listeners::listeners(&selected, &resources.secrets, &identity.namespace, &mut diagnostics);

    let virtual_services = all_virtual_services(resources, &mut diagnostics);
    let bound: Vec<BoundVirtualService> = virtual_services
        .iter()
        .filter_map(|vs| bind(vs, &known_gateways, &|host| services.only_port(host), domain, &mut diagnostics))
        .collect();

    let security = crate::security::compile(resources, identity, &mut diagnostics);
    let mut table = RouteTable { path_normalization: resources.path_normalization, security, ..RouteTable::default() };
    for draft in drafts.into_values() {
        // domain -> (merge key, rules) for each VirtualService bound to it.
        let mut by_domain = DomainRoutes::new();
        // Hosts of `httpsRedirect` servers redirect even when no
        // VirtualService serves them here (Istio adds such a virtual host),
        // e.g. a port-80 server whose VirtualServices bind to port 443 only.
        let mut redirect_domains = BTreeSet::new();
        for server in draft.servers.iter().filter(|server| server.https_redirect) {
            for server_host in &server.hosts {
                by_domain.entry(server_host.host.clone()).or_default();
                redirect_domains.insert(server_host.host.clone());
            }
        }
        for server in &draft.servers {
            for vs in bound.iter().filter(|vs| vs.gateways.contains(&server.gateway)) {
                let routes = routes_through(&vs.rules, &server.gateway);
                for server_host in server.hosts.iter().filter(|h| h.admits_namespace(&vs.object.namespace)) {
                    for vs_host in &vs.hosts {
                        if let Some(domain) = hosts::intersect(&server_host.host, vs_host) {
                            let entry = by_domain.entry(domain).or_default().entry(vs.key.clone()).or_default();
                            entry.0 |= server.https_redirect;
                            if entry.1.is_empty() {
                                entry.1 = routes.clone();
                            }
                        }
                    }
                }
            }
        }
        let mut domains: Vec<String> = by_domain.keys().cloned().collect();
        domains.sort_by(|a, b| hosts::precedence(a, b));
        let mut virtual_hosts = Vec::with_capacity(domains.len());
        for domain in domains {
            let merged = by_domain.remove(&domain).unwrap_or_default();
            let https_redirect = redirect_domains.contains(&domain) || merged.values().any(|(redirect, _)| *redirect);
            let routes = catch_all_last(merged.into_values().flat_map(|(_, routes)| routes));
            virtual_hosts.push(VirtualHost {
                name: format!("{domain}:{}", draft.port),
                domains: vec![domain],
                https_redirect,
                routes,
            });
        }
        let scheme = match draft.protocol {
            crate::table::ListenerProtocol::Http => "http",
            crate::table::ListenerProtocol::Https => "https",
        };
        table.listeners.push(Listener {
            name: format!("{scheme}.{}", draft.port),
            port: draft.port,
            protocol: draft.protocol,
            tls: draft.tls,
            error_pages: None,
            virtual_hosts,
        });
    }

    for destination in table
        .listeners
        .iter()
        .flat_map(|l| &l.virtual_hosts)
        .flat_map(|v| &v.routes)
        .filter_map(|r| match &r.action {
            RouteAction::Forward(forward) => Some(&forward.destinations),
            _ => None,
        })
        .flatten()
    {
        if let Some((name, cluster)) = services.cluster(&destination.host, destination.port) {
            table.clusters.insert(name, cluster);
        }
    }
    diagnostics.sort();
    diagnostics.dedup();
    (table, diagnostics)
}

/// The explicit VirtualServices plus those derived from Notebooks; an
/// explicit object wins over a derived one with the same name.
pub(crate) fn all_virtual_services<'a>(
    resources: &'a Resources,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<std::borrow::Cow<'a, VirtualService>> {
    let mut all: Vec<std::borrow::Cow<'a, VirtualService>> =
        resources.virtual_services.iter().map(std::borrow::Cow::Borrowed).collect();
    let explicit: BTreeSet<(Option<String>, Option<String>)> =
        resources.virtual_services.iter().map(|vs| (vs.metadata.namespace.clone(), vs.metadata.name.clone())).collect();
    for notebook in &resources.notebooks {
        let (mut derived, notes) = notebook_virtual_service(notebook, &resources.settings);
        // In a cluster the controller creates this object right after the
        // Notebook; the Notebook's time stands in for it here, so that folder
        // mode merges routes in the same order as a cluster.
        derived.metadata.creation_timestamp = notebook.metadata.creation_timestamp.clone();
        diagnostics.extend(notes);
        if !explicit.contains(&(derived.metadata.namespace.clone(), derived.metadata.name.clone())) {
            all.push(std::borrow::Cow::Owned(derived));
        }
    }
    all
}

/// Validates and translates one VirtualService; `None` if it is invalid or
/// not bound to any gateway.
pub(crate) fn bind(
    vs: &VirtualService,
    known_gateways: &BTreeSet<String>,
    service_port: &dyn Fn(&str) -> Option<u16>,
    cluster_domain: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<BoundVirtualService> {
    let namespace = vs.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    let name = vs.metadata.name.clone().unwrap_or_default();
    let object = ObjectRef::new("VirtualService", &namespace, &name);
    let errors_before = diagnostics.iter().filter(|d| d.is_error()).count();

    let gateways: BTreeSet<String> =
        vs.spec.gateways.iter().filter(|g| g.as_str() != "mesh").map(|g| qualify_gateway(g, &namespace)).collect();
    if gateways.is_empty() {
        // Bound to sidecars only ("mesh"): nothing for a gateway to do.
        return None;
    }
    for (index, gateway) in vs.spec.gateways.iter().enumerate() {
        let qualified = qualify_gateway(gateway, &namespace);
        if gateway != "mesh" && !known_gateways.contains(&qualified) {
            diagnostics.push(Diagnostic::warning(
                &object,
                format!("spec.gateways[{index}]"),
                format!("Gateway {qualified} not found"),
            ));
        }
    }
    let mut hosts = Vec::with_capacity(vs.spec.hosts.len());
    for (index, host) in vs.spec.hosts.iter().enumerate() {
        match hosts::validate_host(host) {
            Ok(host) => hosts.push(host),
            Err(reason) => diagnostics.push(Diagnostic::error(&object, format!("spec.hosts[{index}]"), reason)),
        }
    }
    if vs.spec.hosts.is_empty() {
        diagnostics.push(Diagnostic::error(&object, "spec.hosts", "at least one host is required"));
    }
    let context = RuleContext { object: &object, cluster_domain, service_port };
    let rules: Vec<TranslatedRule> = vs
        .spec
        .http
        .iter()
        .enumerate()
        .filter_map(|(index, rule)| translate_rule(rule, index, &context, diagnostics))
        .collect();
    let errors_after = diagnostics.iter().filter(|d| d.is_error()).count();
    if errors_after > errors_before {
        diagnostics.push(Diagnostic::error(&object, "", "skipped whole because of its errors"));
        return None;
    }
    let created = vs.metadata.creation_timestamp.clone();
    Some(BoundVirtualService { key: (created, name, namespace), object, hosts, gateways, rules })
}

/// The VirtualService's routes as seen through `gateway`, in `http[]` order.
/// As in Istio, the rules after the first catch-all rule are dropped: routes
/// are first-match, so they could never be selected (and once the catch-all
/// moves behind other VirtualServices' routes they would overtake it).
pub(crate) fn routes_through(rules: &[TranslatedRule], gateway: &str) -> Vec<Route> {
    let mut routes = Vec::with_capacity(rules.len());
    for rule in rules {
        let Some(route) = restrict(rule, gateway) else { continue };
        routes.push(route);
        // An entry limited to some gateways is no catch-all for Istio here.
        let catch_all = rule.route.matches.is_empty()
            || rule.route.matches.iter().zip(&rule.match_gateways).any(|(m, only)| only.is_empty() && m.is_catch_all());
        if catch_all {
            break;
        }
    }
    routes
}

/// Istio's final step per host: catch-all routes move behind all others.
/// Istio makes one route per `match[]` entry, so in a rule whose entry `k` is
/// the first catch-all, entries `0..k` keep their place and only the rest
/// moves. The moved route keeps all its entries (the first `k` can no longer
/// match there), so an entry has the same index in both parts.
pub(crate) fn catch_all_last(routes: impl Iterator<Item = Route>) -> Vec<Route> {
    let mut ordered = Vec::new();
    let mut moved = Vec::new();
    for route in routes {
        match route.matches.iter().position(RouteMatch::is_catch_all) {
            None if !route.matches.is_empty() => ordered.push(route),
            None | Some(0) => moved.push(route),
            Some(first) => {
                let mut head = route.clone();
                head.matches.truncate(first);
                ordered.push(head);
                moved.push(route);
            }
        }
    }
    ordered.extend(moved);
    ordered
}

/// The rule as seen through `gateway`: match entries restricted to other
/// gateways are dropped; a rule left with none does not apply.
fn restrict(rule: &TranslatedRule, gateway: &str) -> Option<Route> {
    if rule.match_gateways.iter().all(Vec::is_empty) {
        return Some(rule.route.clone());
    }
    let mut route = rule.route.clone();
    route.matches = rule
        .route
        .matches
        .iter()
        .zip(&rule.match_gateways)
        .filter(|(_, only)| only.is_empty() || only.iter().any(|g| g == gateway))
        .map(|(m, _)| m.clone())
        .collect();
    (!route.matches.is_empty()).then_some(route)
}
