//! The sidecar's TLS settings from its workload certificate.

use std::sync::Arc;

use portico_mesh::{CertError, Issued};

/// TLS for the inbound listener: our certificate, and client certificates
/// required and verified against the mesh root (the SPIFFE ID is checked
/// against the allow-list after the handshake).
pub fn server_config(issued: &Issued) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let invalid = |error: &dyn std::fmt::Display| CertError::Invalid(error.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for root in issued.root_ders()? {
        roots.add(root).map_err(|e| invalid(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| invalid(&e))?;
    // The leaf only: peers have the root already.
    let certs = vec![issued.leaf_der()?];
    let key = issued.key_der()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))?;
    Ok(Arc::new(config))
}
