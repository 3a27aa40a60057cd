//! CHP's REST API (`--api-ip`:`--api-port`): `GET`, `POST` and `DELETE`
//! on `/api/routes[/<path>]`, with CHP's status codes.
//!
//! | request | answer |
//! |---|---|
//! | no or wrong `Authorization: token <CONFIGPROXY_AUTH_TOKEN>` | 403 |
//! | `GET /api/routes[?inactive_since=<ISO 8601>]` | 200, `{path: {target, last_activity, ...data}}`; 400 for a bad date |
//! | `GET /api/routes/<path>` | 200 with the route, or 404 |
//! | `POST /api/routes/<path>` `{"target": "http://host:port", ...}` | 201; 400 naming the field and reason |
//! | `DELETE /api/routes/<path>` | 204, or 404 if there was no such route |
//! | another method | 405; another path: 404 |
//!
//! A refused request changes nothing.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode, header};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::Value;

use super::store::{RouteError, RouteStore};
use super::timestamp::parse_ms;

/// Bodies are a target and a few strings; anything this large is not a route.
const MAX_BODY_BYTES: usize = 64 * 1024;
const ROUTES: &str = "/api/routes";

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
        let (path, query) = uri.split_once('?').unwrap_or((uri.as_str(), ""));
        let Some(route_path) = path.strip_prefix(ROUTES).filter(|rest| rest.is_empty() || rest.starts_with('/')) else {
            return reply(StatusCode::NOT_FOUND, "Not Found");
        };
        if ![Method::GET, Method::POST, Method::DELETE].contains(&method) {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "Method not supported");
        }
        if !self.authorized(request.headers.get(header::AUTHORIZATION)) {
            tracing::debug!(%method, path, "API request refused: bad or missing token");
            return empty(StatusCode::FORBIDDEN);
        }
        let response = match method {
            Method::GET => self.get(route_path, query),
            Method::POST => match read_body(session).await {
                Ok(body) => self.post(route_path, &body),
                Err(response) => response,
            },
            _ => self.delete(route_path),
        };
        tracing::info!(target: "access", api = true, %method, path, status = response.status().as_u16());
        response
    }
}

impl ChpApi {
    /// CHP's rule: `token <value>` anywhere in the header.
    fn authorized(&self, header: Option<&http::HeaderValue>) -> bool {
        let Some(expected) = &self.token else { return true };
        let given = header
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once("token"))
            .filter(|(_, rest)| rest.starts_with(char::is_whitespace))
            .and_then(|(_, rest)| rest.split_whitespace().next());
        given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()))
    }

    fn get(&self, route_path: &str, query: &str) -> Response<Vec<u8>> {
        if !route_path.is_empty() && route_path != "/" {
            return match self.routes.get(route_path) {
                Ok(Some(route)) => json(StatusCode::OK, &Value::Object(route)),
                Ok(None) => empty(StatusCode::NOT_FOUND),
                Err(error) => bad_request(&error),
            };
        }
        let since = query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            ["inactive_since", "inactiveSince"].contains(&name).then_some(value)
        });
        let since = match since {
            None => None,
            Some(raw) => match super::route_path::percent_decode(raw).as_deref().and_then(parse_ms) {
                Some(ms) => Some(ms),
                None => return reply(StatusCode::BAD_REQUEST, &format!("Invalid datestamp '{raw}' must be ISO8601.")),
            },
        };
        json(StatusCode::OK, &Value::Object(self.routes.all(since)))
    }

    fn post(&self, route_path: &str, body: &[u8]) -> Response<Vec<u8>> {
        let body = match serde_json::from_slice::<Value>(body) {
            // CHP: `JSON.parse(body) || {}`.
            Ok(Value::Null) => Value::Object(Default::default()),
            Ok(value) => value,
            Err(error) => return reply(StatusCode::BAD_REQUEST, &format!("Body not valid JSON: {error}")),
        };
        let path = if route_path.is_empty() { "/" } else { route_path };
        match self.routes.add(path, body) {
            Ok(()) => empty(StatusCode::CREATED),
            Err(error) => {
                tracing::warn!(path, %error, "route refused");
                bad_request(&error)
            }
        }
    }

    fn delete(&self, route_path: &str) -> Response<Vec<u8>> {
        let path = if route_path.is_empty() { "/" } else { route_path };
        match self.routes.remove(path) {
            Ok(true) => empty(StatusCode::NO_CONTENT),
            Ok(false) => empty(StatusCode::NOT_FOUND),
            Err(error) => bad_request(&error),
        }
    }
}

/// The request body, or the response refusing it.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    session.set_keepalive(None);
                    return Err(reply(StatusCode::PAYLOAD_TOO_LARGE, "body: larger than 64 KiB"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => {
                session.set_keepalive(None);
                return Err(reply(StatusCode::BAD_REQUEST, &format!("body: {error}")));
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bad_request(error: &RouteError) -> Response<Vec<u8>> {
    reply(StatusCode::BAD_REQUEST, &error.to_string())
}

fn json(status: StatusCode, value: &Value) -> Response<Vec<u8>> {
    build(status, Some("application/json"), serde_json::to_vec(value).unwrap_or_default())
}

fn reply(status: StatusCode, text: &str) -> Response<Vec<u8>> {
    build(status, Some("text/plain; charset=utf-8"), text.as_bytes().to_vec())
}

fn empty(status: StatusCode) -> Response<Vec<u8>> {
    build(status, None, Vec::new())
}

fn build(status: StatusCode, content_type: Option<&str>, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(value) = content_type.and_then(|c| header::HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    let length = response.body().len();
    response.headers_mut().insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    response
}
