//! Istio's TCP metric names, for the inbound hop (`reporter="destination"`)
//! and the outbound passthrough (`reporter="source"`).

use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `istio_tcp_connections_opened_total{reporter, source_principal}`.
    pub opened: IntCounterVec,
    pub closed: IntCounterVec,
    /// Bytes from the peer to the app, and back.
    pub received: IntCounterVec,
    pub sent: IntCounterVec,
    /// Connections refused, by reason (handshake, identity, app).
    pub denied: IntCounterVec,
    pub active: IntGauge,
    /// Seconds until the workload certificate expires.
    pub cert_expiry: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let by_principal =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["reporter", "source_principal"]);
        let opened = by_principal("istio_tcp_connections_opened_total", "Connections opened.")?;
        let closed = by_principal("istio_tcp_connections_closed_total", "Connections closed.")?;
        let received = by_principal("istio_tcp_received_bytes_total", "Bytes received from the connections' peers.")?;
        let sent = by_principal("istio_tcp_sent_bytes_total", "Bytes sent to the connections' peers.")?;
        let denied = IntCounterVec::new(
            Opts::new("portico_sidecar_connections_denied_total", "Connections refused, by reason."),
            &["reason"],
        )?;
        let active = IntGauge::new("portico_sidecar_active_connections", "Inbound connections open now.")?;
        let cert_expiry = IntGauge::new(
            "portico_sidecar_certificate_expiry_seconds",
            "Seconds until the workload certificate expires.",
        )?;
        for metric in [&opened, &closed, &received, &sent, &denied] {
            registry.register(Box::new(metric.clone()))?;
        }
        registry.register(Box::new(active.clone()))?;
        registry.register(Box::new(cert_expiry.clone()))?;
        Ok(Self { registry, opened, closed, received, sent, denied, active, cert_expiry })
    }

    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "encoding metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}
