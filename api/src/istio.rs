//! Istio's `networking.istio.io` Gateway and VirtualService, and the
//! `security.istio.io` policies the gateway enforces.
//!
//! The Rust types are the `v1` ones; v1beta1 and v1alpha3 share the schema
//! and are served by the generated CRDs (see [`crate::crd`]). Objects of any
//! of the three `apiVersion`s deserialize into these types.

mod gateway;
mod security;
mod string_match;
mod virtual_service;

pub use gateway::*;
pub use security::*;
pub use string_match::StringMatch;
pub use virtual_service::*;

/// API group of Gateway and VirtualService.
pub const GROUP: &str = "networking.istio.io";
/// The versions of the group, storage version first.
pub const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];
