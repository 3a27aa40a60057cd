//! The kernel channels websocket (RFC 6455, server side), written to make an
//! idle connection nearly free: thousands of open kernel websockets must fit
//! in one process, as they do behind a real notebook gateway.
//!
//! The handshake goes through hyper's upgrade; afterwards the raw `TcpStream`
//! is taken back and the task waits for readiness with no buffer at all.
//! Bytes are read into a stack chunk only once they have arrived, frames are
//! decoded by the sans-io [`Channel`], and any partial frame or fragmented
//! message is kept only as long as it is incomplete.

use std::io::ErrorKind;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::ids::IdGenerator;
use crate::kernel::KernelSession;
use crate::server::State;

/// Largest frame or reassembled message accepted (close 1009 above it).
const MAX_MESSAGE: usize = 64 << 20;
/// Bytes read from the socket per readiness event.
const READ_CHUNK: usize = 16 << 10;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_TOO_BIG: u16 = 1009;

/// Whether `request` asks to become a websocket.
pub fn is_upgrade(request: &Request<Incoming>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Answers the handshake (101) and serves the channel once hyper hands the
/// connection over. Bad handshakes get 400 / 426 like Tornado's.
pub fn accept(mut request: Request<Incoming>, state: Arc<State>) -> Response<Full<Bytes>> {
    let version_ok = request.headers().get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() == b"13");
    if !version_ok {
        let mut response = plain(StatusCode::UPGRADE_REQUIRED, "websocket version 13 required\n");
        response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            serve(upgraded, state).await;
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

/// Counts the open websocket while alive (Jupyter's `connections` in `/api/status`).
struct OpenGuard(Arc<State>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.websocket_closed();
    }
}

async fn serve(upgraded: Upgraded, state: Arc<State>) {
    state.websocket_opened();
    let guard = OpenGuard(state);
    let state = &guard.0;
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => serve_tcp(parts.io.into_inner(), parts.read_buf, state).await,
        Err(upgraded) => serve_io(TokioIo::new(upgraded), state).await,
    }
}

/// The common case: readiness first, then a stack chunk, so an idle socket
/// holds no buffer.
async fn serve_tcp(mut stream: TcpStream, already_read: Bytes, state: &State) {
    let mut channel = Channel::new(&state.ids);
    let mut out = Vec::new();
    let mut open = channel.receive(&already_read, &state.ids, &mut out);
    drop(already_read);
    loop {
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out = Vec::new();
        }
        if !open {
            let _ = stream.shutdown().await;
            return;
        }
        if stream.readable().await.is_err() {
            return;
        }
        let mut chunk = [0u8; READ_CHUNK];
        match stream.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => open = channel.receive(&chunk[..n], &state.ids, &mut out),
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
}

/// Fallback for a connection hyper did not hand back as a `TcpStream`.
async fn serve_io<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, state: &State) {
    let mut channel = Channel::new(&state.ids);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let open = match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => channel.receive(&chunk[..n], &state.ids, &mut out),
        };
        if !out.is_empty() && io.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        if !open {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// A decoded frame's header: where its payload is and how to unmask it.
#[derive(Debug, PartialEq, Eq)]
struct FrameHead {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    payload_start: usize,
    payload_end: usize,
}

/// Decodes the frame at the start of `buf`: `Ok(None)` until all of it has
/// arrived, `Err(close code)` for frames a server must refuse.
fn parse_frame(buf: &[u8]) -> Result<Option<FrameHead>, u16> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
        // Reserved bits without an extension, or an unmasked client frame.
        return Err(CLOSE_PROTOCOL_ERROR);
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    let (length, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
            Some(bytes) => (u64::from_be_bytes(bytes), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode >= OP_CLOSE && (length > 125 || !fin) {
        return Err(CLOSE_PROTOCOL_ERROR);
    }
    let length = usize::try_from(length).ok().filter(|&l| l <= MAX_MESSAGE).ok_or(CLOSE_TOO_BIG)?;
    let Some(mask) = buf.get(at..at + 4).and_then(|s| <[u8; 4]>::try_from(s).ok()) else {
        return Ok(None);
    };
    at += 4;
    if buf.len() < at + length {
        return Ok(None);
    }
    Ok(Some(FrameHead { fin, opcode, mask, payload_start: at, payload_end: at + length }))
}

/// Appends one unmasked server frame.
fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// One websocket's protocol state, independent of I/O.
#[derive(Debug)]
pub struct Channel {
    /// Bytes of a frame that has not fully arrived (empty, unallocated, when idle).
    partial: Vec<u8>,
    /// A fragmented message being reassembled, with its opcode.
    message: Option<(u8, Vec<u8>)>,
    kernel: KernelSession,
}

impl Channel {
    /// A fresh channel with its own kernel session.
    pub fn new(ids: &IdGenerator) -> Channel {
        Channel { partial: Vec::new(), message: None, kernel: KernelSession::new(ids) }
    }

    /// Feeds received bytes; appends the bytes to send to `out`. Returns
    /// false once the connection must close (after a close frame was queued).
    pub fn receive(&mut self, input: &[u8], ids: &IdGenerator, out: &mut Vec<u8>) -> bool {
        if input.is_empty() {
            return true;
        }
        if self.partial.is_empty() {
            let (used, open) = self.frames(input, ids, out);
            if open && used < input.len() {
                self.partial = input[used..].to_vec();
            }
            open
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(input);
            let (used, open) = self.frames(&buf, ids, out);
            if open && used < buf.len() {
                buf.drain(..used);
                self.partial = buf;
            }
            open
        }
    }

    fn frames(&mut self, buf: &[u8], ids: &IdGenerator, out: &mut Vec<u8>) -> (usize, bool) {
        let mut used = 0;
        loop {
            let head = match parse_frame(&buf[used..]) {
                Ok(Some(head)) => head,
                Ok(None) => return (used, true),
                Err(code) => {
                    write_frame(out, OP_CLOSE, &code.to_be_bytes());
                    return (buf.len(), false);
                }
            };
            let mut payload = buf[used + head.payload_start..used + head.payload_end].to_vec();
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= head.mask[i % 4];
            }
            used += head.payload_end;
            if !self.frame(head.fin, head.opcode, payload, ids, out) {
                return (buf.len(), false);
            }
        }
    }

    fn frame(&mut self, fin: bool, opcode: u8, payload: Vec<u8>, ids: &IdGenerator, out: &mut Vec<u8>) -> bool {
        let close = |out: &mut Vec<u8>, code: u16| {
            write_frame(out, OP_CLOSE, &code.to_be_bytes());
            false
        };
        match opcode {
            OP_TEXT | OP_BINARY if self.message.is_some() => close(out, CLOSE_PROTOCOL_ERROR),
            OP_TEXT | OP_BINARY if fin => {
                self.message_done(opcode, &payload, ids, out);
                true
            }
            OP_TEXT | OP_BINARY => {
                self.message = Some((opcode, payload));
                true
            }
            OP_CONTINUATION => {
                let Some((kind, mut message)) = self.message.take() else {
                    return close(out, CLOSE_PROTOCOL_ERROR);
                };
                if message.len() + payload.len() > MAX_MESSAGE {
                    return close(out, CLOSE_TOO_BIG);
                }
                message.extend_from_slice(&payload);
                if fin {
                    self.message_done(kind, &message, ids, out);
                } else {
                    self.message = Some((kind, message));
                }
                true
            }
            OP_CLOSE => {
                // Echo the status code (RFC 6455 5.5.1), then close.
                write_frame(out, OP_CLOSE, payload.get(..2).unwrap_or_default());
                false
            }
            OP_PING => {
                write_frame(out, OP_PONG, &payload);
                true
            }
            OP_PONG => true,
            _ => close(out, CLOSE_PROTOCOL_ERROR),
        }
    }

    fn message_done(&mut self, opcode: u8, message: &[u8], ids: &IdGenerator, out: &mut Vec<u8>) {
        // Binary messages are Jupyter's v1 protocol, which this fake never
        // negotiates; a client that sends one anyway gets no answer.
        if opcode == OP_TEXT {
            for reply in self.kernel.answer(message, ids) {
                write_frame(out, OP_TEXT, reply.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut frame = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 65535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    /// Splits server output into (opcode, payload) frames.
    fn server_frames(mut out: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !out.is_empty() {
            let opcode = out[0] & 0x0f;
            let (len, at) = match out[1] {
                126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                127 => (u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize, 10),
                n => (n as usize, 2),
            };
            frames.push((opcode, out[at..at + len].to_vec()));
            out = &out[at + len..];
        }
        frames
    }

    fn execute_request(code: &str) -> Vec<u8> {
        serde_json::json!({
            "header": { "msg_id": "x", "msg_type": "execute_request" },
            "channel": "shell",
            "content": { "code": code },
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn answers_an_execute_request_fed_byte_by_byte() {
        let ids = IdGenerator::default();
        let mut channel = Channel::new(&ids);
        let mut out = Vec::new();
        for byte in client_frame(true, OP_TEXT, &execute_request("1+1")) {
            assert!(channel.receive(&[byte], &ids, &mut out));
        }
        let frames = server_frames(&out);
        assert_eq!(frames.len(), 4);
        assert!(frames.iter().all(|(op, _)| *op == OP_TEXT));
        let result: serde_json::Value = serde_json::from_slice(&frames[1].1).unwrap();
        assert_eq!(result["content"]["data"]["text/plain"], "2");
        assert!(channel.partial.is_empty() && channel.partial.capacity() == 0, "idle channels hold no buffer");
    }

    #[test]
    fn reassembles_fragments_and_answers_pings_between_them() {
        let ids = IdGenerator::default();
        let mut channel = Channel::new(&ids);
        let message = execute_request("40 + 2");
        let mut input = client_frame(false, OP_TEXT, &message[..10]);
        input.extend(client_frame(true, OP_PING, b"hi"));
        input.extend(client_frame(true, OP_CONTINUATION, &message[10..]));
        let mut out = Vec::new();
        assert!(channel.receive(&input, &ids, &mut out));
        let frames = server_frames(&out);
        assert_eq!(frames[0], (OP_PONG, b"hi".to_vec()));
        assert_eq!(frames.len(), 5);
        assert!(String::from_utf8_lossy(&frames[2].1).contains("\"42\""));
    }

    #[test]
    fn large_frames_use_extended_lengths() {
        let ids = IdGenerator::default();
        let mut channel = Channel::new(&ids);
        let mut code = "1+1".to_string();
        code.push_str(&" ".repeat(70_000)); // 64-bit length on the way in
        let mut out = Vec::new();
        assert!(channel.receive(&client_frame(true, OP_TEXT, &execute_request(&code)), &ids, &mut out));
        assert_eq!(server_frames(&out).len(), 4);
        let mut medium = Vec::new();
        write_frame(&mut medium, OP_TEXT, &[b'a'; 300]);
        assert_eq!(server_frames(&medium), [(OP_TEXT, vec![b'a'; 300])]);
    }

    #[test]
    fn closes_on_close_and_on_protocol_errors() {
        let ids = IdGenerator::default();
        let mut out = Vec::new();
        assert!(!Channel::new(&ids).receive(&client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()), &ids, &mut out));
        assert_eq!(server_frames(&out), [(OP_CLOSE, 1000u16.to_be_bytes().to_vec())]);

        let mut unmasked = client_frame(true, OP_TEXT, b"{}");
        unmasked[1] &= 0x7f;
        out.clear();
        assert!(!Channel::new(&ids).receive(&unmasked, &ids, &mut out));
        assert_eq!(server_frames(&out), [(OP_CLOSE, 1002u16.to_be_bytes().to_vec())]);

        out.clear();
        assert!(!Channel::new(&ids).receive(&client_frame(true, OP_CONTINUATION, b"x"), &ids, &mut out));
        out.clear();
        assert!(!Channel::new(&ids).receive(&client_frame(false, OP_PING, b""), &ids, &mut out));
    }
}
