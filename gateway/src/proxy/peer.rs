//! The identity a meshed endpoint must present (checked once connected,
//! by the proxy loop and by the upgrade splice alike).

use super::GatewayProxy;
use crate::decision::Forward;

/// The identity a meshed endpoint must present.
#[derive(Debug)]
pub(super) enum ExpectedPeer {
    /// The pod's SPIFFE ID.
    Exactly(String),
    /// Any workload of a namespace: the `spiffe://td/ns/<ns>/sa/` prefix.
    InNamespace(String),
}

impl ExpectedPeer {
    pub(super) fn admits(&self, identity: &str) -> bool {
        match self {
            ExpectedPeer::Exactly(id) => identity == id,
            ExpectedPeer::InNamespace(prefix) => identity.starts_with(prefix.as_str()),
        }
    }
}

impl std::fmt::Display for ExpectedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedPeer::Exactly(id) => f.write_str(id),
            ExpectedPeer::InNamespace(prefix) => write!(f, "{prefix}*"),
        }
    }
}

impl GatewayProxy {
    /// The identity a meshed endpoint of `forward` must present: the pod's
    /// own service account when the index knows it, else any workload of
    /// the destination's namespace (`<service>.<namespace>.svc...`).
    pub(super) fn expected_peer(
        &self,
        forward: &Forward,
        mesh_peer: crate::upstream::MeshPeer,
    ) -> Option<ExpectedPeer> {
        forward.destination_namespace().map(|namespace| {
            let prefix = format!("spiffe://{}/ns/{namespace}/sa/", self.settings.trust_domain);
            match mesh_peer.service_account {
                Some(service_account) => ExpectedPeer::Exactly(format!("{prefix}{service_account}")),
                None => ExpectedPeer::InNamespace(prefix),
            }
        })
    }
}
