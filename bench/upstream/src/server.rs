//! Listening, accepting and handing connections to hyper.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::ids::{IdGenerator, now_rfc3339};
use crate::routes;

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Size of the JSON body served for paths that are not Jupyter API calls.
    pub body_bytes: usize,
    /// Also accept HTTP/2 with prior knowledge (h2c) on the same port.
    pub h2c: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { body_bytes: 1024, h2c: false }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// What every connection shares.
#[derive(Debug)]
pub struct State {
    pub ids: IdGenerator,
    pub body: Bytes,
    pub contents: Bytes,
    pub started: String,
    kernels: AtomicU64,
    websockets: AtomicU64,
    h2c: bool,
}

impl State {
    fn new(config: &Config) -> State {
        let started = now_rfc3339();
        State {
            ids: IdGenerator::default(),
            body: padded_body(config.body_bytes),
            contents: routes::contents_listing(&started),
            started,
            kernels: AtomicU64::new(0),
            websockets: AtomicU64::new(0),
            h2c: config.h2c,
        }
    }

    pub fn kernel_started(&self) {
        self.kernels.fetch_add(1, Ordering::Relaxed);
    }

    pub fn kernel_deleted(&self) {
        let _ = self.kernels.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    pub fn kernels(&self) -> u64 {
        self.kernels.load(Ordering::Relaxed)
    }

    pub fn websocket_opened(&self) {
        self.websockets.fetch_add(1, Ordering::Relaxed);
    }

    pub fn websocket_closed(&self) {
        self.websockets.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn websockets(&self) -> u64 {
        self.websockets.load(Ordering::Relaxed)
    }
}

/// A JSON object of exactly `size` bytes (from 10 bytes up; smaller sizes get
/// `{}` padded with spaces, 0 an empty body).
fn padded_body(size: usize) -> Bytes {
    const HEAD: &str = "{\"pad\":\"";
    const TAIL: &str = "\"}";
    let mut body = String::with_capacity(size);
    if size >= HEAD.len() + TAIL.len() {
        body.push_str(HEAD);
        body.extend(std::iter::repeat_n('x', size - HEAD.len() - TAIL.len()));
        body.push_str(TAIL);
    } else if size >= 2 {
        body.push_str("{}");
        body.extend(std::iter::repeat_n(' ', size - 2));
    } else {
        body.extend(std::iter::repeat_n(' ', size));
    }
    Bytes::from(body)
}

/// Listens on `addr` with a deep accept backlog (ramps of thousands of
/// websockets arrive at once).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
    let listen = |socket: io::Result<TcpSocket>| {
        let socket = socket?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(8192)
    };
    listen(socket).map_err(|source| Error::Bind { addr, source })
}

/// Serves connections from `listener` forever.
pub async fn serve(listener: TcpListener, config: Config) {
    let state = Arc::new(State::new(&config));
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(connection(stream, state.clone()));
            }
            Err(error) => {
                // Out of descriptors or the like: wait for some to close
                // instead of spinning.
                eprintln!("portico-fake-notebook: accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let h2 = state.h2c && starts_with_h2_preface(&stream).await;
    let service = service_fn(move |request| routes::handle(request, state.clone()));
    let io = TokioIo::new(stream);
    // Errors here are the client's (reset, garbage): nothing to report.
    let _ = if h2 {
        http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await
    } else {
        http1::Builder::new().serve_connection(io, service).with_upgrades().await
    };
}

/// Whether the client opened with HTTP/2's connection preface. Peeks, so
/// the bytes stay for whichever protocol serves the connection.
async fn starts_with_h2_preface(stream: &TcpStream) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    for _ in 0..1000 {
        match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) if buf[..n] != PREFACE[..n] => return false,
            Ok(n) if n == PREFACE.len() => return true,
            // Part of a matching preface: the rest is in flight.
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_asked_size_and_are_json() {
        for size in [10, 11, 100, 1024, 65536] {
            let body = padded_body(size);
            assert_eq!(body.len(), size);
            serde_json::from_slice::<serde_json::Value>(&body).unwrap();
        }
        assert_eq!(padded_body(0).len(), 0);
        assert_eq!(&padded_body(4)[..], b"{}  ");
    }
}
