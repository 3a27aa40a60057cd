//! Applying a translated route table: certificates first, then the atomic
//! swap of the routes, with metrics and logs about what changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use portico_routing::{Diagnostic, ObjectRef, RouteTable, Severity};

use crate::metrics::Metrics;
use crate::state::{RouteState, Snapshot};
use crate::tls::SniCertResolver;

/// Where every configuration source delivers its tables.
pub struct ConfigSink {
    pub state: Arc<RouteState>,
    pub metrics: Arc<Metrics>,
    /// The certificate resolver of each HTTPS listener, by Gateway port.
    pub certificates: BTreeMap<u16, Arc<SniCertResolver>>,
}

impl ConfigSink {
    /// Applies `table` unless it equals the one serving. Returns whether the
    /// routes changed.
    pub fn apply(&self, table: RouteTable, mut diagnostics: Vec<Diagnostic>) -> bool {
        for listener in &table.listeners {
            match self.certificates.get(&listener.port) {
                Some(resolver) => {
                    for error in resolver.update(&listener.tls) {
                        let object = ObjectRef::new("Listener", "", &listener.name);
                        diagnostics.push(Diagnostic::error(&object, "tls", error.to_string()));
                    }
                }
                // Ports are bound at start; a port that became HTTPS later
                // needs a restart (or a graceful upgrade) to terminate TLS.
                None if !listener.tls.is_empty() => {
                    let object = ObjectRef::new("Listener", "", &listener.name);
                    diagnostics.push(Diagnostic::error(
                        &object,
                        "tls",
                        format!(
                            "port {} was not bound as HTTPS at start; restart the gateway to serve it",
                            listener.port
                        ),
                    ));
                }
                None => {}
            }
        }
        let current = self.state.load();
        self.log_new(&current.diagnostics, &diagnostics);
        self.record_counts(&diagnostics);
        let unchanged = self.state.is_ready() && current.matcher.table().same_content(&table);
        if unchanged {
            if current.diagnostics != diagnostics {
                self.state.set_diagnostics(diagnostics);
            }
            self.metrics.config_reloads.with_label_values(&["unchanged"]).inc();
            // The translation that produced the same table left its garbage.
            crate::heap::release_free_memory();
            return false;
        }
        let version = table.version.clone();
        let routes = table.route_count();
        self.metrics.routes.set(i64::try_from(routes).unwrap_or(i64::MAX));
        self.state.publish(Snapshot::new(table, diagnostics));
        drop(current);
        self.metrics.config_reloads.with_label_values(&["applied"]).inc();
        tracing::info!(%version, routes, "route table applied");
        // The translation's intermediates and the previous table are free now.
        crate::heap::release_free_memory();
        true
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
