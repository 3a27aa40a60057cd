//! The controller's own serving certificate (15012 discovery + certificates,
//! 15017 webhook), issued by the mesh CA and renewed at half its lifetime
//! while the controller runs. Handshakes pick the current certificate per
//! connection, so open streams (a gateway's discovery stream) keep theirs
//! and nothing is dropped at renewal.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::authority::{Authority, CaError};

/// Wait before retrying a renewal that failed.
const RETRY: Duration = Duration::from_secs(60);

/// The current serving certificate.
#[derive(Debug)]
pub struct ServingCertificate {
    current: ArcSwap<CertifiedKey>,
    names: Vec<String>,
    ttl: Duration,
}

impl ServingCertificate {
    /// Issues the first certificate for `names`.
    pub fn issue(authority: &Authority, names: Vec<String>, ttl: Duration) -> Result<Arc<Self>, CaError> {
        let key = certified_key(authority, &names, ttl)?;
        Ok(Arc::new(Self { current: ArcSwap::from_pointee(key), names, ttl }))
    }

    /// Renews at half-life, forever.
    pub async fn renew(self: Arc<Self>, authority: Arc<Authority>) {
        let mut wait = self.ttl / 2;
        loop {
            tokio::time::sleep(wait).await;
            match certified_key(&authority, &self.names, self.ttl) {
                Ok(key) => {
                    self.current.store(Arc::new(key));
                    tracing::info!(valid_for_s = self.ttl.as_secs(), "renewed the controller's serving certificate");
                    wait = self.ttl / 2;
                }
                Err(error) => {
                    tracing::error!(%error, "renewing the controller's serving certificate failed; retrying");
                    wait = RETRY.min(self.ttl / 4);
                }
            }
        }
    }

    /// TLS settings that always present the current certificate; `alpn`
    /// as the protocol served needs (`h2` for gRPC).
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified_key(authority: &Authority, names: &[String], ttl: Duration) -> Result<CertifiedKey, CaError> {
    let (cert_pem, key_pem) = authority.serving_certificate(names, ttl)?;
    let invalid = |what: &str| CaError::Certificate(format!("the serving certificate's {what} does not parse"));
    let certs =
        rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|_| invalid("chain"))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).ok().flatten().ok_or_else(|| invalid("key"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| invalid("key type"))?;
    Ok(CertifiedKey::new(certs, signing))
}
