//! Assembles the Pingora server: the proxy services of each Gateway port
//! (one per worker thread with `--workers independent`, proxy_service.rs),
//! the admin/health/metrics services and the folder watcher.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
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
use crate::proxy_service::{Port, proxy_services};
use crate::state::RouteState;
use crate::tls::SniCertResolver;
use crate::upstream::Resolver;
use crate::waking::{HoldSettings, Waking};
use portico_api::discovery::Node;
use portico_mesh::CaClient;

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
        let port = Port { address, certificates: sink.certificates.get(port) };
        for service in proxy_services(&args, &server.configuration, &proxy, &port)? {
            server.add_service(service);
        }
        tracing::info!(port = proxy.port, %address, scheme, workers = ?args.workers, "listening");
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
