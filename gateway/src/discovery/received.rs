//! The gateway's copy of what the controller sent: a [`Matcher`] patched
//! resource by resource as responses arrive.
//!
//! Protocol resources become routing types here and nowhere else. A
//! resource that does not decode, names a missing parent or asks for a port
//! this gateway did not bind is rejected with a reason (the NACK) and its
//! last good version, if any, keeps serving; everything else in the same
//! response still applies. An incremental response costs what it carries:
//! each resource is one edit of the matcher (O(log n)), never a rebuild.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use portico_api::discovery::{DeltaResponse, Kind, Rejection, Resource};
use portico_routing::matcher::PieceKind;
use portico_routing::parts::{ListenerPart, Placed, VirtualHostPart};
use portico_routing::table::{Cluster, ListenerProtocol, Route};
use portico_routing::{Diagnostic, EditError, Matcher, ObjectRef, WorkloadState};

/// Why one resource was not applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    #[error("unknown kind {0}")]
    UnknownKind(i32),
    #[error("unknown {kind:?} type {type_:?}")]
    UnknownType { kind: Kind, type_: String },
    #[error("body does not decode as a {type_}: {reason}")]
    Decode { type_: &'static str, reason: String },
    #[error("parent {0:?} is not known")]
    MissingParent(String),
    #[error("port {port} is not served by this gateway (it serves {bound}); restart the gateway to bind it")]
    PortNotBound { port: u16, bound: String },
    #[error("port {port} was bound as {bound:?}, not {wanted:?}; restart the gateway to change it")]
    ProtocolChanged { port: u16, bound: ListenerProtocol, wanted: ListenerProtocol },
}

impl From<EditError> for ResourceError {
    fn from(error: EditError) -> Self {
        match error {
            EditError::MissingListener { parent, .. } | EditError::MissingVirtualHost { parent, .. } => {
                ResourceError::MissingParent(parent)
            }
        }
    }
}

/// Everything received so far.
#[derive(Debug, Default)]
pub struct Received {
    matcher: Matcher,
    /// (kind, name) -> why it is not (or not in its latest version) applied.
    rejected: BTreeMap<(i32, String), String>,
    /// Ports bound at start and their protocol; `None` while bootstrapping
    /// (then every listener is accepted: they decide what gets bound).
    bound: Option<BTreeMap<u16, ListenerProtocol>>,
    /// While a full state arrives (in one response or in parts): the
    /// pieces it named so far. Whatever it did not name goes at its end.
    resync: Option<HashMap<PieceKind, HashSet<String>>>,
}

impl Received {
    /// Restricts listeners to the ports bound at start.
    pub fn set_bound(&mut self, bound: BTreeMap<u16, ListenerProtocol>) {
        self.bound = Some(bound);
    }

    /// Applies one response; returns every resource currently rejected
    /// (empty: ACK).
    pub fn apply(&mut self, response: &DeltaResponse) -> Vec<Rejection> {
        // A full state is applied over what is served, piece by piece, and
        // then whatever it did not name goes: an unchanged piece keeps the
        // serving copy (a resync of 100,000 routes holds one set of them,
        // not two), and a rejected one keeps its last good version.
        if response.full_state && self.resync.is_none() {
            self.rejected.clear();
            self.resync = Some(HashMap::new());
        }
        // Parents before children: listeners, virtual hosts, routes, endpoints.
        let mut ordered: Vec<(Kind, &Resource)> = Vec::new();
        let mut removed: Vec<(Kind, &String)> = Vec::new();
        for delta in &response.kinds {
            let Ok(kind) = Kind::try_from(delta.kind) else {
                for resource in &delta.resources {
                    self.rejected.insert(
                        (delta.kind, resource.name.clone()),
                        ResourceError::UnknownKind(delta.kind).to_string(),
                    );
                }
                continue;
            };
            ordered.extend(delta.resources.iter().map(|r| (kind, r)));
            removed.extend(delta.removed.iter().map(|name| (kind, name)));
        }
        ordered.sort_by_key(|(kind, resource)| rank(*kind, &resource.r#type));
        for (kind, name) in removed {
            self.remove(kind, name);
        }
        for (kind, resource) in ordered {
            if response.full_state
                && let Some(named) = &mut self.resync
            {
                named.entry(piece_kind(kind, &resource.r#type)).or_default().insert(resource.name.clone());
            }
            let key = (kind as i32, resource.name.clone());
            match self.insert(kind, resource) {
                Ok(()) => {
                    self.rejected.remove(&key);
                }
                Err(error) => {
                    // The last good version stays (after a reconnect, the one
                    // served before it).
                    self.rejected.insert(key, error.to_string());
                }
            }
        }
        if response.full_state
            && !response.more
            && let Some(named) = self.resync.take()
        {
            self.matcher.retain(|kind, name| named.get(&kind).is_some_and(|names| names.contains(name)));
        }
        self.matcher.set_version(response.version.clone());
        self.rejections()
    }

    /// Whether a full state sent in parts is still arriving.
    pub fn resyncing(&self) -> bool {
        self.resync.is_some()
    }

    /// What to serve now (a cheap clone: it shares everything).
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Rejections as diagnostics, for `/config_dump` and metrics.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.rejected
            .iter()
            .map(|((kind, name), reason)| {
                let kind = Kind::try_from(*kind).map_or("Unknown", |k| k.as_str_name());
                Diagnostic::error(&ObjectRef::new(kind, "", name), "", format!("rejected (NACK): {reason}"))
            })
            .collect()
    }

    /// Every resource currently rejected.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.rejected
            .iter()
            .map(|((kind, name), reason)| Rejection { kind: *kind, name: name.clone(), reason: reason.clone() })
            .collect()
    }

    fn remove(&mut self, kind: Kind, name: &str) {
        self.rejected.remove(&(kind as i32, name.to_string()));
        match kind {
            Kind::Listeners => {
                self.matcher.remove_listener(name);
            }
            Kind::Routes => {
                // Virtual hosts and routes share the kind; names never collide.
                if !self.matcher.remove_virtual_host(name) {
                    self.matcher.remove_route(name);
                }
            }
            Kind::Endpoints => {
                self.matcher.remove_cluster(name);
            }
            Kind::Workloads => {
                self.matcher.remove_workload(name);
            }
            Kind::Unspecified => {}
        }
    }

    fn insert(&mut self, kind: Kind, resource: &Resource) -> Result<(), ResourceError> {
        match (kind, resource.r#type.as_str()) {
            (Kind::Listeners, "listener") => {
                let listener: ListenerPart = decode(resource, "listener")?;
                self.check_port(&listener)?;
                self.matcher.upsert_listener(&resource.name, placed(resource, listener));
            }
            (Kind::Routes, "vhost") => {
                let host: VirtualHostPart = decode(resource, "virtual host")?;
                self.matcher.upsert_virtual_host(&resource.name, placed(resource, host))?;
            }
            (Kind::Routes, "route") => {
                let route: Route = decode(resource, "route")?;
                self.matcher.upsert_route(&resource.name, placed(resource, Arc::new(route)))?;
            }
            (Kind::Endpoints, "cluster") => {
                let cluster: Cluster = decode(resource, "cluster")?;
                self.matcher.upsert_cluster(&resource.name, Arc::new(cluster));
            }
            (Kind::Workloads, "workload") => {
                let workload: WorkloadState = decode(resource, "workload")?;
                self.matcher.upsert_workload(&resource.name, Arc::new(workload));
            }
            (kind, type_) => return Err(ResourceError::UnknownType { kind, type_: type_.to_string() }),
        }
        Ok(())
    }

    fn check_port(&self, listener: &ListenerPart) -> Result<(), ResourceError> {
        let Some(bound) = &self.bound else { return Ok(()) };
        match bound.get(&listener.port) {
            None => Err(ResourceError::PortNotBound {
                port: listener.port,
                bound: bound.keys().map(u16::to_string).collect::<Vec<_>>().join(", "),
            }),
            Some(protocol) if *protocol != listener.protocol => {
                Err(ResourceError::ProtocolChanged { port: listener.port, bound: *protocol, wanted: listener.protocol })
            }
            Some(_) => Ok(()),
        }
    }
}

fn placed<T>(resource: &Resource, value: T) -> Placed<T> {
    Placed { parent: resource.parent.clone(), order: resource.order.clone(), value }
}

/// The matcher's kind of piece a resource is (virtual hosts and routes
/// share the protocol's `ROUTES` kind).
fn piece_kind(kind: Kind, type_: &str) -> PieceKind {
    match (kind, type_) {
        (Kind::Listeners, _) => PieceKind::Listener,
        (Kind::Routes, "vhost") => PieceKind::VirtualHost,
        (Kind::Routes, _) => PieceKind::Route,
        (Kind::Workloads, _) => PieceKind::Workload,
        (Kind::Endpoints | Kind::Unspecified, _) => PieceKind::Cluster,
    }
}

fn rank(kind: Kind, type_: &str) -> u8 {
    match (kind, type_) {
        (Kind::Listeners, _) => 0,
        (Kind::Routes, "vhost") => 1,
        (Kind::Routes, _) => 2,
        _ => 3,
    }
}

fn decode<T: serde::de::DeserializeOwned>(resource: &Resource, type_: &'static str) -> Result<T, ResourceError> {
    serde_json::from_slice(&resource.body).map_err(|error| ResourceError::Decode { type_, reason: error.to_string() })
}

#[cfg(test)]
mod tests {
    use portico_api::discovery::KindDelta;
    use portico_routing::RouteTable;
    use portico_routing::parts::{OrderHistory, TableParts};
    use portico_routing::{GatewayIdentity, Resources, translate};

    use super::*;

    fn table(prefixes: &[&str], port: u16) -> RouteTable {
        let mut yaml = format!(
            r#"
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: kubeflow-gateway, namespace: kubeflow}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
"#
        );
        for (i, prefix) in prefixes.iter().enumerate() {
            yaml.push_str(&format!(
                r#"---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: vs{i}, namespace: team}}
spec:
  hosts: ["*"]
  gateways: [kubeflow/kubeflow-gateway]
  http: [{{match: [{{uri: {{prefix: "{prefix}"}}}}], route: [{{destination: {{host: a.team.svc.cluster.local, port: {{number: 80}}}}}}]}}]
"#
            ));
        }
        let mut resources = Resources::default();
        assert_eq!(resources.add_yaml(&yaml, "test"), vec![]);
        translate(&resources, &GatewayIdentity::default()).0
    }

    /// What the controller would send for `table`: every resource, as a full state.
    fn full_state(table: &RouteTable, version: &str) -> DeltaResponse {
        let parts = TableParts::split(table, &mut OrderHistory::default());
        let resource = |name: &str, type_: &str, parent: &str, order: &str, body: Vec<u8>| Resource {
            name: name.to_string(),
            r#type: type_.to_string(),
            parent: parent.to_string(),
            order: order.to_string(),
            body,
        };
        let listeners = parts
            .listeners
            .iter()
            .map(|(n, p)| resource(n, "listener", &p.parent, &p.order, serde_json::to_vec(&p.value).unwrap()))
            .collect();
        let mut routes: Vec<Resource> = parts
            .virtual_hosts
            .iter()
            .map(|(n, p)| resource(n, "vhost", &p.parent, &p.order, serde_json::to_vec(&p.value).unwrap()))
            .collect();
        routes.extend(
            parts
                .routes
                .iter()
                .rev() // order on the wire must not matter
                .map(|(n, p)| resource(n, "route", &p.parent, &p.order, serde_json::to_vec(&p.value).unwrap())),
        );
        DeltaResponse {
            version: version.to_string(),
            nonce: "1".to_string(),
            full_state: true,
            kinds: vec![
                KindDelta { kind: Kind::Listeners as i32, resources: listeners, removed: vec![] },
                KindDelta { kind: Kind::Routes as i32, resources: routes, removed: vec![] },
            ],
            controller: "test".to_string(),
            more: false,
        }
    }

    #[test]
    fn a_full_state_rebuilds_the_table_exactly() {
        let expected = table(&["/a/", "/b/", "/c/"], 80);
        let mut received = Received::default();
        assert_eq!(received.apply(&full_state(&expected, "3")), vec![]);
        let mut want = expected.clone();
        want.version = "3".to_string();
        assert_eq!(received.matcher().to_table(), want);
    }

    #[test]
    fn an_unbound_port_is_rejected_and_the_rest_applies() {
        let mut received = Received::default();
        received.set_bound(BTreeMap::from([(80, ListenerProtocol::Http)]));
        let rejections = received.apply(&full_state(&table(&["/a/"], 8081), "1"));
        assert_eq!(rejections.len(), 3, "{rejections:?}"); // the listener, then its orphans
        assert!(
            rejections[0].reason.contains("port 8081 is not served by this gateway (it serves 80)"),
            "{rejections:?}"
        );
        assert!(rejections.iter().skip(1).all(|r| r.reason.contains("is not known")), "{rejections:?}");
        assert_eq!(received.matcher().to_table().route_count(), 0);
    }

    #[test]
    fn a_bad_update_keeps_the_last_good_version() {
        let good = table(&["/a/"], 80);
        let mut received = Received::default();
        received.apply(&full_state(&good, "1"));
        let mut update = full_state(&good, "2");
        update.full_state = false;
        update.kinds.retain(|k| k.kind == Kind::Routes as i32);
        for resource in &mut update.kinds[0].resources {
            if resource.r#type == "route" {
                resource.body = b"{\"name\": 7}".to_vec();
            }
        }
        let rejections = received.apply(&update);
        assert_eq!(rejections.len(), 1);
        assert!(rejections[0].reason.starts_with("body does not decode as a route"), "{rejections:?}");
        assert_eq!(received.matcher().to_table().route_count(), 1, "the old route still serves");
        // Removing the bad resource clears its rejection.
        let name = rejections[0].name.clone();
        let removal = DeltaResponse {
            version: "3".to_string(),
            kinds: vec![KindDelta { kind: Kind::Routes as i32, resources: vec![], removed: vec![name] }],
            ..DeltaResponse::default()
        };
        assert_eq!(received.apply(&removal), vec![]);
        assert_eq!(received.matcher().to_table().route_count(), 0);
    }

    #[test]
    fn a_resync_keeps_unchanged_routes_drops_unnamed_ones_and_keeps_rejected_ones() {
        let mut received = Received::default();
        received.apply(&full_state(&table(&["/a/", "/b/", "/c/"], 80), "1"));
        let route = |received: &Received, prefix: &str| {
            let table = received.matcher().to_table();
            let name = table.listeners[0].virtual_hosts[0]
                .routes
                .iter()
                .find(|r| format!("{:?}", r.matches).contains(prefix))
                .map(|r| format!("http.80/*:80/{}", r.name));
            name.and_then(|name| received.matcher().route(&name))
        };
        let a_before = route(&received, "/a/").unwrap();

        // The controller's state after a reconnect: /c/ is gone, /b/ does not
        // decode, /a/ is unchanged.
        let mut resync = full_state(&table(&["/a/", "/b/"], 80), "2");
        let b_route = |r: &Resource| r.r#type == "route" && String::from_utf8_lossy(&r.body).contains("/b/");
        for resource in resync.kinds.iter_mut().flat_map(|k| k.resources.iter_mut()).filter(|r| b_route(r)) {
            resource.body = b"{\"name\": 7}".to_vec();
        }
        let rejections = received.apply(&resync);
        assert_eq!(rejections.len(), 1, "{rejections:?}");
        assert!(route(&received, "/c/").is_none(), "a route the full state does not name goes");
        assert!(route(&received, "/b/").is_some(), "a rejected route keeps its last good version");
        let a_after = route(&received, "/a/").unwrap();
        assert!(Arc::ptr_eq(&a_before.value, &a_after.value), "an unchanged route keeps the serving copy");
    }

    #[test]
    fn a_full_state_in_parts_removes_what_it_did_not_name_only_after_the_last_part() {
        let mut received = Received::default();
        received.apply(&full_state(&table(&["/a/", "/b/"], 80), "1"));
        // The next full state names /a/ only, in two parts: listeners and
        // virtual hosts, then the routes.
        let whole = full_state(&table(&["/a/"], 80), "2");
        let mut first = whole.clone();
        first.more = true;
        for kind in &mut first.kinds {
            kind.resources.retain(|r| r.r#type != "route");
        }
        let mut second = whole;
        second.nonce = "2".to_string();
        for kind in &mut second.kinds {
            kind.resources.retain(|r| r.r#type == "route");
        }
        assert_eq!(received.apply(&first), vec![]);
        assert!(received.resyncing());
        assert_eq!(received.matcher().route_count(), 2, "nothing goes before the last part");
        assert_eq!(received.apply(&second), vec![]);
        assert!(!received.resyncing());
        assert_eq!(received.matcher().route_count(), 1);
    }
}
