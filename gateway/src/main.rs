//! `portico-gateway`: the data plane. Reads routes from a folder of YAML or
//! streams them from the controller (`--discovery`), serves them on Pingora, and exposes admin,
//! health and metrics endpoints on Istio's ports.
// Two unsafe calls, glibc's mallopt and malloc_trim (heap.rs): its heap
// settings have no safe interface.
#![deny(unsafe_code)]

mod admin;
#[cfg(feature = "count-allocs")]
mod alloc_count;
mod apply;
mod auth;
mod cli;
mod config_dir;
mod decision;
mod discovery;
mod headers;
mod heap;
mod log_writer;
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

/// Bench builds only: allocations per request (`alloc_count.rs`).
#[cfg(feature = "count-allocs")]
#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

fn main() -> anyhow::Result<()> {
    heap::limit_arenas();
    #[cfg(feature = "count-allocs")]
    alloc_count::report_from_env();
    let args = cli::Args::parse();
    logging::init(args.log_format);
    server::run(args)
}
