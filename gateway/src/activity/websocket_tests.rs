//! Tests of [`super::WebsocketWatch`] on the messages real clients send
//! (JupyterLab's and Jupyter Server's formats, terminado's arrays).

use std::sync::Arc;

use serde_json::json;

use super::super::frames::tests::frame;
use super::super::{ActivityRegistry, DestinationState, now_ms};
use super::*;

const HOST: &str = "nb.team.svc.cluster.local";
const KEY: Option<[u8; 4]> = Some([1, 2, 3, 4]);

fn state(registry: &ActivityRegistry) -> DestinationState {
    registry.states().into_iter().next().expect("one destination")
}

/// A Jupyter message in the JSON protocol, fields in JupyterLab's order
/// (content before header: the type is not at the start).
fn json_message(msg_type: &str, content: serde_json::Value) -> Vec<u8> {
    let text = format!(
        r#"{{"buffers":[],"channel":"shell","content":{},"header":{{"msg_id":"m","msg_type":"{msg_type}","session":"s"}},"metadata":{{}},"parent_header":{{"msg_type":"other"}}}}"#,
        content
    );
    text.into_bytes()
}

/// A Jupyter message in the `v1.kernel.websocket.jupyter.org` protocol.
fn v1_message(channel: &str, msg_type: &str, content: serde_json::Value) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = vec![
        channel.as_bytes().to_vec(),
        json!({"msg_id": "m", "msg_type": msg_type, "session": "s"}).to_string().into_bytes(),
        json!({"msg_id": "p", "msg_type": "execute_request"}).to_string().into_bytes(),
        b"{}".to_vec(),
        content.to_string().into_bytes(),
    ];
    let count = parts.len() as u64 + 1;
    let mut offsets = vec![8 * (count + 1)];
    for part in &parts {
        offsets.push(offsets.last().unwrap() + part.len() as u64);
    }
    let mut out = count.to_le_bytes().to_vec();
    for offset in offsets {
        out.extend_from_slice(&offset.to_le_bytes());
    }
    for part in parts {
        out.extend(part);
    }
    out
}

fn watch(registry: &ActivityRegistry, path: &str) -> Box<WebsocketWatch> {
    registry.websocket(HOST, path.as_bytes())
}

#[test]
fn paths_tell_kernels_terminals_and_the_rest() {
    let (kind, id) = classify(b"/notebook/team/nb/api/kernels/4c1e-11/channels?session_id=x");
    assert_eq!(kind, WebsocketKind::Kernel);
    assert_ne!(id, classify(b"/api/kernels/other/channels").1);
    assert_eq!(classify(b"/notebook/team/nb/terminals/websocket/1").0, WebsocketKind::Terminal);
    assert_eq!(classify(b"/api/kernels/x/channels/more").0, WebsocketKind::Other);
    assert_eq!(classify(b"/code/stable-abc?reconnectionToken=1").0, WebsocketKind::Other);
}

#[test]
fn kernel_client_messages_count_by_type_in_both_formats() {
    let registry = ActivityRegistry::default();
    let mut ws = watch(&registry, "/api/kernels/k/channels");
    let quiet = [
        json_message("kernel_info_request", json!({})),
        v1_message("shell", "kernel_info_request", json!({})),
        json_message("comm_info_request", json!({"target_name": "x"})),
    ];
    for message in quiet {
        ws.client_sent(&frame(true, if message[0] == b'{' { 1 } else { 2 }, &message, KEY));
    }
    assert_eq!(state(&registry).last_activity_unix_ms, 0, "kernel_info and comm_info are the page's own");
    for (msg_type, opcode) in [("execute_request", 1), ("input_reply", 2), ("comm_msg", 1)] {
        let message = if opcode == 1 {
            json_message(msg_type, json!({"code": "x = {\"msg_type\": \"kernel_info_request\"}"}))
        } else {
            v1_message("stdin", msg_type, json!({"value": "y"}))
        };
        let before = now_ms();
        // Split at every byte: the type must be found across reads.
        let stream = frame(true, opcode, &message, KEY);
        for piece in stream.chunks(1) {
            ws.client_sent(piece);
        }
        assert!(state(&registry).last_activity_unix_ms >= before, "{msg_type} counts");
        registry.destination(HOST).last_ms.store(0, std::sync::atomic::Ordering::Relaxed);
    }
    drop(ws);
    assert_eq!(state(&registry).kernel_websockets, 0);
}

#[test]
fn a_busy_kernel_is_active_until_idle_and_a_closed_connection_forgets_it() {
    let registry = ActivityRegistry::default();
    let mut ws = watch(&registry, "/api/kernels/k/channels");
    let mut other = watch(&registry, "/api/kernels/k/channels");
    let status = |state: &str| {
        let mut message = v1_message("iopub", "status", json!({"execution_state": state}));
        // Jupyter Server's JSON format sends the same as a text frame.
        if state == "idle" {
            message = format!(
                r#"{{"header":{{"msg_type":"status"}},"parent_header":{{"msg_type":"execute_request"}},"content":{{"execution_state":"{state}"}},"channel":"iopub"}}"#
            )
            .into_bytes();
        }
        frame(true, 2, &message, None)
    };
    ws.server_sent(&status("busy"));
    other.server_sent(&status("busy"));
    let busy = state(&registry);
    assert_eq!(busy.busy_kernels, 1, "one kernel, two connections");
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(state(&registry).last_activity_unix_ms > busy.last_activity_unix_ms, "busy reads as now");
    ws.server_sent(&status("idle"));
    assert_eq!(state(&registry).busy_kernels, 1, "the other connection has not seen idle yet");
    drop(other);
    let idle = state(&registry);
    assert_eq!(idle.busy_kernels, 0);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(state(&registry).last_activity_unix_ms, idle.last_activity_unix_ms, "idle stays put");
    // Other server messages do nothing.
    let stream = frame(true, 1, &json_message("stream", json!({"name": "stdout", "text": "busy"})), None);
    ws.server_sent(&stream);
    assert_eq!(state(&registry).last_activity_unix_ms, idle.last_activity_unix_ms);
}

#[test]
fn statuses_of_other_requests_neither_count_nor_end_a_running_cell() {
    let registry = ActivityRegistry::default();
    let mut ws = watch(&registry, "/api/kernels/k/channels");
    // Jupyter Server's JSON: header, then the own type again at the top
    // level, then the request's header, then the content.
    let status = |parent: &str, state: &str| {
        let text = format!(
            r#"{{"header": {{"msg_id": "s", "msg_type": "status"}}, "msg_id": "s", "msg_type": "status", "parent_header": {{"msg_id": "p", "msg_type": "{parent}"}}, "metadata": {{}}, "content": {{"execution_state": "{state}"}}, "buffers": [], "channel": "iopub"}}"#
        );
        frame(true, 1, text.as_bytes(), None)
    };
    ws.server_sent(&status("kernel_info_request", "busy"));
    ws.server_sent(&status("kernel_info_request", "idle"));
    assert_eq!(state(&registry).last_activity_unix_ms, 0, "the page asking for kernel info is nobody's activity");
    ws.server_sent(&status("execute_request", "busy"));
    // ipykernel answers the control channel on its own thread while the cell runs.
    ws.server_sent(&status("debug_request", "busy"));
    ws.server_sent(&status("debug_request", "idle"));
    assert_eq!(state(&registry).busy_kernels, 1, "the cell still runs");
    ws.server_sent(&status("execute_request", "idle"));
    assert_eq!(state(&registry).busy_kernels, 0);
}

#[test]
fn terminal_stdin_counts_and_set_size_does_not() {
    let registry = ActivityRegistry::default();
    let mut ws = watch(&registry, "/terminals/websocket/1");
    ws.client_sent(&frame(true, 1, br#"["set_size", 24, 80, 600, 800]"#, KEY));
    ws.server_sent(&frame(true, 1, br#"["stdout", "$ "]"#, None));
    assert_eq!(state(&registry).last_activity_unix_ms, 0);
    assert_eq!(state(&registry).terminal_websockets, 1);
    ws.client_sent(&frame(true, 1, br#"["stdin", "ls\r"]"#, KEY));
    assert!(state(&registry).last_activity_unix_ms > 0);
}

#[test]
fn other_websockets_count_client_data_but_not_control_frames_or_heartbeats() {
    let registry = ActivityRegistry::default();
    let mut ws = watch(&registry, "/app/ws");
    ws.client_sent(&frame(true, 9, b"ping", KEY));
    ws.server_sent(&frame(true, 1, b"server push", None));
    assert_eq!(state(&registry).last_activity_unix_ms, 0, "pings and server messages are not activity");
    assert_eq!(state(&registry).other_websockets, 1);
    ws.client_sent(&frame(true, 1, b"typed", KEY));
    assert!(state(&registry).last_activity_unix_ms > 0);
}

#[test]
fn the_heartbeat_rule() {
    let ms = std::time::Duration::from_millis;
    let mut heartbeat = Heartbeat::default();
    let mut at = Instant::now();
    // Every 2 s (±100 ms), sizes 20, 21, 20...: from the third beat on, a heartbeat.
    let mut beats = Vec::new();
    for (index, size) in [20u64, 21, 20, 22, 20].into_iter().enumerate() {
        at += ms(2000 + (index as u64 % 2) * 100);
        beats.push(heartbeat.beat_at(size, at));
    }
    assert_eq!(beats, vec![false, false, true, true, true]);
    // A different size breaks the pattern.
    at += ms(2000);
    assert!(!heartbeat.beat_at(300, at));
    // Keystrokes (small, 150 ms apart) never are one.
    for _ in 0..5 {
        at += ms(150);
        assert!(!heartbeat.beat_at(10, at));
    }
    // Nor large messages at a steady rate.
    for _ in 0..4 {
        at += ms(5000);
        assert!(!heartbeat.beat_at(HEARTBEAT_MAX_SIZE + 1, at));
    }
    // Nor a beat that comes late (a person's message at the same size).
    for gap in [3000, 3000, 7000] {
        at += ms(gap);
        heartbeat.beat_at(40, at);
    }
    at += ms(3000);
    assert!(!heartbeat.beat_at(40, at), "the previous gap was 7 s");
}

#[test]
fn compressed_messages_of_a_person_count() {
    let registry = ActivityRegistry::default();
    let mut ws = watch(&registry, "/terminals/websocket/1");
    let mut compressed = frame(true, 1, b"\x00\x01", KEY);
    compressed[0] |= 0x40;
    ws.client_sent(&compressed);
    assert!(state(&registry).last_activity_unix_ms > 0);
}

#[test]
fn an_idle_websocket_costs_its_watch_only() {
    let size = std::mem::size_of::<WebsocketWatch>();
    eprintln!("WebsocketWatch: {size} bytes");
    assert!(size <= 272, "WebsocketWatch is {size} bytes");
    let _ = Arc::new(ActivityRegistry::default());
}
