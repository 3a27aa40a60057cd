//! Upgraded connections (notebook kernel and terminal websockets) spliced
//! outside Pingora's proxy loop, holding no buffer while idle.
//!
//! A notebook gateway holds thousands of websockets that are idle nearly
//! all the time. Pingora proxies an upgraded connection inside the request's
//! task with a 64 KiB body buffer per direction plus the whole proxy state
//! machine (~12 KiB): about 64 KiB resident per idle websocket, where
//! HAProxy needs about 5. So once routing and authorization have admitted an
//! HTTP/1.1 upgrade request, the gateway performs the handshake itself:
//!
//! 1. connect to the endpoint (mutual TLS with the gateway's workload
//!    certificate when it is meshed) and send the rewritten request head;
//! 2. read the response head; a `101` goes to the client with the route's
//!    response header operations, anything else is relayed and the
//!    connection closed;
//! 3. take the client stream out of Pingora's session (a stand-in session
//!    carrying the same request is left for logging and Pingora's clean-up),
//!    keep only its socket where that is safe ([`Client`]), and splice the
//!    two on a task of their own ([`Splice`]).
//!
//! The splice reads into one scratch buffer per worker thread and writes
//! straight through; only bytes the receiver cannot take yet are copied
//! into a per-connection buffer, freed once written. An idle websocket costs
//! its two sockets and a task of a few hundred bytes.
//!
//! The splice shows every byte it reads, once, to the connection's
//! [`WebsocketWatch`](crate::activity::WebsocketWatch) (activity tracking)
//! before writing it on: the watch parses frames as they pass, so nothing
//! is copied or held back for it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pingora_core::protocols::Stream;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::http::v1::server::HttpSession as SessionV1;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

mod client;
mod splice;
mod stand_in;

pub use client::Client;
pub use splice::Splice;
use stand_in::StandIn;

/// The largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Headers in an upstream response head.
const MAX_RESPONSE_HEADERS: usize = 128;

/// Why a handshake with the endpoint failed (before anything reached the client).
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("connecting to {address}: {source}")]
    Connect { address: SocketAddr, source: io::Error },
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(SocketAddr),
    #[error("mutual TLS with the meshed endpoint: {0}")]
    Tls(String),
    #[error("the meshed endpoint presented {0:?}, not the destination's identity")]
    Identity(Option<String>),
    #[error("sending the upgrade request: {0}")]
    Write(io::Error),
    #[error("reading the upgrade response: {0}")]
    Read(io::Error),
    #[error("no upgrade response within {0:?}")]
    Timeout(Duration),
    #[error("the endpoint closed the connection before a response head")]
    Closed,
    #[error("malformed upgrade response: {0}")]
    Malformed(String),
}

impl HandshakeError {
    /// The same failure as a Pingora error, so that [`crate::status::outcome`]
    /// answers it exactly as it answers a proxied request's.
    pub fn to_proxy_error(&self) -> pingora_error::BError {
        use pingora_error::ErrorType as E;
        let etype = match self {
            HandshakeError::Connect { .. } => E::ConnectError,
            HandshakeError::ConnectTimeout(_) => E::ConnectTimedout,
            HandshakeError::Tls(_) | HandshakeError::Identity(_) => E::TLSHandshakeFailure,
            HandshakeError::Timeout(_) => E::ReadTimedout,
            HandshakeError::Write(_) => E::WriteError,
            HandshakeError::Read(_) | HandshakeError::Closed | HandshakeError::Malformed(_) => E::ReadError,
        };
        pingora_error::Error::create(etype, pingora_error::ErrorSource::Upstream, Some(self.to_string().into()), None)
    }
}

/// The connection to the endpoint: plain, or mutual TLS to a meshed pod's
/// sidecar.
pub enum Upstream {
    Plain(TcpStream),
    Mesh(Box<TlsStream<TcpStream>>),
}

impl Upstream {
    /// A TCP connection to `address`.
    pub async fn plain(address: SocketAddr, timeout: Duration) -> Result<Self, HandshakeError> {
        Ok(Upstream::Plain(connect(address, timeout).await?))
    }

    /// Mutual TLS to a meshed endpoint whose SPIFFE ID `admits` accepts.
    pub async fn mesh(
        address: SocketAddr,
        timeout: Duration,
        config: Arc<rustls::ClientConfig>,
        admits: impl Fn(&str) -> bool,
    ) -> Result<Self, HandshakeError> {
        let tcp = connect(address, timeout).await?;
        // Workload certificates name SPIFFE IDs, not hosts: the name only
        // fills SNI; the verifier checks the chain, `admits` the identity.
        let name = ServerName::try_from("mesh.portico.invalid").map_err(|e| HandshakeError::Tls(e.to_string()))?;
        let tls = tokio::time::timeout(timeout, TlsConnector::from(config).connect(name, tcp))
            .await
            .map_err(|_| HandshakeError::ConnectTimeout(address))?
            .map_err(|e| HandshakeError::Tls(e.to_string()))?;
        let identity = portico_mesh::identity::spiffe_id(tls.get_ref().1.peer_certificates());
        match identity {
            Some(identity) if admits(&identity) => Ok(Upstream::Mesh(Box::new(tls))),
            other => Err(HandshakeError::Identity(other)),
        }
    }
}

async fn connect(address: SocketAddr, timeout: Duration) -> Result<TcpStream, HandshakeError> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| HandshakeError::ConnectTimeout(address))?
        .map_err(|source| HandshakeError::Connect { address, source })?;
    // Websocket frames are small and latency-bound.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

impl AsyncRead for Upstream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Upstream::Mesh(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Upstream::Mesh(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Upstream::Mesh(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Upstream::Mesh(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The endpoint's answer to an upgrade request.
pub struct Handshake {
    pub upstream: Upstream,
    pub response: ResponseHeader,
    /// Bytes the endpoint sent after its response head.
    pub leftover: Vec<u8>,
}

/// Exchanges the upgrade request and response heads over `upstream`.
pub async fn handshake(
    mut upstream: Upstream,
    request: &RequestHeader,
    response_timeout: Duration,
) -> Result<Handshake, HandshakeError> {
    upstream.write_all(&request_head(request)).await.map_err(HandshakeError::Write)?;
    upstream.flush().await.map_err(HandshakeError::Write)?;
    let (response, leftover) = tokio::time::timeout(response_timeout, read_response_head(&mut upstream))
        .await
        .map_err(|_| HandshakeError::Timeout(response_timeout))??;
    Ok(Handshake { upstream, response, leftover })
}

async fn read_response_head(upstream: &mut Upstream) -> Result<(ResponseHeader, Vec<u8>), HandshakeError> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        if buffer.len() >= MAX_RESPONSE_HEAD {
            return Err(HandshakeError::Malformed(format!("response head over {MAX_RESPONSE_HEAD} bytes")));
        }
        let read = upstream.read_buf(&mut buffer).await.map_err(HandshakeError::Read)?;
        if read == 0 {
            return Err(HandshakeError::Closed);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&buffer) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(length)) => {
                let response = response_header(&parsed)?;
                let leftover = buffer.split_off(length);
                return Ok((response, leftover));
            }
            Err(error) => return Err(HandshakeError::Malformed(error.to_string())),
        }
    }
}

fn response_header(parsed: &httparse::Response<'_, '_>) -> Result<ResponseHeader, HandshakeError> {
    let malformed = |e: pingora_error::BError| HandshakeError::Malformed(e.to_string());
    let code = parsed.code.ok_or_else(|| HandshakeError::Malformed("no status".to_string()))?;
    let mut response = ResponseHeader::build(code, Some(parsed.headers.len())).map_err(malformed)?;
    for header in parsed.headers.iter() {
        let value = http::HeaderValue::from_bytes(header.value)
            .map_err(|e| HandshakeError::Malformed(format!("header {}: {e}", header.name)))?;
        response.append_header(header.name.to_string(), value).map_err(malformed)?;
    }
    Ok(response)
}

/// `METHOD path HTTP/1.1` and the headers, as sent upstream.
pub fn request_head(request: &RequestHeader) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(request.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(request.raw_path());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(&mut head, &request.headers);
    head
}

/// `HTTP/1.1 code reason` and the headers, as sent to the client.
pub fn response_head(response: &ResponseHeader) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(response.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(response.status.canonical_reason().unwrap_or("Unknown").as_bytes());
    head.extend_from_slice(b"\r\n");
    write_headers(&mut head, &response.headers);
    head
}

fn write_headers(head: &mut Vec<u8>, headers: &http::HeaderMap) {
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
}

/// Takes the client stream out of `session`. What stays behind is a closed
/// stand-in session carrying the same request head, so the request's
/// logging and Pingora's clean-up after it see the request they expect.
pub async fn detach(session: &mut Session) -> pingora_error::Result<Stream> {
    let head = request_head(session.req_header());
    let mut stand_in = ServerSession::H1(SessionV1::new(Box::new(StandIn { head: Some(head) })));
    stand_in.read_request().await?;
    stand_in.set_keepalive(None);
    let original = std::mem::replace(&mut *session.downstream_session, stand_in);
    match original {
        ServerSession::H1(http1) => Ok(http1.into_inner()),
        _ => Err(pingora_error::Error::explain(pingora_error::ErrorType::InternalError, "only HTTP/1.x is upgraded")),
    }
}

/// Relays a non-101 answer's body: `Content-Length` bytes, or everything
/// until the endpoint closes (the client connection closes after it).
pub async fn relay_refusal(
    client: &mut Stream,
    mut upstream: Upstream,
    response: &ResponseHeader,
    leftover: &[u8],
    limit: Duration,
) -> io::Result<()> {
    client.write_all(&response_head(response)).await?;
    let length = response
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let first = match length {
        Some(length) => &leftover[..leftover.len().min(length as usize)],
        None => leftover,
    };
    client.write_all(first).await?;
    let remaining = length.map_or(u64::MAX, |length| length.saturating_sub(first.len() as u64));
    let mut body = (&mut upstream).take(remaining);
    let copy = tokio::io::copy(&mut body, client);
    // A body the endpoint never finishes does not hold the connection.
    let _ = tokio::time::timeout(limit, copy).await;
    client.flush().await?;
    AsyncWriteExt::shutdown(client).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_is_http11_with_every_header() {
        let mut request = RequestHeader::build("GET", b"/api/kernels/k/channels?session_id=s", None).unwrap();
        request.append_header("host", "nb.example").unwrap();
        request.append_header("upgrade", "websocket").unwrap();
        request.append_header("connection", "Upgrade").unwrap();
        request.append_header("cookie", "a=1").unwrap();
        request.append_header("cookie", "b=2").unwrap();
        let head = String::from_utf8(request_head(&request)).unwrap();
        assert!(head.starts_with("GET /api/kernels/k/channels?session_id=s HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("cookie: a=1\r\ncookie: b=2\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn handshake_failures_answer_like_proxied_ones() {
        let address: SocketAddr = ([127, 0, 0, 1], 1).into();
        let cases = [
            (HandshakeError::ConnectTimeout(address), 503, "UF", "upstream connect error\n"),
            (HandshakeError::Identity(None), 503, "UF", "upstream connect error\n"),
            (HandshakeError::Timeout(Duration::from_secs(1)), 504, "UT", "upstream request timeout\n"),
            (HandshakeError::Closed, 502, "UC", "upstream connection error\n"),
            (HandshakeError::Malformed("x".into()), 502, "UC", "upstream connection error\n"),
        ];
        for (error, status, flags, body) in cases {
            let outcome = crate::status::outcome(&error.to_proxy_error(), "-");
            assert_eq!((outcome.status, outcome.flags, outcome.body), (status, flags, body), "{error}");
        }
    }
}
