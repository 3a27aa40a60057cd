//! The sidecar's TLS settings from its workload certificate.

use std::sync::Arc;

use portico_mesh::{CertError, Issued};

/// TLS for the inbound listener: our certificate, and client certificates
/// required and verified against the mesh root (the SPIFFE ID is checked
/// against the allow-list after the handshake).
pub fn server_config(issued: &Issued) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let invalid = |error: &dyn std::fmt::Display| CertError::Invalid(error.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for root in rustls_pemfile::certs(&mut issued.root_pem.as_bytes()) {
        roots.add(root.map_err(|e| invalid(&e))?).map_err(|e| invalid(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| invalid(&e))?;
    // The leaf only: peers have the root already.
    let leaf = issued.chain_pem.first().ok_or(CertError::Empty)?;
    let certs = rustls_pemfile::certs(&mut leaf.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(&e))?;
    let key = rustls_pemfile::private_key(&mut issued.key_pem.as_bytes())
        .map_err(|e| invalid(&e))?
        .ok_or_else(|| CertError::Invalid("no private key".to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))?;
    Ok(Arc::new(config))
}
