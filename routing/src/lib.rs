//! Portico's routing core: Kubeflow `Notebook` and Istio `Gateway`/
//! `VirtualService` objects in, a compiled route table out.
//!
//! Everything here is pure (no I/O, no async runtime) so that the controller,
//! the folder mode of the gateway and the tests all run the very same code:
//!
//! * [`notebook`] derives the Service and VirtualService Kubeflow's
//!   notebook-controller creates for a Notebook.
//! * [`translate()`] turns a set of [`Resources`] into a [`RouteTable`] for one
//!   gateway instance, plus [`Diagnostic`]s for every object it had to skip.
//! * [`normalize`] is the one path normalization that routing, authorization
//!   and forwarding all share.
//! * [`Matcher`] answers "which route serves this request" in time that does
//!   not grow with the number of routes, and [`naive`] is the ordered scan it
//!   is checked against.
//! * [`security`] compiles Istio's RequestAuthentication and
//!   AuthorizationPolicy into what the gateway enforces, and evaluates it.
//! * [`rewrite`] applies a route's URI and authority rewrites exactly as
//!   Envoy does under Istio.
#![forbid(unsafe_code)]

pub mod diagnostic;
pub mod duration;
pub mod incremental;
pub mod last_good;
pub mod matcher;
pub mod naive;
pub mod normalize;
pub mod notebook;
pub mod order_key;
pub mod parts;
pub mod pattern;
pub mod proxy_config;
pub mod request;
pub mod resources;
pub mod rewrite;
pub mod security;
pub mod table;
pub mod translate;
pub mod workload;

pub use diagnostic::{Diagnostic, ObjectRef, Severity};
pub use incremental::IncrementalTranslator;
pub use last_good::LastGood;
pub use matcher::{EditError, Matcher, RouteSelection, Selection};
pub use normalize::{NormalizedRef, NormalizedTarget, PathError, PathNormalization, normalize, normalize_ref};
pub use notebook::{NotebookSettings, notebook_service, notebook_virtual_service};
pub use request::{HeaderSource, RequestView};
pub use resources::Resources;
pub use table::RouteTable;
pub use translate::{GatewayIdentity, translate};
pub use workload::{WorkloadPhase, WorkloadState, notebook_workload};
