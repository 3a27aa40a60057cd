//! A destination with no ready endpoint that the controller describes as a
//! notebook: [`crate::waking`] decides (wake, hold, page), this wires it
//! into both request paths (Pingora's and the upgrade splice).

use pingora_proxy::Session;

use super::GatewayProxy;
use crate::decision::LocalResponse;
use crate::state::Snapshot;
use crate::upstream::Target;
use crate::waking::Outcome;

impl GatewayProxy {
    /// `None` when the destination is not a known notebook (the caller
    /// answers 503 as for any destination); otherwise the endpoint that
    /// became ready while the request was held, or the answer to give.
    pub(super) async fn when_unavailable(
        &self,
        session: &Session,
        snapshot: &Snapshot,
        host: &str,
        port: u16,
    ) -> Option<Result<Target, LocalResponse>> {
        let workload = snapshot.matcher.workload(host)?;
        Some(match self.waking.unavailable(session.req_header(), workload, host, port, &self.resolver).await {
            Outcome::Ready(target) => Ok(target),
            Outcome::Respond(answer) => Err(answer),
        })
    }
}
