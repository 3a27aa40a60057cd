//! Which answer a request gets: Jupyter Server's REST shapes for the API
//! paths a notebook session uses, the configured JSON body for anything else.
//!
//! Paths are matched after their last `/api/` so the fake serves any base
//! URL (`/notebook/<ns>/<name>/api/status`, `/api/status`, ...) unchanged.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::ids::now_rfc3339;
use crate::server::State;
use crate::websocket;

/// Largest request body read (kernel and session creation bodies are tiny).
const MAX_REQUEST_BODY: usize = 1 << 20;

/// Answers one request.
pub async fn handle(request: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let Some((prefix, api)) = split_api(path) else {
        return Ok(json_bytes(StatusCode::OK, state.body.clone()));
    };
    let prefix = prefix.to_string();
    let segments: Vec<&str> = api.split('/').filter(|s| !s.is_empty()).collect();
    let method = request.method().clone();
    let response = match (&method, segments.as_slice()) {
        (_, ["kernels", _, "channels"]) => {
            if websocket::is_upgrade(&request) {
                return Ok(websocket::accept(request, state));
            }
            text(StatusCode::BAD_REQUEST, "Can \"Upgrade\" only to \"WebSocket\".\n")
        }
        (&Method::GET, []) => json(StatusCode::OK, &json!({ "version": "2.14.2" })),
        (&Method::GET, ["status"]) => json(
            StatusCode::OK,
            &json!({
                "connections": state.websockets(),
                "kernels": state.kernels(),
                "last_activity": now_rfc3339(),
                "started": state.started,
            }),
        ),
        (&Method::GET, ["kernels" | "sessions"]) => json(StatusCode::OK, &json!([])),
        (&Method::POST, ["kernels"]) => {
            let name = match read_json(request).await {
                Ok(body) => body.get("name").and_then(Value::as_str).unwrap_or("python3").to_string(),
                Err(response) => return Ok(response),
            };
            let kernel = new_kernel(&state, &name);
            let mut response = json(StatusCode::CREATED, &kernel);
            let location = format!("{prefix}/api/kernels/{}", kernel["id"].as_str().unwrap_or_default());
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
        (&Method::POST, ["sessions"]) => {
            let body = match read_json(request).await {
                Ok(body) => body,
                Err(response) => return Ok(response),
            };
            let name = body.pointer("/kernel/name").and_then(Value::as_str).unwrap_or("python3");
            let session = json!({
                "id": state.ids.next_id(),
                "path": body.get("path").cloned().unwrap_or(Value::Null),
                "name": body.get("name").cloned().unwrap_or(Value::Null),
                "type": body.get("type").cloned().unwrap_or_else(|| json!("notebook")),
                "kernel": new_kernel(&state, name),
            });
            json(StatusCode::CREATED, &session)
        }
        (&Method::GET, ["kernels", id]) => json(StatusCode::OK, &kernel_model(id, "python3", "idle")),
        (&Method::DELETE, ["kernels", _]) => {
            state.kernel_deleted();
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::GET, ["contents", ..]) => json_bytes(StatusCode::OK, state.contents.clone()),
        _ => json_bytes(StatusCode::OK, state.body.clone()),
    };
    Ok(response)
}

/// `(base, rest)` around the last `/api/` segment (`rest` is "" for a path
/// ending in `/api`), or `None` for a non-API path.
fn split_api(path: &str) -> Option<(&str, &str)> {
    if let Some(at) = path.rfind("/api/") {
        return Some((&path[..at], &path[at + 5..]));
    }
    path.strip_suffix("/api").map(|base| (base, ""))
}

fn new_kernel(state: &State, name: &str) -> Value {
    state.kernel_started();
    kernel_model(&state.ids.next_id(), name, "starting")
}

fn kernel_model(id: &str, name: &str, execution_state: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "last_activity": now_rfc3339(),
        "execution_state": execution_state,
        "connections": 0,
    })
}

/// The body as JSON (`{}` when empty); 400 / 413 responses otherwise.
async fn read_json(request: Request<Incoming>) -> Result<Value, Response<Full<Bytes>>> {
    let collected = Limited::new(request.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
        .map_err(|_| text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"))?;
    let bytes = collected.to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|_| text(StatusCode::BAD_REQUEST, "request body is not JSON\n"))
}

/// A Jupyter contents-API directory listing, built once at start.
pub fn contents_listing(started: &str) -> Bytes {
    let entry = |name: &str, kind: &str| {
        json!({
            "name": name, "path": name, "type": kind, "created": started, "last_modified": started,
            "content": null, "format": null, "mimetype": null, "size": null, "writable": true,
        })
    };
    let listing = json!({
        "name": "", "path": "", "type": "directory", "format": "json", "mimetype": null, "size": null,
        "writable": true, "created": started, "last_modified": started,
        "content": [entry("Untitled.ipynb", "notebook"), entry("data", "directory"), entry("README.md", "file")],
    });
    Bytes::from(listing.to_string())
}

fn json(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    json_bytes(status, Bytes::from(value.to_string()))
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_last_api_segment() {
        assert_eq!(split_api("/notebook/ns/nb/api/status"), Some(("/notebook/ns/nb", "status")));
        assert_eq!(
            split_api("/notebook/ns/nb/api/kernels/k/channels"),
            Some(("/notebook/ns/nb", "kernels/k/channels"))
        );
        assert_eq!(split_api("/api"), Some(("", "")));
        assert_eq!(split_api("/notebook/ns/nb/lab"), None);
        assert_eq!(split_api("/notebook/ns/apix/lab"), None);
    }

    #[test]
    fn listing_is_a_directory_model() {
        let listing: Value = serde_json::from_slice(&contents_listing("2025-01-01T00:00:00.000000Z")).unwrap();
        assert_eq!(listing["type"], "directory");
        assert_eq!(listing["content"][0]["type"], "notebook");
    }
}
