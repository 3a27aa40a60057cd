//! configurable-http-proxy's command line, flag for flag.
//!
//! JupyterHub starts the proxy as `configurable-http-proxy --ip … --port …
//! --api-ip … --api-port … --error-target … --log-level …` (plus
//! `--host-routing` and `--ssl-*` when configured), and Zero to JupyterHub's
//! chart runs it with `--ip= --api-ip= --api-port=8001 --default-target=…
//! --error-target=… --port=8000` (or 8443 with `--redirect-port`,
//! `--redirect-to`, `--ssl-key`, `--ssl-cert`). Every flag of CHP 5.x is
//! declared here, so that each one either works or is refused with a
//! sentence naming it and why: none is ignored. A flag CHP does not know is
//! refused by the parser itself.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use portico_chp::{LayoutSettings, Target, TargetError};

/// `configurable-http-proxy`, served by Portico.
#[derive(Debug, Parser)]
#[command(name = "configurable-http-proxy", version, about, disable_help_subcommand = true)]
pub struct ChpArgs {
    /// Public-facing IP of the proxy ("" or "*": every interface).
    #[arg(long, default_value = "")]
    pub ip: String,
    /// Public-facing port of the proxy.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Not supported: a UNIX domain socket for the proxy.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// TLS key of the public interface (PEM, unencrypted).
    #[arg(long)]
    pub ssl_key: Option<PathBuf>,
    /// TLS certificate chain of the public interface (PEM).
    #[arg(long)]
    pub ssl_cert: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub ssl_ca: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub ssl_request_cert: bool,
    #[arg(long, hide = true)]
    pub ssl_reject_unauthorized: bool,
    #[arg(long, hide = true)]
    pub ssl_protocol: Option<String>,
    #[arg(long, hide = true)]
    pub ssl_ciphers: Option<String>,
    #[arg(long, hide = true)]
    pub ssl_allow_rc4: bool,
    #[arg(long, hide = true)]
    pub ssl_dhparam: Option<PathBuf>,
    /// Inward-facing IP of the REST API.
    #[arg(long, default_value = "localhost")]
    pub api_ip: String,
    /// Inward-facing port of the REST API (default: --port + 1).
    #[arg(long)]
    pub api_port: Option<u16>,
    #[arg(long, hide = true)]
    pub api_socket: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub api_ssl_key: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub api_ssl_cert: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub api_ssl_ca: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub api_ssl_request_cert: bool,
    #[arg(long, hide = true)]
    pub api_ssl_reject_unauthorized: bool,
    #[arg(long, hide = true)]
    pub client_ssl_key: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub client_ssl_cert: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub client_ssl_ca: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub client_ssl_request_cert: bool,
    #[arg(long, hide = true)]
    pub client_ssl_reject_unauthorized: bool,
    /// Target of the `/` route, added at start (proto://host[:port]).
    #[arg(long)]
    pub default_target: Option<String>,
    /// Where error pages come from: GET <target>/<code>?url=<request URL>.
    #[arg(long)]
    pub error_target: Option<String>,
    /// Folder of error pages: <code>.html, else error.html.
    #[arg(long)]
    pub error_path: Option<PathBuf>,
    /// Also listen on this port and redirect its HTTP requests to HTTPS.
    #[arg(long)]
    pub redirect_port: Option<u16>,
    /// The HTTPS port redirects point to (default: --port).
    #[arg(long)]
    pub redirect_to: Option<u16>,
    /// Write the process id to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Send no X-Forwarded-* headers upstream.
    #[arg(long)]
    pub no_x_forward: bool,
    /// Accepted: targets with a path are refused, so there is never a target
    /// path to prepend.
    #[arg(long)]
    pub no_prepend_path: bool,
    /// Strip the route's prefix from the forwarded path.
    #[arg(long)]
    pub no_include_prefix: bool,
    #[arg(long, hide = true)]
    pub auto_rewrite: bool,
    /// Send the target's host:port as Host.
    #[arg(long)]
    pub change_origin: bool,
    #[arg(long, hide = true)]
    pub protocol_rewrite: Option<String>,
    /// Header added to proxied requests, as NAME:VALUE (repeatable).
    #[arg(long = "custom-header")]
    pub custom_headers: Vec<String>,
    #[arg(long, hide = true)]
    pub insecure: bool,
    /// The first segment of a route's path is a host name.
    #[arg(long)]
    pub host_routing: bool,
    /// IP of the metrics listener.
    #[arg(long, default_value = "")]
    pub metrics_ip: String,
    /// Port of the metrics listener (/metrics); none without it.
    #[arg(long)]
    pub metrics_port: Option<u16>,
    #[arg(long, hide = true)]
    pub metrics_socket: Option<PathBuf>,
    /// debug, info, warn or error.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    #[arg(long, hide = true)]
    pub timeout: Option<u64>,
    /// Milliseconds a target may take to respond (never applied to websockets).
    #[arg(long)]
    pub proxy_timeout: Option<u64>,
    #[arg(long, hide = true)]
    pub storage_backend: Option<String>,
    /// Milliseconds an idle keep-alive client connection is kept.
    #[arg(long, default_value_t = 5000)]
    pub keep_alive_timeout: u64,
    /// Portico's own: keep the routes in this JSON file, so a restart
    /// serves them again (CHP keeps them in memory only).
    #[arg(long, env = "PORTICO_CHP_ROUTES_FILE")]
    pub routes_file: Option<PathBuf>,
}

/// What the command line asks for, checked.
#[derive(Clone, Debug)]
pub struct ChpSettings {
    pub listen: SocketAddr,
    pub api: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// Certificate chain and key files of the public interface.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain-HTTP port and the HTTPS port it redirects to.
    pub redirect: Option<(u16, u16)>,
    pub default_target: Option<Target>,
    pub error_target: Option<reqwest::Url>,
    pub error_path: Option<PathBuf>,
    pub host_routing: bool,
    pub include_prefix: bool,
    pub x_forward: bool,
    pub change_origin: bool,
    pub custom_headers: Vec<(String, String)>,
    pub proxy_timeout: Option<Duration>,
    pub keep_alive_timeout: Duration,
    pub log_level: String,
    pub pid_file: Option<PathBuf>,
    pub routes_file: Option<PathBuf>,
}

impl ChpSettings {
    /// What shapes the route table pieces.
    pub fn layout(&self) -> LayoutSettings {
        LayoutSettings {
            listener_prefix: None,
            port: self.listen.port(),
            tls: self.tls.as_ref().map(|(cert, key)| (cert.display().to_string(), key.display().to_string())),
            redirect: self.redirect,
            include_prefix: self.include_prefix,
            x_forward: self.x_forward,
            change_origin: self.change_origin,
            custom_headers: self.custom_headers.clone(),
            proxy_timeout: self.proxy_timeout,
            // Served by this process itself ([`super::hooks`]), which
            // reads `--error-path` at each error as CHP does.
            error_pages: None,
        }
    }
}

/// A command line Portico cannot serve as asked.
#[derive(Debug, thiserror::Error)]
pub enum ChpFlagError {
    #[error("--{flag} is not supported by Portico's configurable-http-proxy: {why}")]
    Unsupported { flag: &'static str, why: &'static str },
    #[error("--{flag} {value:?}: {reason}")]
    Invalid { flag: &'static str, value: String, reason: String },
    #[error("--{flag}: {0}", flag = .0.flag())]
    Target(#[from] FlagTarget),
    #[error("{0}")]
    Conflict(&'static str),
}

/// A target flag whose URL is unusable.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct FlagTarget {
    flag: &'static str,
    error: TargetError,
}

impl FlagTarget {
    fn flag(&self) -> &'static str {
        self.flag
    }
}

const NO_UNIX_SOCKETS: &str = "UNIX domain sockets are not supported; use --ip/--port";
const NO_MTLS: &str = "JupyterHub's internal_ssl (mutual TLS with the hub and the proxy API) is not supported yet";
const NO_UPSTREAM_TLS: &str = "https targets are not supported yet, so there is no upstream TLS to configure";
const TLS_DEFAULTS: &str = "TLS versions and ciphers are rustls' safe defaults (TLS 1.2 and 1.3, no RC4)";

impl ChpArgs {
    /// Checks every flag; the first one Portico cannot honour is the error.
    pub fn settings(self) -> Result<ChpSettings, ChpFlagError> {
        self.refuse_unsupported()?;
        if std::env::var_os("CONFIGPROXY_SSL_KEY_PASSPHRASE").is_some() {
            return Err(ChpFlagError::Unsupported {
                flag: "ssl-key",
                why: "encrypted keys (CONFIGPROXY_SSL_KEY_PASSPHRASE) are not supported; give an unencrypted key",
            });
        }
        let tls = match (self.ssl_key, self.ssl_cert) {
            (Some(key), Some(cert)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(ChpFlagError::Conflict("--ssl-key and --ssl-cert go together")),
        };
        let redirect = match (self.redirect_port, self.redirect_to) {
            (Some(_), _) if tls.is_none() => {
                return Err(ChpFlagError::Conflict(
                    "HTTPS redirection (--redirect-port) needs --ssl-key and --ssl-cert",
                ));
            }
            (Some(from), to) => Some((from, to.unwrap_or(self.port))),
            (None, Some(_)) => return Err(ChpFlagError::Conflict("--redirect-to needs --redirect-port")),
            (None, None) => None,
        };
        if self.error_target.is_some() && self.error_path.is_some() {
            return Err(ChpFlagError::Conflict("cannot specify both --error-target and --error-path; pick one"));
        }
        let log_level = self.log_level.to_ascii_lowercase();
        if !["debug", "info", "warn", "error"].contains(&log_level.as_str()) {
            return Err(ChpFlagError::Invalid {
                flag: "log-level",
                value: self.log_level,
                reason: "expected debug, info, warn or error".to_string(),
            });
        }
        let default_target = self
            .default_target
            .map(|text| Target::parse(&text))
            .transpose()
            .map_err(|error| FlagTarget { flag: "default-target", error })?;
        let error_target = self.error_target.map(|text| error_target(&text)).transpose()?;
        let custom_headers = self.custom_headers.iter().map(|h| custom_header(h)).collect::<Result<_, _>>()?;
        Ok(ChpSettings {
            listen: SocketAddr::new(address("ip", &self.ip)?, self.port),
            api: SocketAddr::new(
                address("api-ip", &self.api_ip)?,
                self.api_port.unwrap_or(self.port.saturating_add(1)),
            ),
            metrics: match self.metrics_port {
                Some(port) => Some(SocketAddr::new(address("metrics-ip", &self.metrics_ip)?, port)),
                None => None,
            },
            tls,
            redirect,
            default_target,
            error_target,
            error_path: self.error_path,
            host_routing: self.host_routing,
            include_prefix: !self.no_include_prefix,
            x_forward: !self.no_x_forward,
            change_origin: self.change_origin,
            custom_headers,
            proxy_timeout: self.proxy_timeout.filter(|ms| *ms > 0).map(Duration::from_millis),
            keep_alive_timeout: Duration::from_millis(self.keep_alive_timeout),
            log_level,
            pid_file: self.pid_file,
            routes_file: self.routes_file,
        })
    }

    fn refuse_unsupported(&self) -> Result<(), ChpFlagError> {
        let unsupported = |flag, why| Err(ChpFlagError::Unsupported { flag, why });
        let refusals: [(&'static str, bool, &'static str); 22] = [
            ("socket", self.socket.is_some(), NO_UNIX_SOCKETS),
            ("api-socket", self.api_socket.is_some(), NO_UNIX_SOCKETS),
            ("metrics-socket", self.metrics_socket.is_some(), NO_UNIX_SOCKETS),
            ("ssl-ca", self.ssl_ca.is_some(), "client certificates on the public interface are not supported yet"),
            (
                "ssl-request-cert",
                self.ssl_request_cert,
                "client certificates on the public interface are not supported yet",
            ),
            (
                "ssl-reject-unauthorized",
                self.ssl_reject_unauthorized,
                "client certificates on the public interface are not supported yet",
            ),
            ("ssl-protocol", self.ssl_protocol.is_some(), TLS_DEFAULTS),
            ("ssl-ciphers", self.ssl_ciphers.is_some(), TLS_DEFAULTS),
            ("ssl-allow-rc4", self.ssl_allow_rc4, TLS_DEFAULTS),
            ("ssl-dhparam", self.ssl_dhparam.is_some(), "rustls uses ECDHE only; there are no DH parameters to load"),
            ("api-ssl-key", self.api_ssl_key.is_some(), NO_MTLS),
            ("api-ssl-cert", self.api_ssl_cert.is_some(), NO_MTLS),
            ("api-ssl-ca", self.api_ssl_ca.is_some(), NO_MTLS),
            ("api-ssl-request-cert", self.api_ssl_request_cert, NO_MTLS),
            ("api-ssl-reject-unauthorized", self.api_ssl_reject_unauthorized, NO_MTLS),
            (
                "client-ssl-key",
                self.client_ssl_key.is_some() || self.client_ssl_cert.is_some() || self.client_ssl_ca.is_some(),
                NO_UPSTREAM_TLS,
            ),
            (
                "client-ssl-request-cert",
                self.client_ssl_request_cert || self.client_ssl_reject_unauthorized,
                NO_UPSTREAM_TLS,
            ),
            ("insecure", self.insecure, NO_UPSTREAM_TLS),
            ("auto-rewrite", self.auto_rewrite, "Location headers are passed unchanged"),
            ("protocol-rewrite", self.protocol_rewrite.is_some(), "Location headers are passed unchanged"),
            (
                "timeout",
                self.timeout.is_some(),
                "an inactivity timeout on client sockets would also close idle notebook websockets; use --keep-alive-timeout and --proxy-timeout",
            ),
            (
                "storage-backend",
                self.storage_backend.is_some(),
                "it names a Node.js module; Portico keeps routes in memory, or in --routes-file",
            ),
        ];
        match refusals.into_iter().find(|(_, given, _)| *given) {
            Some((flag, _, why)) => unsupported(flag, why),
            None => Ok(()),
        }
    }
}

/// CHP's addresses: "" and "*" mean every interface, "localhost" loopback,
/// anything else an IP or a name resolved once at start.
fn address(flag: &'static str, text: &str) -> Result<IpAddr, ChpFlagError> {
    match text {
        "" | "*" => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        _ => {
            let bare = text.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<IpAddr>() {
                return Ok(ip);
            }
            let resolved = (text, 0).to_socket_addrs().map_err(|error| ChpFlagError::Invalid {
                flag,
                value: text.to_string(),
                reason: format!("not an IP address, and it does not resolve: {error}"),
            })?;
            resolved.map(|a| a.ip()).next().ok_or_else(|| ChpFlagError::Invalid {
                flag,
                value: text.to_string(),
                reason: "resolves to no address".to_string(),
            })
        }
    }
}

fn error_target(text: &str) -> Result<reqwest::Url, ChpFlagError> {
    let invalid = |reason: String| ChpFlagError::Invalid { flag: "error-target", value: text.to_string(), reason };
    let base = portico_chp::error_target(text).map_err(|error| invalid(error.to_string()))?;
    reqwest::Url::parse(&base).map_err(|error| invalid(error.to_string()))
}

fn custom_header(text: &str) -> Result<(String, String), ChpFlagError> {
    let invalid = |reason: &str| ChpFlagError::Invalid {
        flag: "custom-header",
        value: text.to_string(),
        reason: reason.to_string(),
    };
    let (name, value) = text.trim().split_once(':').ok_or_else(|| invalid("a colon was expected (NAME:VALUE)"))?;
    let (name, value) = (name.trim(), value.trim());
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("not a valid header name"))?;
    http::HeaderValue::from_str(value).map_err(|_| invalid("not a valid header value"))?;
    Ok((name.to_ascii_lowercase(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ChpSettings, String> {
        let args = ChpArgs::try_parse_from(std::iter::once("configurable-http-proxy").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        args.settings().map_err(|e| e.to_string())
    }

    #[test]
    fn jupyterhubs_command_line_parses() {
        let settings = parse(&[
            "--ip",
            "127.0.0.1",
            "--port",
            "8000",
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            "8001",
            "--error-target",
            "http://127.0.0.1:8081/hub/error",
            "--log-level",
            "info",
        ])
        .expect("parses");
        assert_eq!(settings.listen, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(settings.api, "127.0.0.1:8001".parse().unwrap());
        assert_eq!(settings.error_target.unwrap().as_str(), "http://127.0.0.1:8081/hub/error/");
        assert!(settings.include_prefix && settings.x_forward && !settings.host_routing);
    }

    #[test]
    fn zero_to_jupyterhubs_command_line_parses() {
        let settings = parse(&[
            "--ip=",
            "--api-ip=",
            "--api-port=8001",
            "--default-target=http://hub:8081",
            "--error-target=http://hub:8081/hub/error",
            "--port=8000",
            "--log-level=debug",
        ])
        .expect("parses");
        assert_eq!(settings.listen, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(settings.api, "0.0.0.0:8001".parse().unwrap());
        assert_eq!(settings.default_target.unwrap().authority(), "hub:8081");
    }

    #[test]
    fn unknown_and_unsupported_flags_are_refused_by_name() {
        let unknown = parse(&["--frobnicate"]).unwrap_err();
        assert!(unknown.contains("--frobnicate"), "{unknown}");
        let unsupported = parse(&["--storage-backend", "x"]).unwrap_err();
        assert!(unsupported.contains("--storage-backend is not supported"), "{unsupported}");
        let unsupported = parse(&["--api-ssl-key", "k"]).unwrap_err();
        assert!(unsupported.contains("--api-ssl-key"), "{unsupported}");
        let conflict = parse(&["--redirect-port", "80"]).unwrap_err();
        assert!(conflict.contains("--ssl-key"), "{conflict}");
        let bad = parse(&["--default-target", "ftp://x"]).unwrap_err();
        assert!(bad.contains("--default-target"), "{bad}");
    }

    #[test]
    fn api_port_defaults_to_port_plus_one() {
        let settings = parse(&["--port", "9000", "--custom-header", " X-A : b "]).expect("parses");
        assert_eq!(settings.api.port(), 9001);
        assert_eq!(settings.custom_headers, vec![("x-a".to_string(), "b".to_string())]);
    }
}
