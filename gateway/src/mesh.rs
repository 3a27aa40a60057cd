//! The gateway's mesh identity: a workload certificate from the
//! controller's CA (`--ca-address`), renewed at half its lifetime, used to
//! reach meshed notebook pods with mutual TLS.
//!
//! The pod's certificate is verified against the mesh root (so only a mesh
//! workload can answer); the pod's sidecar in turn admits only the
//! gateway's SPIFFE ID. Pingora 0.9 offers no hook to check the pod's own
//! SPIFFE ID during the handshake, so the gateway does not pin which mesh
//! workload answers an endpoint address.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora_core::protocols::tls::CaType;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::utils::tls::{CertKey, WrappedX509, parse_x509};
use portico_mesh::{CaClient, CertError, Issued, RETRY_AFTER_FAILURE};

/// What an upstream mTLS connection needs.
pub struct MeshTls {
    pub client_cert: Arc<CertKey>,
    pub roots: Arc<CaType>,
    pub identity: String,
    /// The same certificate and root for the connections the gateway makes
    /// itself (spliced upgrades, [`crate::tunnel`]).
    pub client_config: Arc<rustls::ClientConfig>,
}

/// The current mesh certificate, if any.
pub struct MeshIdentity {
    ca: CaClient,
    current: ArcSwapOption<MeshTls>,
}

impl MeshIdentity {
    pub fn new(ca: CaClient) -> Self {
        Self { ca, current: ArcSwapOption::empty() }
    }

    /// The certificate to connect with now.
    pub fn current(&self) -> Option<Arc<MeshTls>> {
        self.current.load_full()
    }

    async fn renew_forever(&self, mut shutdown: ShutdownWatch) {
        loop {
            let fetched = self.ca.fetch().await;
            let wait = match fetched.and_then(|issued| convert(&issued).map(|tls| (issued, tls))) {
                Ok((issued, tls)) => {
                    tracing::info!(identity = %tls.identity, expires_in_s = issued.seconds_left(), "mesh certificate loaded");
                    self.current.store(Some(Arc::new(tls)));
                    issued.renew_in()
                }
                Err(error) => {
                    let retry = RETRY_AFTER_FAILURE;
                    tracing::warn!(%error, retry_in_s = retry.as_secs(), "could not get a mesh certificate");
                    retry
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Pingora's forms of the certificate, key and root.
fn convert(issued: &Issued) -> Result<MeshTls, CertError> {
    let client_cert =
        Arc::new(CertKey::new(vec![issued.leaf_der()?.to_vec()], issued.key_der()?.secret_der().to_vec()));
    let roots: Vec<WrappedX509> =
        issued.root_ders()?.into_iter().map(|der| WrappedX509::new(der.to_vec(), parse_x509)).collect();
    let client_config = Arc::new(portico_mesh::client::client_config(issued)?);
    Ok(MeshTls {
        client_cert,
        roots: Arc::from(roots.into_boxed_slice()),
        identity: issued.identity.clone(),
        client_config,
    })
}

/// Runs the renewal as a Pingora background service.
pub struct MeshIdentityService(pub Arc<MeshIdentity>);

#[async_trait]
impl BackgroundService for MeshIdentityService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.renew_forever(shutdown).await;
    }
}
