//! The metrics/admin listener (`--metrics`, Istio's 15014):
//!
//! * `/metrics`: Prometheus text format;
//! * `/healthz`: 200 while the process serves at all;
//! * `/readyz`: 200 once the first list of Notebooks has completed and the
//!   route index has published its first snapshot, 503 before;
//! * `/debug/snapshot`: the latest route snapshot's summary as JSON
//!   (version, route counts, diagnostics).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use portico_api::notebook::Notebook;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::lifecycle::activity::ActivityBook;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// What the listener reads.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Metrics,
    pub notebooks: Store<Notebook>,
    /// Set once the Notebook cache has completed its first list.
    pub notebooks_listed: Arc<AtomicBool>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// What the gateways reported (`/debug/activity`).
    pub activity: Arc<ActivityBook>,
}

impl AdminState {
    /// Ready: Notebooks listed and a first route snapshot published.
    pub fn ready(&self) -> bool {
        self.notebooks_listed.load(Ordering::Acquire) && self.snapshots.borrow().version > 0
    }

    /// `notebook_running`, refreshed from the Notebook cache at scrape time
    /// (Kubeflow's collector counts at scrape time too).
    fn refresh_running(&self) {
        let mut running: BTreeMap<String, i64> = BTreeMap::new();
        for notebook in self.notebooks.state() {
            if notebook.status.as_ref().is_some_and(|status| status.ready_replicas > 0) {
                *running.entry(notebook.namespace().unwrap_or_default()).or_default() += 1;
            }
        }
        self.metrics.set_running(&running);
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: AdminState) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting an admin connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &request)) }
            });
            if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

fn respond(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_string());
    }
    match request.uri().path() {
        "/metrics" => {
            state.refresh_running();
            match state.metrics.encode() {
                Ok(body) => with_type(StatusCode::OK, "text/plain; version=0.0.4", body),
                Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {error}\n")),
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n".to_string()),
        "/readyz" if state.ready() => text(StatusCode::OK, "ok\n".to_string()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: caches are filling\n".to_string()),
        "/debug/snapshot" => {
            let summary = state.snapshots.borrow().summary();
            let body = serde_json::to_string_pretty(&summary).unwrap_or_else(|_| summary.to_string());
            with_type(StatusCode::OK, "application/json", body + "\n")
        }
        "/debug/activity" => {
            let body = serde_json::to_string_pretty(&state.activity.to_json()).unwrap_or_default();
            with_type(StatusCode::OK, "application/json", body + "\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz, /debug/snapshot, /debug/activity\n".to_string(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector;
    use portico_routing::GatewayIdentity;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::snapshot::{GatewayRoutes, Publisher, Snapshot, TableCounts};

    async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn serves_health_readiness_metrics_and_the_snapshot() {
        let (notebooks, _writer) = reflector::store::<Notebook>();
        let (publisher, snapshots) = Publisher::new();
        let listed = Arc::new(AtomicBool::new(false));
        let state = AdminState {
            metrics: Metrics::new().unwrap(),
            notebooks,
            notebooks_listed: listed.clone(),
            snapshots,
            activity: Default::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, state));

        assert_eq!(get(address, "/healthz").await.0, 200);
        assert_eq!(get(address, "/readyz").await.0, 503, "nothing listed yet");
        listed.store(true, Ordering::Release);
        assert_eq!(get(address, "/readyz").await.0, 503, "no snapshot yet");
        publisher.publish(Snapshot {
            version: 1,
            gateways: vec![GatewayRoutes {
                identity: GatewayIdentity::default(),
                counts: TableCounts::default(),
                diagnostics: Vec::new().into(),
            }],
        });
        assert_eq!(get(address, "/readyz").await.0, 200);

        let (status, body) = get(address, "/debug/snapshot").await;
        assert_eq!(status, 200);
        let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((summary["version"].as_u64(), summary["routes"].as_u64()), (Some(1), Some(0)));
        let (status, body) = get(address, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("portico_controller_leader"), "{body}");
        assert_eq!(get(address, "/nope").await.0, 404);
        server.abort();
    }
}
