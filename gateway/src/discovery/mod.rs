//! Cluster mode: routes streamed from the controller
//! (`--discovery http://controller:15010`).
//!
//! [`received`] turns protocol resources into routing types and checks them;
//! [`client`] keeps the stream up and hands each new table to the same
//! [`crate::apply::ConfigSink`] folder mode uses.

pub mod bootstrap;
pub mod client;
pub mod received;
