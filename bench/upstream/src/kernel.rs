//! The fake kernel: answers Jupyter messaging-protocol requests that arrive as
//! JSON text frames on `.../api/kernels/<id>/channels` (Jupyter's websocket
//! protocol without a subprotocol, which every Jupyter client falls back to).
//!
//! `execute_request` gets what a real kernel sends, in this order: `status`
//! busy (iopub), `execute_result` (iopub), `status` idle (iopub),
//! `execute_reply` (shell), each with `parent_header` = the request's header.
//! The "evaluation" understands integer sums such as `1+1` or `2 - 3 + 4`;
//! anything else evaluates to `None`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::ids::{IdGenerator, now_rfc3339};

/// One client's view of the kernel: its session id and execution counter.
#[derive(Debug)]
pub struct KernelSession {
    session: String,
    execution_count: u64,
}

/// The parts of an incoming message the fake looks at.
#[derive(Debug, Deserialize)]
struct Incoming {
    header: Value,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    channel: Option<String>,
}

impl KernelSession {
    /// A new session (one per websocket).
    pub fn new(ids: &IdGenerator) -> KernelSession {
        KernelSession { session: ids.next_id(), execution_count: 0 }
    }

    /// The messages answering one incoming text message, serialized, in send
    /// order. Malformed or unknown messages get no answer, like a kernel.
    pub fn answer(&mut self, text: &[u8], ids: &IdGenerator) -> Vec<String> {
        let Ok(request) = serde_json::from_slice::<Incoming>(text) else {
            return Vec::new();
        };
        let msg_type = request.header.get("msg_type").and_then(Value::as_str).unwrap_or_default().to_string();
        let channel = request.channel.as_deref().unwrap_or("shell").to_string();
        if msg_type == "execute_request" {
            self.execution_count += 1;
        }
        let count = self.execution_count;
        let reply = |msg_type: &str, channel: &str, content: Value| {
            self.message(ids, &request.header, msg_type, channel, content).to_string()
        };
        match msg_type.as_str() {
            "execute_request" => {
                let code = request.content.get("code").and_then(Value::as_str).unwrap_or_default();
                let result = evaluate(code).map_or_else(|| "None".to_string(), |n| n.to_string());
                vec![
                    reply("status", "iopub", json!({ "execution_state": "busy" })),
                    reply(
                        "execute_result",
                        "iopub",
                        json!({ "execution_count": count, "data": { "text/plain": result }, "metadata": {} }),
                    ),
                    reply("status", "iopub", json!({ "execution_state": "idle" })),
                    reply(
                        "execute_reply",
                        &channel,
                        json!({ "status": "ok", "execution_count": count, "user_expressions": {}, "payload": [] }),
                    ),
                ]
            }
            "kernel_info_request" => vec![
                reply("status", "iopub", json!({ "execution_state": "busy" })),
                reply("kernel_info_reply", &channel, kernel_info()),
                reply("status", "iopub", json!({ "execution_state": "idle" })),
            ],
            other => match other.strip_suffix("_request") {
                Some(kind) => vec![reply(&format!("{kind}_reply"), &channel, json!({ "status": "ok" }))],
                None => Vec::new(),
            },
        }
    }

    fn message(&self, ids: &IdGenerator, parent: &Value, msg_type: &str, channel: &str, content: Value) -> Value {
        let msg_id = ids.next_id();
        json!({
            "header": {
                "msg_id": msg_id,
                "msg_type": msg_type,
                "username": "portico-fake-notebook",
                "session": self.session,
                "date": now_rfc3339(),
                "version": "5.3",
            },
            "msg_id": msg_id,
            "msg_type": msg_type,
            "parent_header": parent,
            "metadata": {},
            "content": content,
            "buffers": [],
            "channel": channel,
        })
    }
}

fn kernel_info() -> Value {
    json!({
        "status": "ok",
        "protocol_version": "5.3",
        "implementation": "portico-fake-notebook",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": { "name": "python", "version": "3", "mimetype": "text/x-python", "file_extension": ".py" },
        "banner": "portico-fake-notebook: integer sums only",
        "help_links": [],
    })
}

/// The value of `code` if it is an integer sum such as `1+1`, `-2 + 30 - 4`
/// or `7`; `None` for anything else (or on overflow).
pub fn evaluate(code: &str) -> Option<i128> {
    let mut rest = code.trim();
    let mut sign: i128 = 1;
    if let Some(after) = rest.strip_prefix('-') {
        sign = -1;
        rest = after;
    }
    let mut total: i128 = 0;
    loop {
        rest = rest.trim_start();
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        let term: i128 = rest[..end].parse().ok()?;
        total = total.checked_add(term.checked_mul(sign)?)?;
        rest = rest[end..].trim_start();
        sign = match rest.bytes().next() {
            None => return Some(total),
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return None,
        };
        rest = &rest[1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_integer_sums() {
        assert_eq!(evaluate("1+1"), Some(2));
        assert_eq!(evaluate(" 2 + 3 "), Some(5));
        assert_eq!(evaluate("10-4+1"), Some(7));
        assert_eq!(evaluate("-2+5"), Some(3));
        assert_eq!(evaluate("42"), Some(42));
        for code in
            ["", "1+", "+", "a+b", "print(1)", "1 1", "1++2", "1*2", "99999999999999999999999999999999999999999"]
        {
            assert_eq!(evaluate(code), None, "{code:?}");
        }
    }

    fn execute(code: &str) -> Vec<Value> {
        let ids = IdGenerator::default();
        let mut session = KernelSession::new(&ids);
        let request = json!({
            "header": { "msg_id": "m1", "msg_type": "execute_request", "session": "s", "username": "u", "version": "5.3" },
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": { "code": code, "silent": false },
        });
        session.answer(request.to_string().as_bytes(), &ids).iter().map(|m| serde_json::from_str(m).unwrap()).collect()
    }

    #[test]
    fn execute_request_gets_busy_result_idle_reply() {
        let replies = execute("1+1");
        let kinds: Vec<(&str, &str)> =
            replies.iter().map(|m| (m["msg_type"].as_str().unwrap(), m["channel"].as_str().unwrap())).collect();
        assert_eq!(
            kinds,
            [("status", "iopub"), ("execute_result", "iopub"), ("status", "iopub"), ("execute_reply", "shell")]
        );
        assert_eq!(replies[1]["content"]["data"]["text/plain"], "2");
        assert_eq!(replies[3]["content"]["status"], "ok");
        for reply in &replies {
            assert_eq!(reply["parent_header"]["msg_id"], "m1");
            assert_eq!(reply["header"]["msg_type"], reply["msg_type"]);
        }
        assert_eq!(execute("x = 1")[1]["content"]["data"]["text/plain"], "None");
    }

    #[test]
    fn ignores_garbage_and_answers_other_requests() {
        let ids = IdGenerator::default();
        let mut session = KernelSession::new(&ids);
        assert!(session.answer(b"not json", &ids).is_empty());
        let info = json!({ "header": { "msg_id": "k", "msg_type": "kernel_info_request" }, "channel": "shell" });
        let replies = session.answer(info.to_string().as_bytes(), &ids);
        assert_eq!(replies.len(), 3);
        assert!(replies[1].contains("kernel_info_reply"));
        let comm = json!({ "header": { "msg_id": "c", "msg_type": "comm_info_request" }, "channel": "shell" });
        assert!(session.answer(comm.to_string().as_bytes(), &ids)[0].contains("comm_info_reply"));
    }
}
