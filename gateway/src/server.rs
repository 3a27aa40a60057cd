//! Assembles the Pingora server: one proxy service per Gateway port, the
//! admin/health/metrics services and the folder watcher.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{
    DEFAULT_L4_WRITE_BUFFER_SIZE, L4BufferSettings, ListenerConfig, TlsAccept, TlsAcceptCallbacks,
};
use pingora_core::protocols::http::v2::server::{H2Options, default_h2_options};
use pingora_core::server::Server;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::services::ServiceWithDependents;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use portico_routing::table::ListenerProtocol;
use portico_routing::{GatewayIdentity, NotebookSettings, PathNormalization};

use crate::activity::{ActivityCollector, ActivityRegistry};
use crate::admin::{AdminApp, HealthApp, MetricsApp};
use crate::apply::ConfigSink;
use crate::auth::Guard;
use crate::chp::{ChpMode, ProxyHooks};
use crate::cli::Args;
use crate::config_dir::{FolderSource, FolderWatchService};
use crate::discovery::bootstrap;
use crate::discovery::client::{DiscoveryClient, DiscoveryService};
use crate::mesh::{MeshIdentity, MeshIdentityService};
use crate::metrics::Metrics;
use crate::proxy::{GatewayProxy, ProxySettings};
use crate::read_timeouts::{ReadTimeouts, TimedApp};
use crate::state::RouteState;
use crate::tls::SniCertResolver;
use crate::upstream::Resolver;
use crate::waking::{HoldSettings, Waking};
use portico_api::discovery::Node;
use portico_mesh::CaClient;

/// HTTP/2 limits, all set here rather than left to h2's defaults (which may
/// change between versions). A notebook UI opens a few dozen streams at most.
///
/// Remotely reset streams still waiting to be accepted: a rapid reset flood
/// (CVE-2023-44487) fills this and gets GOAWAY(ENHANCE_YOUR_CALM).
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the gateway itself reset because of the client's protocol
/// errors, before the connection is closed with GOAWAY(ENHANCE_YOUR_CALM).
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;
/// Reset streams whose late frames are still ignored (state kept per stream).
const H2_MAX_CONCURRENT_RESET_STREAMS: usize = 64;
/// How long such state is kept.
const H2_RESET_STREAM_DURATION: Duration = Duration::from_secs(10);
/// Response bytes buffered per stream before waiting for the client.
const H2_MAX_SEND_BUFFER_SIZE: usize = 256 * 1024;

/// The HTTP/2 settings of every traffic listener. The header list limit is
/// the HTTP/1.1 head limit, so both protocols refuse the same requests; h2
/// also bounds CONTINUATION frames by it (a CONTINUATION flood gets
/// GOAWAY(ENHANCE_YOUR_CALM) once the frames could no longer fit).
fn h2_options(max_concurrent_streams: u32, max_request_head: usize) -> H2Options {
    let mut h2 = default_h2_options();
    h2.max_concurrent_streams(max_concurrent_streams)
        .max_header_list_size(u32::try_from(max_request_head).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESET_STREAMS))
        .max_concurrent_reset_streams(H2_MAX_CONCURRENT_RESET_STREAMS)
        .reset_stream_duration(H2_RESET_STREAM_DURATION)
        .max_send_buffer_size(H2_MAX_SEND_BUFFER_SIZE);
    h2
}

struct NoTlsCallbacks;

#[async_trait::async_trait]
impl TlsAccept for NoTlsCallbacks {}

/// Builds everything and runs until SIGTERM/SIGINT (never returns on success).
/// `chp`: serve as configurable-http-proxy, routes from its REST API.
pub fn run(args: Args, chp: Option<ChpMode>) -> anyhow::Result<()> {
    let normalization = PathNormalization::parse(&args.path_normalization)
        .with_context(|| format!("--path-normalization {:?} is not an Istio mode", args.path_normalization))?;
    let state = Arc::new(RouteState::new());
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    let activity = Arc::new(ActivityRegistry::default());
    metrics
        .register(Box::new(ActivityCollector::new(Arc::clone(&activity)).context("activity metrics")?))
        .context("registering activity metrics")?;
    let identity = GatewayIdentity {
        name: "portico-gateway".to_string(),
        namespace: args.namespace.clone(),
        labels: args.gateway_labels.0.clone(),
    };
    let settings = NotebookSettings {
        istio_gateway: args.istio_gateway.clone(),
        istio_host: args.istio_host.clone(),
        cluster_domain: args.cluster_domain.clone(),
    };

    // Learn the listeners first (Pingora binds ports at start): translate
    // the folder once, or wait for the controller's first full state. Ports
    // `--bind` names but no Gateway uses yet serve HTTP.
    let source = match (&args.config_dir, &args.discovery) {
        _ if chp.is_some() => Source::Chp,
        (Some(dir), _) => {
            Source::Folder(Arc::new(FolderSource::new(dir.clone(), identity, settings, normalization.into())))
        }
        (None, Some(url)) => Source::Discovery(Box::new(
            DiscoveryClient::new(url.clone(), node(&args))
                .reporting(Arc::clone(&activity), args.activity_report_interval),
        )),
        (None, None) => anyhow::bail!("give --config-dir DIR or --discovery URL"),
    };
    let (mut listeners, diagnostics) = match &source {
        Source::Folder(folder) => folder.translate_folder(),
        Source::Discovery(client) => bootstrap::first_ports(client, args.health)?,
        Source::Chp => (chp.as_ref().map(ChpMode::ports).unwrap_or_default(), Vec::new()),
    };
    for (port, _) in &args.binds {
        listeners.entry(*port).or_insert(ListenerProtocol::Http);
    }
    if listeners.is_empty() {
        tracing::warn!("no Gateway selects this instance and no --bind given: nothing to serve yet");
    }
    let certificates: BTreeMap<u16, Arc<SniCertResolver>> = listeners
        .iter()
        .filter(|(_, protocol)| **protocol == ListenerProtocol::Https)
        .map(|(port, _)| (*port, Arc::new(SniCertResolver::new())))
        .collect();
    let sink = Arc::new(ConfigSink::new(Arc::clone(&state), Arc::clone(&metrics), certificates));
    let hold = HoldSettings { timeout: args.hold_timeout, queue: args.hold_queue };
    let waking = Arc::new(Waking::new(hold, Arc::clone(&state), &metrics));
    // CHP mode: the data plane's hooks, and its metrics listener if any.
    let mut chp_mode: Option<(Arc<ProxyHooks>, Option<SocketAddr>)> = None;
    let background: Box<dyn ServiceWithDependents> = match source {
        Source::Folder(folder) => {
            folder.attach(Arc::clone(&sink));
            folder.apply_translated(diagnostics);
            Box::new(background_service("config folder watcher", FolderWatchService(folder)))
        }
        Source::Discovery(mut client) => {
            client.attach(Arc::clone(&sink), listeners.clone());
            client.send_wakes(Arc::clone(&waking));
            // The first full state as received.
            client.publish();
            Box::new(background_service("discovery client", DiscoveryService(Arc::new(*client))))
        }
        Source::Chp => {
            let Some(chp) = chp else { anyhow::bail!("CHP mode without its settings") };
            let hooks = Arc::clone(&chp.hooks);
            let metrics_address = chp.settings.metrics;
            chp_mode = Some((hooks, metrics_address));
            Box::new(chp.start(Arc::clone(&sink))?)
        }
    };

    let conf = ServerConf {
        threads: args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        work_stealing: args.work_stealing,
        grace_period_seconds: Some(args.drain_delay_secs),
        graceful_shutdown_timeout_seconds: Some(args.drain_timeout_secs),
        upstream_keepalive_pool_size: 1024,
        upgrade_sock: args.upgrade_sock.clone(),
        max_retries: 4,
        ..ServerConf::default()
    };
    let opt = Opt { upgrade: args.upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let resolver = Arc::new(Resolver::new(args.resolves.clone()));
    let proxy_settings = Arc::new(ProxySettings {
        max_request_head: args.max_request_headers_kb * 1024,
        idle_timeout_secs: args.idle_timeout_secs,
        access_log: args.access_log,
        workload: identity_name(),
        workload_namespace: args.namespace.clone(),
        trust_domain: args.trust_domain.clone(),
        splice_upgrades: args.splice_upgrades,
        unbuffered_downstream: args.downstream_read_buffer == 0,
    });
    let guard = Arc::new(Guard::new(args.auth_settings()));
    let mesh = args.ca_address.as_ref().map(|address| {
        Arc::new(MeshIdentity::new(CaClient {
            address: address.clone(),
            name: args.ca_name.clone(),
            root: args.ca_root.clone(),
            token_file: args.token_file.clone(),
            ttl: args.cert_ttl,
        }))
    });
    if let Some(mesh) = &mesh {
        server.add_service(background_service("mesh certificate", MeshIdentityService(Arc::clone(mesh))));
    }
    let binds: BTreeMap<u16, SocketAddr> = args.binds.iter().copied().collect();
    for (port, protocol) in &listeners {
        let address = binds.get(port).copied().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], *port)));
        let scheme = match protocol {
            ListenerProtocol::Http => "http",
            ListenerProtocol::Https => "https",
        };
        let proxy = GatewayProxy {
            port: *port,
            scheme,
            state: Arc::clone(&state),
            resolver: Arc::clone(&resolver),
            metrics: Arc::clone(&metrics),
            settings: Arc::clone(&proxy_settings),
            mesh: mesh.clone(),
            guard: Arc::clone(&guard),
            chp: chp_mode.as_ref().map(|(hooks, _)| Arc::clone(hooks)),
            waking: Arc::clone(&waking),
            activity: chp_mode.is_none().then(|| Arc::clone(&activity)),
        };
        let mut proxy = pingora_proxy::http_proxy(&server.configuration, proxy);
        let mut server_options = HttpServerOptions::default();
        server_options.h2c = true;
        // An HTTP/2 connection with no stream open is closed like an idle
        // HTTP/1.1 keep-alive (Pingora keeps it forever by default).
        server_options.h2_idle_timeout = Some(Duration::from_secs(args.idle_timeout_secs));
        proxy.server_options = Some(server_options);
        proxy.h2_options = Some(h2_options(args.h2_max_concurrent_streams, proxy_settings.max_request_head));
        let timeouts = ReadTimeouts {
            header: args.request_header_timeout,
            body: args.request_body_timeout,
            body_min_rate: args.request_body_min_rate,
            // 0: no idle limit, as Pingora's own keep-alive timeout reads it.
            idle: (args.idle_timeout_secs > 0).then(|| Duration::from_secs(args.idle_timeout_secs)),
        };
        let mut service = Service::new(format!("{scheme}.{port}"), TimedApp::new(proxy, timeouts));
        // An idle notebook websocket should hold no buffer: Pingora's default
        // 64 KiB downstream read buffer is zero-filled (so resident) for the
        // whole life of every connection.
        let buffers = L4BufferSettings::new(args.downstream_read_buffer, DEFAULT_L4_WRITE_BUFFER_SIZE);
        let mut listener = ListenerConfig::tcp(address.to_string()).l4_buffer(buffers);
        if let Some(resolver) = sink.certificates.get(port) {
            let mut tls = TlsSettings::with_callbacks(Box::new(NoTlsCallbacks) as TlsAcceptCallbacks)
                .context("creating TLS settings")?;
            tls.set_cert_resolver(Arc::clone(resolver) as Arc<dyn rustls::server::ResolvesServerCert>);
            tls.enable_h2();
            listener = listener.tls(tls);
        }
        service.add_listener(listener);
        tracing::info!(port, %address, scheme, "listening");
        server.add_service(service);
    }

    match &chp_mode {
        // As CHP: health is `/_chp_healthz` on the proxy port, metrics
        // only with --metrics-port, no admin listener.
        Some((_, metrics_address)) => {
            if let Some(address) = metrics_address {
                server.add_service(small_service("metrics", MetricsApp { metrics: Arc::clone(&metrics) }, *address));
            }
        }
        None => {
            let admin = AdminApp { state: Arc::clone(&state), activity: Arc::clone(&activity) };
            server.add_service(small_service("admin", admin, args.admin));
            server.add_service(small_service("health", HealthApp { state: Arc::clone(&state) }, args.health));
            server.add_service(small_service("metrics", MetricsApp { metrics: Arc::clone(&metrics) }, args.metrics));
        }
    }
    server.add_boxed_service(background);
    tracing::info!(admin = %args.admin, health = %args.health, metrics = %args.metrics, "portico-gateway started");
    server.run_forever()
}

/// Where routes come from.
enum Source {
    Folder(Arc<FolderSource>),
    Discovery(Box<DiscoveryClient>),
    /// configurable-http-proxy's REST API (the settings stay in `run`'s `chp`).
    Chp,
}

/// How this gateway introduces itself to the controller.
fn node(args: &Args) -> Node {
    Node {
        name: args.node_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(identity_name),
        namespace: args.namespace.clone(),
        labels: args.gateway_labels.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        accepts_parts: true,
    }
}

/// A one-thread HTTP service for the admin-side endpoints.
fn small_service<A>(name: &str, app: A, address: SocketAddr) -> Service<pingora_core::apps::http_app::HttpServer<A>>
where
    A: pingora_core::apps::http_app::ServeHttp + Send + Sync + 'static,
{
    let mut service = Service::new(name.to_string(), pingora_core::apps::http_app::HttpServer::new_app(app));
    service.threads = Some(1);
    service.add_tcp(&address.to_string());
    service
}

/// The workload name reported in metrics: the pod name when in Kubernetes.
fn identity_name() -> String {
    std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "portico-gateway".to_string())
}
