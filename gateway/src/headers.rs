//! Header handling on the way up and down: rewrites, route header
//! operations, forwarding headers and CORS.

use std::net::IpAddr;

use http::header;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use portico_routing::table::HeaderOps;

use crate::decision::Forward;

/// Headers a client could use to impersonate the gateway's own view of the
/// connection; always replaced.
const FORWARDING: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// Rewrites the upstream request: path, authority, route and destination
/// header operations, then the forwarding headers (last, so no route can
/// forge them).
pub fn prepare_upstream_request(
    request: &mut RequestHeader,
    forward: &Forward,
    client: Option<IpAddr>,
    scheme: &str,
) -> Result<()> {
    let route = forward.route();
    if request.raw_path() != forward.upstream_path.as_bytes() {
        request.set_raw_path(forward.upstream_path.as_bytes())?;
    }
    if let portico_routing::table::RouteAction::Forward(action) = &route.action
        && let Some(authority) = &action.rewrite.authority
    {
        request.insert_header(header::HOST, authority.as_str())?;
    }
    apply_request_ops(request, &route.request_headers)?;
    if let Some(destination) = forward.destination() {
        apply_request_ops(request, &destination.request_headers)?;
    }
    for name in FORWARDING {
        request.remove_header(name);
    }
    if let Some(client) = client {
        request.insert_header("x-forwarded-for", client.to_string())?;
    }
    request.insert_header("x-forwarded-proto", scheme)?;
    request.insert_header("x-forwarded-host", forward.host.as_str())?;
    Ok(())
}

/// Route and destination response header operations, and CORS.
pub fn prepare_response(response: &mut ResponseHeader, forward: &Forward) -> Result<()> {
    let route = forward.route();
    apply_response_ops(response, &route.response_headers)?;
    if let Some(destination) = forward.destination() {
        apply_response_ops(response, &destination.response_headers)?;
    }
    if let (Some(origin), Some(cors)) = (&forward.cors_origin, &route.cors) {
        response.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.as_str())?;
        if cors.allow_credentials {
            response.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
        }
        if !cors.expose_headers.is_empty() {
            response.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, cors.expose_headers.join(","))?;
        }
        response.append_header(header::VARY, "Origin")?;
    }
    Ok(())
}

/// Envoy's order: remove, then set (replace), then add (append).
fn apply_request_ops(request: &mut RequestHeader, ops: &HeaderOps) -> Result<()> {
    for name in &ops.remove {
        request.remove_header(name.as_str());
    }
    for (name, value) in &ops.set {
        request.insert_header(name.clone(), value.as_str())?;
    }
    for (name, value) in &ops.add {
        request.append_header(name.clone(), value.as_str())?;
    }
    Ok(())
}

fn apply_response_ops(response: &mut ResponseHeader, ops: &HeaderOps) -> Result<()> {
    for name in &ops.remove {
        response.remove_header(name.as_str());
    }
    for (name, value) in &ops.set {
        response.insert_header(name.clone(), value.as_str())?;
    }
    for (name, value) in &ops.add {
        response.append_header(name.clone(), value.as_str())?;
    }
    Ok(())
}

/// Whether the request announces a body.
pub fn has_body(request: &RequestHeader) -> bool {
    let length =
        request.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    length.is_some_and(|l| l > 0) || request.headers.contains_key(header::TRANSFER_ENCODING)
}

/// HPACK-style size of an HTTP/2 request head (RFC 7541: name + value + 32).
pub fn h2_head_size(request: &RequestHeader) -> usize {
    let headers: usize = request.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 32).sum();
    headers + request.raw_path().len() + request.method.as_str().len()
}
