//! An HTTP/1.1 upstream that records every byte it receives.
//!
//! Smuggling tests must show that nothing of a mis-framed or refused request
//! reached the backend. A real server would hide that (it parses, answers
//! and forgets); this one keeps each connection's raw bytes, in arrival
//! order, and the request lines it parsed from them. It answers every
//! request with a small 200 (the body names the request, so a test can tell
//! which request a response belongs to), can hold requests under
//! [`HOLD_PREFIX`] until released (to keep HTTP/2 streams open), and can be
//! told how to answer an `Upgrade`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// Requests whose path starts with this are answered only once
/// [`RecordingUpstream::release`] is called (or after [`HOLD_LIMIT`]).
pub const HOLD_PREFIX: &str = "/app/hold/";
/// Bound on holding a request, so a failing test never leaves threads behind.
const HOLD_LIMIT: Duration = Duration::from_secs(30);
/// Bound on a connection that sends nothing.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How the upstream answers a request carrying `Upgrade`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeAnswer {
    /// `101 Switching Protocols`, then every further byte is only recorded.
    Switch,
    /// A plain response with this status (the upgrade is refused and the
    /// connection stays an HTTP/1.1 connection).
    Refuse(u16),
}

#[derive(Default)]
struct Recorded {
    /// Raw bytes per accepted connection, in accept order.
    connections: Vec<Vec<u8>>,
    /// `METHOD target VERSION` of every request parsed, in order.
    requests: Vec<String>,
}

struct Shared {
    recorded: Mutex<Recorded>,
    upgrade: Mutex<UpgradeAnswer>,
    released: Mutex<bool>,
    release: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn recorded(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running recording upstream on 127.0.0.1, stopped on drop.
pub struct RecordingUpstream {
    address: SocketAddr,
    shared: Arc<Shared>,
}

impl RecordingUpstream {
    /// Listens on a free port; upgrades are answered with 101.
    pub fn start() -> RecordingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the recording upstream");
        let address = listener.local_addr().expect("the recording upstream's address");
        let shared = Arc::new(Shared {
            recorded: Mutex::new(Recorded::default()),
            upgrade: Mutex::new(UpgradeAnswer::Switch),
            released: Mutex::new(false),
            release: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let index = {
                    let mut recorded = accepting.recorded();
                    recorded.connections.push(Vec::new());
                    recorded.connections.len() - 1
                };
                let shared = Arc::clone(&accepting);
                thread::spawn(move || serve(stream, index, &shared));
            }
        });
        RecordingUpstream { address, shared }
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// How the next upgrade requests are answered.
    pub fn answer_upgrades(&self, answer: UpgradeAnswer) {
        *self.shared.upgrade.lock().unwrap_or_else(|p| p.into_inner()) = answer;
    }

    /// Answers every held request (and those still to come).
    pub fn release(&self) {
        *self.shared.released.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.release.notify_all();
    }

    /// Every byte received, per connection.
    pub fn connections(&self) -> Vec<Vec<u8>> {
        self.shared.recorded().connections.clone()
    }

    /// Every request line parsed so far (`GET /app/x HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.shared.recorded().requests.clone()
    }

    /// Whether any connection received `needle` anywhere in its bytes.
    pub fn received(&self, needle: &[u8]) -> bool {
        self.shared.recorded().connections.iter().any(|bytes| find(bytes, needle).is_some())
    }

    /// Everything received, lossily as text, for failure messages.
    pub fn dump(&self) -> String {
        let recorded = self.shared.recorded();
        recorded
            .connections
            .iter()
            .enumerate()
            .map(|(i, bytes)| format!("--- connection {i} ---\n{}\n", String::from_utf8_lossy(bytes).escape_debug()))
            .collect()
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        let mut recorded = self.shared.recorded();
        for connection in &mut recorded.connections {
            connection.clear();
        }
        recorded.requests.clear();
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
    }
}

/// One connection: parse requests, record, answer, until the peer closes.
fn serve(mut stream: TcpStream, index: usize, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut reader = Reader { buf: Vec::new(), index, shared };
    loop {
        let Some(head) = reader.head(&mut stream) else { return };
        let request_line = head.lines().next().unwrap_or_default().to_string();
        shared.recorded().requests.push(request_line.clone());
        let headers: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let body_ok = if header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            reader.chunked(&mut stream)
        } else if let Some(length) = header("content-length") {
            length.parse::<usize>().ok().is_some_and(|length| reader.take(&mut stream, length))
        } else {
            true
        };
        if !body_ok {
            return;
        }
        let target = request_line.split(' ').nth(1).unwrap_or_default().to_string();
        if target.starts_with(HOLD_PREFIX) {
            let released = shared.released.lock().unwrap_or_else(|p| p.into_inner());
            let _ = shared.release.wait_timeout_while(released, HOLD_LIMIT, |released| !*released);
        }
        let body = format!("upstream saw {request_line}\n");
        if header("upgrade").is_some() {
            let answer = *shared.upgrade.lock().unwrap_or_else(|p| p.into_inner());
            match answer {
                UpgradeAnswer::Switch => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                    );
                    // From here on the bytes are the upgraded protocol's:
                    // only recorded.
                    while reader.fill(&mut stream) {}
                    return;
                }
                UpgradeAnswer::Refuse(status) => {
                    let response = format!(
                        "HTTP/1.1 {status} Refused\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                    continue;
                }
            }
        }
        let response =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}", body.len());
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads from the connection, recording every byte.
struct Reader<'a> {
    buf: Vec<u8>,
    index: usize,
    shared: &'a Shared,
}

impl Reader<'_> {
    /// Reads more bytes; false at the end of the stream (or on an error).
    fn fill(&mut self, stream: &mut TcpStream) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(connection) = self.shared.recorded().connections.get_mut(self.index) {
                        connection.extend_from_slice(&chunk[..n]);
                    }
                    return true;
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = stream.shutdown(Shutdown::Both);
                    return false;
                }
            }
        }
    }

    /// The next request head (without the blank line), or None at the end.
    fn head(&mut self, stream: &mut TcpStream) -> Option<String> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 4);
                return Some(head);
            }
            if !self.fill(stream) {
                return None;
            }
        }
    }

    fn take(&mut self, stream: &mut TcpStream, length: usize) -> bool {
        while self.buf.len() < length {
            if !self.fill(stream) {
                return false;
            }
        }
        self.buf.drain(..length);
        true
    }

    fn line(&mut self, stream: &mut TcpStream) -> Option<String> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return Some(line);
            }
            if !self.fill(stream) {
                return None;
            }
        }
    }

    fn chunked(&mut self, stream: &mut TcpStream) -> bool {
        loop {
            let Some(line) = self.line(stream) else { return false };
            let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16) else {
                return false;
            };
            if size == 0 {
                loop {
                    match self.line(stream) {
                        Some(line) if line.is_empty() => return true,
                        Some(_) => {}
                        None => return false,
                    }
                }
            }
            if !self.take(stream, size + 2) {
                return false;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw_http;

    #[test]
    fn records_and_answers_keep_alive_requests() {
        let upstream = RecordingUpstream::start();
        let request = b"POST /app/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /app/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let response = raw_http::exchange(upstream.address(), request).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "upstream saw POST /app/a HTTP/1.1\n");
        assert!(response.trailing.starts_with(b"HTTP/1.1 200 OK"));
        assert_eq!(upstream.requests(), vec!["POST /app/a HTTP/1.1", "GET /app/b HTTP/1.1"]);
        assert!(upstream.received(b"abcGET"));
    }

    #[test]
    fn refuses_upgrades_when_told() {
        let upstream = RecordingUpstream::start();
        upstream.answer_upgrades(UpgradeAnswer::Refuse(426));
        let response = raw_http::exchange(
            upstream.address(),
            b"GET /app/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        assert_eq!(response.status, 426);
    }
}
