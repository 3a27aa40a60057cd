//! `portico-fake-notebook`: a fast fake Jupyter notebook server for gateway
//! benchmarks and load tests.
//!
//! ```text
//! portico-fake-notebook --listen 127.0.0.1:0 --threads 1 --body-bytes 1024
//! ```
//!
//! The first line on stdout is `listening on ADDR:PORT`, so scripts can ask
//! for port 0 and read the port back. Stops on SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use portico_fake_notebook::{Config, bind, serve};

/// A fake Jupyter notebook server: any path gets a small JSON body; the
/// Jupyter REST API and kernel websocket answer like a notebook would.
#[derive(Debug, Parser)]
#[command(name = "portico-fake-notebook", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; see the first stdout line).
    #[arg(long, default_value = "127.0.0.1:8888")]
    listen: SocketAddr,

    /// Worker threads (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,

    /// Size in bytes of the JSON body served for non-API paths.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,

    /// Also accept HTTP/2 with prior knowledge (h2c) on the same port.
    #[arg(long)]
    h2c: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = bind(args.listen).await?;
        let address = listener.local_addr().context("reading the bound address")?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {address}").and_then(|()| stdout.flush()).context("writing to stdout")?;
        drop(stdout);
        let config = Config { body_bytes: args.body_bytes, h2c: args.h2c };
        tokio::select! {
            () = serve(listener, config) => {}
            result = shutdown_signal() => result?,
        }
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT"),
        _ = terminate.recv() => Ok(()),
    }
}
