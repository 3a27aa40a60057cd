//! HTTP/1.1 over a plain TCP socket, byte for byte.
//!
//! Request smuggling and framing tests must send what no well-behaved client
//! sends (`Content-Length` with `Transfer-Encoding`, two `Content-Length`s,
//! control bytes in a header, 70 KiB of headers) and must see whether the
//! server closed the connection afterwards. HTTP client libraries refuse to
//! send such requests or hide the connection, hence this helper. It also
//! serves simple blocking GETs (readiness probes, admin endpoints) without an
//! async runtime.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Bound on connecting, and on each read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the server to close after its response before
/// deciding that it kept the connection open.
const CLOSE_WAIT: Duration = Duration::from_millis(1500);

/// A response read from a raw connection.
#[derive(Clone, Debug)]
pub struct RawResponse {
    /// The status code of the status line.
    pub status: u16,
    /// Status line and headers, without the final empty line.
    pub head: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the server closed the connection after the response.
    pub closed: bool,
    /// Bytes the server sent after the response (a second response here
    /// means one request was read as two: smuggling).
    pub trailing: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` exactly as given on a new connection to `addr` and reads
/// one response, then checks whether the server closes the connection.
///
/// A server may answer and close before it has read the whole request (a
/// 431 for oversized headers): a write that fails because the peer closed is
/// therefore not an error as long as a response can be read.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<RawResponse> {
    exchange_with(addr, request, false, IO_TIMEOUT)
}

/// [`exchange`] waiting up to `timeout` for the answer (a request the
/// gateway holds while a notebook starts).
pub fn exchange_within(addr: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<RawResponse> {
    exchange_with(addr, request, false, timeout)
}

/// [`exchange`] for a `HEAD` request: the response has no body whatever its
/// headers say.
pub fn exchange_head(addr: SocketAddr, request: &[u8]) -> io::Result<RawResponse> {
    exchange_with(addr, request, true, IO_TIMEOUT)
}

fn exchange_with(addr: SocketAddr, request: &[u8], head_request: bool, timeout: Duration) -> io::Result<RawResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let write_error = stream.write_all(request).err();
    match &write_error {
        None => {}
        Some(error) if matches!(error.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {}
        Some(error) => return Err(io::Error::new(error.kind(), format!("sending the request: {error}"))),
    }
    let mut reader = Reader { stream, buf: Vec::new(), eof: false };
    let response = reader.response(head_request).map_err(|error| match write_error {
        Some(write_error) => io::Error::new(
            error.kind(),
            format!("reading the response: {error} (the server stopped reading the request: {write_error})"),
        ),
        None => error,
    })?;
    Ok(response)
}

/// One request and its response on a keep-alive connection that stays
/// open for the next (`closed` and `trailing` are not read).
pub fn exchange_on(stream: &mut TcpStream, request: &[u8]) -> io::Result<RawResponse> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(request)?;
    Reader { stream: stream.try_clone()?, buf: Vec::new(), eof: false }.framed_response(false)
}

/// `GET path` on `addr` with `Host: host` and `Connection: close`.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> io::Result<RawResponse> {
    exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
}

/// [`get`], retrying (within `timeout`) while the connection is refused.
///
/// A gateway reports ready once its config is loaded; its traffic
/// listeners may start accepting a moment later. Only a refused connection
/// is retried: any response, or any other error, is returned as it is.
pub fn get_when_listening(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> io::Result<RawResponse> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match get(addr, host, path) {
            Err(error) if error.kind() == ErrorKind::ConnectionRefused && std::time::Instant::now() < deadline => {
                std::thread::sleep(crate::wait::POLL_INTERVAL);
            }
            result => return result,
        }
    }
}

/// The value of sample `series` (`name` or `name{labels}` exactly as
/// exported) in a Prometheus text exposition, if present.
pub fn prometheus_sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// `GET url` for a plain `http://host:port/path` URL.
pub fn get_url(url: &str) -> io::Result<RawResponse> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, format!("{url} is not an http:// URL")))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, format!("{authority} resolves to nothing")))?;
    get(addr, authority, path)
}

/// A buffered reader over the connection that knows where a response ends.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Reader {
    fn response(&mut self, head_request: bool) -> io::Result<RawResponse> {
        let mut response = self.framed_response(head_request)?;
        let (closed, trailing) = self.closed_after_response()?;
        response.closed = closed;
        response.trailing = trailing;
        Ok(response)
    }

    /// One response, read as far as its framing says, and no further.
    fn framed_response(&mut self, head_request: bool) -> io::Result<RawResponse> {
        let head_len = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            if !self.fill()? {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("connection closed before a complete response head ({} bytes)", self.buf.len()),
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
        self.buf.drain(..head_len + 4);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, format!("bad status line in {head:?}")))?;
        let mut response = RawResponse { status, head, body: Vec::new(), closed: false, trailing: Vec::new() };
        let no_body = head_request || status / 100 == 1 || status == 204 || status == 304;
        let chunked =
            response.header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let length = response.header("content-length").and_then(|value| value.parse::<usize>().ok());
        if no_body {
        } else if chunked {
            response.body = self.chunked_body()?;
        } else if let Some(length) = length {
            response.body = self.take(length)?;
        } else {
            // No framing: the body runs to the end of the connection.
            while self.fill()? {}
            response.body = std::mem::take(&mut self.buf);
        }
        Ok(response)
    }

    /// Reads more bytes into the buffer; false at end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Ok(false)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => Ok(true),
            Err(error) => Err(error),
        }
    }

    fn take(&mut self, length: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < length {
            if !self.fill()? {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "connection closed inside the body"));
            }
        }
        Ok(self.buf.drain(..length).collect())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return Ok(line);
            }
            if !self.fill()? {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "connection closed inside a chunked body"));
            }
        }
    }

    fn chunked_body(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(ErrorKind::InvalidData, format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.take(size)?);
            self.line()?;
        }
    }

    /// Whether the server closes the connection within [`CLOSE_WAIT`], and
    /// anything it sent after the response.
    fn closed_after_response(&mut self) -> io::Result<(bool, Vec<u8>)> {
        if self.eof {
            return Ok((true, std::mem::take(&mut self.buf)));
        }
        self.stream.set_read_timeout(Some(CLOSE_WAIT))?;
        let closed = loop {
            match self.fill() {
                Ok(false) => break true,
                // More bytes: keep reading until the server closes or idles.
                Ok(true) => continue,
                Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break false,
                Err(error) if error.kind() == ErrorKind::ConnectionReset => break true,
                Err(error) => return Err(error),
            }
        };
        if !closed {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        Ok((closed, std::mem::take(&mut self.buf)))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    /// A one-shot server that reads the request head, sends `response`, and
    /// closes or keeps the connection open for a while.
    fn serve_once(response: &'static [u8], close: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut chunk = [0u8; 1024];
            while find(&seen, b"\r\n\r\n").is_none() {
                let n = stream.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&chunk[..n]);
            }
            stream.write_all(response).unwrap();
            if !close {
                thread::sleep(CLOSE_WAIT * 2);
            }
        });
        addr
    }

    #[test]
    fn reads_a_content_length_response_and_sees_the_close() {
        let addr = serve_once(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad", true);
        let response = get(addr, "x", "/").unwrap();
        assert_eq!(response.status, 400);
        assert_eq!(response.text(), "bad");
        assert_eq!(response.header("connection"), Some("close"));
        assert!(response.closed);
    }

    #[test]
    fn decodes_chunked_bodies_and_sees_an_open_connection_and_extra_bytes() {
        let addr = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n",
            false,
        );
        let response = get(addr, "x", "/").unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "abcde");
        assert!(!response.closed);
        assert_eq!(response.trailing, b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn get_url_splits_the_url() {
        let addr = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n", true);
        let response = get_url(&format!("http://{addr}/healthz/ready")).unwrap();
        assert_eq!(response.status, 204);
    }
}
