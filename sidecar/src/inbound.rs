//! The inbound hop: mutual TLS on 15006, the peer's SPIFFE ID checked
//! against the allow-list, then bytes both ways to 127.0.0.1:<app port>.
//!
//! The certificate is renewed at half its lifetime and swapped atomically:
//! new connections get the new one, open ones (a kernel websocket) keep
//! theirs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwapOption;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use portico_mesh::{CaClient, Issued, RETRY_AFTER_FAILURE, identity};

use crate::certificates;
use crate::cli::RunArgs;
use crate::endpoints;
use crate::metrics::Metrics;

/// Handshakes that take longer are dropped (slow or idle scanners).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate in use and the TLS settings made from it.
struct Loaded {
    issued: Issued,
    server_config: Arc<rustls::ServerConfig>,
}

struct State {
    args: RunArgs,
    ca: CaClient,
    allowed: Vec<String>,
    current: ArcSwapOption<Loaded>,
    metrics: Metrics,
}

/// Runs until the process is stopped.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("registering metrics")?;
    let state = Arc::new(State {
        allowed: args.allowed(),
        ca: CaClient {
            address: args.ca_address.clone(),
            name: args.ca_name.clone(),
            root: args.ca_root.clone(),
            token_file: args.token_file.clone(),
            ttl: args.cert_ttl,
        },
        args: args.clone(),
        current: ArcSwapOption::empty(),
        metrics,
    });
    serve_endpoints(&state).await?;
    if let Some(outbound) = args.outbound {
        let listener = TcpListener::bind(outbound).await.with_context(|| format!("binding {outbound}"))?;
        let current = state.clone();
        let identity: crate::outbound::Identity = Arc::new(move || {
            current.current.load().as_ref().map_or_else(|| "unknown".to_string(), |l| l.issued.identity.clone())
        });
        tokio::spawn(crate::outbound::run(listener, state.metrics.clone(), identity));
        tracing::info!(%outbound, "passing redirected outbound connections through");
    }
    let listener = TcpListener::bind(args.inbound).await.with_context(|| format!("binding {}", args.inbound))?;
    tracing::info!(inbound = %args.inbound, app_port = args.app_port, allowed = ?state.allowed, "portico-sidecar started");
    tokio::spawn(renew(state.clone()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accepting an inbound connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(reason) = handle(&state, stream).await {
                state.metrics.denied.with_label_values(&[reason.label()]).inc();
                tracing::info!(%peer, reason = %reason, "inbound connection refused");
            }
        });
    }
}

/// Why an inbound connection was not proxied.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no workload certificate yet")]
    NotReady,
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("peer {0:?} is not allowed")]
    Identity(Option<String>),
    #[error("no --app-port and no original destination (was it redirected by iptables?)")]
    NoDestination,
    #[error("the app on 127.0.0.1:{port} refused: {error}")]
    App { port: u16, error: std::io::Error },
}

impl Refusal {
    fn label(&self) -> &'static str {
        match self {
            Refusal::NotReady => "not_ready",
            Refusal::Handshake(_) => "handshake",
            Refusal::Identity(_) => "identity",
            Refusal::App { .. } | Refusal::NoDestination => "app",
        }
    }
}

async fn handle(state: &State, stream: TcpStream) -> Result<(), Refusal> {
    let loaded = state.current.load_full().ok_or(Refusal::NotReady)?;
    let _ = stream.set_nodelay(true);
    let acceptor = TlsAcceptor::from(loaded.server_config.clone());
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| Refusal::Handshake("timed out".to_string()))?
        .map_err(|error| Refusal::Handshake(error.to_string()))?;
    let peer_chain = tls.get_ref().1.peer_certificates();
    let peer = identity::spiffe_id(peer_chain);
    let principal = match peer {
        Some(id) if state.allowed.contains(&id) => id,
        other => return Err(Refusal::Identity(other)),
    };
    // Which of the peer's certificates it presented: shows a rotation on
    // the far end (`RUST_LOG=portico_sidecar=debug`).
    if tracing::enabled!(tracing::Level::DEBUG) {
        let presented = peer_chain.and_then(|chain| chain.first()).and_then(|leaf| identity::fingerprint(leaf));
        if let Some(presented) = presented {
            tracing::debug!(peer = %principal, peer_serial = %presented.serial, peer_not_after = presented.not_after, "mTLS peer admitted");
        }
    }
    let port = match state.args.app_port {
        Some(port) => port,
        None => original_port(tls.get_ref().0).ok_or(Refusal::NoDestination)?,
    };
    let mut app = TcpStream::connect(("127.0.0.1", port)).await.map_err(|error| Refusal::App { port, error })?;
    let _ = app.set_nodelay(true);
    let label = ["destination", principal.as_str()];
    state.metrics.opened.with_label_values(&label).inc();
    state.metrics.active.inc();
    let copied = tokio::io::copy_bidirectional(&mut tls, &mut app).await;
    state.metrics.active.dec();
    state.metrics.closed.with_label_values(&label).inc();
    if let Ok((from_peer, to_peer)) = copied {
        state.metrics.received.with_label_values(&label).inc_by(from_peer);
        state.metrics.sent.with_label_values(&label).inc_by(to_peer);
    }
    Ok(())
}

/// The port a connection was sent to before iptables redirected it here
/// (`SO_ORIGINAL_DST`); `None` for a direct connection to the inbound port.
fn original_port(stream: &TcpStream) -> Option<u16> {
    let port = crate::outbound::original_destination(stream)?.port();
    let local = stream.local_addr().ok()?.port();
    (port != local).then_some(port)
}

/// Fetches the certificate, then renews it at half its lifetime, forever.
async fn renew(state: Arc<State>) {
    loop {
        let loaded = match state.ca.fetch().await {
            Ok(issued) => certificates::server_config(&issued).map(|server_config| Loaded { issued, server_config }),
            Err(error) => Err(error),
        };
        match loaded {
            Ok(loaded) => {
                let left = loaded.issued.seconds_left();
                tracing::info!(identity = %loaded.issued.identity, expires_in_s = left, "workload certificate loaded");
                state.metrics.cert_expiry.set(i64::try_from(left).unwrap_or(i64::MAX));
                let wait = loaded.issued.renew_in();
                state.current.store(Some(Arc::new(loaded)));
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                let retry = RETRY_AFTER_FAILURE;
                tracing::warn!(%error, retry_in_s = retry.as_secs(), "could not get a workload certificate");
                tokio::time::sleep(retry).await;
            }
        }
    }
}

async fn serve_endpoints(state: &Arc<State>) -> anyhow::Result<()> {
    let health = state.clone();
    endpoints::serve(state.args.health, move |path| {
        let state = health.clone();
        async move {
            if path != "/healthz/ready" {
                return (404, "text/plain", "not found\n".to_string());
            }
            // Ready: a certificate is loaded and the notebook accepts connections.
            let certificate = state.current.load().is_some();
            // Without --app-port there is no single app to probe.
            let app = match state.args.app_port {
                Some(port) => TcpStream::connect(("127.0.0.1", port)).await.is_ok(),
                None => true,
            };
            match (certificate, app) {
                (true, true) => (200, "text/plain", "ready\n".to_string()),
                (false, _) => (503, "text/plain", "no workload certificate yet\n".to_string()),
                (true, false) => {
                    let port = state.args.app_port.unwrap_or_default();
                    (503, "text/plain", format!("nothing listens on 127.0.0.1:{port}\n"))
                }
            }
        }
    })
    .await
    .with_context(|| format!("binding the health listener {}", state.args.health))?;
    let metrics = state.metrics.clone();
    endpoints::serve(state.args.metrics, move |path| {
        let metrics = metrics.clone();
        async move {
            match path.as_str() {
                "/stats/prometheus" => (200, "text/plain; version=0.0.4", metrics.encode()),
                _ => (404, "text/plain", "not found\n".to_string()),
            }
        }
    })
    .await
    .with_context(|| format!("binding the metrics listener {}", state.args.metrics))?;
    let admin = state.clone();
    endpoints::serve(state.args.admin, move |path| {
        let state = admin.clone();
        async move {
            let loaded = state.current.load_full();
            let issued = loaded.as_ref().map(|loaded| &loaded.issued);
            match path.as_str() {
                "/certs" => match issued {
                    Some(issued) => (200, "application/x-pem-file", issued.chain_pem.join("")),
                    None => (503, "text/plain", "no workload certificate yet\n".to_string()),
                },
                "/config_dump" => {
                    let body = serde_json::json!({
                        "identity": issued.as_ref().map(|i| i.identity.clone()),
                        "certificate_expires_in_s": issued
                            .as_ref()
                            .map(|issued| issued.seconds_left()),
                        "app_port": state.args.app_port,
                        "inbound": state.args.inbound.to_string(),
                        "allowed": state.allowed,
                    });
                    (200, "application/json", format!("{body}\n"))
                }
                _ => (404, "text/plain", "endpoints: /certs /config_dump\n".to_string()),
            }
        }
    })
    .await
    .with_context(|| format!("binding the admin listener {}", state.args.admin))?;
    Ok(())
}
