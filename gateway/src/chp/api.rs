//! CHP's REST API (`--api-ip`:`--api-port`) on Pingora: the requests and
//! answers are `portico_chp::api`'s (the controller's cluster mode answers
//! alike); the routes are the gateway's own [`RouteStore`]. A refused
//! request changes nothing.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode, header};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use portico_chp::RouteError;
use portico_chp::api::{self, ApiRequest, MAX_BODY_BYTES, Refusal};
use serde_json::Value;

use super::store::RouteStore;

/// The API listener's application.
pub struct ChpApi {
    pub routes: Arc<RouteStore>,
    /// `None`: CHP without CONFIGPROXY_AUTH_TOKEN, an unauthenticated API.
    pub token: Option<String>,
}

#[async_trait]
impl ServeHttp for ChpApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        let method = request.method.clone();
        let uri = String::from_utf8_lossy(request.raw_path()).into_owned();
        let parsed =
            ApiRequest::parse(&method, &uri, request.headers.get(header::AUTHORIZATION), self.token.as_deref());
        let response = match parsed {
            Err(refused) => refused.response(),
            Ok(ApiRequest::List { inactive_since_ms }) => {
                api::json(StatusCode::OK, &Value::Object(self.routes.all(inactive_since_ms)))
            }
            Ok(ApiRequest::Get { path }) => match self.routes.get(path) {
                Ok(Some(route)) => api::json(StatusCode::OK, &Value::Object(route)),
                Ok(None) => api::empty(StatusCode::NOT_FOUND),
                Err(error) => bad_request(&error),
            },
            Ok(ApiRequest::Add { path }) => match read_body(session).await.and_then(|body| api::parse_body(&body)) {
                Ok(body) => self.post(path, body),
                Err(refused) => refused.response(),
            },
            Ok(ApiRequest::Delete { path }) => match self.routes.remove(path) {
                Ok(true) => api::empty(StatusCode::NO_CONTENT),
                Ok(false) => api::empty(StatusCode::NOT_FOUND),
                Err(error) => bad_request(&error),
            },
        };
        let path = uri.split('?').next().unwrap_or_default();
        tracing::info!(target: "access", api = true, %method, path, status = response.status().as_u16());
        response
    }
}

impl ChpApi {
    fn post(&self, path: &str, body: Value) -> Response<Vec<u8>> {
        match self.routes.add(path, body) {
            Ok(()) => api::empty(StatusCode::CREATED),
            Err(error) => {
                tracing::warn!(path, %error, "route refused");
                bad_request(&error)
            }
        }
    }
}

/// The request body, or why it is refused.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Refusal> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    session.set_keepalive(None);
                    return Err(api::too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => {
                session.set_keepalive(None);
                return Err(api::unreadable(&error));
            }
        }
    }
}

fn bad_request(error: &RouteError) -> Response<Vec<u8>> {
    api::text(StatusCode::BAD_REQUEST, &error.to_string())
}
