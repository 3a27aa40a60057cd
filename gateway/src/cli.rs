//! Command line and `PORTICO_*` environment settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::auth::AuthSettings;

/// Portico's gateway: Istio Gateway/VirtualService semantics on Pingora.
#[derive(Debug, Parser)]
#[command(name = "portico-gateway", version, about)]
// One source at most; none is refused by `server::run` (CHP mode has its
// own, the REST API).
#[command(group(clap::ArgGroup::new("source").args(["config_dir", "discovery"])))]
pub struct Args {
    /// Folder of Kubernetes YAML (Gateway, VirtualService, Notebook, Service,
    /// EndpointSlice, Secret); every *.yaml/*.yml below it is read and watched.
    #[arg(long, env = "PORTICO_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,

    /// Cluster mode: stream routes from the controller at this URL
    /// (http://portico-controller.portico-system:15010).
    #[arg(long, env = "PORTICO_DISCOVERY")]
    pub discovery: Option<String>,

    /// This gateway's name towards the controller (default: POD_NAME, then the host name).
    #[arg(long, env = "POD_NAME")]
    pub node_name: Option<String>,

    /// Where a Gateway server port listens, as PORT=ADDR:PORT (default 0.0.0.0:PORT).
    #[arg(long = "bind", env = "PORTICO_BIND", value_delimiter = ',', value_parser = parse_bind)]
    pub binds: Vec<(u16, SocketAddr)>,

    /// Destination override, as HOST:PORT=ADDR:PORT (before DNS, after EndpointSlices).
    #[arg(long = "resolve", env = "PORTICO_RESOLVE", value_delimiter = ',', value_parser = parse_resolve)]
    pub resolves: Vec<(String, SocketAddr)>,

    /// This instance's labels, matched against Gateway selectors.
    #[arg(long, env = "PORTICO_GATEWAY_LABELS", default_value = "istio=ingressgateway", value_parser = parse_labels)]
    pub gateway_labels: Labels,

    /// Namespace this gateway runs in (where `credentialName` Secrets are looked up first).
    #[arg(long, env = "PORTICO_NAMESPACE", default_value = "istio-system")]
    pub namespace: String,

    /// Admin listener: /config_dump, /routes, /ready.
    #[arg(long, env = "PORTICO_ADMIN", default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,

    /// Health listener: /healthz/ready.
    #[arg(long, env = "PORTICO_HEALTH", default_value = "0.0.0.0:15021")]
    pub health: SocketAddr,

    /// Metrics listener: /stats/prometheus.
    #[arg(long, env = "PORTICO_METRICS", default_value = "0.0.0.0:15090")]
    pub metrics: SocketAddr,

    /// Worker threads of the data plane (default: the number of CPUs).
    #[arg(long, env = "PORTICO_THREADS")]
    pub threads: Option<usize>,

    /// How worker threads share the traffic. `independent`: each worker
    /// accepts, proxies and pools its upstream connections on its own (as
    /// nginx's and Envoy's workers do), so a request never wakes another
    /// thread. `shared`: one runtime for all workers, handing tasks and
    /// pooled connections between them (Pingora's default; see
    /// --work-stealing).
    #[arg(long, env = "PORTICO_WORKERS", value_enum, default_value_t = Workers::Independent)]
    pub workers: Workers,

    /// With `--workers shared`: let idle worker threads take tasks queued
    /// on busy ones (Pingora's `work_stealing`). Off: one single-threaded
    /// runtime per worker, a connection stays on the thread that accepted
    /// it, but the upstream pool is still shared.
    #[arg(long, env = "PORTICO_WORK_STEALING", default_value_t = true, action = clap::ArgAction::Set)]
    pub work_stealing: bool,

    /// With `--workers independent`: a listening socket per worker
    /// (SO_REUSEPORT), so that the kernel spreads new connections evenly
    /// over the workers (nginx's `reuseport`). Off: the workers share one
    /// socket and whichever is awake takes the next connection, so a burst
    /// of connections from one client may land on one worker. Worth it when
    /// a few clients (a load balancer's pool) carry most requests; on
    /// machines where the gateway shares its cores it costs ~2 us per
    /// request (bench/RESULTS.md, session 17). As with nginx's
    /// `reuseport`, another process of the same user can then bind the
    /// port too (and take a share of its connections) instead of failing
    /// with "address in use".
    #[arg(long, env = "PORTICO_REUSE_PORT", default_value_t = false, action = clap::ArgAction::Set)]
    pub reuse_port: bool,

    /// Log format.
    #[arg(long, env = "PORTICO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log one line per request (route, upstream, status, duration).
    #[arg(long, env = "PORTICO_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,

    /// Largest request head accepted; larger ones get 431.
    #[arg(long, env = "PORTICO_MAX_REQUEST_HEADERS_KB", default_value_t = 64)]
    pub max_request_headers_kb: usize,

    /// Seconds a keep-alive client connection may sit idle between requests
    /// (0: no limit; upgraded websockets are not affected: they have no idle
    /// limit).
    #[arg(long = "idle-timeout", env = "PORTICO_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Time a client has to send a request head, from its first byte (from
    /// the connection's accept for its first request).
    #[arg(long, env = "PORTICO_REQUEST_HEADER_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub request_header_timeout: std::time::Duration,

    /// Time a client has to send a request body, before the extension
    /// --request-body-min-rate earns it.
    #[arg(long, env = "PORTICO_REQUEST_BODY_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub request_body_timeout: std::time::Duration,

    /// Every this many body bytes extend the body timeout by one second (0:
    /// no extension), so large uploads pass and trickles do not.
    #[arg(long, env = "PORTICO_REQUEST_BODY_MIN_RATE", default_value_t = 500)]
    pub request_body_min_rate: u64,

    /// HTTP/2 streams one client connection may have open at once.
    #[arg(long, env = "PORTICO_H2_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub h2_max_concurrent_streams: u32,

    /// Bytes of the read buffer each client connection keeps (0: read
    /// straight from the socket, so idle connections hold no buffer).
    #[arg(long, env = "PORTICO_DOWNSTREAM_READ_BUFFER", default_value_t = 0)]
    pub downstream_read_buffer: usize,

    /// Splice HTTP/1.1 upgrades (websockets, plain or meshed) on a task
    /// of their own, holding no buffer while idle; false leaves them in
    /// Pingora's proxy loop (about 64 KiB per open websocket).
    #[arg(long, env = "PORTICO_SPLICE_UPGRADES", default_value_t = true, action = clap::ArgAction::Set)]
    pub splice_upgrades: bool,

    /// Longest an API or websocket request for a starting notebook is held
    /// before it gets 503 with `Retry-After` (cluster mode: the controller
    /// says which destinations are notebooks and how far they are).
    #[arg(long, env = "PORTICO_HOLD_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub hold_timeout: std::time::Duration,

    /// Requests held at once per starting notebook; more get 503 with `Retry-After`.
    #[arg(long, env = "PORTICO_HOLD_QUEUE", default_value_t = 64)]
    pub hold_queue: usize,

    /// Seconds to wait between SIGTERM and closing listeners (load balancers
    /// notice the readiness change in that time).
    #[arg(long, env = "PORTICO_DRAIN_DELAY", default_value_t = 5)]
    pub drain_delay_secs: u64,

    /// Seconds in-flight requests get to finish after listeners close.
    #[arg(long, env = "PORTICO_DRAIN_TIMEOUT", default_value_t = 25)]
    pub drain_timeout_secs: u64,

    /// Cluster mode: how often the gateway sends the controller the
    /// per-destination activity that changed (and every busy kernel's).
    #[arg(long, env = "PORTICO_ACTIVITY_REPORT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub activity_report_interval: std::time::Duration,

    /// Take over the listeners of a running gateway (Pingora graceful upgrade).
    #[arg(long, env = "PORTICO_UPGRADE")]
    pub upgrade: bool,

    /// Socket used to hand listeners over during a graceful upgrade.
    #[arg(long, env = "PORTICO_UPGRADE_SOCK", default_value = "/tmp/portico-gateway-upgrade.sock")]
    pub upgrade_sock: String,

    /// Istio path normalization: NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES.
    #[arg(long, env = "PORTICO_PATH_NORMALIZATION", default_value = "MERGE_SLASHES")]
    pub path_normalization: String,

    /// Mesh: the controller's certificate service
    /// (https://portico-controller.portico-system.svc:15012). With it, the
    /// gateway reaches pods in meshed namespaces with mutual TLS.
    #[arg(long, env = "PORTICO_CA_ADDRESS")]
    pub ca_address: Option<String>,

    /// Name the certificate service's certificate must carry (default: the host of --ca-address).
    #[arg(long, env = "PORTICO_CA_NAME")]
    pub ca_name: Option<String>,

    /// The mesh root certificate (PEM).
    #[arg(long, env = "PORTICO_CA_ROOT", default_value = "/var/run/secrets/portico/root-cert.pem")]
    pub ca_root: PathBuf,

    /// Service-account token for audience portico-ca (a projected volume).
    #[arg(long, env = "PORTICO_TOKEN_FILE", default_value = "/var/run/secrets/tokens/portico-token")]
    pub token_file: PathBuf,

    /// SPIFFE trust domain: a meshed endpoint of `<service>.<namespace>.svc`
    /// must present `spiffe://<trust domain>/ns/<namespace>/sa/...`.
    #[arg(long, env = "PORTICO_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// Lifetime of the mesh certificate to ask for; renewed at half of it.
    #[arg(long, env = "PORTICO_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: std::time::Duration,

    /// Kubernetes cluster domain of Service host names.
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Gateway Notebook VirtualServices bind to (Kubeflow's ISTIO_GATEWAY).
    #[arg(long, env = "ISTIO_GATEWAY", default_value = "kubeflow/kubeflow-gateway")]
    pub istio_gateway: String,

    /// Host of Notebook VirtualServices (Kubeflow's ISTIO_HOST).
    #[arg(long, env = "ISTIO_HOST", default_value = "*")]
    pub istio_host: String,

    /// The gateway's principal as destination-namespace AuthorizationPolicies
    /// see it (default: <trust domain>/ns/<namespace>/sa/portico-gateway).
    /// Alongside Kubeflow, set Istio's
    /// cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account
    /// so the profiles' `ns-owner-access-istio` policies match unchanged.
    #[arg(long, env = "PORTICO_PRINCIPAL")]
    pub principal: Option<String>,

    /// Where unauthenticated page navigations are redirected
    /// (`/oauth2/start?rd={rd}`; `{rd}` is the original path, encoded).
    /// Without it, and for API, XHR and websocket requests, the answer is 401.
    #[arg(long, env = "PORTICO_LOGIN_URL")]
    pub login_url: Option<String>,

    /// Cookies never forwarded to notebooks (the login session; their
    /// `_<n>` chunks too). Jupyter's own cookies pass.
    #[arg(
        long = "session-cookie",
        env = "PORTICO_SESSION_COOKIES",
        value_delimiter = ',',
        default_value = "oauth2_proxy_kubeflow,_oauth2_proxy,authservice_session"
    )]
    pub session_cookies: Vec<String>,

    /// Request headers only the gateway sets: client copies are removed from
    /// every request (RequestAuthentication outputs are removed as well).
    #[arg(
        long = "identity-header",
        env = "PORTICO_IDENTITY_HEADERS",
        value_delimiter = ',',
        default_value = "kubeflow-userid,kubeflow-groups"
    )]
    pub identity_headers: Vec<String>,

    /// Origins allowed to open websockets besides the request's own host
    /// (`https://lab.example.com`, or `*`).
    #[arg(long = "allowed-origin", env = "PORTICO_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Refuse websocket upgrades without an Origin header (browsers always
    /// send one; kernel clients and load generators usually do not).
    #[arg(long, env = "PORTICO_REQUIRE_WEBSOCKET_ORIGIN", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_websocket_origin: bool,

    /// Least time between two fetches of an issuer's JWKS caused by tokens
    /// naming a key the cached JWKS lacks (key rotation).
    #[arg(long, env = "PORTICO_JWKS_REFETCH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub jwks_refetch_interval: std::time::Duration,
}

impl Args {
    /// The front door's settings.
    pub fn auth_settings(&self) -> AuthSettings {
        AuthSettings {
            principal: self
                .principal
                .clone()
                .unwrap_or_else(|| format!("{}/ns/{}/sa/portico-gateway", self.trust_domain, self.namespace)),
            login_url: self.login_url.clone().filter(|url| !url.is_empty()),
            session_cookies: self.session_cookies.iter().filter(|c| !c.is_empty()).cloned().collect(),
            identity_headers: self
                .identity_headers
                .iter()
                .filter(|h| !h.is_empty())
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            allowed_origins: self.allowed_origins.iter().filter(|o| !o.is_empty()).cloned().collect(),
            require_websocket_origin: self.require_websocket_origin,
            jwks_refetch_interval: self.jwks_refetch_interval,
        }
    }
}

/// How the data plane's worker threads share connections (`--workers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workers {
    /// One event loop per worker: its own accepts and upstream pool.
    Independent,
    /// One runtime across the workers (Pingora's default).
    Shared,
}

/// `text` for people, `json` for log pipelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `k=v,...` labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

fn parse_labels(text: &str) -> Result<Labels, String> {
    portico_routing::translate::parse_labels(text).map(Labels)
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    portico_routing::duration::parse(text)
}

fn parse_bind(text: &str) -> Result<(u16, SocketAddr), String> {
    let (port, address) = text.split_once('=').ok_or_else(|| format!("{text:?} is not PORT=ADDR:PORT"))?;
    let port = port.trim().parse::<u16>().map_err(|e| format!("{text:?}: bad gateway port: {e}"))?;
    let address = address.trim().parse::<SocketAddr>().map_err(|e| format!("{text:?}: bad address: {e}"))?;
    Ok((port, address))
}

fn parse_resolve(text: &str) -> Result<(String, SocketAddr), String> {
    let (target, address) = text.split_once('=').ok_or_else(|| format!("{text:?} is not HOST:PORT=ADDR:PORT"))?;
    let (host, port) = target.rsplit_once(':').ok_or_else(|| format!("{text:?}: {target:?} has no :PORT"))?;
    let port = port.parse::<u16>().map_err(|e| format!("{text:?}: bad port: {e}"))?;
    let address = address.trim().parse::<SocketAddr>().map_err(|e| format!("{text:?}: bad address: {e}"))?;
    Ok((format!("{}:{port}", host.trim().to_ascii_lowercase()), address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let args = Args::try_parse_from([
            "portico-gateway",
            "--config-dir",
            "examples",
            "--bind",
            "80=127.0.0.1:8080",
            "--resolve",
            "NB.ns.svc.cluster.local:80=127.0.0.1:8888",
            "--gateway-labels",
            "istio=ingressgateway, app=portico",
        ])
        .unwrap();
        assert_eq!(args.binds, vec![(80, "127.0.0.1:8080".parse().unwrap())]);
        assert_eq!(args.resolves[0].0, "nb.ns.svc.cluster.local:80");
        assert_eq!(args.gateway_labels.0.get("app").map(String::as_str), Some("portico"));
    }

    #[test]
    fn at_most_one_source_is_given() {
        // None parses (CHP mode builds its settings so); `server::run` refuses it.
        assert!(Args::try_parse_from(["portico-gateway"]).is_ok());
        assert!(
            Args::try_parse_from(["portico-gateway", "--config-dir", "x", "--discovery", "http://c:15010"]).is_err()
        );
        let args = Args::try_parse_from(["portico-gateway", "--discovery", "http://c:15010"]).unwrap();
        assert_eq!(args.discovery.as_deref(), Some("http://c:15010"));
    }

    #[test]
    fn rejects_malformed_values_clearly() {
        assert!(parse_bind("80:8080").unwrap_err().contains("PORT=ADDR:PORT"));
        assert!(parse_resolve("host=1.2.3.4:80").unwrap_err().contains("no :PORT"));
        assert!(parse_labels("istio").unwrap_err().contains("key=value"));
    }
}
