//! Portico's mesh identity, shared by the sidecar and the gateway:
//! workload certificates from the controller's CA ([`workload`]), the
//! SPIFFE IDs in certificates ([`identity`]) and client TLS towards meshed
//! workloads ([`client`]).
#![forbid(unsafe_code)]

pub mod client;
pub mod identity;
pub mod workload;

pub use workload::{CaClient, CertError, Issued, RETRY_AFTER_FAILURE};
