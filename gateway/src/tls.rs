//! Server certificates chosen by SNI and swapped on reload without restart.
//!
//! Each HTTPS listener gets one [`SniCertResolver`]; a reload replaces its
//! certificate list atomically. Handshakes in progress keep the certificate
//! they picked, new handshakes see the new list.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use portico_routing::table::{TlsCredential, TlsServer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: String },
    #[error("{what}: no PEM private key found")]
    NoKey { what: String },
    #[error("{what}: bad PEM: {source}")]
    Pem { what: String, source: std::io::Error },
    #[error("{what}: unsupported private key: {source}")]
    Key { what: String, source: rustls::Error },
}

/// Certificates of one listener, by SNI pattern.
struct CertList {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.a.com` stored as `.a.com`, longest first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    /// For `*` hosts, and clients that send no SNI.
    fallback: Option<Arc<CertifiedKey>>,
}

/// rustls certificate resolver for one HTTPS listener.
pub struct SniCertResolver {
    certs: ArcSwap<CertList>,
}

impl fmt::Debug for SniCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniCertResolver").finish_non_exhaustive()
    }
}

impl SniCertResolver {
    pub fn new() -> Self {
        Self { certs: ArcSwap::from_pointee(CertList { exact: HashMap::new(), wildcard: Vec::new(), fallback: None }) }
    }

    /// Loads `servers`' certificates and swaps them in. A server whose
    /// certificate cannot be loaded is reported and left out; the others
    /// are applied.
    pub fn update(&self, servers: &[TlsServer]) -> Vec<CertError> {
        let mut errors = Vec::new();
        let mut list = CertList { exact: HashMap::new(), wildcard: Vec::new(), fallback: None };
        for server in servers {
            let key = match load(&server.credential) {
                Ok(key) => Arc::new(key),
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            };
            for host in &server.hosts {
                if host == "*" {
                    list.fallback.get_or_insert_with(|| Arc::clone(&key));
                } else if let Some(suffix) = host.strip_prefix('*') {
                    list.wildcard.push((suffix.to_string(), Arc::clone(&key)));
                } else {
                    list.exact.entry(host.clone()).or_insert_with(|| Arc::clone(&key));
                }
            }
            list.fallback.get_or_insert_with(|| Arc::clone(&key));
        }
        list.wildcard.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        self.certs.store(Arc::new(list));
        errors
    }
}

impl Default for SniCertResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl ResolvesServerCert for SniCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        let Some(name) = hello.server_name() else {
            return certs.fallback.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = certs.exact.get(&name) {
            return Some(Arc::clone(key));
        }
        certs
            .wildcard
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, key)| Arc::clone(key))
            .or_else(|| certs.fallback.clone())
    }
}

fn load(credential: &TlsCredential) -> Result<CertifiedKey, CertError> {
    let (what, cert_pem, key_pem) = match credential {
        TlsCredential::Pem { source, cert_pem, key_pem } => {
            (format!("Secret {source}"), cert_pem.as_bytes().to_vec(), key_pem.as_bytes().to_vec())
        }
        TlsCredential::Files { cert_path, key_path } => {
            let read =
                |path: &str| std::fs::read(path).map_err(|source| CertError::Read { path: path.to_string(), source });
            (format!("{cert_path} and {key_path}"), read(cert_path)?, read(key_path)?)
        }
    };
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Pem { what: what.clone(), source })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate { what });
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| CertError::Pem { what: what.clone(), source })?
        .ok_or_else(|| CertError::NoKey { what: what.clone() })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider.key_provider.load_private_key(key).map_err(|source| CertError::Key { what, source })?;
    Ok(CertifiedKey::new(certs, signing_key))
}
