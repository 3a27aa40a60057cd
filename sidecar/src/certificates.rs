//! The sidecar's own workload certificate: a fresh key, a CSR, the pod's
//! service-account token, and the controller's certificate service.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portico_api::ca::CreateCertificateRequest;
use portico_api::ca::certificate_service_client::CertificateServiceClient;
use rcgen::{CertificateParams, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::cli::RunArgs;

/// Why a certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("making a key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("--ca-address {0:?} is not a URL with a host")]
    Address(String),
    #[error("connecting to the certificate service at {address}: {source}")]
    Connect { address: String, source: tonic::transport::Error },
    #[error("the certificate service refused: {0}")]
    Refused(#[from] tonic::Status),
    #[error("the certificate service returned no certificate")]
    Empty,
    #[error("the certificate or key does not load: {0}")]
    Invalid(String),
}

/// A certificate in hand.
#[derive(Clone)]
pub struct Issued {
    /// Leaf first.
    pub chain_pem: Vec<String>,
    /// The leaf's SPIFFE ID.
    pub identity: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Fetches a new certificate.
pub async fn fetch(args: &RunArgs) -> Result<Issued, CertError> {
    let root_pem = read(&args.ca_root)?;
    let token = read(&args.token_file)?;
    let key = KeyPair::generate()?;
    let csr = CertificateParams::default().serialize_request(&key)?.pem()?;
    let host = args
        .ca_name
        .clone()
        .or_else(|| host_of(&args.ca_address))
        .ok_or_else(|| CertError::Address(args.ca_address.clone()))?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&root_pem)).domain_name(host);
    let connect = |source| CertError::Connect { address: args.ca_address.clone(), source };
    let channel = Channel::from_shared(args.ca_address.clone())
        .map_err(|_| CertError::Address(args.ca_address.clone()))?
        .tls_config(tls)
        .map_err(connect)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .map_err(connect)?;
    let seconds = i64::try_from(args.cert_ttl.as_secs()).unwrap_or(i64::MAX);
    let mut request = tonic::Request::new(CreateCertificateRequest { csr, validity_duration_seconds: seconds });
    let bearer = format!("Bearer {}", token.trim());
    let value = bearer.parse().map_err(|_| CertError::Invalid("the token is not ASCII".to_string()))?;
    request.metadata_mut().insert("authorization", value);
    let response = CertificateServiceClient::new(channel).create_certificate(request).await?.into_inner();
    let leaf = response.cert_chain.first().ok_or(CertError::Empty)?;
    let identity = crate::identity::uri_sans(&pem_to_der(leaf)?)
        .into_iter()
        .find(|uri| uri.starts_with("spiffe://"))
        .ok_or_else(|| CertError::Invalid("the certificate has no SPIFFE ID".to_string()))?;
    let key_pem = key.serialize_pem();
    let server_config = server_config(&response.cert_chain, &key_pem, &root_pem)?;
    Ok(Issued { chain_pem: response.cert_chain, identity, server_config })
}

/// TLS for the inbound listener: our certificate, and client certificates
/// required and verified against the mesh root (the SPIFFE ID is checked
/// against the allow-list after the handshake).
fn server_config(chain_pem: &[String], key_pem: &str, root_pem: &str) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let invalid = |error: &dyn std::fmt::Display| CertError::Invalid(error.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for root in rustls_pemfile::certs(&mut root_pem.as_bytes()) {
        roots.add(root.map_err(|e| invalid(&e))?).map_err(|e| invalid(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| invalid(&e))?;
    // The leaf only: peers have the root already.
    let leaf = chain_pem.first().ok_or(CertError::Empty)?;
    let certs = rustls_pemfile::certs(&mut leaf.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(&e))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
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

fn pem_to_der(pem: &str) -> Result<Vec<u8>, CertError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or(CertError::Empty)?
        .map(|der| der.to_vec())
        .map_err(|error| CertError::Invalid(error.to_string()))
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read { path: path.display().to_string(), source })
}

/// `host` of `https://host:port/...`.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
    (!host.is_empty()).then(|| host.trim_start_matches('[').trim_end_matches(']').to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ca_name_defaults_to_the_url_host() {
        assert_eq!(
            super::host_of("https://portico-controller.portico-system.svc:15012").as_deref(),
            Some("portico-controller.portico-system.svc")
        );
        assert_eq!(super::host_of("https://127.0.0.1:15012").as_deref(), Some("127.0.0.1"));
    }
}
