//! `portico-sidecar`: the lightweight proxy in each notebook pod that
//! completes the mesh hop. `run` accepts mutual TLS from the gateway on
//! 15006, checks the peer's SPIFFE ID against an allow-list, and proxies
//! the bytes (HTTP, WebSocket, anything) to the notebook on localhost;
//! `init` programs the pod's iptables so inbound traffic reaches it.
#![forbid(unsafe_code)]

mod certificates;
mod cli;
mod endpoints;
mod inbound;
mod init;
mod metrics;
mod outbound;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cli::Cli::parse();
    let run = match args.command {
        cli::Command::Init(init) => return init::run(&init),
        cli::Command::Run(run) => *run,
    };
    let format = run.log_format;
    init_logging(format);
    // One thread (the default) is a current-thread runtime: no work-stealing
    // and no cross-thread wake-ups on the hop's path.
    let runtime = if run.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(run.threads).enable_all().build()?
    };
    runtime.block_on(inbound::run(run))
}

fn init_logging(format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        cli::LogFormat::Json => builder.json().init(),
        cli::LogFormat::Text => builder.init(),
    }
}
