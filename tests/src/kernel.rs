//! A minimal Jupyter kernel client: REST to create a kernel, the channels
//! websocket to run code, the way JupyterLab talks to a notebook server.
//!
//! Messages use Jupyter's JSON websocket protocol (no subprotocol): each
//! text frame is one message with its `channel`. Only what the tests need is
//! implemented: `execute_request` and the `text/plain` of its result.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::http_client;

/// Bound on one execution, the kernel's start-up included (a fresh kernel
/// on a busy two-core machine can take several seconds).
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the websocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts a `python3` kernel with `POST {base}api/kernels` and returns its
/// id. `base` is the server's URL ending in `/` (direct or through the
/// gateway).
pub async fn create_kernel(base: &str) -> String {
    let url = format!("{base}api/kernels");
    let response = http_client()
        .post(&url)
        .json(&json!({ "name": "python3" }))
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST {url}: {error}"));
    let status = response.status();
    let body = response.text().await.unwrap_or_else(|error| panic!("reading the body of POST {url}: {error}"));
    assert_eq!(status.as_u16(), 201, "POST {url} answered {status}: {body}");
    let kernel: Value = serde_json::from_str(&body).unwrap_or_else(|error| panic!("POST {url}: {error} in {body}"));
    kernel["id"].as_str().unwrap_or_else(|| panic!("POST {url}: no id in {body}")).to_string()
}

/// `ws://…{base}api/kernels/{id}/channels` for an `http://` (or `wss://`
/// for an `https://`) `base`.
pub fn channels_url(base: &str, kernel_id: &str) -> String {
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}api/kernels/{kernel_id}/channels")
}

/// Opens `ws_url`, runs `code` and returns the `text/plain` of its result.
pub async fn execute(ws_url: &str, code: &str) -> String {
    let mut socket = KernelSocket::connect(ws_url).await;
    let result = socket.execute(code).await;
    socket.close().await;
    result
}

/// An open kernel channels websocket that can run code any number of times:
/// tests use it to show a websocket outlives a config reload.
pub struct KernelSocket {
    url: String,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
}

impl KernelSocket {
    /// Opens the websocket (bounded); panics with the reason on failure.
    pub async fn connect(ws_url: &str) -> KernelSocket {
        let (ws, _response) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(ws_url))
            .await
            .unwrap_or_else(|_| panic!("websocket handshake with {ws_url} took over {CONNECT_TIMEOUT:?}"))
            .unwrap_or_else(|error| panic!("websocket handshake with {ws_url}: {error}"));
        KernelSocket { url: ws_url.to_string(), ws, session: unique_id("session") }
    }

    /// Sends an `execute_request` for `code` on the shell channel and returns
    /// the `text/plain` of the `execute_result` it caused ("" for code
    /// without a value). Panics on a kernel error, a closed socket or after
    /// [`EXECUTE_TIMEOUT`].
    pub async fn execute(&mut self, code: &str) -> String {
        let msg_id = self.start_execute(code).await;
        self.finish_execute(&msg_id).await
    }

    /// Sends an `execute_request` for `code` and returns its msg_id without
    /// waiting (a long-running cell); [`KernelSocket::finish_execute`] waits.
    pub async fn start_execute(&mut self, code: &str) -> String {
        let msg_id = unique_id("execute");
        let request = json!({
            "header": {
                "msg_id": msg_id,
                "username": "portico-e2e",
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
            "channel": "shell",
        });
        let url = self.url.clone();
        tokio::time::timeout(EXECUTE_TIMEOUT, self.ws.send(Message::text(request.to_string())))
            .await
            .unwrap_or_else(|_| panic!("sending execute_request on {url} took over {EXECUTE_TIMEOUT:?}"))
            .unwrap_or_else(|error| panic!("sending execute_request on {url}: {error}"));
        msg_id
    }

    /// The `text/plain` result of request `msg_id` (see [`KernelSocket::execute`]).
    pub async fn finish_execute(&mut self, msg_id: &str) -> String {
        let url = self.url.clone();
        tokio::time::timeout(EXECUTE_TIMEOUT, self.collect_result(msg_id))
            .await
            .unwrap_or_else(|_| panic!("no result for {msg_id} on {url} within {EXECUTE_TIMEOUT:?}"))
    }

    /// Reads messages until both the reply of request `msg_id` and the
    /// kernel's `idle` status for it are in: the cell is over only then
    /// (the reply and the result come before the idle status, and a test
    /// that starts the next cell earlier sees the kernel busy with this
    /// one). Messages of other requests (the server's `kernel_info` on
    /// connect, the tail of an earlier execution) are skipped.
    async fn collect_result(&mut self, msg_id: &str) -> String {
        let mut result: Option<String> = None;
        let (mut replied, mut idle) = (false, false);
        while !(replied && idle) {
            let frame = match self.ws.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => panic!("websocket {} failed: {error}", self.url),
                None => panic!("websocket {} closed before the result", self.url),
            };
            let Message::Text(text) = frame else { continue };
            let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else { continue };
            if message["parent_header"]["msg_id"].as_str() != Some(msg_id) {
                continue;
            }
            let content = &message["content"];
            match message["header"]["msg_type"].as_str().unwrap_or_default() {
                "execute_result" => {
                    result = Some(content["data"]["text/plain"].as_str().unwrap_or_default().to_string());
                }
                "error" => panic!(
                    "the kernel raised {}: {}\n{}",
                    content["ename"],
                    content["evalue"],
                    content["traceback"]
                        .as_array()
                        .map(|lines| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n"))
                        .unwrap_or_default()
                ),
                "execute_reply" => {
                    assert_eq!(content["status"], "ok", "execute_reply: {content}");
                    replied = true;
                }
                "status" if content["execution_state"] == "idle" => idle = true,
                _ => {}
            }
        }
        result.unwrap_or_default()
    }

    /// Closes the websocket politely (bounded; errors are irrelevant here).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ws.close(None)).await;
    }
}

/// An id unique within this machine and run: msg_ids must not collide
/// between sockets, which share one kernel's iopub stream.
fn unique_id(kind: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("portico-e2e-{kind}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The current UTC time as RFC 3339 with microseconds, as Jupyter writes
/// `header.date`.
fn now_rfc3339() -> String {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let day_secs = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        since_epoch.subsec_micros()
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn channels_urls_follow_the_scheme() {
        assert_eq!(channels_url("http://127.0.0.1:1/nb/", "k"), "ws://127.0.0.1:1/nb/api/kernels/k/channels");
        assert_eq!(channels_url("https://h/nb/", "k"), "wss://h/nb/api/kernels/k/channels");
    }

    #[test]
    fn ids_are_unique_and_dates_well_formed() {
        assert_ne!(unique_id("a"), unique_id("a"));
        let date = now_rfc3339();
        assert_eq!(date.len(), "2024-10-04T00:00:00.000000Z".len(), "{date}");
        assert!(date.ends_with('Z'));
    }
}
