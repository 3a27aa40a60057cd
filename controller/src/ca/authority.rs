//! The mesh's certificate authority: a root key and certificate, and the
//! short-lived workload certificates it signs.
//!
//! Workload certificates carry exactly one URI SAN, the caller's SPIFFE ID
//! (`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`), and are
//! good for both TLS ends (the gateway is a client, the sidecar a server).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// How long a root made here is valid.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Clock skew allowed between the CA and its clients.
const BACKDATE: Duration = Duration::from_secs(300);

/// Why the CA refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the CSR is not a valid PKCS#10 request: {0}")]
    BadCsr(rcgen::Error),
    #[error("the CSR asks for {requested}, but the caller is {allowed}")]
    IdentityMismatch { requested: String, allowed: String },
    #[error("the CA key or certificate does not load: {0}")]
    BadRoot(rcgen::Error),
    #[error("signing failed: {0}")]
    Signing(rcgen::Error),
    #[error("{0}")]
    Certificate(String),
}

/// A loaded CA.
pub struct Authority {
    root_pem: String,
    issuer: Issuer<'static, KeyPair>,
    trust_domain: String,
}

impl Authority {
    /// A new root (ECDSA P-256, ten years). Returns the CA and the root's
    /// certificate and key PEM, to be stored.
    pub fn generate(trust_domain: &str) -> Result<(Authority, String, String), CaError> {
        let key = KeyPair::generate().map_err(CaError::Signing)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "portico");
        params.distinguished_name.push(DnType::CommonName, format!("Portico root CA ({trust_domain})"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ROOT_LIFETIME;
        let certificate = params.self_signed(&key).map_err(CaError::Signing)?;
        let (cert_pem, key_pem) = (certificate.pem(), key.serialize_pem());
        let authority = Authority::from_pem(&cert_pem, &key_pem, trust_domain)?;
        Ok((authority, cert_pem, key_pem))
    }

    /// Loads a stored (or supplied) root.
    pub fn from_pem(cert_pem: &str, key_pem: &str, trust_domain: &str) -> Result<Authority, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(CaError::BadRoot)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(CaError::BadRoot)?;
        Ok(Authority { root_pem: cert_pem.to_string(), issuer, trust_domain: trust_domain.to_string() })
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> String {
        format!("spiffe://{}/ns/{namespace}/sa/{service_account}", self.trust_domain)
    }

    /// Signs `csr_pem` for `identity` (a SPIFFE ID), valid for `ttl`. The
    /// CSR may name no SAN or exactly `identity`; its subject and any
    /// requested extensions are replaced by the CA's own choice.
    pub fn sign_workload_csr(&self, csr_pem: &str, identity: &str, ttl: Duration) -> Result<String, CaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::BadCsr)?;
        for san in &csr.params.subject_alt_names {
            let matches = matches!(san, SanType::URI(uri) if uri.as_str() == identity);
            if !matches {
                return Err(CaError::IdentityMismatch { requested: describe(san), allowed: identity.to_string() });
            }
        }
        let uri = identity.to_string().try_into().map_err(CaError::Signing)?;
        csr.params = leaf_params(vec![SanType::URI(uri)], ttl);
        // The SPIFFE ID again as the subject's organization: Pingora's TLS
        // digest exposes the peer's organization but not its SANs, and the
        // gateway checks who answered a meshed endpoint with it.
        csr.params.distinguished_name.push(DnType::OrganizationName, identity);
        let certificate = csr.signed_by(&self.issuer).map_err(CaError::Signing)?;
        Ok(certificate.pem())
    }

    /// A key and certificate for the controller's own TLS listeners.
    pub fn serving_certificate(&self, dns_names: &[String], ttl: Duration) -> Result<(String, String), CaError> {
        let key = KeyPair::generate().map_err(CaError::Signing)?;
        let mut sans = Vec::new();
        for name in dns_names {
            match name.parse::<std::net::IpAddr>() {
                Ok(ip) => sans.push(SanType::IpAddress(ip)),
                Err(_) => sans.push(SanType::DnsName(name.clone().try_into().map_err(CaError::Signing)?)),
            }
        }
        let params = leaf_params(sans, ttl);
        let certificate = params.signed_by(&key, &self.issuer).map_err(CaError::Signing)?;
        Ok((certificate.pem(), key.serialize_pem()))
    }
}

fn leaf_params(subject_alt_names: Vec<SanType>, ttl: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = subject_alt_names;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + ttl;
    params
}

fn describe(san: &SanType) -> String {
    match san {
        SanType::URI(uri) => uri.as_str().to_string(),
        SanType::DnsName(name) => format!("DNS:{}", name.as_str()),
        SanType::IpAddress(ip) => format!("IP:{ip}"),
        SanType::Rfc822Name(mail) => format!("email:{}", mail.as_str()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use rcgen::CertificateParams;

    use super::*;

    fn csr(sans: Vec<SanType>) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn signs_the_callers_identity_only() {
        let (ca, root, _) = Authority::generate("cluster.local").unwrap();
        assert!(root.starts_with("-----BEGIN CERTIFICATE-----"));
        let id = ca.spiffe_id("team", "notebook");
        assert_eq!(id, "spiffe://cluster.local/ns/team/sa/notebook");
        let pem = ca.sign_workload_csr(&csr(vec![]), &id, Duration::from_secs(3600)).unwrap();
        let der = pem::parse(&pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
        let sans = cert.subject_alternative_name().unwrap().unwrap().value.general_names.clone();
        assert_eq!(format!("{sans:?}"), format!("{:?}", vec![x509_parser::extensions::GeneralName::URI(&id)]));
        let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 3600 + 300);
        let organization: Vec<&str> = cert.subject().iter_organization().filter_map(|o| o.as_str().ok()).collect();
        assert_eq!(organization, vec![id.as_str()]);

        let same = ca.sign_workload_csr(
            &csr(vec![SanType::URI(id.clone().try_into().unwrap())]),
            &id,
            Duration::from_secs(60),
        );
        assert!(same.is_ok());
        let other = "spiffe://cluster.local/ns/kube-system/sa/admin".to_string();
        let refused =
            ca.sign_workload_csr(&csr(vec![SanType::URI(other.try_into().unwrap())]), &id, Duration::from_secs(60));
        assert!(matches!(refused, Err(CaError::IdentityMismatch { .. })), "{refused:?}");
        assert!(matches!(ca.sign_workload_csr("not a csr", &id, Duration::from_secs(60)), Err(CaError::BadCsr(_))));
    }

    #[test]
    fn a_stored_root_loads_and_keeps_signing() {
        let (_, cert, key) = Authority::generate("example.org").unwrap();
        let loaded = Authority::from_pem(&cert, &key, "example.org").unwrap();
        assert_eq!(loaded.root_pem(), cert);
        let (serving, _) =
            loaded.serving_certificate(&["localhost".into(), "127.0.0.1".into()], Duration::from_secs(60)).unwrap();
        assert!(serving.contains("BEGIN CERTIFICATE"));
        assert!(Authority::from_pem(&cert, "garbage", "example.org").is_err());
    }
}
