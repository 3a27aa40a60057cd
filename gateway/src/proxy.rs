//! The Pingora `ProxyHttp` implementation: thin phases over [`decide`],
//! [`Resolver`] and [`headers`](crate::headers).
//!
//! One instance serves one Gateway port, so it knows the listener port and
//! scheme a request arrived on without looking at socket addresses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::modules::http::HttpModules;
use pingora_core::prelude::HttpPeer;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::access_log::{self, AccessRecord};
use crate::activity::{ActivityRegistry, WebsocketWatch};
use crate::auth::{Guard, ResponseHeaders};
use crate::chp::ProxyHooks;
use crate::decision::{Forward, LocalResponse};
use crate::headers;
use crate::mesh::MeshIdentity;
use crate::metrics::{Metrics, RequestRecord};
use crate::read_timeouts::RequestClock;
use crate::state::RouteState;
use crate::status::{self, Outcome};
use crate::upstream::Resolver;
use crate::waking::Waking;
use portico_chp::target::activity_key;
use unavailable::Reach;

mod admission;
mod peer;
mod unavailable;
mod upgrade;

use peer::ExpectedPeer;

/// Settings shared by every listener's proxy.
pub struct ProxySettings {
    pub max_request_head: usize,
    /// Keep-alive idle timeout of client connections, in seconds.
    pub idle_timeout_secs: u64,
    pub access_log: bool,
    pub workload: String,
    pub workload_namespace: String,
    /// SPIFFE trust domain of meshed endpoints.
    pub trust_domain: String,
    /// Splice HTTP/1.1 upgrades outside Pingora ([`crate::tunnel`]).
    pub splice_upgrades: bool,
    /// Client connections are read without a buffer in front of the
    /// socket (`--downstream-read-buffer 0`): a splice may take the socket.
    pub unbuffered_downstream: bool,
}

/// The data plane of one Gateway port (cloned for each independent worker:
/// all shared state is behind `Arc`s).
#[derive(Clone)]
pub struct GatewayProxy {
    pub port: u16,
    pub scheme: &'static str,
    pub state: Arc<RouteState>,
    pub resolver: Arc<Resolver>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<ProxySettings>,
    /// The workload certificate for meshed destinations (`--ca-address`).
    pub mesh: Option<Arc<MeshIdentity>>,
    /// Authentication, authorization and browser safety.
    pub guard: Arc<Guard>,
    /// Serving as configurable-http-proxy: route activity, error pages.
    pub chp: Option<Arc<ProxyHooks>>,
    /// Stopped and starting notebooks: wake, hold, starting page.
    pub waking: Arc<Waking>,
    /// Per-destination activity (issue 17's culling input); none as CHP,
    /// whose routes keep CHP's own rule and whose local servers share one
    /// host.
    pub activity: Option<Arc<ActivityRegistry>>,
}

/// Per-request state.
pub struct RequestContext {
    started: Instant,
    forward: Option<Box<Forward>>,
    upstream: Option<std::net::SocketAddr>,
    status: u16,
    flags: &'static str,
    connect_attempts: u32,
    upgraded: bool,
    /// For a meshed endpoint: the SPIFFE ID its certificate must carry.
    mesh_expected: Option<ExpectedPeer>,
    /// Added to the client's response (external authorization's allow headers).
    response_headers: ResponseHeaders,
    /// Reports the request's progress to its connection's read clock.
    clock: RequestClock,
    /// The answer for a notebook that is not ready (page, status, 503 with
    /// `Retry-After`), written by `fail_to_proxy`.
    unavailable: Option<LocalResponse>,
    /// An upgrade left in Pingora's proxy loop (`--splice-upgrades=false`):
    /// its activity, read from the body filters.
    websocket: Option<Box<WebsocketWatch>>,
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestContext;

    fn new_ctx(&self) -> RequestContext {
        self.metrics.request_started();
        RequestContext {
            started: Instant::now(),
            forward: None,
            upstream: None,
            status: 0,
            flags: "-",
            connect_attempts: 0,
            upgraded: false,
            mesh_expected: None,
            response_headers: Vec::new(),
            clock: RequestClock::default(),
            unavailable: None,
            websocket: None,
        }
    }

    /// No downstream modules: Pingora's default is a disabled compression
    /// module, which still costs every request a boxed object and a boxed
    /// future per filter call while doing nothing.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<()> {
        ctx.clock = RequestClock::of(session.stream());
        ctx.clock.head_parsed(session.req_header());
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        if let (Some(watch), Some(body)) = (ctx.websocket.as_mut(), body.as_ref()) {
            watch.client_sent(body);
        }
        if end_of_stream {
            ctx.clock.body_ended();
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<bool> {
        match self.screen_request(session, ctx) {
            None => Ok(false),
            // Boxed apart, so that this future stays small (see `admission`).
            Some(pending) => Box::pin(self.finish_request(session, ctx, pending)).await,
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<Box<HttpPeer>> {
        let forward =
            ctx.forward.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "no route decided"))?;
        let destination = forward
            .destination()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route has no destination"))?;
        let target = match self.reach(session, &forward.snapshot, &destination.host, destination.port).await {
            Reach::Endpoint(target) => target,
            Reach::Answer(answer, error) => {
                ctx.unavailable = Some(answer);
                return Err(Error::explain(ErrorType::HTTPStatus(503), error.to_string()));
            }
            Reach::Unreachable(error) => {
                ctx.flags = "UH";
                return Err(Error::explain(ErrorType::HTTPStatus(503), error.to_string()));
            }
        };
        let address = target.address;
        ctx.upstream = Some(address);
        let mut peer = if let Some(mesh_peer) = target.mesh {
            // The pod's sidecar accepts mutual TLS only: without a mesh
            // certificate there is no point in trying.
            let tls = self.mesh.as_ref().and_then(|mesh| mesh.current()).ok_or_else(|| {
                ctx.flags = "UF";
                Error::explain(
                    ErrorType::HTTPStatus(503),
                    format!("{} is meshed and this gateway has no mesh certificate (--ca-address)", destination.host),
                )
            })?;
            // Workload certificates name SPIFFE IDs, not hosts: verify the
            // chain against the mesh root, not the name, and check the
            // identity once connected.
            ctx.mesh_expected = self.expected_peer(forward, mesh_peer);
            let mut peer = HttpPeer::new(address, true, destination.host.clone());
            peer.options.verify_hostname = false;
            peer.options.ca = Some(tls.roots.clone());
            peer.client_cert_key = Some(tls.client_cert.clone());
            peer
        } else {
            ctx.mesh_expected = None;
            HttpPeer::new(address, false, String::new())
        };
        peer.options.connection_timeout = Some(status::CONNECT_TIMEOUT);
        // No pool idle timer (a timer per request); see upstream_tcp_keepalive.
        peer.options.tcp_keepalive = Some(status::upstream_tcp_keepalive());
        let route = forward.route();
        let upgrade = session.is_upgrade_req();
        // Istio's `timeout` bounds a response, never an upgraded stream:
        // notebook websockets and terminals live for hours.
        if let Some(timeout) = route.timeout.filter(|_| !upgrade) {
            peer.options.read_timeout = Some(timeout);
        }
        if let Some(per_try) = route.retries.per_try_timeout.filter(|_| !upgrade) {
            peer.options.read_timeout = Some(peer.options.read_timeout.map_or(per_try, |t| t.min(per_try)));
        }
        Ok(Box::new(peer))
    }

    /// A meshed endpoint must be a workload of the destination's namespace:
    /// the chain was verified against the mesh root during the handshake,
    /// the identity is checked here (the CA puts it in the subject's O).
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let Some(expected) = ctx.mesh_expected.as_ref() else { return Ok(()) };
        let identity = digest.and_then(|d| d.ssl_digest.as_ref()).and_then(|tls| tls.organization.clone());
        match identity {
            Some(identity) if expected.admits(&identity) => Ok(()),
            other => {
                ctx.flags = "UF";
                Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    format!("the meshed endpoint presented {other:?}, expected {expected}"),
                ))
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let Some(forward) = ctx.forward.as_ref() else { return Ok(()) };
        let client = session.client_addr().and_then(PingoraAddr::as_inet).map(|a| a.ip());
        headers::prepare_upstream_request(upstream_request, forward, client, self.scheme)?;
        if let Some(chp) = &self.chp {
            chp.forwarding_headers(upstream_request);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            ctx.upgraded = true;
            self.metrics.active_websockets.inc();
            let destination = ctx.forward.as_ref().and_then(|f| f.destination());
            if let (Some(activity), Some(destination)) = (&self.activity, destination) {
                let key = activity_key(&destination.host, destination.port);
                ctx.websocket = Some(activity.websocket(&key, session.req_header().raw_path()));
            }
        }
        if let Some(forward) = ctx.forward.as_ref() {
            headers::prepare_response(upstream_response, forward)?;
        }
        for (name, value) in ctx.response_headers.drain(..) {
            upstream_response.append_header(name, value)?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> Result<Option<Duration>> {
        if let (Some(watch), Some(body)) = (ctx.websocket.as_mut(), body.as_ref()) {
            watch.server_sent(body);
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestContext,
        mut error: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_attempts += 1;
        ctx.flags = "UF";
        let Some(forward) = ctx.forward.as_ref() else { return error };
        let policy = &forward.route().retries;
        let retriable = policy.retry_on.connect_failure || policy.retry_on.reset || policy.retry_on.server_error;
        let idempotent = session.req_header().method.is_idempotent() && !session.is_upgrade_req();
        if retriable && idempotent && ctx.connect_attempts <= policy.attempts {
            error.set_retry(true);
        }
        error
    }

    async fn fail_to_proxy(&self, session: &mut Session, error: &Error, ctx: &mut RequestContext) -> FailToProxy {
        if let Some(answer) = ctx.unavailable.take()
            && session.response_written().is_none()
        {
            let status = answer.status;
            let _ = self.respond(session, ctx, answer, true).await;
            return FailToProxy { error_code: status, can_reuse_downstream: false };
        }
        let Outcome { status, flags, body } = status::outcome(error, ctx.flags);
        ctx.flags = flags;
        ctx.status = status;
        if status > 0 && session.response_written().is_none() {
            session.set_keepalive(None);
            // A websocket gets the bare status, as from CHP.
            let page = match session.is_upgrade_req() {
                false => self.chp_error_page(session, status, flags).await,
                true => None,
            };
            match page {
                Some(page) => {
                    let _ = self.respond(session, ctx, page, true).await;
                }
                None => {
                    let _ = session.respond_error_with_body(status, Bytes::from_static(body.as_bytes())).await;
                }
            }
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestContext) {
        self.metrics.request_ended();
        if ctx.upgraded {
            self.metrics.active_websockets.dec();
        }
        let status = session.response_written().map_or(ctx.status, |r| r.status.as_u16());
        let duration = ctx.started.elapsed();
        let destination = ctx.forward.as_ref().and_then(|f| f.destination()).map_or("", |d| d.host.as_str());
        let request = session.req_header();
        let grpc = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let record = RequestRecord {
            workload: &self.settings.workload,
            workload_namespace: &self.settings.workload_namespace,
            destination_host: destination,
            protocol: if grpc { "grpc" } else { "http" },
            status,
            flags: ctx.flags,
            duration_ms: duration.as_secs_f64() * 1000.0,
            request_bytes: session.body_bytes_read(),
            response_bytes: session.body_bytes_sent(),
        };
        match ctx.forward.as_ref() {
            Some(forward) => {
                let key = forward.outcome_key(grpc, status, ctx.flags);
                self.metrics.record_cached(&forward.snapshot.series, key, &record);
            }
            None => self.metrics.record(&record),
        }
        if let (Some(chp), Some(forward)) = (&self.chp, &ctx.forward) {
            chp.request_done(&forward.route().name, status);
        }
        if let Some(activity) = &self.activity
            && let Some(reached) = ctx.forward.as_ref().and_then(|f| f.destination())
        {
            activity.request_done(
                &reached.host,
                reached.port,
                &request.method,
                request.raw_path(),
                &request.headers,
                status,
            );
        }
        // An upgrade in Pingora's loop ends here: no longer open.
        ctx.websocket = None;
        if self.settings.access_log {
            access_log::log(&AccessRecord {
                method: request.method.as_str(),
                path: request.raw_path(),
                status,
                flags: ctx.flags,
                route: ctx.forward.as_ref().map_or("-", |f| f.route().name.as_str()),
                destination,
                upstream: ctx.upstream,
                duration_ms: duration.as_millis() as u64,
                bytes_received: session.body_bytes_read(),
                bytes_sent: session.body_bytes_sent(),
                error: error.map(|e| e as &dyn std::fmt::Display),
            });
        }
    }
}

impl GatewayProxy {
    /// As configurable-http-proxy with `--error-target`/`--error-path`:
    /// the page for a 404 (no route) or a 5xx in place of the plain answer.
    /// `portico-gateway chp` serves its own; in cluster mode the pages come
    /// with the port's listener (the controller's `--chp-error-*`).
    async fn chp_error_page(&self, session: &Session, status: u16, flags: &'static str) -> Option<LocalResponse> {
        if status != 404 && status < 500 {
            return None;
        }
        let url = String::from_utf8_lossy(session.req_header().raw_path()).into_owned();
        if let Some(chp) = &self.chp {
            return chp.error_page(status, flags, &url).await;
        }
        let pages = {
            let snapshot = self.state.load();
            snapshot.matcher.listeners().find(|l| l.port == self.port)?.error_pages.clone()?
        };
        crate::chp::listener_error_page(&pages, status, flags, &url).await
    }

    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        response: LocalResponse,
        close: bool,
    ) -> Result<()> {
        ctx.status = response.status;
        ctx.flags = response.flags;
        if close {
            session.set_keepalive(None);
        }
        let mut header = ResponseHeader::build(response.status, Some(response.headers.len() + 1))?;
        // Appended: a denial may carry several Set-Cookie headers.
        for (name, value) in response.headers {
            header.append_header(name, value)?;
        }
        header.insert_header(http::header::CONTENT_LENGTH, response.body.len().to_string())?;
        session.write_response_header(Box::new(header), response.body.is_empty()).await?;
        if !response.body.is_empty() {
            session.write_response_body(Some(response.body), true).await?;
        }
        Ok(())
    }
}
