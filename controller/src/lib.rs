//! Portico's controller: the Kubernetes side of the front door.
//!
//! * The **Notebook reconciler** ([`reconcile`]) does what Kubeflow's
//!   notebook-controller does: for each `Notebook` it server-side applies the
//!   Service and VirtualService that [`portico_routing`] derives (the same
//!   functions the gateway's folder mode calls) and the StatefulSet of
//!   [`workload`], all owned by the Notebook, and mirrors `status` from the
//!   StatefulSet and the notebook pod ([`status`]).
//! * The **route index** ([`index`]) watches Gateways, VirtualServices,
//!   Services and EndpointSlices and, debounced, runs `translate` per gateway
//!   instance, publishing versioned [`snapshot::Snapshot`]s on a
//!   `tokio::sync::watch` channel, for the gateway instances [`demand`] lists.
//! * The **discovery server** ([`discovery`], gRPC on 15010) streams those
//!   tables to gateways, full state then deltas, and tracks ACKs and NACKs.
//! * The **certificate authority** ([`ca`], gRPC over TLS on 15012): the
//!   mesh root in a Secret, workload certificates with SPIFFE IDs for
//!   service-account tokens checked by TokenReview.
//! * **Leader election** ([`leader`]) on a `coordination.k8s.io/v1` Lease:
//!   only the leader reconciles (writes); every replica indexes.
//! * The **admin listener** ([`admin`]): `/metrics` (with Kubeflow's
//!   `notebook_*` names), `/healthz`, `/readyz`, `/debug/snapshot`.
//!
//! [`run::run`] wires them together; `main` only parses flags and logs.
#![forbid(unsafe_code)]

pub mod admin;
pub mod ca;
pub mod chp;
pub mod cli;
pub mod context;
pub mod demand;
pub mod discovery;
pub mod error;
pub mod index;
pub mod inject;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod reconcile;
pub mod reflect;
pub mod run;
pub mod snapshot;
pub mod status;
pub mod workload;

pub use error::Error;
