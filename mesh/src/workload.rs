//! A workload certificate from the mesh CA: a fresh key, a CSR, the
//! service-account token for audience `portico-ca`, and the controller's
//! `CertificateService` over TLS verified against the mesh root.

use std::path::PathBuf;
use std::time::Duration;

use portico_api::ca::CreateCertificateRequest;
use portico_api::ca::certificate_service_client::CertificateServiceClient;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Where to get a certificate, and for how long.
#[derive(Clone, Debug)]
pub struct CaClient {
    /// `https://portico-controller.portico-system.svc:15012`.
    pub address: String,
    /// Name the CA's certificate must carry (default: the URL's host).
    pub name: Option<String>,
    /// The mesh root (PEM file).
    pub root: PathBuf,
    /// The service-account token (a projected volume; re-read every time).
    pub token_file: PathBuf,
    pub ttl: Duration,
}

/// Why a certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("making a key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the CA address {0:?} is not a URL with a host")]
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
    /// Leaf first, root last.
    pub chain_pem: Vec<String>,
    pub key_pem: String,
    /// The leaf's SPIFFE ID.
    pub identity: String,
    /// The mesh root (PEM), to verify peers.
    pub root_pem: String,
}

/// How long to wait after a failed certificate request.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

impl Issued {
    /// Seconds until the workload certificate expires (0 when unknown).
    pub fn seconds_left(&self) -> u64 {
        crate::identity::seconds_left(self.chain_pem.first().map_or("", String::as_str))
    }

    /// The leaf certificate: what the workload presents (peers have the
    /// root already).
    pub fn leaf_der(&self) -> Result<CertificateDer<'static>, CertError> {
        let leaf = self.chain_pem.first().ok_or(CertError::Empty)?;
        Ok(CertificateDer::from(pem_to_der(leaf)?))
    }

    /// The private key of the leaf.
    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>, CertError> {
        rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .map_err(|error| CertError::Invalid(error.to_string()))?
            .ok_or_else(|| CertError::Invalid("no private key".to_string()))
    }

    /// The mesh root's certificates, to verify peers with.
    pub fn root_ders(&self) -> Result<Vec<CertificateDer<'static>>, CertError> {
        let roots = rustls_pemfile::certs(&mut self.root_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| CertError::Invalid(error.to_string()))?;
        if roots.is_empty() {
            return Err(CertError::Invalid("the mesh root holds no certificate".to_string()));
        }
        Ok(roots)
    }

    /// When to fetch the next one: at half the remaining lifetime, so a
    /// failed renewal has the other half to succeed (at least 1 s).
    pub fn renew_in(&self) -> Duration {
        Duration::from_secs(self.seconds_left() / 2).max(Duration::from_secs(1))
    }
}

impl CaClient {
    /// Fetches a new certificate.
    pub async fn fetch(&self) -> Result<Issued, CertError> {
        let root_pem = read(&self.root)?;
        let token = read(&self.token_file)?;
        let key = KeyPair::generate()?;
        let csr = CertificateParams::default().serialize_request(&key)?.pem()?;
        let host = self
            .name
            .clone()
            .or_else(|| host_of(&self.address))
            .ok_or_else(|| CertError::Address(self.address.clone()))?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&root_pem)).domain_name(host);
        let connect = |source| CertError::Connect { address: self.address.clone(), source };
        let channel = Channel::from_shared(self.address.clone())
            .map_err(|_| CertError::Address(self.address.clone()))?
            .tls_config(tls)
            .map_err(connect)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .connect()
            .await
            .map_err(connect)?;
        let seconds = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
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
        Ok(Issued { chain_pem: response.cert_chain, key_pem: key.serialize_pem(), identity, root_pem })
    }
}

/// The DER of the first certificate in `pem`.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, CertError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or(CertError::Empty)?
        .map(|der| der.to_vec())
        .map_err(|error| CertError::Invalid(error.to_string()))
}

fn read(path: &std::path::Path) -> Result<String, CertError> {
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
        let host = super::host_of("https://portico-controller.portico-system.svc:15012");
        assert_eq!(host.as_deref(), Some("portico-controller.portico-system.svc"));
        assert_eq!(super::host_of("https://127.0.0.1:15012").as_deref(), Some("127.0.0.1"));
    }
}
