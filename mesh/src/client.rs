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
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::workload::{CertError, Issued, pem_to_der};

/// A client configuration presenting `issued` and trusting its mesh root.
pub fn client_config(issued: &Issued) -> Result<ClientConfig, CertError> {
    let invalid = |error: rustls::Error| CertError::Invalid(error.to_string());
    let chain: Vec<CertificateDer<'static>> =
        issued.chain_pem.iter().map(|pem| pem_to_der(pem).map(CertificateDer::from)).collect::<Result<_, _>>()?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut issued.key_pem.as_bytes())
        .map_err(|error| CertError::Invalid(error.to_string()))?
        .ok_or_else(|| CertError::Invalid("no private key".to_string()))?;
    let mut roots = RootCertStore::empty();
    for root in rustls_pemfile::certs(&mut issued.root_pem.as_bytes()).filter_map(Result::ok) {
        roots.add(root).map_err(invalid)?;
    }
    if roots.is_empty() {
        return Err(CertError::Invalid("the mesh root holds no certificate".to_string()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(MeshRootVerifier { roots, provider: Arc::clone(&provider) });
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(invalid)
}

/// Verifies a server's chain against the mesh root, ignoring its name.
#[derive(Debug)]
pub struct MeshRootVerifier {
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
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
