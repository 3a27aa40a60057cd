//! Header handling on the way up and down: rewrites, route header
//! operations, forwarding headers and CORS.

use std::net::IpAddr;

use http::{HeaderValue, header};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use portico_routing::table::HeaderOps;

use crate::decision::Forward;

/// Headers a client could use to impersonate the gateway's own view of the
/// connection; always replaced (an insert drops every client copy).
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// Rewrites the upstream request: path, authority, route and destination
/// header operations, then the forwarding headers (last, so no route can
/// forge them).
pub fn prepare_upstream_request(
    request: &mut RequestHeader,
    forward: &Forward,
    client: Option<IpAddr>,
    scheme: &'static str,
) -> Result<()> {
    let route = forward.route();
    if let Some(path) = &forward.upstream_path
        && request.raw_path() != path.as_bytes()
    {
        request.set_raw_path(path.as_bytes())?;
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
    match client {
        Some(client) => request.insert_header(X_FORWARDED_FOR, forwarded_for(client))?,
        None => {
            request.remove_header(X_FORWARDED_FOR);
        }
    }
    // The scheme is one of two static strings: no copy.
    request.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static(scheme))?;
    request.insert_header(X_FORWARDED_HOST, forward.host.as_str())?;
    Ok(())
}

/// The client address as a header value, IPv4 written without the
/// formatting machinery (it is every request's).
fn forwarded_for(client: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = client else {
        return HeaderValue::from_maybe_shared(bytes::Bytes::from(client.to_string()))
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (index, octet) in v4.octets().into_iter().enumerate() {
        if index > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_writes_addresses_as_display_does() {
        for address in ["0.0.0.0", "127.0.0.1", "10.20.255.9", "255.255.255.255", "::1", "fe80::1:2"] {
            let ip: IpAddr = address.parse().unwrap();
            assert_eq!(forwarded_for(ip).to_str().unwrap(), ip.to_string());
        }
    }
}
