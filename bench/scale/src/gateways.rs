//! The gateway side: clients that stream from the discovery server as a
//! gateway does and apply each response to their own route matcher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use portico_api::discovery::route_discovery_client::RouteDiscoveryClient;
use portico_api::discovery::{DeltaRequest, DeltaResponse, Kind, Node, Resource};
use portico_routing::parts::{ListenerPart, Placed, TableDelta, VirtualHostPart};
use portico_routing::table::{Cluster, Route};
use portico_routing::{Matcher, RouteTable};
use prost::Message;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// What one client has: its matcher and when each watched route arrived.
struct Client {
    matcher: Matcher,
    /// Churn route name -> (present, when that became so).
    seen: HashMap<String, (bool, Instant)>,
}

/// Many gateway clients.
pub struct Fleet {
    clients: Vec<Arc<Mutex<Client>>>,
    updated: Arc<Notify>,
    bytes: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn lock(client: &Mutex<Client>) -> MutexGuard<'_, Client> {
    client.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Fleet {
    /// Connects `count` clients to `url`, each as its own gateway replica,
    /// one after the other once the previous holds `routes` routes (50
    /// full states decoded at once would measure the allocator's peak, not
    /// what a gateway holds).
    pub async fn connect(url: String, count: usize, routes: usize) -> anyhow::Result<Fleet> {
        let updated = Arc::new(Notify::new());
        let bytes = Arc::new(AtomicU64::new(0));
        let mut fleet =
            Fleet { clients: Vec::new(), updated: updated.clone(), bytes: bytes.clone(), tasks: Vec::new() };
        for index in 0..count {
            let client =
                Arc::new(Mutex::new(Client { matcher: Matcher::new(RouteTable::default()), seen: HashMap::new() }));
            let mut discovery = RouteDiscoveryClient::connect(url.clone())
                .await
                .with_context(|| format!("connecting gateway {index} to {url}"))?
                .max_decoding_message_size(1 << 30);
            let (requests, outgoing) = mpsc::channel(4);
            let node = Node {
                name: format!("gateway-{index}"),
                namespace: "istio-system".to_string(),
                labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
                ..Node::default()
            };
            requests.send(DeltaRequest { node: Some(node), ..DeltaRequest::default() }).await?;
            let mut responses = discovery.stream_routes(ReceiverStream::new(outgoing)).await?.into_inner();
            let (state, updated, bytes) = (client.clone(), updated.clone(), bytes.clone());
            fleet.tasks.push(tokio::spawn(async move {
                while let Ok(Some(response)) = responses.message().await {
                    bytes.fetch_add(response.encoded_len() as u64, Ordering::Relaxed);
                    apply(&mut lock(&state), &response);
                    updated.notify_waiters();
                    let ack = DeltaRequest { response_nonce: response.nonce.clone(), ..DeltaRequest::default() };
                    if requests.send(ack).await.is_err() {
                        return;
                    }
                }
            }));
            fleet.clients.push(client);
            fleet.wait_routes(routes, Duration::from_secs(600)).await?;
        }
        Ok(fleet)
    }

    /// Bytes of every response received so far.
    pub fn bytes_received(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Waits until every client holds at least `routes` routes.
    pub async fn wait_routes(&self, routes: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.updated.notified();
            if self.clients.iter().all(|c| lock(c).matcher.route_count() >= routes) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "gateways did not reach {routes} routes in {limit:?}");
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Waits until every client has route `name` (or no longer has it);
    /// returns when the last one got there.
    pub async fn wait_change(&self, name: &str, present: bool, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.updated.notified();
            let reached: Option<Vec<Instant>> = self
                .clients
                .iter()
                .map(|c| lock(c).seen.get(name).filter(|(now, _)| *now == present).map(|(_, at)| *at))
                .collect();
            if let Some(times) = reached {
                return times.into_iter().max().context("no gateways");
            }
            anyhow::ensure!(Instant::now() < deadline, "route {name} did not reach every gateway in {limit:?}");
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Decodes `response` (as the gateway's receiver does) and applies it.
fn apply(client: &mut Client, response: &DeltaResponse) {
    let now = Instant::now();
    let mut delta = TableDelta::default();
    if response.full_state {
        client.matcher = Matcher::new(RouteTable::default());
    }
    for kind_delta in &response.kinds {
        let kind = Kind::try_from(kind_delta.kind).unwrap_or(Kind::Unspecified);
        for resource in &kind_delta.resources {
            decode_into(&mut delta, resource);
            if resource.name.contains("-churn") {
                client.seen.insert(resource.name.clone(), (true, now));
            }
        }
        for name in &kind_delta.removed {
            match kind {
                Kind::Listeners => {
                    delta.listeners.insert(name.clone(), None);
                }
                Kind::Routes if client.matcher.has_virtual_host(name) => {
                    delta.virtual_hosts.insert(name.clone(), None);
                }
                Kind::Routes => {
                    delta.routes.insert(name.clone(), None);
                }
                Kind::Endpoints => {
                    delta.clusters.insert(name.clone(), None);
                }
                Kind::Workloads => {
                    delta.workloads.insert(name.clone(), None);
                }
                Kind::Unspecified => {}
            }
            if name.contains("-churn") {
                client.seen.insert(name.clone(), (false, now));
            }
        }
    }
    client.matcher.set_version(response.version.clone());
    let errors = client.matcher.apply(&delta);
    if !errors.is_empty() {
        eprintln!("scale: a gateway rejected {} pieces, e.g. {}", errors.len(), errors[0]);
    }
}

fn placed<T>(resource: &Resource, value: T) -> Placed<T> {
    Placed { parent: resource.parent.clone(), order: resource.order.clone(), value }
}

fn decode_into(delta: &mut TableDelta, resource: &Resource) {
    let name = resource.name.clone();
    let decoded = match resource.r#type.as_str() {
        "listener" => serde_json::from_slice::<ListenerPart>(&resource.body).map(|v| {
            delta.listeners.insert(name, Some(placed(resource, v)));
        }),
        "vhost" => serde_json::from_slice::<VirtualHostPart>(&resource.body).map(|v| {
            delta.virtual_hosts.insert(name, Some(placed(resource, v)));
        }),
        "route" => serde_json::from_slice::<Route>(&resource.body).map(|v| {
            delta.routes.insert(name, Some(placed(resource, Arc::new(v))));
        }),
        "workload" => serde_json::from_slice::<portico_routing::WorkloadState>(&resource.body).map(|v| {
            delta.workloads.insert(name, Some(Arc::new(v)));
        }),
        "cluster" => serde_json::from_slice::<Cluster>(&resource.body).map(|v| {
            delta.clusters.insert(name, Some(Arc::new(v)));
        }),
        _ => Ok(()),
    };
    if let Err(error) = decoded {
        eprintln!("scale: cannot decode {}: {error}", resource.name);
    }
}
