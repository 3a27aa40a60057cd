//! CHP's REST API, apart from where routes live: which request a method and
//! URL are, the token check, the body, and the answers with CHP's status
//! codes. The gateway alone (Pingora) and the controller in cluster mode
//! (hyper) both answer through this, so they answer alike.
//!
//! | request | answer |
//! |---|---|
//! | no or wrong `Authorization: token <CONFIGPROXY_AUTH_TOKEN>` | 403 |
//! | `GET /api/routes[?inactive_since=<ISO 8601>]` | 200, `{path: {target, last_activity, ...data}}`; 400 for a bad date |
//! | `GET /api/routes/<path>` | 200 with the route, or 404 |
//! | `POST /api/routes/<path>` `{"target": "http://host:port", ...}` | 201; 400 naming the field and reason |
//! | `DELETE /api/routes/<path>` | 204, or 404 if there was no such route |
//! | another method | 405; another path: 404 |

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::Value;

use crate::route_path::percent_decode;
use crate::timestamp::parse_ms;

/// Bodies are a target and a few strings; anything this large is not a route.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const ROUTES: &str = "/api/routes";

/// A request refused before it reached the routes: the status and the
/// sentence CHP answers with (empty: no body).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {message}")]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: &str) -> Self {
        Self { status, message: message.to_string() }
    }

    /// The answer.
    pub fn response(&self) -> Response<Vec<u8>> {
        if self.message.is_empty() { empty(self.status) } else { text(self.status, &self.message) }
    }
}

/// One API request, authorized. Paths are the part after `/api/routes`.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiRequest<'a> {
    /// `GET /api/routes`: routes idle since before the time, or all.
    List {
        inactive_since_ms: Option<i64>,
    },
    Get {
        path: &'a str,
    },
    /// `POST`: the body is read next ([`parse_body`]).
    Add {
        path: &'a str,
    },
    Delete {
        path: &'a str,
    },
}

impl<'a> ApiRequest<'a> {
    /// The request `method uri` carries, or the answer refusing it.
    /// `token`: `None` is CHP without CONFIGPROXY_AUTH_TOKEN, an open API.
    pub fn parse(
        method: &Method,
        uri: &'a str,
        authorization: Option<&HeaderValue>,
        token: Option<&str>,
    ) -> Result<ApiRequest<'a>, Refusal> {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let Some(route_path) = path.strip_prefix(ROUTES).filter(|rest| rest.is_empty() || rest.starts_with('/')) else {
            return Err(Refusal::new(StatusCode::NOT_FOUND, "Not Found"));
        };
        if ![Method::GET, Method::POST, Method::DELETE].contains(method) {
            return Err(Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "Method not supported"));
        }
        if !authorized(authorization, token) {
            return Err(Refusal::new(StatusCode::FORBIDDEN, ""));
        }
        let whole = if route_path.is_empty() { "/" } else { route_path };
        Ok(match *method {
            Method::POST => ApiRequest::Add { path: whole },
            Method::DELETE => ApiRequest::Delete { path: whole },
            _ if whole != "/" => ApiRequest::Get { path: route_path },
            _ => ApiRequest::List { inactive_since_ms: inactive_since(query)? },
        })
    }
}

/// `?inactive_since=` (or CHP's older `inactiveSince`), parsed.
fn inactive_since(query: &str) -> Result<Option<i64>, Refusal> {
    let raw = query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        ["inactive_since", "inactiveSince"].contains(&name).then_some(value)
    });
    match raw {
        None => Ok(None),
        Some(raw) => match percent_decode(raw).as_deref().and_then(parse_ms) {
            Some(ms) => Ok(Some(ms)),
            None => Err(Refusal::new(StatusCode::BAD_REQUEST, &format!("Invalid datestamp '{raw}' must be ISO8601."))),
        },
    }
}

/// CHP's rule: `token <value>` anywhere in the header, compared in
/// constant time.
pub fn authorized(header: Option<&HeaderValue>, expected: Option<&str>) -> bool {
    let Some(expected) = expected else { return true };
    let given = header
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once("token"))
        .filter(|(_, rest)| rest.starts_with(char::is_whitespace))
        .and_then(|(_, rest)| rest.split_whitespace().next());
    given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()))
}

/// A POST body as JSON (CHP: `JSON.parse(body) || {}`), or the 400.
pub fn parse_body(body: &[u8]) -> Result<Value, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Null) => Ok(Value::Object(Default::default())),
        Ok(value) => Ok(value),
        Err(error) => Err(Refusal::new(StatusCode::BAD_REQUEST, &format!("Body not valid JSON: {error}"))),
    }
}

/// A body over [`MAX_BODY_BYTES`].
pub fn too_large() -> Refusal {
    Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "body: larger than 64 KiB")
}

/// A body that could not be read.
pub fn unreadable(error: &dyn std::fmt::Display) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, &format!("body: {error}"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &Value) -> Response<Vec<u8>> {
    build(status, Some("application/json"), serde_json::to_vec(value).unwrap_or_default())
}

/// A plain-text answer (CHP's 400s name the field and the reason).
pub fn text(status: StatusCode, text: &str) -> Response<Vec<u8>> {
    build(status, Some("text/plain; charset=utf-8"), text.as_bytes().to_vec())
}

/// An answer with no body (201, 204, 403, 404).
pub fn empty(status: StatusCode) -> Response<Vec<u8>> {
    build(status, None, Vec::new())
}

fn build(status: StatusCode, content_type: Option<&'static str>, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    let length = response.body().len();
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'a>(method: Method, uri: &'a str, auth: Option<&str>) -> Result<ApiRequest<'a>, StatusCode> {
        let header = auth.map(|a| HeaderValue::from_str(a).unwrap());
        ApiRequest::parse(&method, uri, header.as_ref(), Some("secret")).map_err(|r| r.status)
    }

    #[test]
    fn requests_are_told_apart_like_chp_does() {
        let auth = Some("token secret");
        assert_eq!(parse(Method::GET, "/api/routes", auth), Ok(ApiRequest::List { inactive_since_ms: None }));
        assert_eq!(parse(Method::GET, "/api/routes/", auth), Ok(ApiRequest::List { inactive_since_ms: None }));
        assert_eq!(
            parse(Method::GET, "/api/routes?inactive_since=1970-01-01T00:00:01Z", auth),
            Ok(ApiRequest::List { inactive_since_ms: Some(1000) })
        );
        assert_eq!(parse(Method::GET, "/api/routes?inactive_since=soon", auth), Err(StatusCode::BAD_REQUEST));
        assert_eq!(parse(Method::GET, "/api/routes/user/a", auth), Ok(ApiRequest::Get { path: "/user/a" }));
        assert_eq!(parse(Method::POST, "/api/routes", auth), Ok(ApiRequest::Add { path: "/" }));
        assert_eq!(parse(Method::DELETE, "/api/routes/user/a", auth), Ok(ApiRequest::Delete { path: "/user/a" }));
        assert_eq!(parse(Method::PUT, "/api/routes/user/a", auth), Err(StatusCode::METHOD_NOT_ALLOWED));
        assert_eq!(parse(Method::GET, "/api/routesx", auth), Err(StatusCode::NOT_FOUND));
        assert_eq!(parse(Method::GET, "/api/routes", Some("token wrong")), Err(StatusCode::FORBIDDEN));
        assert_eq!(parse(Method::GET, "/api/routes", Some("Bearer secret")), Err(StatusCode::FORBIDDEN));
        assert_eq!(parse(Method::GET, "/api/routes", None), Err(StatusCode::FORBIDDEN));
    }

    #[test]
    fn a_null_body_is_an_empty_object_and_garbage_is_a_400() {
        assert_eq!(parse_body(b"null").unwrap(), Value::Object(Default::default()));
        assert_eq!(parse_body(b"{").unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
