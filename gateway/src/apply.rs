//! Applying configuration: certificates first, then the atomic swap of the
//! matcher, with metrics and logs about what changed.
//!
//! Three ways in: a full table (the folder source, start-up), a
//! [`TableDelta`] patched onto a clone of the serving matcher, and a matcher
//! the discovery receiver already patched resource by resource. The last
//! two cost the size of the change: the new matcher shares everything else
//! with the one serving (structural sharing), and requests in flight keep
//! the snapshot they started with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use portico_routing::parts::{ListenerPart, TableDelta};
use portico_routing::{Diagnostic, Matcher, ObjectRef, Severity};

use crate::metrics::Metrics;
use crate::state::{RouteState, Snapshot};
use crate::tls::SniCertResolver;

/// Where every configuration source delivers its changes.
pub struct ConfigSink {
    pub state: Arc<RouteState>,
    pub metrics: Arc<Metrics>,
    /// The certificate resolver of each HTTPS listener, by Gateway port.
    pub certificates: BTreeMap<u16, Arc<SniCertResolver>>,
    /// Certificate problems by listener name: certificates are loaded only
    /// when a listener changes, and its problems must keep showing until then.
    tls_problems: Mutex<BTreeMap<String, Vec<Diagnostic>>>,
}

/// How to tell that a new matcher serves what the current one serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// A patched clone: the same revision (O(1); a change undone within
    /// one batch still publishes, harmlessly).
    Revision,
    /// Built anew (a full table or state): piece by piece, O(n) like the
    /// building itself.
    Content,
}

/// Which listeners' certificates to (re)load.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Certificates {
    /// Every listener: a full table may name certificate files that appeared
    /// since (the folder source retries them on every change).
    All,
    /// Only listeners whose part differs from the serving one.
    Changed,
}

impl ConfigSink {
    pub fn new(
        state: Arc<RouteState>,
        metrics: Arc<Metrics>,
        certificates: BTreeMap<u16, Arc<SniCertResolver>>,
    ) -> Self {
        Self { state, metrics, certificates, tls_problems: Mutex::default() }
    }

    /// Applies a full `table` unless it holds what is serving. Returns
    /// whether the routes changed. (Both sources now build their matcher
    /// from pieces; tests use this to start from a table.)
    #[cfg(test)]
    pub fn apply(&self, table: portico_routing::RouteTable, diagnostics: Vec<Diagnostic>) -> bool {
        let changed = self.publish(Matcher::new(table), diagnostics, Compare::Content, Certificates::All);
        // The translation's intermediates and the previous table are free
        // now (or, unchanged, the translation left its garbage): worth a
        // trim after a full table, too costly after every small change.
        crate::heap::release_free_memory();
        changed
    }

    /// Patches `delta` onto the serving matcher and publishes the result as
    /// `version`. Pieces whose parent is unknown are reported in the
    /// diagnostics and left out. Returns whether the routes changed.
    pub fn apply_delta(&self, version: String, delta: TableDelta, mut diagnostics: Vec<Diagnostic>) -> bool {
        let mut matcher = Matcher::clone(&self.state.load().matcher);
        for refused in matcher.apply(&delta) {
            let object = ObjectRef::new("TableDelta", "", &version);
            diagnostics.push(Diagnostic::error(&object, "", refused.to_string()));
        }
        matcher.set_version(version);
        // The folder source's deltas: its certificate files may have
        // appeared since, so every listener's are retried on each change.
        self.publish(matcher, diagnostics, Compare::Revision, Certificates::All)
    }

    /// Patches `delta` onto the serving matcher like [`Self::apply_delta`],
    /// for a source whose changes never touch certificate files (the CHP
    /// API: its one TLS listener is loaded with the first change, and each
    /// route added later costs no certificate reload).
    pub fn apply_route_delta(&self, version: String, delta: TableDelta) -> bool {
        let mut matcher = Matcher::clone(&self.state.load().matcher);
        let mut diagnostics = Vec::new();
        for refused in matcher.apply(&delta) {
            let object = ObjectRef::new("TableDelta", "", &version);
            diagnostics.push(Diagnostic::error(&object, "", refused.to_string()));
        }
        matcher.set_version(version);
        self.publish(matcher, diagnostics, Compare::Revision, Certificates::Changed)
    }

    /// Publishes a matcher a source already patched (the discovery
    /// receiver). `full_state`: it was rebuilt from a full state, so it is
    /// compared by content. (The receiver returns the memory of a full state
    /// to the system itself, once the response holding it is dropped.)
    pub fn apply_matcher(&self, matcher: Matcher, diagnostics: Vec<Diagnostic>, full_state: bool) -> bool {
        let compare = if full_state { Compare::Content } else { Compare::Revision };
        self.publish(matcher, diagnostics, compare, Certificates::Changed)
    }

    /// Loads certificates, then swaps `matcher` in unless it serves the same
    /// pieces as the current one (then only the diagnostics are updated).
    fn publish(
        &self,
        matcher: Matcher,
        mut diagnostics: Vec<Diagnostic>,
        compare: Compare,
        certificates: Certificates,
    ) -> bool {
        let current = self.state.load();
        self.update_certificates(&current.matcher, &matcher, certificates);
        diagnostics.extend(self.lock_tls_problems().values().flatten().cloned());
        self.log_new(&current.diagnostics, &diagnostics);
        self.record_counts(&diagnostics);
        let unchanged = self.state.is_ready()
            && match compare {
                Compare::Revision => matcher.revision() == current.matcher.revision(),
                Compare::Content => matcher.same_content(&current.matcher),
            };
        if unchanged {
            if current.diagnostics != diagnostics {
                self.state.set_diagnostics(diagnostics);
            }
            self.metrics.config_reloads.with_label_values(&["unchanged"]).inc();
            return false;
        }
        let version = matcher.version().to_string();
        let routes = matcher.route_count();
        self.metrics.routes.set(i64::try_from(routes).unwrap_or(i64::MAX));
        self.state.publish(Snapshot::new(matcher, diagnostics));
        drop(current);
        self.metrics.config_reloads.with_label_values(&["applied"]).inc();
        tracing::info!(%version, routes, "routes applied");
        true
    }

    /// Loads the certificates of the listeners of `next` that `certificates`
    /// selects, and keeps their problems for the diagnostics.
    fn update_certificates(&self, serving: &Matcher, next: &Matcher, certificates: Certificates) {
        let mut problems = self.lock_tls_problems();
        problems.retain(|name, _| next.has_listener(name));
        for listener in next.listeners() {
            let unchanged = serving.listeners().any(|old| Arc::ptr_eq(old, listener) || **old == **listener);
            if certificates == Certificates::Changed && unchanged && self.state.is_ready() {
                continue;
            }
            problems.insert(listener.name.clone(), self.load_certificates(listener));
        }
    }

    fn load_certificates(&self, listener: &ListenerPart) -> Vec<Diagnostic> {
        let object = ObjectRef::new("Listener", "", &listener.name);
        match self.certificates.get(&listener.port) {
            Some(resolver) => resolver
                .update(&listener.tls)
                .into_iter()
                .map(|error| Diagnostic::error(&object, "tls", error.to_string()))
                .collect(),
            // Ports are bound at start; a port that became HTTPS later
            // needs a restart (or a graceful upgrade) to terminate TLS.
            None if !listener.tls.is_empty() => vec![Diagnostic::error(
                &object,
                "tls",
                format!("port {} was not bound as HTTPS at start; restart the gateway to serve it", listener.port),
            )],
            None => Vec::new(),
        }
    }

    fn lock_tls_problems(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Diagnostic>>> {
        self.tls_problems.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Logs the diagnostics that were not already reported.
    fn log_new(&self, previous: &[Diagnostic], diagnostics: &[Diagnostic]) {
        for diagnostic in diagnostics.iter().filter(|d| !previous.contains(d)) {
            match diagnostic.severity {
                Severity::Error => tracing::warn!(%diagnostic, "configuration problem"),
                Severity::Warning => tracing::info!(%diagnostic, "configuration note"),
            }
        }
    }

    fn record_counts(&self, diagnostics: &[Diagnostic]) {
        let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
        let warnings = diagnostics.len() - errors;
        self.metrics.config_diagnostics.with_label_values(&["error"]).set(i64::try_from(errors).unwrap_or(i64::MAX));
        self.metrics
            .config_diagnostics
            .with_label_values(&["warning"])
            .set(i64::try_from(warnings).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use portico_routing::parts::Placed;
    use portico_routing::table::{DirectResponse, RetryPolicy, Route, RouteAction};
    use portico_routing::{GatewayIdentity, Resources, translate};

    use super::*;

    const KUBEFLOW: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: kubeflow-gateway, namespace: kubeflow}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: dashboard, namespace: kubeflow}
spec:
  hosts: ["*"]
  gateways: [kubeflow/kubeflow-gateway]
  http: [{match: [{uri: {prefix: /}}], route: [{destination: {host: dashboard.kubeflow.svc.cluster.local, port: {number: 80}}}]}]
"#;

    fn sink() -> ConfigSink {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        ConfigSink::new(Arc::new(RouteState::new()), metrics, BTreeMap::new())
    }

    fn route(name: &str) -> Arc<Route> {
        Arc::new(Route {
            name: name.to_string(),
            provenance: Default::default(),
            matches: Vec::new(),
            action: RouteAction::DirectResponse(DirectResponse { status: 204, body: String::new() }),
            request_headers: Default::default(),
            response_headers: Default::default(),
            timeout: None,
            retries: RetryPolicy::default(),
            cors: None,
        })
    }

    #[test]
    fn a_delta_patches_the_serving_matcher_and_older_snapshots_keep_theirs() {
        let sink = sink();
        let mut resources = Resources::default();
        assert_eq!(resources.add_yaml(KUBEFLOW, "test"), vec![]);
        let (mut table, _) = translate(&resources, &GatewayIdentity::default());
        table.version = "1".to_string();
        assert!(sink.apply(table.clone(), Vec::new()));
        assert!(!sink.apply(table.clone(), Vec::new()), "the same table again changes nothing");
        let before = sink.state.load();

        let host = "http.80/*:80".to_string();
        assert!(before.matcher.has_virtual_host(&host), "{:?}", before.matcher);
        let mut delta = TableDelta::default();
        // Sorts before the dashboard's catch-all (order keys are base-62 fractions).
        delta.routes.insert(
            format!("{host}/first"),
            Some(Placed { parent: host.clone(), order: "0V".to_string(), value: route("first") }),
        );
        delta.routes.insert(
            "elsewhere/r".to_string(),
            Some(Placed { parent: "elsewhere".to_string(), order: "1".to_string(), value: route("r") }),
        );
        assert!(sink.apply_delta("2".to_string(), delta.clone(), Vec::new()));
        let after = sink.state.load();
        assert_eq!(after.version(), "2");
        assert_eq!(after.matcher.route_count(), 2);
        assert_eq!(after.matcher.to_table().listeners[0].virtual_hosts[0].routes[0].name, "first");
        assert_eq!(after.diagnostics.len(), 1, "the orphan is reported: {:?}", after.diagnostics);
        assert!(after.diagnostics[0].to_string().contains("\"elsewhere\" is not known"), "{:?}", after.diagnostics);
        assert_eq!(before.matcher.route_count(), 1, "the older snapshot is untouched");
        assert_eq!(before.version(), "1");

        // The same delta again: nothing changes, nothing is published.
        assert!(!sink.apply_delta("3".to_string(), delta, Vec::new()));
        assert!(Arc::ptr_eq(&sink.state.load().matcher, &after.matcher));
    }
}
