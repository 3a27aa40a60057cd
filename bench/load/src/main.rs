//! `portico-load`: a notebook-session load generator for Portico and any
//! Jupyter server (real or `portico-fake-notebook`, directly or through a
//! gateway).
//!
//! ```text
//! portico-load http     --url http://127.0.0.1:8080/notebook/ns/nb/lab -c 64 -d 10s [--rate 20000] [--h2]
//! portico-load ws-idle  --base http://127.0.0.1:8080/notebook/ns/nb/ --count 4000 --pid $(pidof portico-gateway)
//! portico-load sessions --base http://127.0.0.1:8080/notebook/ns/nb/ --sessions 100 -d 30s
//! ```
//!
//! Every mode stops by itself (bounded duration or count, a timeout on every
//! network operation), prints a progress line each second on stderr and a
//! table on stdout, and writes the same numbers as JSON with `--json FILE`.
//!
//! Each worker thread runs its own single-threaded event loop, and HTTP/1.1
//! load goes out as prebuilt bytes on raw sockets, so the generator stays
//! cheaper than what it measures.
// One audited exception: registering the pacer's timerfd with tokio
// (src/pacer.rs), which tokio can only take unsafely.
#![deny(unsafe_code)]

mod cli;
mod error;
mod h1;
mod http_load;
mod jupyter;
mod pacer;
mod report;
mod rss;
mod sessions;
mod stats;
mod target;
mod workers;
mod ws_idle;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::SetupError;
use crate::target::Target;

/// Settings every mode shares, and a small runtime for set-up work
/// (resolving names, creating and deleting kernels).
pub struct Common {
    pub threads: usize,
    pub timeout: Duration,
    pub quiet: bool,
    setup: tokio::runtime::Runtime,
}

impl Common {
    /// Runs set-up work to completion on the main thread.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.setup.block_on(future)
    }

    pub fn resolve(&self, url: &str) -> Result<Target, SetupError> {
        self.block_on(Target::resolve(url))
    }

    pub fn resolve_all(&self, urls: &[String]) -> Result<Vec<Target>, SetupError> {
        urls.iter().map(|url| self.resolve(url)).collect()
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = cli.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let setup = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let common = Common { threads, timeout: cli.timeout, quiet: cli.quiet, setup };
    let report = match &cli.command {
        Command::Http(args) => http_load::run(args, &common),
        Command::WsIdle(args) => ws_idle::run(args, &common),
        Command::Sessions(args) => sessions::run(args, &common),
    }?;
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        report.write_json(path)?;
    }
    Ok(())
}
