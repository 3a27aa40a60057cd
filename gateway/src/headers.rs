//! Header handling on the way up and down: rewrites, route header
//! operations, forwarding headers and CORS.

use std::net::IpAddr;

use http::request::Parts as ReqParts;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use pingora_error::{ErrorType::InvalidHTTPHeader, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use portico_routing::table::HeaderOps;

use crate::decision::Forward;

/// Headers a client could use to impersonate the gateway's own view of the
/// connection; always replaced (an insert drops every client copy). Built
/// at compile time: a custom name is otherwise parsed and copied per use.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Rewrites the upstream request: path, authority, route and destination
/// header operations, then the forwarding headers (last, so no route can
/// forge them).
///
/// The headers are edited in their map directly, and go upstream with
/// lower-case names, as Envoy's HTTP/1 codec and our own splice send them.
/// Pingora hands this filter a copy of the client's head that keeps each
/// name's case in a second map, both at exact capacity: every insert
/// through `RequestHeader` parsed the name again, copied it, and grew both
/// maps (7.4k of the ~28k instructions per request Portico added to
/// Pingora's own, bench/RESULTS.md).
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
    let destination_ops = forward.destination().map(|d| &d.request_headers);
    let mut head = LowerCaseHead::take(request);
    let headers = &mut head.parts.headers;
    headers.reserve(3 + added(&route.request_headers) + destination_ops.map_or(0, added));
    if let portico_routing::table::RouteAction::Forward(action) = &route.action
        && let Some(authority) = &action.rewrite.authority
    {
        headers.insert(header::HOST, value(authority)?);
    }
    apply_request_ops(headers, &route.request_headers)?;
    if let Some(ops) = destination_ops {
        apply_request_ops(headers, ops)?;
    }
    match client {
        Some(client) => headers.insert(X_FORWARDED_FOR, forwarded_for(client)),
        None => headers.remove(X_FORWARDED_FOR),
    };
    // The scheme is one of two static strings: no copy.
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    // The client's own Host value when it is the host routed on (the
    // usual case: lower case, no port): shared, not copied.
    let host = match headers.get(header::HOST) {
        Some(sent) if sent.as_bytes() == forward.host.as_bytes() => sent.clone(),
        _ => value(&forward.host)?,
    };
    headers.insert(X_FORWARDED_HOST, host);
    head.put_back(request)
}

/// Edits `request`'s headers as a plain map, which drops their names' case
/// (see [`prepare_upstream_request`] for what `RequestHeader`'s own
/// methods cost per header).
pub fn edit_headers<R>(request: &mut RequestHeader, edit: impl FnOnce(&mut HeaderMap) -> R) -> Result<R> {
    let mut head = LowerCaseHead::take(request);
    let edited = edit(&mut head.parts.headers);
    head.put_back(request)?;
    Ok(edited)
}

/// A request head taken out of its `RequestHeader` to be edited as a plain
/// header map, with what the conversion would lose kept aside.
struct LowerCaseHead {
    parts: ReqParts,
    /// A target that does not round-trip through the URI (absolute-form):
    /// set again, verbatim, when the head is put back.
    verbatim_target: Option<Vec<u8>>,
    /// HTTP/2's END_STREAM-with-HEADERS choice.
    end_stream: Option<bool>,
}

impl LowerCaseHead {
    fn take(request: &mut RequestHeader) -> Self {
        let from_uri = request.uri.path_and_query().map_or(&b""[..], |p| p.as_str().as_bytes());
        let verbatim_target = (request.raw_path() != from_uri).then(|| request.raw_path().to_vec());
        let end_stream = request.send_end_stream();
        let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
        let parts = ReqParts::from(std::mem::replace(request, empty));
        Self { parts, verbatim_target, end_stream }
    }

    fn put_back(self, request: &mut RequestHeader) -> Result<()> {
        let mut rebuilt = RequestHeader::from(self.parts);
        if let Some(target) = &self.verbatim_target {
            rebuilt.set_raw_path(target)?;
        }
        if let Some(end_stream) = self.end_stream {
            rebuilt.set_send_end_stream(end_stream);
        }
        *request = rebuilt;
        Ok(())
    }
}

/// How many headers the operations may add.
fn added(ops: &HeaderOps) -> usize {
    ops.set.len() + ops.add.len()
}

fn value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text).or_err(InvalidHTTPHeader, "invalid header value")
}

fn name(text: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(text.as_bytes()).or_err(InvalidHTTPHeader, "invalid header name")
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
fn apply_request_ops(headers: &mut HeaderMap, ops: &HeaderOps) -> Result<()> {
    for removed in &ops.remove {
        headers.remove(removed.as_str());
    }
    for (set, text) in &ops.set {
        headers.insert(name(set)?, value(text)?);
    }
    for (added, text) in &ops.add {
        headers.append(name(added)?, value(text)?);
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
