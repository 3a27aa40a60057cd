//! Where a destination `host:port` is: EndpointSlice addresses from the
//! route table first, then `--resolve` overrides, then DNS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use portico_routing::Matcher;
use portico_routing::table::{WeightedDestination, cluster_name};

/// How long a DNS answer is reused.
const DNS_TTL: Duration = Duration::from_secs(5);

/// Why a destination has no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0} has no ready endpoints")]
    NoEndpoints(String),
    #[error("{host} does not resolve: {reason}")]
    Dns { host: String, reason: String },
}

/// Resolves destinations; cheap to share across threads.
/// Where to connect for a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub address: SocketAddr,
    /// Set for a pod with a sidecar: connect with mutual TLS.
    pub mesh: Option<MeshPeer>,
}

/// What a meshed endpoint must prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshPeer {
    /// The pod's service account, when known; otherwise any of the
    /// destination's namespace will do.
    pub service_account: Option<String>,
}

pub struct Resolver {
    overrides: HashMap<String, SocketAddr>,
    dns_cache: Mutex<HashMap<String, (Instant, Vec<SocketAddr>)>>,
}

impl Resolver {
    /// `overrides` are keyed by lower-case `host:port`.
    pub fn new(overrides: impl IntoIterator<Item = (String, SocketAddr)>) -> Self {
        Self { overrides: overrides.into_iter().collect(), dns_cache: Mutex::new(HashMap::new()) }
    }

    /// One address for `host:port`, spreading requests over endpoints, and
    /// whether it is a meshed pod (reached with mutual TLS).
    /// `matcher` holds the clusters (endpoints) of the snapshot in use.
    pub async fn resolve(&self, matcher: &Matcher, host: &str, port: u16) -> Result<Target, ResolveError> {
        let mut key = ClusterKey::default();
        let name = key.write(host, port);
        if let Some(cluster) = matcher.cluster(name) {
            if cluster.endpoints.is_empty() {
                return Err(ResolveError::NoEndpoints(name.to_string()));
            }
            let endpoint = &cluster.endpoints[self.next() % cluster.endpoints.len()];
            let address = SocketAddr::new(endpoint.address, endpoint.port);
            let mesh = (cluster.mesh_tls && !endpoint.plain)
                .then(|| MeshPeer { service_account: endpoint.service_account.clone() });
            return Ok(Target { address, mesh });
        }
        if let Some(address) = self.overrides.get(name) {
            return Ok(Target { address: *address, mesh: None });
        }
        // A notebook the controller describes is reached through its
        // endpoints only: no slice yet means no endpoint, not a name to look
        // up (a lookup of a cluster name outside the cluster can take the
        // resolver's whole timeout, seconds, while its user waits).
        if matcher.workload(host).is_some() {
            return Err(ResolveError::NoEndpoints(name.to_string()));
        }
        let addresses = self.lookup(host, port).await?;
        Ok(Target { address: addresses[self.next() % addresses.len()], mesh: None })
    }

    /// The next endpoint's turn. Round robin per worker thread, as Envoy's
    /// is per worker: one shared cursor would be a cache line both workers
    /// write on every request (see `lanes`).
    fn next(&self) -> usize {
        thread_local! {
            static CURSOR: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        CURSOR.with(|cursor| {
            let turn = cursor.get();
            cursor.set(turn.wrapping_add(1));
            turn
        })
    }

    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let key = cluster_name(host, port);
        if let Some((at, addresses)) = self.dns_cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < DNS_TTL
        {
            return Ok(addresses.clone());
        }
        let dns_error = |reason: String| ResolveError::Dns { host: host.to_string(), reason };
        let addresses: Vec<SocketAddr> =
            tokio::net::lookup_host((host, port)).await.map_err(|e| dns_error(e.to_string()))?.collect();
        if addresses.is_empty() {
            return Err(dns_error("no addresses".to_string()));
        }
        self.dns_cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (Instant::now(), addresses.clone()));
        Ok(addresses)
    }
}

/// Longest `host:port` written on the stack; longer names (DNS allows 253
/// bytes) are formatted on the heap.
const CLUSTER_KEY_INLINE: usize = 128;

/// A cluster's `host:port` name ([`cluster_name`]) built without
/// allocating: it is looked up on every proxied request.
struct ClusterKey {
    inline: [u8; CLUSTER_KEY_INLINE],
    heap: String,
}

impl Default for ClusterKey {
    fn default() -> Self {
        Self { inline: [0; CLUSTER_KEY_INLINE], heap: String::new() }
    }
}

impl ClusterKey {
    fn write(&mut self, host: &str, port: u16) -> &str {
        let mut digits = [0; 20];
        let text = crate::decimal::digits(u64::from(port), &mut digits);
        let len = host.len() + 1 + text.len();
        if len > CLUSTER_KEY_INLINE {
            self.heap = cluster_name(host, port);
            return &self.heap;
        }
        self.inline[..host.len()].copy_from_slice(host.as_bytes());
        self.inline[host.len()] = b':';
        self.inline[host.len() + 1..len].copy_from_slice(text);
        // ASCII digits and a colon after a &str: always UTF-8.
        std::str::from_utf8(&self.inline[..len]).unwrap_or_default()
    }
}

/// Picks a destination index by weight with `random` in `0..u32::MAX`.
pub fn pick_weighted(destinations: &[WeightedDestination], random: u32) -> usize {
    if destinations.len() <= 1 {
        return 0;
    }
    let total: u64 = destinations.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return 0;
    }
    let mut point = u64::from(random) % total;
    for (index, destination) in destinations.iter().enumerate() {
        let weight = u64::from(destination.weight);
        if point < weight {
            return index;
        }
        point -= weight;
    }
    destinations.len() - 1
}

/// A fast, non-cryptographic random number for traffic splitting.
pub fn random_u32() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0x9e37_79b9, |d| d.as_nanos() as u64) | 1
        );
    }
    STATE.with(|state| {
        // xorshift64*
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(weight: u32) -> WeightedDestination {
        WeightedDestination {
            host: "h".into(),
            port: 80,
            weight,
            request_headers: Default::default(),
            response_headers: Default::default(),
        }
    }

    #[test]
    fn splits_by_weight() {
        let destinations = [destination(90), destination(10)];
        let mut counts = [0u32; 2];
        for _ in 0..10_000 {
            counts[pick_weighted(&destinations, random_u32())] += 1;
        }
        assert!((8_500..9_500).contains(&counts[0]), "{counts:?}");
        assert_eq!(pick_weighted(&[destination(0), destination(5)], 3), 1);
    }

    #[test]
    fn cluster_keys_are_cluster_names() {
        let mut key = ClusterKey::default();
        for (host, port) in [("nb.ns.svc.cluster.local", 80), ("h", 0), ("h", 65535), ("a".repeat(200).as_str(), 8080)]
        {
            assert_eq!(key.write(host, port), cluster_name(host, port));
        }
    }

    #[tokio::test]
    async fn prefers_endpoints_then_overrides() {
        let resolver = Resolver::new([("nb.ns.svc.cluster.local:80".to_string(), "127.0.0.1:8888".parse().unwrap())]);
        let mut matcher = Matcher::default();
        let address = resolver.resolve(&matcher, "nb.ns.svc.cluster.local", 80).await.unwrap();
        assert_eq!(address, Target { address: "127.0.0.1:8888".parse().unwrap(), mesh: None });
        matcher.upsert_cluster("nb.ns.svc.cluster.local:80", Default::default());
        assert!(matches!(
            resolver.resolve(&matcher, "nb.ns.svc.cluster.local", 80).await,
            Err(ResolveError::NoEndpoints(_))
        ));
    }
}
