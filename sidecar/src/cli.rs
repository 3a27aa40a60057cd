//! Command line and `PORTICO_*` environment settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Portico's sidecar.
#[derive(Debug, Parser)]
#[command(name = "portico-sidecar", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the inbound mTLS hop.
    Run(Box<RunArgs>),
    /// Redirect the pod's inbound TCP to the sidecar (an init container).
    Init(crate::init::InitArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The notebook's port on 127.0.0.1 (default: each connection's
    /// original destination port, when iptables redirected it here).
    #[arg(long, env = "PORTICO_APP_PORT")]
    pub app_port: Option<u16>,

    /// Inbound listener (mutual TLS).
    #[arg(long, env = "PORTICO_INBOUND", default_value = "0.0.0.0:15006")]
    pub inbound: SocketAddr,

    /// Where outbound connections redirected by `init --capture-outbound`
    /// arrive (Istio's 0.0.0.0:15001); they are passed through to their
    /// original destination. Unset: no outbound listener.
    #[arg(long, env = "PORTICO_OUTBOUND")]
    pub outbound: Option<SocketAddr>,

    /// SPIFFE IDs allowed to connect (default: the gateway's,
    /// spiffe://<trust domain>/ns/portico-system/sa/portico-gateway).
    #[arg(long = "allow", env = "PORTICO_ALLOW", value_delimiter = ',')]
    pub allow: Vec<String>,

    /// Trust domain of the default allow-list.
    #[arg(long, env = "PORTICO_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// The controller's certificate service.
    #[arg(long, env = "PORTICO_CA_ADDRESS", default_value = "https://portico-controller.portico-system.svc:15012")]
    pub ca_address: String,

    /// Name the certificate service's certificate must carry (default: the host of --ca-address).
    #[arg(long, env = "PORTICO_CA_NAME")]
    pub ca_name: Option<String>,

    /// The mesh root certificate (PEM), to verify the CA and peers.
    #[arg(long, env = "PORTICO_CA_ROOT", default_value = "/var/run/secrets/portico/root-cert.pem")]
    pub ca_root: PathBuf,

    /// Service-account token for audience portico-ca (a projected volume), read at every renewal.
    #[arg(long, env = "PORTICO_TOKEN_FILE", default_value = "/var/run/secrets/tokens/portico-token")]
    pub token_file: PathBuf,

    /// Lifetime to ask for; the certificate is renewed at half of it.
    #[arg(long, env = "PORTICO_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: Duration,

    /// Health listener: /healthz/ready.
    #[arg(long, env = "PORTICO_HEALTH", default_value = "0.0.0.0:15021")]
    pub health: SocketAddr,

    /// Metrics listener: /stats/prometheus.
    #[arg(long, env = "PORTICO_METRICS", default_value = "0.0.0.0:15090")]
    pub metrics: SocketAddr,

    /// Admin listener: /certs, /config_dump.
    #[arg(long, env = "PORTICO_ADMIN", default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,

    /// Worker threads (a notebook's sidecar needs one).
    #[arg(long, env = "PORTICO_THREADS", default_value_t = 1)]
    pub threads: usize,

    #[arg(long, env = "PORTICO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// The allow-list, defaulted.
    pub fn allowed(&self) -> Vec<String> {
        if self.allow.is_empty() {
            vec![format!("spiffe://{}/ns/portico-system/sa/portico-gateway", self.trust_domain)]
        } else {
            self.allow.clone()
        }
    }
}

/// `text` for people, `json` for log pipelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    portico_routing::duration::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_allow_the_gateway_only() {
        let cli = Cli::try_parse_from(["portico-sidecar", "run", "--app-port", "8888"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("run") };
        let args = *args;
        assert_eq!(args.allowed(), vec!["spiffe://cluster.local/ns/portico-system/sa/portico-gateway"]);
        assert_eq!(args.inbound.port(), 15006);
        assert_eq!(args.cert_ttl, Duration::from_secs(24 * 3600));
    }
}
