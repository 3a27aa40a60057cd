//! Client TLS towards meshed workloads: the workload certificate as the
//! client certificate, and the server's chain verified against the mesh
//! root alone.
//!
//! Workload certificates name SPIFFE IDs (URI SANs), never DNS names, so
//! rustls' WebPKI verifier (which checks a server name) cannot be used as
//! is. [`MeshRootVerifier`] checks the chain, validity and signatures; the
//! caller then checks the peer's SPIFFE ID ([`crate::identity::spiffe_id`])
//! against the one the destination must have.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::workload::{CertError, Issued};

/// A client configuration presenting `issued` and trusting its mesh root.
pub fn client_config(issued: &Issued) -> Result<ClientConfig, CertError> {
    let invalid = |error: rustls::Error| CertError::Invalid(error.to_string());
    let mut roots = RootCertStore::empty();
    for root in issued.root_ders()? {
        roots.add(root).map_err(invalid)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(MeshRootVerifier::new(roots, Arc::clone(&provider)));
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![issued.leaf_der()?], issued.key_der()?)
        .map_err(invalid)
}

/// Verifies a server's chain against the mesh root, ignoring its name.
#[derive(Debug)]
pub struct MeshRootVerifier {
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
}

impl MeshRootVerifier {
    /// Trusts `roots` (the mesh root) with `provider`'s algorithms.
    pub fn new(roots: RootCertStore, provider: Arc<CryptoProvider>) -> Self {
        Self { roots, provider }
    }
}

impl ServerCertVerifier for MeshRootVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
