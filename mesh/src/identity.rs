//! SPIFFE IDs in certificates.

use rustls::pki_types::CertificateDer;

/// The URI SANs of a DER certificate (empty when it does not parse).
pub fn uri_sans(certificate: &[u8]) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate) else { return Vec::new() };
    let Ok(Some(sans)) = parsed.subject_alternative_name() else { return Vec::new() };
    sans.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_string()),
            _ => None,
        })
        .collect()
}

/// The SPIFFE ID of a verified peer: its leaf certificate's `spiffe://` SAN.
pub fn spiffe_id(chain: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let leaf = chain?.first()?;
    uri_sans(leaf).into_iter().find(|uri| uri.starts_with("spiffe://"))
}

/// Seconds until a PEM certificate expires (0 when unknown or past).
pub fn seconds_left(certificate_pem: &str) -> u64 {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes()) else { return 0 };
    let Ok(parsed) = pem.parse_x509() else { return 0 };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    u64::try_from(parsed.validity().not_after.timestamp() - now).unwrap_or(0)
}

/// What tells one certificate from its renewal: serial number and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The serial number in hex (colon-separated bytes, as openssl prints it).
    pub serial: String,
    /// `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
}

/// The [`Fingerprint`] of a DER certificate (`None` when it does not parse).
pub fn fingerprint(certificate: &[u8]) -> Option<Fingerprint> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    Some(Fingerprint { serial: parsed.raw_serial_as_string(), not_after: parsed.validity().not_after.timestamp() })
}
