//! The mesh's certificate authority.
//!
//! The root lives in a Secret ([`store`]); [`authority`] signs short-lived
//! workload certificates with SPIFFE IDs and the controller's own serving
//! certificates; [`service`] is the gRPC `CertificateService` that hands
//! workload certificates to callers proven by a service-account token
//! (TokenReview). The secure listener (15012) serves it next to discovery;
//! [`serving`] keeps the controller's own certificate fresh.

pub mod authority;
pub mod service;
pub mod serving;
pub mod store;
