//! The outbound hop: connections the pod makes, redirected by
//! `portico-sidecar init --capture-outbound` to 15001, are passed through
//! to their original destination and counted (Istio's passthrough, with
//! `reporter="source"` metrics). The sidecar's own connections (uid 1337)
//! are exempt from the redirect, so passing one on never loops.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// Bound on connecting to a destination.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The workload's identity for the metrics' `source_principal`.
pub type Identity = Arc<dyn Fn() -> String + Send + Sync>;

/// Accepts redirected connections until the process ends.
pub async fn run(listener: TcpListener, metrics: Metrics, identity: Identity) {
    let own = listener.local_addr().ok();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting an outbound connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (metrics, identity) = (metrics.clone(), identity.clone());
        tokio::spawn(async move {
            if let Err(reason) = pass_through(stream, own, &metrics, &identity).await {
                metrics.denied.with_label_values(&["outbound"]).inc();
                tracing::info!(%peer, %reason, "outbound connection not passed through");
            }
        });
    }
}

async fn pass_through(
    mut stream: TcpStream,
    own: Option<SocketAddr>,
    metrics: &Metrics,
    identity: &Identity,
) -> Result<(), String> {
    let destination = original_destination(&stream).ok_or("no original destination (not redirected by iptables)")?;
    // A connection made to 15001 itself would come back here forever.
    if own.is_some_and(|own| own.port() == destination.port() && destination.ip().is_loopback()) {
        return Err("connection to the outbound port itself".to_string());
    }
    let _ = stream.set_nodelay(true);
    let mut upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(destination))
        .await
        .map_err(|_| format!("connecting to {destination}: timed out"))?
        .map_err(|error| format!("connecting to {destination}: {error}"))?;
    let _ = upstream.set_nodelay(true);
    let principal = identity();
    let label = ["source", principal.as_str()];
    metrics.opened.with_label_values(&label).inc();
    let copied = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
    metrics.closed.with_label_values(&label).inc();
    if let Ok((to_destination, from_destination)) = copied {
        metrics.sent.with_label_values(&label).inc_by(to_destination);
        metrics.received.with_label_values(&label).inc_by(from_destination);
    }
    Ok(())
}

/// Where the connection was going before iptables redirected it here
/// (`SO_ORIGINAL_DST`); the inbound hop uses it for the port.
pub fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let original = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::OriginalDst).ok()?;
    let ip = std::net::Ipv4Addr::from(u32::from_be(original.sin_addr.s_addr));
    Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(original.sin_port))))
}
