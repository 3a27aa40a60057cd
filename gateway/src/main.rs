//! `portico-gateway`: the data plane. Reads routes from a folder of YAML or
//! streams them from the controller (`--discovery`), serves them on Pingora, and exposes admin,
//! health and metrics endpoints on Istio's ports.
// Two unsafe calls, glibc's mallopt and malloc_trim (heap.rs): its heap
// settings have no safe interface.
#![deny(unsafe_code)]

mod admin;
mod apply;
mod auth;
mod cli;
mod config_dir;
mod decision;
mod discovery;
mod headers;
mod heap;
mod logging;
mod mesh;
mod metrics;
mod proxy;
mod read_timeouts;
mod server;
mod state;
mod status;
mod strict_http;
mod tls;
mod tunnel;
mod upstream;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    heap::limit_arenas();
    let args = cli::Args::parse();
    logging::init(args.log_format);
    server::run(args)
}
