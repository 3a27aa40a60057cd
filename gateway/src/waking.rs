//! Requests for a notebook that has no ready endpoint: wake it if it is
//! stopped, show its progress to a person, hold an API or websocket request
//! until it can be served, and never answer with a raw 503.
//!
//! Only destinations the controller describes (a [`WorkloadState`], sent
//! beside the endpoints in cluster mode) get this treatment; anything else
//! answers as before. The request has already passed routing and the
//! namespace's policies exactly as if the notebook were running, so an
//! anonymous or foreign request never reaches this module.
//!
//! | request | stopped | starting (scheduling, pulling, starting) | failing |
//! |---|---|---|---|
//! | page navigation | wake; starting page | starting page | page with the reason |
//! | status poll (the page's) | JSON | JSON | JSON |
//! | PUT/POST/PATCH/DELETE | wake; held | held | 503 + `Retry-After` |
//! | other (polling GET, websocket) | held if a wake is under way, else 503 + `Retry-After` | held | 503 + `Retry-After` |
//!
//! A held request waits for a snapshot in which its destination has an
//! endpoint, at most `--hold-timeout`, and at most `--hold-queue` of them
//! per destination; past either it gets 503 with `Retry-After`. A polling
//! GET from a tab left open never wakes a notebook: only what a person does
//! (opening the page, saving, running) does.

mod page;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::Method;
use pingora_http::RequestHeader;
use portico_routing::{WorkloadPhase, WorkloadState};
use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;

use crate::decision::LocalResponse;
use crate::metrics::Metrics;
use crate::state::RouteState;
use crate::upstream::{Resolver, Target};

pub use page::STATUS_MEDIA_TYPE;

/// The gateway asks the controller to wake one destination at most this often.
const ASK_INTERVAL: Duration = Duration::from_secs(5);
/// A wake asked this recently counts as under way (requests are held).
const WAKE_UNDER_WAY: Duration = Duration::from_secs(30);
/// `Retry-After` when a request cannot be held.
const RETRY_AFTER_SECS: u64 = 5;

/// `--hold-timeout` and `--hold-queue`.
#[derive(Clone, Copy, Debug)]
pub struct HoldSettings {
    pub timeout: Duration,
    pub queue: usize,
}

/// What a request for an unavailable notebook is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// A person opening a page: gets the starting page, and wakes.
    Navigation,
    /// The starting page asking how far the notebook is.
    StatusPoll,
    /// Saving, running, creating: wakes, and is held.
    Mutating,
    /// Polling GETs, websockets, anything else: held only when the
    /// notebook is on its way.
    Other,
}

impl RequestKind {
    pub fn of(request: &RequestHeader) -> RequestKind {
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        if header("accept").contains(STATUS_MEDIA_TYPE) {
            return RequestKind::StatusPoll;
        }
        match request.method {
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE => return RequestKind::Mutating,
            Method::GET => {}
            _ => return RequestKind::Other,
        }
        let fetch_mode = header("sec-fetch-mode");
        let navigation = if fetch_mode.is_empty() {
            // No Fetch Metadata (older clients): a GET for HTML that is not an XHR.
            header("accept").contains("text/html") && header("x-requested-with").is_empty()
        } else {
            fetch_mode == "navigate"
        };
        if navigation && !request.headers.contains_key(http::header::UPGRADE) {
            RequestKind::Navigation
        } else {
            RequestKind::Other
        }
    }
}

/// What to do instead of the plain 503.
pub enum Outcome {
    /// An endpoint became ready while the request was held.
    Ready(Target),
    /// Answer with this.
    Respond(LocalResponse),
}

/// Wake requests for the controller, holds, and the pages.
pub struct Waking {
    settings: HoldSettings,
    /// `portico_held_requests` and `portico_wake_requests_total`.
    held_gauge: IntGauge,
    wake_counter: IntCounter,
    state: Arc<RouteState>,
    /// Destinations to ask the controller to wake, not yet sent.
    outbox: Mutex<BTreeSet<String>>,
    /// Signalled when the outbox gets something.
    pub requested: Notify,
    /// When each destination was last asked for, and which stop that was
    /// (its `stopped_since`).
    asked: Mutex<HashMap<String, (Instant, Option<String>)>>,
    /// Requests held now, per destination.
    held: Mutex<HashMap<String, usize>>,
}

impl Waking {
    pub fn new(settings: HoldSettings, state: Arc<RouteState>, metrics: &Metrics) -> Self {
        Self {
            settings,
            held_gauge: metrics.held_requests.clone(),
            wake_counter: metrics.wake_requests.clone(),
            state,
            outbox: Mutex::default(),
            requested: Notify::new(),
            asked: Mutex::default(),
            held: Mutex::default(),
        }
    }

    /// Handles a request for `host:port`, which has no ready endpoint and
    /// runs `workload`.
    pub async fn unavailable(
        &self,
        request: &RequestHeader,
        workload: &WorkloadState,
        host: &str,
        port: u16,
        resolver: &Resolver,
    ) -> Outcome {
        let kind = RequestKind::of(request);
        let stopped = workload.phase == WorkloadPhase::Stopped;
        if stopped && matches!(kind, RequestKind::Navigation | RequestKind::Mutating) {
            self.ask(host, workload);
        }
        let waking = stopped && self.under_way(host, workload);
        match kind {
            RequestKind::StatusPoll => Outcome::Respond(page::status(workload, waking)),
            RequestKind::Navigation => Outcome::Respond(page::starting(workload, waking)),
            _ if workload.phase == WorkloadPhase::Failing || (stopped && !waking) => {
                Outcome::Respond(retry_later(workload, waking))
            }
            _ => match self.hold(host, port, resolver).await {
                Some(target) => Outcome::Ready(target),
                None => Outcome::Respond(retry_later(workload, waking)),
            },
        }
    }

    /// The destinations to wake that were not sent yet.
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.outbox)).into_iter().collect()
    }

    /// Queues a wake request for `host`, at most once per [`ASK_INTERVAL`]
    /// for one stop of its notebook.
    fn ask(&self, host: &str, workload: &WorkloadState) {
        {
            let mut asked = lock(&self.asked);
            if asked.get(host).is_some_and(|(at, stop)| at.elapsed() < ASK_INTERVAL && *stop == workload.stopped_since)
            {
                return;
            }
            asked.retain(|_, (at, _)| at.elapsed() < WAKE_UNDER_WAY);
            asked.insert(host.to_string(), (Instant::now(), workload.stopped_since.clone()));
        }
        lock(&self.outbox).insert(host.to_string());
        self.wake_counter.inc();
        self.requested.notify_one();
    }

    /// A wake was asked for this very stop, recently.
    fn under_way(&self, host: &str, workload: &WorkloadState) -> bool {
        lock(&self.asked)
            .get(host)
            .is_some_and(|(at, stop)| at.elapsed() < WAKE_UNDER_WAY && *stop == workload.stopped_since)
    }

    /// Waits until a published snapshot has an endpoint for `host:port`;
    /// `None` past the timeout or when the queue is full.
    async fn hold(&self, host: &str, port: u16, resolver: &Resolver) -> Option<Target> {
        let _slot = HeldSlot::take(self, host)?;
        let mut published = self.state.subscribe();
        let held_at = tokio::time::Instant::now();
        let deadline = held_at + self.settings.timeout;
        loop {
            // Checked after subscribing: a snapshot published in between is seen.
            if let Ok(target) = resolver.resolve(&self.state.load().matcher, host, port).await {
                tracing::debug!(host, held_ms = held_at.elapsed().as_millis() as u64, "held request released");
                return Some(target);
            }
            match tokio::time::timeout_at(deadline, published.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

/// One place in a destination's hold queue, given back on drop.
struct HeldSlot<'a> {
    waking: &'a Waking,
    host: String,
}

impl<'a> HeldSlot<'a> {
    fn take(waking: &'a Waking, host: &str) -> Option<Self> {
        let mut held = lock(&waking.held);
        let count = held.entry(host.to_string()).or_default();
        if *count >= waking.settings.queue {
            return None;
        }
        *count += 1;
        waking.held_gauge.inc();
        Some(Self { waking, host: host.to_string() })
    }
}

impl Drop for HeldSlot<'_> {
    fn drop(&mut self) {
        self.waking.held_gauge.dec();
        let mut held = lock(&self.waking.held);
        if let Some(count) = held.get_mut(&self.host) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.host);
            }
        }
    }
}

/// 503 with `Retry-After` and a sentence saying why.
fn retry_later(workload: &WorkloadState, waking: bool) -> LocalResponse {
    let state = if waking { "starting" } else { workload.phase.describe() };
    let reason = workload.message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
    let body = format!("notebook {}/{} is {state}{reason}; retry later\n", workload.namespace, workload.notebook);
    let mut response = LocalResponse::with_body(503, "text/plain; charset=utf-8", body, "UH");
    response.headers.push((http::header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
    response.headers.push((http::header::CACHE_CONTROL, "no-store".to_string()));
    response
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build(method, b"/notebook/team/nb/lab", None).unwrap();
        for (name, value) in headers {
            request.insert_header(name.to_string(), *value).unwrap();
        }
        request
    }

    fn metrics() -> Metrics {
        Metrics::new().unwrap()
    }

    #[test]
    fn what_a_person_does_is_told_apart_from_what_an_open_tab_does() {
        let navigate = [("sec-fetch-mode", "navigate"), ("accept", "text/html")];
        assert_eq!(RequestKind::of(&request("GET", &navigate)), RequestKind::Navigation);
        assert_eq!(RequestKind::of(&request("GET", &[("accept", "text/html,*/*")])), RequestKind::Navigation);
        let xhr = [("sec-fetch-mode", "cors"), ("accept", "application/json")];
        assert_eq!(RequestKind::of(&request("GET", &xhr)), RequestKind::Other, "JupyterLab's polling");
        assert_eq!(RequestKind::of(&request("PUT", &xhr)), RequestKind::Mutating, "saving a file");
        let poll = [("accept", STATUS_MEDIA_TYPE)];
        assert_eq!(RequestKind::of(&request("GET", &poll)), RequestKind::StatusPoll);
        let websocket = [("upgrade", "websocket"), ("accept", "text/html")];
        assert_eq!(RequestKind::of(&request("GET", &websocket)), RequestKind::Other);
    }

    fn stopped(since: &str) -> WorkloadState {
        WorkloadState {
            namespace: "team".to_string(),
            notebook: "nb".to_string(),
            phase: WorkloadPhase::Stopped,
            message: None,
            stopped_since: Some(since.to_string()),
        }
    }

    #[test]
    fn a_destination_is_asked_for_at_most_once_per_interval_and_stop() {
        let waking =
            Waking::new(HoldSettings { timeout: Duration::ZERO, queue: 1 }, Arc::new(RouteState::new()), &metrics());
        let (host, first) = ("nb.team.svc.cluster.local", stopped("2026-12-05T10:00:00Z"));
        waking.ask(host, &first);
        waking.ask(host, &first);
        assert_eq!(waking.take_requests(), vec![host.to_string()]);
        waking.ask(host, &first);
        assert!(waking.take_requests().is_empty(), "asked a moment ago");
        assert!(waking.under_way(host, &first));
        // Stopped again: the earlier wake says nothing about this stop.
        let second = stopped("2026-12-05T10:05:00Z");
        assert!(!waking.under_way(host, &second));
        waking.ask(host, &second);
        assert_eq!(waking.take_requests(), vec![host.to_string()]);
    }

    #[test]
    fn the_hold_queue_is_bounded_per_destination() {
        let waking =
            Waking::new(HoldSettings { timeout: Duration::ZERO, queue: 1 }, Arc::new(RouteState::new()), &metrics());
        let first = HeldSlot::take(&waking, "a");
        assert!(first.is_some());
        assert!(HeldSlot::take(&waking, "a").is_none(), "full");
        assert!(HeldSlot::take(&waking, "b").is_some(), "per destination");
        drop(first);
        assert!(HeldSlot::take(&waking, "a").is_some(), "a slot is given back");
    }
}
