//! Sidecar injection: a mutating admission webhook (`--webhook`, 15017,
//! TLS from the mesh CA) that adds `portico-sidecar` and its init container
//! to pods in namespaces labelled `portico-injection=enabled` (the
//! MutatingWebhookConfiguration's namespaceSelector), unless the pod opts out
//! with `sidecar.istio.io/inject: "false"`.
//!
//! [`template`] decides and builds the JSON patch (pure, unit-tested);
//! [`server`] speaks AdmissionReview over HTTPS and keeps the webhook
//! configuration's caBundle equal to the mesh root.

pub mod server;
pub mod template;
