//! A minimal HTTP/1.1 client connection on a raw `TcpStream`: requests are
//! prebuilt byte strings, responses are parsed in place with `httparse` and
//! bodies (Content-Length, chunked or until close) are skipped or kept.
//!
//! It exists because a load generator must not be the bottleneck: per
//! request it does one write, usually one read, and no allocation.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::OpError;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// Free space kept in the read buffer before each read.
const READ_RESERVE: usize = 16 << 10;
/// Headers parsed per response.
const MAX_HEADERS: usize = 64;

/// A keep-alive connection.
#[derive(Debug)]
pub struct H1Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// What a caller learns from a response.
#[derive(Debug, Default)]
pub struct Response {
    pub status: u16,
    /// The server will close the connection (drop it, do not reuse).
    pub close: bool,
    /// The body, when asked for.
    pub body: Bytes,
    /// Body bytes received (kept or not).
    pub body_len: u64,
    /// `name=value` of each `Set-Cookie`.
    pub cookies: Vec<(String, String)>,
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl H1Conn {
    /// Connects (no timeout here: callers bound every operation).
    pub async fn connect(addr: SocketAddr) -> Result<H1Conn, OpError> {
        let stream = TcpStream::connect(addr).await.map_err(|source| OpError::Connect { addr, source })?;
        stream.set_nodelay(true)?;
        Ok(H1Conn { stream, buf: BytesMut::with_capacity(READ_RESERVE) })
    }

    /// Sends `request` and reads its response; `keep_body` keeps the body
    /// bytes (otherwise they are only counted).
    pub async fn exchange(&mut self, request: &[u8], head_request: bool, keep_body: bool) -> Result<Response, OpError> {
        self.stream.write_all(request).await?;
        self.read_response(head_request, keep_body).await
    }

    async fn fill(&mut self) -> Result<usize, OpError> {
        if self.buf.capacity() - self.buf.len() < READ_RESERVE / 4 {
            self.buf.reserve(READ_RESERVE);
        }
        Ok(self.stream.read_buf(&mut self.buf).await?)
    }

    async fn read_response(&mut self, head_request: bool, keep_body: bool) -> Result<Response, OpError> {
        let (mut response, framing) = loop {
            match parse_head(&self.buf, head_request)? {
                Some((used, response, framing)) => {
                    self.buf.advance(used);
                    if (100..200).contains(&response.status) {
                        continue; // 100 Continue and friends precede the real answer
                    }
                    break (response, framing);
                }
                None if self.buf.len() >= MAX_HEAD => return Err(OpError::Protocol("response head too large".into())),
                None => {
                    if self.fill().await? == 0 {
                        return Err(if self.buf.is_empty() {
                            OpError::Closed
                        } else {
                            OpError::Protocol("connection closed inside the response head".into())
                        });
                    }
                }
            }
        };
        let mut body = keep_body.then(BytesMut::new);
        match framing {
            Framing::None => {}
            Framing::Length(length) => self.read_exact_body(length, &mut body, &mut response.body_len).await?,
            Framing::Chunked => self.read_chunked(&mut body, &mut response.body_len).await?,
            Framing::UntilClose => {
                response.close = true;
                loop {
                    let available = self.buf.len();
                    response.body_len += available as u64;
                    take_into(&mut self.buf, available, &mut body);
                    if self.fill().await? == 0 {
                        break;
                    }
                }
            }
        }
        response.body = body.map(BytesMut::freeze).unwrap_or_default();
        Ok(response)
    }

    async fn read_exact_body(
        &mut self,
        length: u64,
        body: &mut Option<BytesMut>,
        seen: &mut u64,
    ) -> Result<(), OpError> {
        let mut left = length;
        loop {
            let take = left.min(self.buf.len() as u64) as usize;
            take_into(&mut self.buf, take, body);
            left -= take as u64;
            *seen += take as u64;
            if left == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(OpError::Protocol("connection closed inside the body".into()));
            }
        }
    }

    async fn read_chunked(&mut self, body: &mut Option<BytesMut>, seen: &mut u64) -> Result<(), OpError> {
        loop {
            let line = self.read_line().await?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| OpError::Protocol(format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers, up to an empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(());
            }
            self.read_exact_body(size, body, seen).await?;
            if !self.read_line().await?.is_empty() {
                return Err(OpError::Protocol("chunk not followed by CRLF".into()));
            }
        }
    }

    /// One CRLF-terminated line, without the CRLF.
    async fn read_line(&mut self) -> Result<String, OpError> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.advance(end + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(OpError::Protocol("chunk line too long".into()));
            }
            if self.fill().await? == 0 {
                return Err(OpError::Protocol("connection closed inside a chunked body".into()));
            }
        }
    }
}

fn take_into(buf: &mut BytesMut, n: usize, body: &mut Option<BytesMut>) {
    match body {
        Some(body) => body.extend_from_slice(&buf.split_to(n)),
        None => buf.advance(n),
    }
}

/// Parses a complete response head at the start of `buf`.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<(usize, Response, Framing)>, OpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(OpError::Protocol(error.to_string())),
    };
    let status = parsed.code.unwrap_or_default();
    let mut response = Response { status, close: parsed.version == Some(0), ..Response::default() };
    let mut length = None;
    let mut chunked = false;
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or_default();
        if header.name.eq_ignore_ascii_case("content-length") {
            let parsed =
                value.trim().parse::<u64>().map_err(|_| OpError::Protocol(format!("bad Content-Length {value:?}")))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(OpError::Protocol("conflicting Content-Length headers".into()));
            }
            length = Some(parsed);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked |= value.split(',').any(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    response.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    response.close = false;
                }
            }
        } else if header.name.eq_ignore_ascii_case("set-cookie") {
            let pair = value.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                response.cookies.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
    }
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    Ok(Some((used, response, framing)))
}

/// An HTTP/1.1 request as bytes.
pub fn build_request(
    method: &str,
    path: &str,
    authority: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.map_or(0, <[u8]>::len));
    out.extend_from_slice(
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: portico-load\r\n").as_bytes(),
    );
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if let Some(body) = body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A server that reads one request per answer and writes the canned answers.
    async fn canned(answers: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            for answer in answers {
                let _ = stream.read(&mut buf).await.unwrap();
                for piece in answer.chunks(7) {
                    stream.write_all(piece).await.unwrap();
                    stream.flush().await.unwrap();
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_length_chunked_and_close_delimited_bodies() {
        let addr = canned(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: _xsrf=abc; Path=/\r\n\r\nhello",
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.0 503 Busy\r\n\r\nbye",
        ])
        .await;
        let mut conn = H1Conn::connect(addr).await.unwrap();
        let request = build_request("GET", "/", "h", &[], None);
        let first = conn.exchange(&request, false, true).await.unwrap();
        assert_eq!((first.status, &first.body[..], first.close), (200, &b"hello"[..], false));
        assert_eq!(first.cookies, [("_xsrf".to_string(), "abc".to_string())]);
        let second = conn.exchange(&request, false, true).await.unwrap();
        assert_eq!((second.status, &second.body[..], second.body_len), (201, &b"abcde"[..], 5));
        let third = conn.exchange(&request, false, false).await.unwrap();
        assert_eq!((third.status, third.body_len), (204, 0));
        let fourth = conn.exchange(&request, false, true).await.unwrap();
        assert_eq!((fourth.status, &fourth.body[..], fourth.close), (503, &b"bye"[..], true));
        assert!(matches!(conn.exchange(&request, false, false).await, Err(OpError::Closed | OpError::Io(_))));
    }

    #[test]
    fn rejects_framing_ambiguity() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(parse_head(head, false), Err(OpError::Protocol(_))));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n", false).unwrap().is_none());
    }

    #[test]
    fn builds_requests() {
        let request = build_request("POST", "/a", "h:1", &[("X-A", "b")], Some(b"{}"));
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "POST /a HTTP/1.1\r\nHost: h:1\r\nUser-Agent: portico-load\r\nX-A: b\r\nContent-Length: 2\r\n\r\n{}"
        );
    }
}
