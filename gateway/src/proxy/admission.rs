//! `request_filter`'s work: the checks, the routing decision and the
//! policies, split into what every request needs (synchronous) and what
//! only some wait for (an answer to write, a policy to ask, an upgrade to
//! splice).
//!
//! The split is about the future `async_trait` boxes for each call. With
//! the policy path inline, `request_filter`'s future held every await of it
//! (external authorization, JWKS fetches, error pages): 3,112 bytes, past
//! glibc's per-thread cache (1,032 bytes at most), so every request took an
//! arena lock to allocate it and another to free it, the lock the two
//! workers contend on when they share an arena. Now the usual request
//! awaits nothing, and the rest is boxed only when it happens.

use std::sync::Arc;

use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_error::Result;
use pingora_proxy::Session;

use super::{GatewayProxy, RequestContext};
use crate::auth::{Guard, ResponseHeaders, Routed};
use crate::decision::{Decision, Forward, LocalResponse, decide};
use crate::headers;
use crate::state::Snapshot;
use crate::strict_http;

/// What a request still waits for once [`GatewayProxy::screen_request`]
/// has run.
pub(super) enum Pending {
    /// Refused: write this answer and close (its body is never read).
    Refused(LocalResponse),
    /// Unrouted or refused: CHP's error page may replace the answer.
    Page(LocalResponse),
    /// A redirect or direct response, once the policies admit it.
    Local { snapshot: Arc<Snapshot>, response: LocalResponse, host: String, path: String },
    /// Forward, once the policies admit it.
    Admit(Box<Forward>),
    /// Admitted upgrade to splice outside Pingora.
    Splice,
}

impl GatewayProxy {
    /// Everything a request needs before it can be forwarded, without
    /// waiting: `None` when it is admitted and forwarded through Pingora.
    pub(super) fn screen_request(&self, session: &mut Session, ctx: &mut RequestContext) -> Option<Pending> {
        // Only shorten or lengthen a keep-alive the client asked for; a
        // `Connection: close` (keep-alive off) stays off. Where the read
        // clock closes idle connections, Pingora waits untimed (`Some(0)`):
        // its own timeout arms a timer for every request.
        if session.get_keepalive().is_some() {
            let idle = if ctx.clock.closes_idle() { 0 } else { self.settings.idle_timeout_secs };
            session.set_keepalive(Some(idle));
        }
        if let Some(http1) = session.as_downstream().as_http1()
            && let Err(error) = strict_http::check_head(&http1.get_headers_raw_bytes(), self.settings.max_request_head)
        {
            tracing::debug!(%error, "request head refused");
            let body = if error.status() == 431 { "request headers too large\n" } else { "bad request\n" };
            return Some(Pending::Refused(LocalResponse::text(error.status(), body, "DPE")));
        }
        if session.as_downstream().is_http2()
            && headers::h2_head_size(session.req_header()) > self.settings.max_request_head
        {
            return Some(Pending::Refused(LocalResponse::text(431, "request headers too large\n", "DPE")));
        }
        let snapshot = self.state.load();
        // An HTTP/1.x head's headers were checked above, in its one pass.
        let checked = if session.as_downstream().is_http2() {
            strict_http::check_request(session.req_header(), snapshot.normalization)
        } else {
            strict_http::check_target(session.req_header().raw_path(), snapshot.normalization)
        };
        if let Err(error) = checked {
            tracing::debug!(%error, "request refused");
            return Some(Pending::Refused(LocalResponse::text(error.status(), error.body(), "DPE")));
        }
        match decide(snapshot, session.req_header(), self.port, self.scheme) {
            Decision::Respond(response) => Some(Pending::Page(response)),
            Decision::Local { snapshot, response, host, path } => {
                Some(Pending::Local { snapshot, response, host, path })
            }
            Decision::Forward(forward) if Guard::has_policies(&forward.snapshot) => Some(Pending::Admit(forward)),
            Decision::Forward(forward) => {
                // No policy applies: nothing to wait for.
                let routed = Routed::forward(&forward);
                match self.guard.admit_without_policies(session.req_header_mut(), &routed) {
                    Ok(()) => self.forward_admitted(session, ctx, forward, Vec::new()).then_some(Pending::Splice),
                    // A refused request's body is never read: close.
                    Err(response) => Some(Pending::Refused(response)),
                }
            }
        }
    }

    /// The waiting part of `request_filter`: its answer for Pingora (`true`:
    /// answered here).
    pub(super) async fn finish_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        pending: Pending,
    ) -> Result<bool> {
        match pending {
            Pending::Refused(response) => {
                self.respond(session, ctx, response, true).await?;
                Ok(true)
            }
            Pending::Page(response) => {
                let page = self.chp_error_page(session, response.status, response.flags).await;
                let response = page.unwrap_or(response);
                self.respond_closing_on_body(session, ctx, response).await
            }
            Pending::Local { snapshot, response, host, path } => {
                // Redirects and direct responses are authorized like any
                // route (Istio's policies run before its router).
                let client = client_ip(session);
                let routed = Routed { snapshot: &snapshot, host: &host, path: &path, destination_namespace: None };
                let request = session.req_header_mut();
                let admitted = self.guard.admit(request, &routed, &self.resolver, client, self.port, self.scheme).await;
                let response = admitted.map_or_else(|refusal| refusal, |_| response);
                self.respond_closing_on_body(session, ctx, response).await
            }
            Pending::Admit(forward) => {
                let client = client_ip(session);
                let routed = Routed::forward(&forward);
                let request = session.req_header_mut();
                match self.guard.admit(request, &routed, &self.resolver, client, self.port, self.scheme).await {
                    Ok(response_headers) => {
                        if self.forward_admitted(session, ctx, forward, response_headers) {
                            return self.splice_upgrade(session, ctx).await;
                        }
                        Ok(false)
                    }
                    Err(response) => {
                        // A refused request's body is never read: close.
                        self.respond(session, ctx, response, true).await?;
                        Ok(true)
                    }
                }
            }
            Pending::Splice => self.splice_upgrade(session, ctx).await,
        }
    }

    /// An admitted request goes upstream: through Pingora, or spliced
    /// (`true`).
    fn forward_admitted(
        &self,
        session: &Session,
        ctx: &mut RequestContext,
        forward: Box<Forward>,
        response_headers: ResponseHeaders,
    ) -> bool {
        ctx.response_headers = response_headers;
        ctx.forward = Some(forward);
        self.splices(session)
    }

    /// Answers here; bytes of an unread request body must never be parsed
    /// as the next request, so a request with a body (or an error) closes
    /// instead of draining.
    async fn respond_closing_on_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        response: LocalResponse,
    ) -> Result<bool> {
        let close = response.status >= 400 || headers::has_body(session.req_header());
        self.respond(session, ctx, response, close).await?;
        Ok(true)
    }
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session.client_addr().and_then(PingoraAddr::as_inet).map(|a| a.ip())
}
