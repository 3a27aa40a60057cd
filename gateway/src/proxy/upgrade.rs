//! HTTP/1.1 upgrades (websockets) outside Pingora's proxy loop: the
//! gateway connects to the endpoint itself (plain, or mutual TLS to a meshed
//! pod), relays the handshake, then splices the two sockets on a task of
//! their own ([`tunnel`]), so an idle websocket holds no proxy buffers.

use std::sync::Arc;
use std::time::Duration;

use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::Session;

use super::unavailable::Reach;
use super::{GatewayProxy, RequestContext};
use crate::decision::LocalResponse;
use crate::headers;
use crate::status::{self, Outcome};
use crate::tunnel;

/// How long an endpoint may take to answer an upgrade request.
const UPGRADE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

impl GatewayProxy {
    /// HTTP/1.1 upgrades without a body are spliced by [`tunnel`] instead of
    /// Pingora's proxy loop (an idle websocket then holds no buffer).
    pub(super) fn splices(&self, session: &Session) -> bool {
        session.is_upgrade_req()
            && !session.as_downstream().is_http2()
            && !headers::has_body(session.req_header())
            && self.settings.splice_upgrades
    }

    /// The handshake with the endpoint (plain, or mutual TLS to a meshed
    /// one), then the splice on a task of its own.
    pub(super) async fn splice_upgrade(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<bool> {
        let Some(forward) = ctx.forward.as_ref() else { return Ok(false) };
        let Some(destination) = forward.destination() else { return Ok(false) };
        let target = match self.reach(session, &forward.snapshot, &destination.host, destination.port).await {
            Reach::Endpoint(target) => target,
            Reach::Answer(answer, _) => {
                self.respond(session, ctx, answer, true).await?;
                return Ok(true);
            }
            Reach::Unreachable(error) => {
                tracing::debug!(%error, "no endpoint for an upgrade");
                let error = Error::explain(ErrorType::HTTPStatus(503), error.to_string());
                return self.refuse_upgrade(session, ctx, &error, "UH").await;
            }
        };
        ctx.upstream = Some(target.address);
        let client = session.client_addr().and_then(PingoraAddr::as_inet).map(|a| a.ip());
        let mut request = session.req_header().clone();
        headers::prepare_upstream_request(&mut request, forward, client, self.scheme)?;
        if let Some(chp) = &self.chp {
            chp.forwarding_headers(&mut request);
        }
        let connected = match target.mesh {
            None => tunnel::Upstream::plain(target.address, status::CONNECT_TIMEOUT).await,
            Some(mesh_peer) => {
                let Some(tls) = self.mesh.as_ref().and_then(|mesh| mesh.current()) else {
                    let error =
                        Error::explain(ErrorType::ConnectError, "meshed, and no mesh certificate (--ca-address)");
                    return self.refuse_upgrade(session, ctx, &error, ctx.flags).await;
                };
                let expected = self.expected_peer(forward, mesh_peer);
                let admits = |identity: &str| expected.as_ref().is_some_and(|e| e.admits(identity));
                tunnel::Upstream::mesh(target.address, status::CONNECT_TIMEOUT, Arc::clone(&tls.client_config), admits)
                    .await
            }
        };
        let handshake = match connected {
            Ok(upstream) => tunnel::handshake(upstream, &request, UPGRADE_RESPONSE_TIMEOUT).await,
            Err(error) => Err(error),
        };
        let handshake = match handshake {
            Ok(handshake) => handshake,
            Err(error) => {
                tracing::debug!(%error, upstream = %target.address, "upgrade handshake failed");
                return self.refuse_upgrade(session, ctx, &error.to_proxy_error(), ctx.flags).await;
            }
        };
        let tunnel::Handshake { upstream, mut response, leftover } = handshake;
        headers::prepare_response(&mut response, forward)?;
        for (name, value) in ctx.response_headers.drain(..) {
            response.append_header(name, value)?;
        }
        ctx.status = response.status.as_u16();
        session.set_keepalive(None);
        ctx.clock.tunnel_started();
        if response.status != http::StatusCode::SWITCHING_PROTOCOLS {
            // Relayed raw and closed: whatever the client sent after its
            // request is never read, let alone forwarded.
            let mut client = tunnel::detach(session).await?;
            if let Err(error) =
                tunnel::relay_refusal(&mut client, upstream, &response, &leftover, UPGRADE_RESPONSE_TIMEOUT).await
            {
                tracing::debug!(%error, "relaying a refused upgrade");
                ctx.flags = "DC";
            }
            return Ok(true);
        }
        if let Err(error) = session.write_response_header(Box::new(response), false).await {
            tracing::debug!(%error, "client gone before its 101");
            ctx.flags = "DC";
            return Ok(true);
        }
        // Bytes the client sent right behind its request are already in
        // Pingora's buffer; they belong to the new protocol. Polled once:
        // nothing buffered means nothing to wait for.
        let early = match tokio::time::timeout(Duration::ZERO, session.downstream_session.read_request_body()).await {
            Ok(Ok(Some(bytes))) => bytes.to_vec(),
            _ => Vec::new(),
        };
        // What the websocket carries is read from the client's own path.
        let key = portico_chp::target::activity_key(&destination.host, destination.port);
        let watch = self.activity.as_ref().map(|a| a.websocket(&key, session.req_header().raw_path()));
        // As CHP: the route is active while the websocket is open.
        let open = self.chp.as_ref().and_then(|chp| chp.websocket_open(&forward.route().name));
        let client = tunnel::Client::new(tunnel::detach(session).await?, self.settings.unbuffered_downstream)
            .await
            .map_err(|e| Error::because(ErrorType::InternalError, "taking the upgraded client stream", e))?;
        let websockets = self.metrics.active_websockets.clone();
        tokio::spawn(tunnel::Splice::new(client, upstream, early, leftover, websockets, watch, open));
        Ok(true)
    }

    /// Answers an upgrade that could not reach its endpoint the way
    /// [`status::outcome`] answers any failed request, and closes.
    pub(super) async fn refuse_upgrade(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        error: &Error,
        flags: &'static str,
    ) -> Result<bool> {
        let Outcome { status, flags, body } = status::outcome(error, flags);
        self.respond(session, ctx, LocalResponse::text(status, body, flags), true).await?;
        Ok(true)
    }
}
