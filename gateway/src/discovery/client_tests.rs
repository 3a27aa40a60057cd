//! The activity reports of [`super::DiscoveryClient`], against a real gRPC
//! server that plays the controller's part of the stream: one full state,
//! then it records every request the gateway sends.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use portico_api::discovery::route_discovery_server::{RouteDiscovery, RouteDiscoveryServer};
use portico_api::discovery::{DeltaRequest, DeltaResponse, Node, ProxyStatusRequest, ProxyStatusResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::DiscoveryClient;
use crate::activity::ActivityRegistry;

/// Sends each stream one (empty) full state and forwards what the gateway
/// sends to `requests`.
struct Controller {
    requests: mpsc::UnboundedSender<DeltaRequest>,
}

#[tonic::async_trait]
impl RouteDiscovery for Controller {
    type StreamRoutesStream = Pin<Box<dyn Stream<Item = Result<DeltaResponse, Status>> + Send>>;

    async fn stream_routes(
        &self,
        request: Request<Streaming<DeltaRequest>>,
    ) -> Result<Response<Self::StreamRoutesStream>, Status> {
        let mut incoming = request.into_inner();
        let requests = self.requests.clone();
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            let first =
                DeltaResponse { version: "1".into(), nonce: "1".into(), full_state: true, ..Default::default() };
            let _ = sender.send(Ok(first)).await;
            while let Some(Ok(request)) = incoming.next().await {
                let _ = requests.send(request);
            }
            drop(sender);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn proxy_status(&self, _: Request<ProxyStatusRequest>) -> Result<Response<ProxyStatusResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// The next request that carries activity (ACKs and the hello are skipped).
async fn next_report(requests: &mut mpsc::UnboundedReceiver<DeltaRequest>) -> DeltaRequest {
    loop {
        let request = tokio::time::timeout(Duration::from_secs(10), requests.recv())
            .await
            .expect("a report within 10 s")
            .expect("the stream is open");
        if !request.activity.is_empty() {
            return request;
        }
    }
}

#[tokio::test]
async fn reports_changes_busy_kernels_and_everything_on_a_new_stream() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (sender, mut requests) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RouteDiscoveryServer::new(Controller { requests: sender }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let registry = Arc::new(ActivityRegistry::default());
    registry.destination("a.team.svc.cluster.local").touch();
    registry.destination("b.team.svc.cluster.local").touch();
    let node = Node { name: "gw".into(), ..Node::default() };
    let client = Arc::new(
        DiscoveryClient::new(format!("http://{address}"), node)
            .reporting(Arc::clone(&registry), Duration::from_millis(200)),
    );
    let stream = tokio::spawn({
        let client = Arc::clone(&client);
        async move { client.stream_once().await }
    });

    let first = next_report(&mut requests).await;
    assert!(first.response_nonce.is_empty(), "a report is a request of its own");
    let hosts: Vec<&str> = first.activity.iter().map(|a| a.host.as_str()).collect();
    assert_eq!(hosts, ["a.team.svc.cluster.local", "b.team.svc.cluster.local"]);
    assert!(first.activity.iter().all(|a| a.last_activity_unix_ms > 0));

    // Only what changed is sent next.
    registry.request_done(
        "b.team.svc.cluster.local",
        80,
        &http::Method::POST,
        b"/api/sessions",
        &http::HeaderMap::new(),
        201,
    );
    let changed = next_report(&mut requests).await;
    let hosts: Vec<&str> = changed.activity.iter().map(|a| a.host.as_str()).collect();
    assert_eq!(hosts, ["b.team.svc.cluster.local"]);

    // A busy kernel is reported every time, as active now.
    let mut kernel = registry.websocket("a.team.svc.cluster.local", b"/api/kernels/k/channels");
    let status = br#"{"header":{"msg_type":"status"},"parent_header":{"msg_type":"execute_request"},"content":{"execution_state":"busy"}}"#;
    let mut frame = vec![0x81, 126];
    frame.extend_from_slice(&(status.len() as u16).to_be_bytes());
    frame.extend_from_slice(status);
    kernel.server_sent(&frame);
    for _ in 0..2 {
        let report = next_report(&mut requests).await;
        let a = report.activity.iter().find(|a| a.host == "a.team.svc.cluster.local").expect("the busy destination");
        assert_eq!((a.busy_kernels, a.kernel_websockets), (1, 1));
        assert!(a.last_activity_unix_ms >= crate::activity::now_ms() - 1000, "busy reads as now");
    }

    // A new stream gets everything once.
    stream.abort();
    drop(kernel);
    while requests.try_recv().is_ok() {}
    let client2 = Arc::clone(&client);
    tokio::spawn(async move { client2.stream_once().await });
    let everything = next_report(&mut requests).await;
    assert_eq!(everything.activity.len(), 2, "{everything:?}");
}
