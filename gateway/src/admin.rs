//! Admin, health and metrics endpoints on Istio's ports (15000, 15021, 15090).

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode, header};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use portico_routing::proxy_config;
use serde_json::json;

use crate::activity::ActivityRegistry;
use crate::metrics::Metrics;
use crate::state::RouteState;

/// `127.0.0.1:15000`: `/config_dump`, `/routes`, `/ready`, `/activity`.
pub struct AdminApp {
    pub state: Arc<RouteState>,
    pub activity: Arc<ActivityRegistry>,
}

/// `:15021`: `/healthz/ready`.
pub struct HealthApp {
    pub state: Arc<RouteState>,
}

/// `:15090`: `/stats/prometheus`.
pub struct MetricsApp {
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let snapshot = self.state.load();
        match path.as_str() {
            "/config_dump" => {
                let table = snapshot.matcher.to_table().redacted();
                let applied_at =
                    snapshot.applied_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
                let dump = json!({
                    "version": snapshot.version(),
                    "ready": self.state.is_ready(),
                    "applied_at_unix": applied_at,
                    "route_count": table.route_count(),
                    "diagnostics": snapshot.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "table": table,
                });
                let body = serde_json::to_vec_pretty(&dump).unwrap_or_default();
                reply(StatusCode::OK, "application/json", body)
            }
            "/routes" => {
                let rows = proxy_config::route_rows(&snapshot.matcher.to_table());
                reply(StatusCode::OK, "text/plain; charset=utf-8", proxy_config::format_rows(&rows).into_bytes())
            }
            "/routes/json" => {
                let rows = proxy_config::route_rows(&snapshot.matcher.to_table());
                reply(StatusCode::OK, "application/json", serde_json::to_vec(&rows).unwrap_or_default())
            }
            "/ready" => ready(self.state.is_ready()),
            "/activity" => {
                // Every destination seen: a busy kernel's reads as active now.
                let dump = json!({ "now_unix_ms": crate::activity::now_ms(), "destinations": self.activity.states() });
                reply(StatusCode::OK, "application/json", serde_json::to_vec_pretty(&dump).unwrap_or_default())
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"endpoints: /config_dump /routes /routes/json /ready /activity\n".to_vec(),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for HealthApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz/ready" => ready(self.state.is_ready()),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", Vec::new()),
        }
    }
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/stats/prometheus" | "/metrics" => {
                reply(StatusCode::OK, "text/plain; version=0.0.4", self.metrics.render())
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", Vec::new()),
        }
    }
}

fn ready(ready: bool) -> Response<Vec<u8>> {
    if ready {
        reply(StatusCode::OK, "text/plain", b"LIVE\n".to_vec())
    } else {
        reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", b"no configuration applied yet\n".to_vec())
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    let length = response.body().len();
    response.headers_mut().insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    response
}
