//! A Jupyter client as a notebook tab is one: REST calls over one keep-alive
//! connection (carrying Jupyter's `_xsrf` cookie and an optional token) and
//! the kernel channels websocket with JSON messages (no subprotocol, which
//! every Jupyter server accepts).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::OpError;
use crate::h1::{H1Conn, Response, build_request};
use crate::target::Target;

/// One notebook server as seen by one client: base URL, cookies, token and
/// a keep-alive connection.
#[derive(Debug)]
pub struct Notebook {
    /// Base URL target; its path ends with `/`.
    pub base: Target,
    token: Option<String>,
    cookies: BTreeMap<String, String>,
    conn: Option<H1Conn>,
}

impl Notebook {
    pub fn new(base: Target, token: Option<String>) -> Notebook {
        Notebook { base, token, cookies: BTreeMap::new(), conn: None }
    }

    /// `method` on `rel` (relative to the base), keeping the body. Errors on
    /// statuses >= 400. A reused connection the server had closed is
    /// reopened once, as browsers do.
    pub async fn call(&mut self, method: &str, rel: &str, body: Option<&[u8]>) -> Result<Response, OpError> {
        let target = self.base.join(rel);
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(cookie) = self.cookie_header() {
            headers.push(("Cookie", cookie));
        }
        if let Some(token) = &self.token {
            headers.push(("Authorization", format!("token {token}")));
        }
        if let Some(xsrf) = self.cookies.get("_xsrf").filter(|_| method != "GET") {
            headers.push(("X-XSRFToken", xsrf.clone()));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json".to_string()));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let request = build_request(method, &target.path, &target.authority, &headers, body);
        let mut attempts = 0;
        let response = loop {
            attempts += 1;
            let reused = self.conn.is_some();
            let conn = match &mut self.conn {
                Some(conn) => conn,
                empty => empty.insert(H1Conn::connect(self.base.addr).await?),
            };
            match conn.exchange(&request, method == "HEAD", true).await {
                Ok(response) => break response,
                Err(OpError::Closed | OpError::Io(_)) if reused && attempts == 1 => self.conn = None,
                Err(error) => {
                    self.conn = None;
                    return Err(error);
                }
            }
        };
        if response.close {
            self.conn = None;
        }
        self.cookies.extend(response.cookies.iter().cloned());
        if response.status >= 400 {
            return Err(OpError::Status(response.status));
        }
        Ok(response)
    }

    /// Loads `page` once for the cookies it sets (Jupyter's `_xsrf`, which
    /// POST and DELETE must echo); its status does not matter. Bounded by `limit`.
    pub async fn prime(&mut self, page: &str, limit: Duration) {
        if self.cookies.contains_key("_xsrf") {
            return;
        }
        if tokio::time::timeout(limit, self.call("GET", page, None)).await.is_err() {
            self.reset();
        }
    }

    /// Drops the keep-alive connection (after a timeout mid-request).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty())
            .then(|| self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }

    /// Starts a `python3` kernel; returns its id.
    pub async fn create_kernel(&mut self) -> Result<String, OpError> {
        let response = self.call("POST", "api/kernels", Some(br#"{"name":"python3"}"#)).await?;
        let kernel: Value =
            serde_json::from_slice(&response.body).map_err(|e| OpError::Kernel(format!("kernel model: {e}")))?;
        kernel["id"].as_str().map(str::to_string).ok_or_else(|| OpError::Kernel("kernel model has no id".into()))
    }

    /// Shuts a kernel down.
    pub async fn delete_kernel(&mut self, id: &str) -> Result<(), OpError> {
        self.call("DELETE", &format!("api/kernels/{id}"), None).await.map(drop)
    }

    /// The channels websocket target of kernel `id`, with a fresh
    /// `session_id` as JupyterLab sends.
    pub fn channels(&self, id: &str) -> Target {
        self.base.join(&format!("api/kernels/{id}/channels?session_id={}", unique_id()))
    }

    /// Headers a websocket to this server needs (cookies, token).
    pub fn ws_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(cookie) = self.cookie_header() {
            headers.push(("Cookie", cookie));
        }
        if let Some(token) = &self.token {
            headers.push(("Authorization", format!("token {token}")));
        }
        headers
    }
}

/// What an `execute_request` came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// `text/plain` of the `execute_result` (None if the code had no value).
    pub result: Option<String>,
    /// From sending the request to the `execute_reply`.
    pub round_trip: Duration,
}

/// An open kernel channels websocket.
#[derive(Debug)]
pub struct KernelSocket {
    ws: WebSocketStream<TcpStream>,
    session: String,
}

impl KernelSocket {
    /// Opens `target` (a `.../channels` URL) with `headers`. Small buffers:
    /// `ws-idle` holds thousands of these in one process.
    pub async fn connect(target: &Target, headers: &[(&'static str, String)]) -> Result<KernelSocket, OpError> {
        let addr = target.addr;
        let stream = TcpStream::connect(addr).await.map_err(|source| OpError::Connect { addr, source })?;
        stream.set_nodelay(true)?;
        let mut request = target.ws_url().into_client_request()?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|e| OpError::WebSocket(e.to_string()))?;
            request.headers_mut().insert(*name, value);
        }
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (ws, _response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
        // Messages carry the session the URL named, if it named one.
        let session = target
            .path
            .split_once("session_id=")
            .map(|(_, rest)| rest.split('&').next().unwrap_or_default().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(unique_id);
        Ok(KernelSocket { ws, session })
    }

    /// Runs `code`; returns its result once the `execute_reply` and the
    /// result (or the idle status) are in. The caller bounds the time.
    pub async fn execute(&mut self, code: &str) -> Result<Execution, OpError> {
        let msg_id = unique_id();
        let request = json!({
            "header": {
                "msg_id": msg_id,
                "username": "portico-load",
                "session": self.session,
                "msg_type": "execute_request",
                "version": "5.3",
                "date": now_rfc3339(),
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": false,
                "store_history": true,
                "user_expressions": {},
                "allow_stdin": false,
                "stop_on_error": true,
            },
            "buffers": [],
            "channel": "shell",
        });
        let sent = Instant::now();
        self.ws.send(Message::text(request.to_string())).await?;
        let (mut round_trip, mut result, mut idle) = (None, None, false);
        loop {
            let text = match self.ws.next().await {
                None => return Err(OpError::Closed),
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) => return Err(OpError::Closed),
                Some(Ok(_)) => continue, // pings are answered by tungstenite; binary is another protocol
            };
            let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
            if message["parent_header"]["msg_id"].as_str() != Some(msg_id.as_str()) {
                continue; // another client's or another request's message
            }
            let content = &message["content"];
            match message["header"]["msg_type"].as_str().or(message["msg_type"].as_str()) {
                Some("execute_reply") => {
                    round_trip = Some(sent.elapsed());
                    if content["status"] != "ok" {
                        let reason = format!("{}: {}", content["ename"], content["evalue"]);
                        return Err(OpError::Kernel(format!("execute_reply status {} ({reason})", content["status"])));
                    }
                }
                Some("execute_result") => result = content["data"]["text/plain"].as_str().map(str::to_string),
                Some("status") if content["execution_state"] == "idle" => idle = true,
                _ => {}
            }
            if let Some(round_trip) = round_trip.filter(|_| result.is_some() || idle) {
                return Ok(Execution { result, round_trip });
            }
        }
    }

    /// Waits for the next message (used while idle: answers pings, notices
    /// a close). Returns the reason the socket ended.
    pub async fn idle(&mut self) -> OpError {
        loop {
            match self.ws.next().await {
                None | Some(Ok(Message::Close(_))) => return OpError::Closed,
                Some(Err(error)) => return error.into(),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Sends a close frame and waits for the server's (the caller bounds the time).
    pub async fn close(mut self) {
        if self.ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = self.ws.next().await {}
        }
    }
}

/// A unique hex id (uuid-shaped) for sessions and messages.
pub fn unique_id() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = RandomState::new().hash_one(n) ^ seed;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        seed >> 32,
        (seed >> 16) & 0xffff,
        n & 0xffff,
        (n >> 16) & 0xffff,
        mixed & 0xffff_ffff_ffff
    )
}

fn now_rfc3339() -> String {
    // Seconds precision is enough for a client's message date.
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, (rest / 60) % 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| unique_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn dates_look_like_rfc3339() {
        let date = now_rfc3339();
        assert_eq!(date.len(), 20, "{date}");
        assert!(date.starts_with("20") && date.ends_with('Z'), "{date}");
    }
}
