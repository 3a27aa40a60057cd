//! One Gateway port's proxy services: its listener (TLS with SNI
//! certificates, or plain HTTP with h2c), HTTP/2 limits, read timeouts and
//! buffers; one service per worker when workers are independent.

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
use pingora_core::server::configuration::ServerConf;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;

use crate::cli::{Args, Workers};
use crate::proxy::GatewayProxy;
use crate::read_timeouts::{ReadTimeouts, TimedApp};
use crate::tls::SniCertResolver;
use crate::worker_socket::{WorkerService, socket_key};

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

/// A port's listening address, and its certificates when it serves HTTPS.
pub struct Port<'a> {
    pub address: SocketAddr,
    pub certificates: Option<&'a Arc<SniCertResolver>>,
}

/// The services that serve one port.
///
/// Independent workers: one service per worker thread, each a runtime of
/// one thread with its own upstream pool, on the port's one socket or, with
/// `--reuse-port`, on one of its own (`worker_socket`). A request, the
/// upstream connection it reuses and that connection's idle watch stay on
/// one thread: in a shared runtime, returning a connection to the pool
/// spawns its watch on any worker, and taking it back wakes that worker.
/// Side by side at 2,000/s this cut 18 us of CPU per request
/// (bench/RESULTS.md, session 16).
pub fn proxy_services(
    args: &Args,
    conf: &Arc<ServerConf>,
    proxy: &GatewayProxy,
    port: &Port<'_>,
) -> anyhow::Result<Vec<WorkerService<TimedApp<HttpProxy<GatewayProxy>>>>> {
    let service = |name: String, threads: Option<usize>, address: String| {
        let mut service = Service::new(name, timed_proxy(args, conf, proxy.clone()));
        service.threads = threads;
        service.add_listener(listener(args, address, port.certificates)?);
        anyhow::Ok(service)
    };
    match args.workers {
        Workers::Shared => {
            let name = format!("{}.{}", proxy.scheme, proxy.port);
            Ok(vec![WorkerService::shared_socket(service(name, None, port.address.to_string())?)])
        }
        Workers::Independent => (0..conf.threads)
            .map(|worker| {
                let name = format!("{}.{}.{worker}", proxy.scheme, proxy.port);
                // Port 0 would give each worker a port of its own.
                if !args.reuse_port || port.address.port() == 0 {
                    return Ok(WorkerService::shared_socket(service(name, Some(1), port.address.to_string())?));
                }
                let address = socket_key(port.address, worker);
                Ok(WorkerService::own_socket(service(name, Some(1), address)?, port.address, worker))
            })
            .collect(),
    }
}

/// The proxy with its HTTP/2 and keep-alive settings, under read timeouts.
fn timed_proxy(args: &Args, conf: &Arc<ServerConf>, proxy: GatewayProxy) -> TimedApp<HttpProxy<GatewayProxy>> {
    let max_request_head = proxy.settings.max_request_head;
    let mut proxy = pingora_proxy::http_proxy(conf, proxy);
    let mut server_options = HttpServerOptions::default();
    server_options.h2c = true;
    // An HTTP/2 connection with no stream open is closed like an idle
    // HTTP/1.1 keep-alive (Pingora keeps it forever by default).
    server_options.h2_idle_timeout = Some(Duration::from_secs(args.idle_timeout_secs));
    proxy.server_options = Some(server_options);
    proxy.h2_options = Some(h2_options(args.h2_max_concurrent_streams, max_request_head));
    let timeouts = ReadTimeouts {
        header: args.request_header_timeout,
        body: args.request_body_timeout,
        body_min_rate: args.request_body_min_rate,
        // 0: no idle limit, as Pingora's own keep-alive timeout reads it.
        idle: (args.idle_timeout_secs > 0).then(|| Duration::from_secs(args.idle_timeout_secs)),
    };
    TimedApp::new(proxy, timeouts)
}

/// A listener on `address` (a socket address, or a worker's socket key).
fn listener(
    args: &Args,
    address: String,
    certificates: Option<&Arc<SniCertResolver>>,
) -> anyhow::Result<ListenerConfig> {
    // An idle notebook websocket should hold no buffer: Pingora's default
    // 64 KiB downstream read buffer is zero-filled (so resident) for the
    // whole life of every connection.
    let buffers = L4BufferSettings::new(args.downstream_read_buffer, DEFAULT_L4_WRITE_BUFFER_SIZE);
    let mut listener = ListenerConfig::tcp(address).l4_buffer(buffers);
    if let Some(resolver) = certificates {
        let mut tls = TlsSettings::with_callbacks(Box::new(NoTlsCallbacks) as TlsAcceptCallbacks)
            .context("creating TLS settings")?;
        tls.set_cert_resolver(Arc::clone(resolver) as Arc<dyn rustls::server::ResolvesServerCert>);
        tls.enable_h2();
        listener = listener.tls(tls);
    }
    Ok(listener)
}
