//! The discovery server: pushes the route index's snapshots to gateways
//! over gRPC (`portico.discovery.v1.RouteDiscovery`, port 15010).
//!
//! Each gateway opens one `StreamRoutes` stream and names itself; the
//! controller registers its namespace and labels with the index
//! ([`crate::demand`]), which builds that gateway's table, and sends it in
//! full, then only what changed ([`stream`]). Tables are encoded once per
//! version and shared by all streams ([`encode`]). `ProxyStatus` reports
//! every stream's state for `porticoctl proxy-status` ([`registry`]).

pub mod encode;
pub mod registry;
pub mod stream;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use portico_api::discovery::route_discovery_server::{RouteDiscovery, RouteDiscoveryServer};
use portico_api::discovery::{DeltaRequest, DeltaResponse, ProxyStatusRequest, ProxyStatusResponse};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::demand::Demand;
use crate::lifecycle::activity::ActivityBook;
use crate::lifecycle::wake::Waker;
use crate::metrics::Metrics;
use encode::EncodedSnapshot;
use registry::Registry;

/// State every stream shares.
pub struct Shared {
    pub demand: Demand,
    pub encoded: watch::Receiver<Arc<EncodedSnapshot>>,
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    /// This replica's identity, reported to gateways and proxy-status.
    pub controller: String,
    /// Where the gateways' activity reports go.
    pub activity: Arc<ActivityBook>,
    /// Where their wake requests go (`None`: this controller wakes nothing).
    pub waker: Option<Arc<Waker>>,
}

/// The gRPC service.
#[derive(Clone)]
pub struct DiscoveryService {
    shared: Arc<Shared>,
}

impl DiscoveryService {
    pub fn new(shared: Shared) -> Self {
        Self { shared: Arc::new(shared) }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RouteDiscovery for DiscoveryService {
    type StreamRoutesStream = ResponseStream;

    async fn stream_routes(
        &self,
        request: Request<Streaming<DeltaRequest>>,
    ) -> Result<Response<Self::StreamRoutesStream>, Status> {
        let peer = request.remote_addr().map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let (sender, receiver) = mpsc::channel(stream::RESPONSE_BUFFER);
        tokio::spawn(stream::serve(self.shared.clone(), request.into_inner(), sender, peer));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn proxy_status(
        &self,
        _request: Request<ProxyStatusRequest>,
    ) -> Result<Response<ProxyStatusResponse>, Status> {
        let version = self.shared.encoded.borrow().version.to_string();
        Ok(Response::new(ProxyStatusResponse {
            controller: self.shared.controller.clone(),
            version,
            gateways: self.shared.registry.statuses(),
        }))
    }
}

/// The TLS side of a listener (15012): the controller's serving
/// certificate, and the certificate service served next to discovery.
/// Bound on a client's TLS handshake on the secure listener.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Secure {
    pub certificates: crate::ca::service::CertificateServer,
    /// Presents the current serving certificate (renewed in place).
    pub tls: std::sync::Arc<rustls::ServerConfig>,
}

/// Serves discovery on `listener` (plaintext, or TLS with the certificate
/// service when `secure` is given) until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    service: DiscoveryService,
    secure: Option<Secure>,
    shutdown: watch::Receiver<bool>,
) {
    use portico_api::ca::certificate_service_server::CertificateServiceServer;

    let address = listener.local_addr().map_or_else(|_| "?".to_string(), |a: SocketAddr| a.to_string());
    let Some(secure) = secure else {
        tracing::info!(%address, "serving discovery (gRPC)");
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        serve_on(incoming, service, None, shutdown, &address).await;
        return;
    };
    tracing::info!(%address, "serving discovery and certificates (gRPC over TLS)");
    // TLS is done here rather than by tonic so that every handshake gets
    // the current serving certificate (tonic's TLS settings are fixed).
    let incoming = tls_incoming(listener, secure.tls);
    let certificates = Some(CertificateServiceServer::new(secure.certificates));
    serve_on(incoming, service, certificates, shutdown, &address).await;
}

/// Accepted connections after their TLS handshake; handshakes run
/// concurrently, bounded by [`HANDSHAKE_TIMEOUT`].
fn tls_incoming(
    listener: TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a secure discovery connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, handshaken) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = handshaken.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake on the secure listener failed"),
                    Err(_) => tracing::debug!("TLS handshake on the secure listener timed out"),
                }
            });
            if sender.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

async fn serve_on<I, IO, IE>(
    incoming: I,
    service: DiscoveryService,
    certificates: Option<
        portico_api::ca::certificate_service_server::CertificateServiceServer<crate::ca::service::CertificateServer>,
    >,
    mut shutdown: watch::Receiver<bool>,
    address: &str,
) where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let result = tonic::transport::Server::builder()
        // Notice a gateway that vanished without closing its stream.
        .http2_keepalive_interval(Some(Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(RouteDiscoveryServer::new(service).max_decoding_message_size(16 << 20))
        .add_optional_service(certificates)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, %address, "the discovery server failed");
    }
}
