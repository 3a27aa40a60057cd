//! `porticoctl`: what `istioctl` does for Istio, for Portico.
//!
//! * `proxy-status`: every gateway connected to a controller and whether
//!   its listeners, routes and endpoints are in sync.
//! * `proxy-config routes`: a gateway's live route table.
//! * `validate -f FILE...`: translate YAML offline and report every problem,
//!   naming file, object and field; exit status 1 on errors.
#![forbid(unsafe_code)]

mod proxy_config;
mod proxy_status;
mod table;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Portico's command line.
#[derive(Debug, Parser)]
#[command(name = "porticoctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sync state of every gateway connected to the controller.
    ProxyStatus {
        /// The controller's discovery address.
        #[arg(long, env = "PORTICO_CONTROLLER", default_value = "http://127.0.0.1:15010")]
        controller: String,
        /// Output format.
        #[arg(short, long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
    },
    /// A gateway's live configuration.
    ProxyConfig {
        #[command(subcommand)]
        what: ProxyConfigCommand,
    },
    /// Translates YAML files offline and reports every problem.
    Validate {
        /// Files or folders (read recursively) of Kubernetes YAML.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Labels of the gateway to translate for (Gateway selectors).
        #[arg(long, default_value = "istio=ingressgateway")]
        gateway_labels: String,
    },
}

#[derive(Debug, Subcommand)]
enum ProxyConfigCommand {
    /// Routes: NAME, VHOST NAME, DOMAINS, MATCH, VIRTUAL SERVICE.
    Routes {
        /// The gateway's admin address.
        #[arg(long, env = "PORTICO_ADMIN", default_value = "127.0.0.1:15000")]
        admin: String,
        #[arg(short, long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::ProxyStatus { controller, output } => proxy_status::run(&controller, &output).await,
            Command::ProxyConfig { what: ProxyConfigCommand::Routes { admin, output } } => {
                proxy_config::routes(&admin, &output).await
            }
            Command::Validate { files, gateway_labels } => validate::run(&files, &gateway_labels),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
