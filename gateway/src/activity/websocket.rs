//! The activity of one websocket, read from the bytes the splice passes.
//!
//! What counts depends on what the connection carries ([`WebsocketKind`],
//! from the request path):
//!
//! * **Kernel** (`.../api/kernels/<id>/channels`), in both of Jupyter's
//!   wire formats (JSON text frames, and the binary
//!   `v1.kernel.websocket.jupyter.org` one: offsets, channel, then the
//!   header's JSON): the client's `execute_request`, `input_reply` and
//!   `comm_msg` count; so does a client message whose type is not within
//!   its first [`MAX_SCAN`] bytes (it cannot be told from a person's). The
//!   kernel's `status: busy` *for an `execute_request`* counts and marks
//!   the kernel busy until the same request's status turns `idle`: a busy
//!   kernel keeps its destination active (a long-running cell with no
//!   client traffic). Statuses for other requests (`kernel_info`,
//!   completions, JupyterLab's `debug_request`s on the control channel,
//!   which ipykernel answers on its own thread *while a cell runs*) are
//!   neither activity nor the end of a cell. The type read is the first
//!   `"msg_type"` key: the message's own header in both formats (Jupyter
//!   Server and JupyterLab write the header before the parent header); a
//!   status' request type is the next one that is not `status` (Jupyter
//!   Server's JSON repeats the own type at the top level).
//! * **Terminal** (`.../terminals/websocket/<name>`, terminado's JSON
//!   arrays): the client's `["stdin", ...]` counts; `set_size` and the
//!   terminal's output do not.
//! * **Other**: every client data message counts except a heartbeat: a
//!   message of at most [`HEARTBEAT_MAX_SIZE`] bytes, within
//!   [`HEARTBEAT_SIZE_SLACK`] bytes of the client's previous message, sent
//!   at least [`HEARTBEAT_MIN_GAP_MS`] after it, at the previous gap ±25%.
//!   So the first message after a pause always counts, keystrokes (small,
//!   but irregular and closer together) count, and a timer's steady ping
//!   stops counting from its third beat. The server's messages never count.
//!
//! Control frames (ping, pong, close) never count. A permessage-deflate
//! message (RSV1) cannot be read: from the client of a kernel or terminal
//! it counts (an idle tab sends none), the kernel's compressed statuses are
//! not seen (Jupyter Server does not compress by default), and on other
//! connections the heartbeat rule applies to the compressed sizes.
//!
//! The state is 256 bytes per connection (boxed once, when the
//! websocket opens) and nothing more is allocated while it lives: payloads
//! are scanned as they pass ([`super::scan`]).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use super::frames::{DataKind, FrameParser, MessageSink};
use super::scan::{FieldScan, FirstString, Key};
use super::{DestinationActivity, WebsocketKind};

/// Bytes of a message's payload scanned for its type at most.
pub const MAX_SCAN: u32 = 64 * 1024;
/// Largest message that can be a heartbeat.
pub const HEARTBEAT_MAX_SIZE: u64 = 1024;
/// Size difference between two beats of one heartbeat (a counter in it may grow).
pub const HEARTBEAT_SIZE_SLACK: u64 = 8;
/// Least gap between two beats of a heartbeat (keystrokes come faster).
pub const HEARTBEAT_MIN_GAP_MS: u64 = 1000;

/// The activity tracking of one open websocket; counts as open until dropped.
pub struct WebsocketWatch {
    destination: Arc<DestinationActivity>,
    kind: WebsocketKind,
    /// A hash of the kernel id (kernel connections).
    kernel: u64,
    /// Cells this connection saw start and not yet end (more than one
    /// with ipykernel's subshells).
    busy: u8,
    client: FrameParser,
    server: FrameParser,
    client_scan: MessageScan,
    server_scan: MessageScan,
    heartbeat: Heartbeat,
}

/// What is known of the message in flight in one direction.
struct MessageScan {
    compressed: bool,
    scanned: u32,
    /// A kernel message's type, once read.
    msg_type: Option<MsgType>,
    /// Reads `msg_type`, then (for a status) the request's `msg_type`.
    field: FieldScan,
    /// A status' request type, once read.
    parent: Option<MsgType>,
    /// A status' `execution_state`.
    state: FieldScan,
    /// A terminal message's type.
    first: FirstString,
}

impl Default for MessageScan {
    fn default() -> Self {
        Self {
            compressed: false,
            scanned: 0,
            msg_type: None,
            field: FieldScan::new(Key::MsgType),
            parent: None,
            state: FieldScan::new(Key::ExecutionState),
            first: FirstString::default(),
        }
    }
}

/// The kernel message types activity tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MsgType {
    /// `status`: the kernel's execution state.
    Status,
    /// `execute_request`: a cell (a person's from the client).
    Execute,
    /// A client's `input_reply` or `comm_msg`.
    Person,
    Other,
}

impl MsgType {
    fn of(value: Option<&[u8]>) -> MsgType {
        match value {
            Some(b"status") => MsgType::Status,
            Some(b"execute_request") => MsgType::Execute,
            Some(b"input_reply" | b"comm_msg") => MsgType::Person,
            _ => MsgType::Other,
        }
    }
}

/// The client's previous data message (the "other" rule), in 16 bytes.
#[derive(Default)]
struct Heartbeat {
    /// Milliseconds since [`epoch`] of the previous message (0: none yet).
    last_at: u64,
    last_size: u32,
    last_gap_ms: u32,
}

/// A process-wide start for [`Heartbeat`]'s millisecond stamps.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Heartbeat {
    /// Whether a client message of `size` bytes sent now is a heartbeat.
    fn beat(&mut self, size: u64) -> bool {
        self.beat_at(size, Instant::now())
    }

    fn beat_at(&mut self, size: u64, now: Instant) -> bool {
        // +1: a message in the epoch's own millisecond is still "seen".
        let at = now.saturating_duration_since(epoch()).as_millis() as u64 + 1;
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        let gap_ms = (self.last_at > 0).then(|| u32::try_from(at.saturating_sub(self.last_at)).unwrap_or(u32::MAX));
        let steady = gap_ms.is_some_and(|gap| {
            let previous = u64::from(self.last_gap_ms);
            u64::from(size) <= HEARTBEAT_MAX_SIZE
                && u64::from(size.abs_diff(self.last_size)) <= HEARTBEAT_SIZE_SLACK
                && previous >= HEARTBEAT_MIN_GAP_MS
                && u64::from(gap).abs_diff(previous) <= previous / 4
        });
        self.last_gap_ms = gap_ms.unwrap_or(0);
        self.last_at = at;
        self.last_size = size;
        steady
    }
}

/// What a websocket's path says it carries, and the kernel id's hash.
pub fn classify(path: &[u8]) -> (WebsocketKind, u64) {
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    if let Some(at) = find(path, b"/api/kernels/")
        && let Some(id) = path[at + b"/api/kernels/".len()..].strip_suffix(b"/channels")
        && !id.is_empty()
        && !id.contains(&b'/')
    {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        return (WebsocketKind::Kernel, hasher.finish());
    }
    if find(path, b"/terminals/websocket/").is_some() {
        return (WebsocketKind::Terminal, 0);
    }
    (WebsocketKind::Other, 0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

impl WebsocketWatch {
    /// Counts a websocket to `destination` opened at `path` as open.
    pub fn new(destination: Arc<DestinationActivity>, path: &[u8]) -> Self {
        let (kind, kernel) = classify(path);
        destination.opened(kind);
        Self {
            destination,
            kind,
            kernel,
            busy: 0,
            client: FrameParser::default(),
            server: FrameParser::default(),
            client_scan: MessageScan::default(),
            server_scan: MessageScan::default(),
            heartbeat: Heartbeat::default(),
        }
    }

    /// Bytes the client sent, as they pass.
    pub fn client_sent(&mut self, data: &[u8]) {
        let mut side = Side {
            kind: self.kind,
            from_client: true,
            scan: &mut self.client_scan,
            destination: &self.destination,
            heartbeat: &mut self.heartbeat,
            busy: &mut self.busy,
            kernel: self.kernel,
        };
        self.client.feed(data, &mut side);
    }

    /// Bytes the endpoint sent, as they pass.
    pub fn server_sent(&mut self, data: &[u8]) {
        if self.kind != WebsocketKind::Kernel {
            // Only a kernel's statuses matter from this side.
            return;
        }
        let mut side = Side {
            kind: self.kind,
            from_client: false,
            scan: &mut self.server_scan,
            destination: &self.destination,
            heartbeat: &mut self.heartbeat,
            busy: &mut self.busy,
            kernel: self.kernel,
        };
        self.server.feed(data, &mut side);
    }
}

impl Drop for WebsocketWatch {
    fn drop(&mut self) {
        if self.busy > 0 {
            self.destination.kernel_busy(self.kernel, false);
        }
        self.destination.closed(self.kind);
    }
}

/// One direction's view while its bytes are parsed.
struct Side<'a> {
    kind: WebsocketKind,
    from_client: bool,
    scan: &'a mut MessageScan,
    destination: &'a DestinationActivity,
    heartbeat: &'a mut Heartbeat,
    busy: &'a mut u8,
    kernel: u64,
}

impl Side<'_> {
    fn client_message_counts(&mut self, length: u64) -> bool {
        let scan = &*self.scan;
        match self.kind {
            WebsocketKind::Kernel if scan.compressed => true,
            // Not found within MAX_SCAN bytes: cannot be told from a person's.
            WebsocketKind::Kernel => matches!(scan.msg_type, None | Some(MsgType::Execute | MsgType::Person)),
            WebsocketKind::Terminal => scan.compressed || scan.first.value() == Some(b"stdin"),
            WebsocketKind::Other => !self.heartbeat.beat(length),
        }
    }

    fn kernel_status(&mut self) {
        if self.scan.compressed || self.scan.msg_type != Some(MsgType::Status) {
            return;
        }
        if self.scan.parent != Some(MsgType::Execute) {
            return;
        }
        let Some(state) = self.scan.state.value() else { return };
        if state == b"busy" {
            self.destination.touch();
            if *self.busy == 0 {
                self.destination.kernel_busy(self.kernel, true);
            }
            *self.busy = self.busy.saturating_add(1);
        } else if *self.busy > 0 {
            *self.busy -= 1;
            if *self.busy == 0 {
                self.destination.kernel_busy(self.kernel, false);
            }
        }
    }
}

impl MessageSink for Side<'_> {
    fn start(&mut self, _kind: DataKind, compressed: bool) {
        *self.scan = MessageScan { compressed, ..MessageScan::default() };
    }

    fn wants_payload(&self) -> bool {
        let scan = &*self.scan;
        if scan.compressed || scan.scanned >= MAX_SCAN {
            return false;
        }
        match self.kind {
            WebsocketKind::Kernel if self.from_client => scan.msg_type.is_none(),
            WebsocketKind::Kernel => match scan.msg_type {
                None => true,
                Some(MsgType::Status) => scan.parent.is_none() || !scan.state.done(),
                Some(_) => false,
            },
            WebsocketKind::Terminal => self.from_client && !scan.first.done(),
            WebsocketKind::Other => false,
        }
    }

    fn payload(&mut self, bytes: &[u8]) {
        let scan = &mut *self.scan;
        scan.scanned = scan.scanned.saturating_add(bytes.len() as u32);
        match self.kind {
            WebsocketKind::Kernel => {
                let mut rest = bytes;
                if scan.msg_type.is_none() {
                    let used = scan.field.feed(rest);
                    rest = &rest[used..];
                    if scan.field.done() {
                        let msg_type = MsgType::of(scan.field.value());
                        scan.msg_type = Some(msg_type);
                        if msg_type == MsgType::Status {
                            scan.field = FieldScan::new(Key::MsgType);
                        }
                    }
                }
                if scan.msg_type == Some(MsgType::Status) {
                    // The request's type and the state, in whichever order.
                    let mut left = rest;
                    while scan.parent.is_none() && !left.is_empty() {
                        let used = scan.field.feed(left);
                        left = &left[used..];
                        if scan.field.done() {
                            match scan.field.value() {
                                Some(b"status") => scan.field = FieldScan::new(Key::MsgType),
                                other => scan.parent = Some(MsgType::of(other)),
                            }
                        }
                    }
                    if !scan.state.done() {
                        scan.state.feed(rest);
                    }
                }
            }
            WebsocketKind::Terminal => scan.first.feed(bytes),
            WebsocketKind::Other => {}
        }
    }

    fn end(&mut self, length: u64) {
        if self.from_client {
            if self.client_message_counts(length) {
                self.destination.touch();
            }
        } else {
            self.kernel_status();
        }
    }
}

#[cfg(test)]
#[path = "websocket_tests.rs"]
mod tests;
