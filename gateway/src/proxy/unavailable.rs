//! Reaching a request's destination, for both request paths (Pingora's and
//! the upgrade splice): its endpoint, or, for a destination the controller
//! describes as a notebook that is not ready, what [`crate::waking`]
//! decides (wake, hold, page).

use pingora_proxy::Session;

use super::GatewayProxy;
use crate::decision::LocalResponse;
use crate::state::Snapshot;
use crate::upstream::{ResolveError, Target};
use crate::waking::Outcome;

/// Where a request's destination stands.
pub(super) enum Reach {
    /// An endpoint, at once or once the notebook was ready (held).
    Endpoint(Target),
    /// A notebook that is not ready: answer with this (a page, its status,
    /// 503 with `Retry-After`) instead of forwarding.
    Answer(LocalResponse, ResolveError),
    /// No endpoint, and not a notebook: a plain 503 as for any destination.
    Unreachable(ResolveError),
}

impl GatewayProxy {
    /// The endpoint of `host:port` in `snapshot`, or what to do without one.
    pub(super) async fn reach(&self, session: &Session, snapshot: &Snapshot, host: &str, port: u16) -> Reach {
        let error = match self.resolver.resolve(&snapshot.matcher, host, port).await {
            Ok(target) => return Reach::Endpoint(target),
            Err(error) => error,
        };
        let Some(workload) = snapshot.matcher.workload(host) else { return Reach::Unreachable(error) };
        match self.waking.unavailable(session.req_header(), workload, host, port, &self.resolver).await {
            Outcome::Ready(target) => Reach::Endpoint(target),
            Outcome::Respond(answer) => Reach::Answer(answer, error),
        }
    }
}
