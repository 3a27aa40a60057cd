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
pub struct Secure {
    pub certificates: crate::ca::service::CertificateServer,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Serves discovery on `listener` (plaintext, or TLS with the certificate
/// service when `secure` is given) until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    service: DiscoveryService,
    secure: Option<Secure>,
    mut shutdown: watch::Receiver<bool>,
) {
    use portico_api::ca::certificate_service_server::CertificateServiceServer;
    use tonic::transport::{Identity, ServerTlsConfig};

    let address = listener.local_addr().map_or_else(|_| "?".to_string(), |a: SocketAddr| a.to_string());
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    let mut certificates = None;
    if let Some(secure) = secure {
        let tls = ServerTlsConfig::new().identity(Identity::from_pem(secure.cert_pem, secure.key_pem));
        builder = match builder.tls_config(tls) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::error!(%error, %address, "the secure listener's TLS settings are invalid");
                return;
            }
        };
        certificates = Some(CertificateServiceServer::new(secure.certificates));
        tracing::info!(%address, "serving discovery and certificates (gRPC over TLS)");
    } else {
        tracing::info!(%address, "serving discovery (gRPC)");
    }
    let result = builder
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
