//! Portico's mesh identity, shared by the sidecar and the gateway:
//! workload certificates from the controller's CA ([`workload`]) and the
//! SPIFFE IDs in certificates ([`identity`]).
#![forbid(unsafe_code)]

pub mod identity;
pub mod workload;

pub use workload::{CaClient, CertError, Issued, RETRY_AFTER_FAILURE};
