//! configurable-http-proxy's (CHP's) route model, shared by Portico's two
//! ways of being JupyterHub's proxy:
//!
//! * the gateway alone (`portico-gateway chp`), routes in memory;
//! * cluster mode: the controller serves the API and keeps each route as a
//!   `ChpRoute` object, and every gateway replica serves every route.
//!
//! Both check a route the same way ([`route`]: the path as [`route_path`],
//! the `target` as [`target`]), answer the same requests with the same
//! status codes ([`api`]), write times as CHP does ([`timestamp`]), and
//! serve a set of routes as the same route table pieces ([`pieces`],
//! [`route_set`]): the longest whole-segment prefix wins, the full path is
//! forwarded. Pure: no I/O, no async runtime.
#![forbid(unsafe_code)]

pub mod api;
pub mod pieces;
pub mod route;
pub mod route_path;
pub mod route_set;
pub mod target;
pub mod timestamp;

pub use pieces::{HEALTH_PATH, Layout, LayoutSettings};
pub use route::{CheckedRoute, RouteError};
pub use route_path::{PathError, RoutePath};
pub use route_set::RouteSet;
pub use target::{Target, TargetError, error_target};
