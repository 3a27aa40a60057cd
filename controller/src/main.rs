//! `portico-controller`: reconciles Kubeflow Notebooks and indexes routes.
//! See the library docs (`portico_controller`) for what runs inside.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use portico_controller::cli::{Args, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match portico_controller::run::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}

/// A start-up error as one line: what failed and why, the context chain
/// joined by ": " (e.g. `loading the mesh CA: namespace "portico-system" does
/// not exist ...`). The backtrace only when asked for with
/// `RUST_LIB_BACKTRACE=1`: `RUST_BACKTRACE` is often set for panics, and an
/// operator's mistake is not one.
fn report(error: &anyhow::Error) {
    eprintln!("portico-controller: error: {error:#}");
    if std::env::var_os("RUST_LIB_BACKTRACE").is_some_and(|value| value != "0") {
        eprintln!("{}", error.backtrace());
    }
}

/// Text or JSON lines on stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(error) = result {
        eprintln!("portico-controller: cannot install the logger: {error}");
    }
}
