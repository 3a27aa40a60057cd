//! The "starting your notebook" page and the status it polls.
//!
//! The page polls its own URL with `Accept: application/vnd.portico.workload+json`
//! once a second. While the notebook has no ready endpoint the gateway
//! answers that with the notebook's phase (so the poll is authorized by the
//! same route and policies as the page, and needs no path of its own); once
//! it is ready the poll reaches the notebook, its answer is not that JSON,
//! and the page reloads itself into the notebook.

use portico_routing::{WorkloadPhase, WorkloadState};
use serde_json::json;

use crate::decision::LocalResponse;

/// What the starting page asks for, and gets while the notebook is not ready.
pub const STATUS_MEDIA_TYPE: &str = "application/vnd.portico.workload+json";

/// The steps shown, in order.
const STEPS: [(WorkloadPhase, &str); 4] = [
    (WorkloadPhase::Scheduling, "Waiting for a node"),
    (WorkloadPhase::Pulling, "Pulling the image"),
    (WorkloadPhase::Starting, "Starting the server"),
    (WorkloadPhase::Ready, "Ready"),
];

const TEMPLATE: &str = include_str!("starting.html");

/// The phase a person should see: a stopped notebook being woken is
/// already on its way.
fn shown_phase(workload: &WorkloadState, waking: bool) -> &'static str {
    match workload.phase {
        WorkloadPhase::Stopped if waking => "waking",
        WorkloadPhase::Stopped => "stopped",
        WorkloadPhase::Scheduling => "scheduling",
        WorkloadPhase::Pulling => "pulling",
        WorkloadPhase::Starting => "starting",
        WorkloadPhase::Ready => "ready",
        WorkloadPhase::Failing => "failing",
    }
}

/// The JSON the page polls for.
pub fn status(workload: &WorkloadState, waking: bool) -> LocalResponse {
    let body = json!({
        "namespace": workload.namespace,
        "notebook": workload.notebook,
        "phase": shown_phase(workload, waking),
        "message": workload.message,
    });
    no_store(LocalResponse::with_body(503, STATUS_MEDIA_TYPE, body.to_string(), "UH"))
}

/// The page itself: 503 (the notebook is not there yet) with `Retry-After`.
pub fn starting(workload: &WorkloadState, waking: bool) -> LocalResponse {
    let phase = shown_phase(workload, waking);
    let steps: String = STEPS
        .iter()
        .map(|(step, label)| format!("<li data-phase=\"{}\">{label}</li>", shown_phase_of(*step)))
        .collect();
    let title = format!("{}/{}", escape(&workload.namespace), escape(&workload.notebook));
    let message = workload.message.as_deref().map(escape).unwrap_or_default();
    let html = TEMPLATE
        .replace("{{title}}", &title)
        .replace("{{phase}}", phase)
        .replace("{{steps}}", &steps)
        .replace("{{message}}", &message)
        .replace("{{status_type}}", STATUS_MEDIA_TYPE);
    let mut response = no_store(LocalResponse::with_body(503, "text/html; charset=utf-8", html, "UH"));
    response.headers.push((http::header::RETRY_AFTER, "2".to_string()));
    response
}

fn shown_phase_of(phase: WorkloadPhase) -> &'static str {
    let workload =
        WorkloadState { namespace: String::new(), notebook: String::new(), phase, message: None, stopped_since: None };
    shown_phase(&workload, false)
}

fn no_store(mut response: LocalResponse) -> LocalResponse {
    response.headers.push((http::header::CACHE_CONTROL, "no-store".to_string()));
    response
}

/// Names and Kubernetes messages are shown as text, never as markup.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(phase: WorkloadPhase, message: Option<&str>) -> WorkloadState {
        WorkloadState {
            namespace: "team".to_string(),
            notebook: "nb".to_string(),
            phase,
            message: message.map(str::to_string),
            stopped_since: None,
        }
    }

    #[test]
    fn the_page_says_where_the_notebook_is_and_escapes_what_kubernetes_said() {
        let page = starting(&workload(WorkloadPhase::Failing, Some("<img src=x>")), false);
        let html = String::from_utf8_lossy(&page.body);
        assert_eq!(page.status, 503);
        assert!(html.contains("team/nb"), "{html}");
        assert!(html.contains("data-current=\"failing\""), "{html}");
        assert!(html.contains("&lt;img src=x&gt;") && !html.contains("<img src=x>"), "{html}");
        assert!(page.headers.iter().any(|(name, value)| name == http::header::RETRY_AFTER && value == "2"));
    }

    #[test]
    fn a_stopped_notebook_being_woken_shows_as_waking() {
        let status = status(&workload(WorkloadPhase::Stopped, None), true);
        let body: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
        assert_eq!(body["phase"], "waking");
        assert_eq!(status.headers[0].1, STATUS_MEDIA_TYPE);
    }
}
