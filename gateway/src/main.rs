//! `portico-gateway`: the data plane. Reads routes from a folder of YAML or
//! streams them from the controller (`--discovery`), serves them on Pingora, and exposes admin,
//! health and metrics endpoints on Istio's ports.
// Three unsafe calls, mimalloc's options and collection and Linux's prctl
// (heap.rs): the heap's settings have no safe interface.
#![deny(unsafe_code)]

mod access_log;
mod activity;
mod admin;
#[cfg(feature = "count-allocs")]
mod alloc_count;
mod apply;
mod auth;
mod chp;
mod cli;
mod config_dir;
mod decimal;
mod decision;
mod discovery;
mod headers;
mod heap;
mod lanes;
mod log_writer;
mod logging;
mod mesh;
mod metrics;
mod proxy;
mod proxy_service;
mod read_timeouts;
mod server;
mod state;
mod status;
mod strict_http;
mod tls;
mod tunnel;
mod upstream;
mod waking;
mod worker_socket;

use clap::Parser;

/// Bench builds only: allocations per request (`alloc_count.rs`).
#[cfg(feature = "count-allocs")]
#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

/// mimalloc: a heap per thread, no arena draw (`heap.rs`).
#[cfg(not(feature = "count-allocs"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    heap::configure();
    #[cfg(feature = "count-allocs")]
    alloc_count::report_from_env();
    if let Some(command_line) = chp::chp_command_line() {
        return run_chp(command_line);
    }
    let args = cli::Args::parse();
    if args.config_dir.is_none() && args.discovery.is_none() {
        // The argument group cannot require a source (CHP mode has none).
        use clap::CommandFactory;
        cli::Args::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "give --config-dir DIR or --discovery URL (or run `portico-gateway chp` as JupyterHub's proxy)",
            )
            .exit();
    }
    logging::init(args.log_format, "info");
    server::run(args, None)
}

/// As configurable-http-proxy: CHP's flags, then the gateway's settings
/// from `PORTICO_*` variables where CHP has no flag.
fn run_chp(command_line: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    let settings = match chp::ChpArgs::parse_from(command_line).settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{}: error: {error}", chp::CHP_COMMAND);
            std::process::exit(2);
        }
    };
    let mut args = cli::Args::parse_from([chp::CHP_COMMAND]);
    // As CHP, which logs a line per request only at `--log-level debug`
    // (the access log costs a quarter of the CPU of a keep-alive request);
    // PORTICO_ACCESS_LOG still decides when it is set.
    if std::env::var_os("PORTICO_ACCESS_LOG").is_none() {
        args.access_log = settings.log_level == "debug";
    }
    logging::init(args.log_format, &settings.log_level);
    let mode = chp::ChpMode::new(settings)?;
    args.binds = mode.binds();
    // CHP's keep-alive timeout is in milliseconds; the gateway's in seconds.
    args.idle_timeout_secs = mode.settings.keep_alive_timeout.as_millis().div_ceil(1000).max(1) as u64;
    server::run(args, Some(mode))
}
