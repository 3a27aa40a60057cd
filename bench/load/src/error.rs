//! Errors: [`OpError`] for one failed network operation (counted by kind in
//! the report, never fatal) and [`SetupError`] for what stops a run before
//! it starts.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// One failed operation; the run counts it under [`OpError::kind`] and goes on.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("connection closed by the server")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("malformed HTTP response: {0}")]
    Protocol(String),
    #[error("websocket: {0}")]
    WebSocket(String),
    #[error("kernel: {0}")]
    Kernel(String),
}

impl OpError {
    /// The report's error bucket: `connect`, `timeout`, `status_503`,
    /// `closed`, `io`, `protocol`, `websocket` or `kernel`.
    pub fn kind(&self) -> Cow<'static, str> {
        match self {
            OpError::Connect { .. } => "connect".into(),
            OpError::Timeout(_) => "timeout".into(),
            OpError::Status(code) => format!("status_{code}").into(),
            OpError::Closed => "closed".into(),
            OpError::Io(_) => "io".into(),
            OpError::Protocol(_) => "protocol".into(),
            OpError::WebSocket(_) => "websocket".into(),
            OpError::Kernel(_) => "kernel".into(),
        }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for OpError {
    fn from(error: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error as WsError;
        match error {
            WsError::Http(response) => OpError::Status(response.status().as_u16()),
            WsError::Io(error) => OpError::Io(error),
            WsError::ConnectionClosed | WsError::AlreadyClosed => OpError::Closed,
            other => OpError::WebSocket(other.to_string()),
        }
    }
}

/// What keeps a run from starting.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("resolving {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("starting worker thread: {0}")]
    Runtime(io::Error),
    #[error("histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
    #[error("a worker thread panicked")]
    WorkerPanicked,
    #[error("preparing the notebook at {base}: {source}")]
    Prepare { base: String, source: OpError },
    #[error("writing {path}: {source}")]
    Write { path: String, source: io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stable_report_keys() {
        assert_eq!(OpError::Status(503).kind(), "status_503");
        assert_eq!(OpError::Timeout(Duration::from_secs(1)).kind(), "timeout");
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(OpError::Connect { addr: ([127, 0, 0, 1], 1).into(), source: refused }.kind(), "connect");
    }
}
