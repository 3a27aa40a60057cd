//! Prometheus metrics: the reconciler's own, and Kubeflow's notebook-controller
//! names (`notebook_running`, `notebook_create_total`,
//! `notebook_create_failed_total`, all by `namespace`) so existing dashboards
//! keep working.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the controller exports, registered in one [`Registry`].
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_duration: HistogramVec,
    applies: IntCounterVec,
    notebook_running: IntGaugeVec,
    notebook_create: IntCounterVec,
    notebook_create_failed: IntCounterVec,
    /// 1 while this replica holds the leader Lease (or runs without election).
    pub leader: IntGauge,
    /// Version of the latest route snapshot.
    pub snapshot_version: IntGauge,
    /// Route tables built (including ones equal to the previous and not published).
    pub snapshot_builds: IntCounter,
    /// Istio's `pilot_xds`: connected gateway streams.
    pub xds_connected: IntGauge,
    /// Istio's `pilot_xds_pushes`: responses sent, by `type` (lds, rds, eds).
    pub xds_pushes: IntCounterVec,
    /// Istio's `pilot_total_xds_rejects`: NACKs, by `type`.
    pub xds_rejects: IntCounterVec,
    /// Istio's `pilot_xds_config_size_bytes`: size of each response sent.
    pub xds_config_size: Histogram,
    /// Istio's `pilot_proxy_convergence_time`: from a snapshot being ready to
    /// its response being queued for a gateway.
    pub convergence: Histogram,
    /// Istio's `citadel_server_csr_count`: certificate requests received.
    pub csr_count: IntCounter,
    /// Istio's `citadel_server_authentication_failure_count`.
    pub authentication_failures: IntCounter,
    /// Istio's `citadel_server_success_cert_issuance_count`.
    pub certificates_issued: IntCounter,
    /// Notebooks stopped for idleness.
    pub notebooks_culled: IntCounter,
    /// Stopped notebooks started again by a request.
    pub notebooks_woken: IntCounter,
    /// JupyterHub's proxy API (`--chp-api`): requests by method and status.
    pub chp_requests: IntCounterVec,
    /// ChpRoutes this replica serves to its gateways.
    pub chp_routes: IntGauge,
    /// From a route's object written to its change published to gateways.
    pub chp_propagation: Histogram,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("portico_controller_reconcile_total", "Notebook reconciles, by result (success, error)."),
            &["result"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new("portico_controller_reconcile_errors_total", "Failed Notebook reconciles, by what failed."),
            &["error"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("portico_controller_reconcile_duration_seconds", "Time one Notebook reconcile took.")
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["result"],
        )?;
        let applies = IntCounterVec::new(
            Opts::new(
                "portico_controller_applies_total",
                "Server-side applies of derived objects, by kind and outcome (applied, or unchanged: skipped \
                 because this very body was applied to the object's current version).",
            ),
            &["kind", "outcome"],
        )?;
        let notebook_running = IntGaugeVec::new(
            Opts::new("notebook_running", "Current running notebooks in the cluster (readyReplicas > 0)."),
            &["namespace"],
        )?;
        let notebook_create = IntCounterVec::new(
            Opts::new("notebook_create_total", "Total times of creating notebooks."),
            &["namespace"],
        )?;
        let notebook_create_failed = IntCounterVec::new(
            Opts::new("notebook_create_failed_total", "Total failure times of creating notebooks."),
            &["namespace"],
        )?;
        let leader = IntGauge::new("portico_controller_leader", "1 while this replica runs the Notebook reconciler.")?;
        let snapshot_version =
            IntGauge::new("portico_controller_snapshot_version", "Version of the latest published route snapshot.")?;
        let snapshot_builds =
            IntCounter::new("portico_controller_snapshot_builds_total", "Route table builds (published or not).")?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(applies.clone()))?;
        registry.register(Box::new(notebook_running.clone()))?;
        registry.register(Box::new(notebook_create.clone()))?;
        registry.register(Box::new(notebook_create_failed.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(snapshot_version.clone()))?;
        registry.register(Box::new(snapshot_builds.clone()))?;
        let xds_connected = IntGauge::new("pilot_xds", "Number of gateway streams connected to this controller.")?;
        let xds_pushes =
            IntCounterVec::new(Opts::new("pilot_xds_pushes", "Discovery responses sent, by type."), &["type"])?;
        let xds_rejects = IntCounterVec::new(
            Opts::new("pilot_total_xds_rejects", "Discovery responses a gateway rejected (NACK), by type."),
            &["type"],
        )?;
        let xds_config_size = Histogram::with_opts(
            HistogramOpts::new("pilot_xds_config_size_bytes", "Size of each discovery response sent, in bytes.")
                .buckets(vec![1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 4e7]),
        )?;
        let convergence = Histogram::with_opts(
            HistogramOpts::new(
                "pilot_proxy_convergence_time",
                "Seconds from a route snapshot being ready to its push to a gateway.",
            )
            .buckets(vec![0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]),
        )?;
        registry.register(Box::new(xds_connected.clone()))?;
        registry.register(Box::new(xds_pushes.clone()))?;
        registry.register(Box::new(xds_rejects.clone()))?;
        registry.register(Box::new(xds_config_size.clone()))?;
        registry.register(Box::new(convergence.clone()))?;
        let csr_count = IntCounter::new("citadel_server_csr_count", "Certificate signing requests received.")?;
        let authentication_failures = IntCounter::new(
            "citadel_server_authentication_failure_count",
            "Certificate requests refused because the caller's token did not authenticate.",
        )?;
        let certificates_issued =
            IntCounter::new("citadel_server_success_cert_issuance_count", "Workload certificates issued.")?;
        registry.register(Box::new(csr_count.clone()))?;
        registry.register(Box::new(authentication_failures.clone()))?;
        registry.register(Box::new(certificates_issued.clone()))?;
        let notebooks_culled = IntCounter::new(
            "portico_controller_notebooks_culled_total",
            "Notebooks stopped (kubeflow-resource-stopped set) after CULL_IDLE_TIME without activity.",
        )?;
        let notebooks_woken = IntCounter::new(
            "portico_controller_notebooks_woken_total",
            "Stopped notebooks started again because their user came back.",
        )?;
        registry.register(Box::new(notebooks_culled.clone()))?;
        registry.register(Box::new(notebooks_woken.clone()))?;
        let chp_requests = IntCounterVec::new(
            Opts::new(
                "portico_controller_chp_api_requests_total",
                "Requests to JupyterHub's proxy API (configurable-http-proxy's), by method and status code.",
            ),
            &["method", "code"],
        )?;
        let chp_routes = IntGauge::new(
            "portico_controller_chp_routes",
            "JupyterHub proxy routes (ChpRoute objects) in the route tables this replica serves.",
        )?;
        let chp_propagation = Histogram::with_opts(
            HistogramOpts::new(
                "portico_controller_chp_route_propagation_seconds",
                "Seconds from a proxy API change's object written to the change published to gateway streams.",
            )
            .buckets(vec![0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]),
        )?;
        registry.register(Box::new(chp_requests.clone()))?;
        registry.register(Box::new(chp_routes.clone()))?;
        registry.register(Box::new(chp_propagation.clone()))?;
        Ok(Self {
            chp_requests,
            chp_routes,
            chp_propagation,
            notebooks_culled,
            notebooks_woken,
            csr_count,
            authentication_failures,
            certificates_issued,
            xds_connected,
            xds_pushes,
            xds_rejects,
            xds_config_size,
            convergence,
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            applies,
            notebook_running,
            notebook_create,
            notebook_create_failed,
            leader,
            snapshot_version,
            snapshot_builds,
        })
    }

    /// Records one reconcile's outcome and duration.
    pub fn reconciled(&self, ok: bool, elapsed: Duration) {
        let result = if ok { "success" } else { "error" };
        self.reconciles.with_label_values(&[result]).inc();
        self.reconcile_duration.with_label_values(&[result]).observe(elapsed.as_secs_f64());
    }

    /// Counts a failed reconcile by what failed (`error_policy`).
    pub fn reconcile_failed(&self, label: &str) {
        self.reconcile_errors.with_label_values(&[label]).inc();
    }

    /// An apply of a derived object was sent (`applied`) or skipped (`unchanged`).
    pub fn applied(&self, kind: &str, sent: bool) {
        self.applies.with_label_values(&[kind, if sent { "applied" } else { "unchanged" }]).inc();
    }

    /// A notebook's workload was created.
    pub fn notebook_created(&self, namespace: &str) {
        self.notebook_create.with_label_values(&[namespace]).inc();
    }

    /// Creating a notebook's workload failed.
    pub fn notebook_create_failed(&self, namespace: &str) {
        self.notebook_create_failed.with_label_values(&[namespace]).inc();
    }

    /// Replaces `notebook_running` with `running` (namespace -> count).
    pub fn set_running(&self, running: &BTreeMap<String, i64>) {
        self.notebook_running.reset();
        for (namespace, count) in running {
            self.notebook_running.with_label_values(&[namespace]).set(*count);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_kubeflows_names() {
        let metrics = Metrics::new().unwrap();
        metrics.reconciled(true, Duration::from_millis(3));
        metrics.reconciled(false, Duration::from_millis(3));
        metrics.reconcile_failed("apply");
        metrics.applied("Service", true);
        metrics.applied("Service", false);
        metrics.notebook_created("team");
        metrics.notebook_create_failed("team");
        metrics.set_running(&BTreeMap::from([("team".to_string(), 2)]));
        let text = metrics.encode().unwrap();
        for line in [
            "portico_controller_reconcile_total{result=\"success\"} 1",
            "portico_controller_reconcile_errors_total{error=\"apply\"} 1",
            "portico_controller_reconcile_duration_seconds_count{result=\"error\"} 1",
            "notebook_running{namespace=\"team\"} 2",
            "portico_controller_applies_total{kind=\"Service\",outcome=\"unchanged\"} 1",
            "notebook_create_total{namespace=\"team\"} 1",
            "notebook_create_failed_total{namespace=\"team\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        metrics.set_running(&BTreeMap::new());
        assert!(!metrics.encode().unwrap().contains("notebook_running{"));
    }
}
