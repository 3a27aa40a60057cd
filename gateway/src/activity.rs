//! Per route destination, what a person or a running job did: the input
//! for culling idle notebooks (issue 17). What an idle open tab does
//! (JupyterLab's polling, websocket pings, an editor's heartbeat) is not
//! activity.
//!
//! * [`http_rule`]: which finished requests count (changes and page
//!   navigations).
//! * [`websocket`]: which websocket messages count, by what the
//!   connection carries (a Jupyter kernel, a terminal, anything else),
//!   read by an incremental [`frames`] parser and [`scan`]s that observe
//!   the splice's bytes without copying or delaying them.
//!
//! Destinations are keyed by host (`nb.team.svc.cluster.local`): Kubeflow
//! names a notebook's Service like the Notebook, so the controller maps a
//! host to its Notebook. An IP address is keyed with its port
//! (`portico_chp::target::activity_key`): JupyterHub's routes target
//! `ip:port`, and one address can serve several users. The registry is looked up only for a request that
//! counts and once per websocket; everything after is atomics on the
//! destination's entry.

pub mod frames;
pub mod http_rule;
pub mod scan;
pub mod websocket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use http::{HeaderMap, Method};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntGaugeVec, Opts};
use serde::Serialize;

use crate::metrics::service_name_and_namespace;

pub use websocket::WebsocketWatch;

/// What an upgraded connection carries, from its request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebsocketKind {
    /// A Jupyter kernel's channels (`.../api/kernels/<id>/channels`).
    Kernel,
    /// A Jupyter terminal (`.../terminals/websocket/<name>`).
    Terminal,
    /// Anything else (code-server, RStudio, an app).
    Other,
}

impl WebsocketKind {
    const ALL: [WebsocketKind; 3] = [WebsocketKind::Kernel, WebsocketKind::Terminal, WebsocketKind::Other];

    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            WebsocketKind::Kernel => "kernel",
            WebsocketKind::Terminal => "terminal",
            WebsocketKind::Other => "other",
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Every destination's activity.
#[derive(Default)]
pub struct ActivityRegistry {
    destinations: RwLock<HashMap<Arc<str>, Arc<DestinationActivity>>>,
}

/// One destination's activity, updated by the data plane without locks
/// (except on a kernel's busy/idle transitions).
pub struct DestinationActivity {
    host: Arc<str>,
    /// Unix milliseconds of the last activity; 0 for none.
    last_ms: AtomicI64,
    /// Open websockets by [`WebsocketKind`].
    open: [AtomicU32; 3],
    /// Kernels whose last status was `busy`, by a hash of the kernel id,
    /// with the number of connections that saw it busy (a kernel open in
    /// two tabs is one kernel).
    busy: Mutex<Vec<(u64, u32)>>,
    busy_kernels: AtomicU32,
    /// Something changed since the last report to the controller.
    changed: AtomicBool,
}

/// One destination's state, as the admin endpoint and the controller see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DestinationState {
    pub host: String,
    /// Unix milliseconds; now while a kernel is busy; 0 for none.
    pub last_activity_unix_ms: i64,
    pub kernel_websockets: u32,
    pub terminal_websockets: u32,
    pub other_websockets: u32,
    pub busy_kernels: u32,
}

impl DestinationActivity {
    fn new(host: Arc<str>) -> Self {
        Self {
            host,
            last_ms: AtomicI64::new(0),
            open: Default::default(),
            busy: Mutex::new(Vec::new()),
            busy_kernels: AtomicU32::new(0),
            changed: AtomicBool::new(true),
        }
    }

    /// Something a person or a job did, now.
    pub fn touch(&self) {
        self.last_ms.fetch_max(now_ms(), Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
    }

    fn opened(&self, kind: WebsocketKind) {
        self.open[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
    }

    fn closed(&self, kind: WebsocketKind) {
        self.open[kind.index()].fetch_sub(1, Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
    }

    /// One connection saw `kernel` turn busy (`true`) or stop being busy.
    fn kernel_busy(&self, kernel: u64, busy: bool) {
        let mut kernels = self.busy.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let at = kernels.iter().position(|(id, _)| *id == kernel);
        match (at, busy) {
            (Some(at), true) => kernels[at].1 += 1,
            (None, true) => kernels.push((kernel, 1)),
            (Some(at), false) => {
                kernels[at].1 -= 1;
                if kernels[at].1 == 0 {
                    kernels.swap_remove(at);
                }
            }
            (None, false) => {}
        }
        self.busy_kernels.store(kernels.len() as u32, Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
    }

    /// The state now: a busy kernel makes the last activity now.
    pub fn state(&self) -> DestinationState {
        let busy_kernels = self.busy_kernels.load(Ordering::Relaxed);
        let last = self.last_ms.load(Ordering::Relaxed);
        let open = |kind: WebsocketKind| self.open[kind.index()].load(Ordering::Relaxed);
        DestinationState {
            host: self.host.to_string(),
            last_activity_unix_ms: if busy_kernels > 0 { now_ms().max(last) } else { last },
            kernel_websockets: open(WebsocketKind::Kernel),
            terminal_websockets: open(WebsocketKind::Terminal),
            other_websockets: open(WebsocketKind::Other),
            busy_kernels,
        }
    }
}

impl ActivityRegistry {
    /// A finished request to the destination at `host`:`port`: counted if
    /// [`http_rule::counts`] says so. Its key is made only then (most
    /// requests are status polls, and the key parses the host as an
    /// address).
    pub fn request_done(&self, host: &str, port: u16, method: &Method, path: &[u8], headers: &HeaderMap, status: u16) {
        if http_rule::counts(method, path, headers, status) && !host.is_empty() {
            self.destination(&portico_chp::target::activity_key(host, port)).touch();
        }
    }

    /// The entry of `host`, created on first use.
    pub fn destination(&self, host: &str) -> Arc<DestinationActivity> {
        if let Some(found) = self.read().get(host) {
            return Arc::clone(found);
        }
        let mut destinations = self.destinations.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = destinations
            .entry(Arc::from(host))
            .or_insert_with_key(|host| Arc::new(DestinationActivity::new(Arc::clone(host))));
        Arc::clone(entry)
    }

    /// The watch of a websocket to `host` that the client opened at `path`
    /// (boxed: a splice's future would otherwise hold it twice, as async
    /// functions keep their arguments apart from their locals).
    pub fn websocket(&self, host: &str, path: &[u8]) -> Box<WebsocketWatch> {
        Box::new(WebsocketWatch::new(self.destination(host), path))
    }

    /// Every destination's state, by host.
    pub fn states(&self) -> Vec<DestinationState> {
        let mut states: Vec<DestinationState> = self.read().values().map(|d| d.state()).collect();
        states.sort_by(|a, b| a.host.cmp(&b.host));
        states
    }

    /// What to tell the controller: the destinations that changed since
    /// the last report and those with a busy kernel (active now), or all
    /// of them (`everything`: a new stream).
    pub fn report(&self, everything: bool) -> Vec<DestinationState> {
        let destinations = self.read();
        let mut states: Vec<DestinationState> = destinations
            .values()
            .filter(|d| {
                let changed = d.changed.swap(false, Ordering::Relaxed);
                everything || changed || d.busy_kernels.load(Ordering::Relaxed) > 0
            })
            .map(|d| d.state())
            .collect();
        states.sort_by(|a, b| a.host.cmp(&b.host));
        states
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<DestinationActivity>>> {
        self.destinations.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The registry's state as Prometheus gauges, computed at scrape time (a
/// busy kernel's destination reads as active at the moment of the scrape).
///
/// * `portico_destination_last_activity_timestamp_seconds`: Unix seconds
///   (Prometheus' convention for timestamps), so `time() - x` is the idle
///   time an alert or the culler compares with its limit;
/// * `portico_destination_open_websockets{kind}`: kernel, terminal, other;
/// * `portico_destination_busy_kernels`: kernels running a cell.
///
/// Labelled like Istio's request metrics (`destination_service`, `_name`,
/// `_namespace`), so they join with `istio_requests_total`.
pub struct ActivityCollector {
    registry: Arc<ActivityRegistry>,
    templates: (GaugeVec, IntGaugeVec, IntGaugeVec),
}

const DESTINATION_LABELS: [&str; 3] =
    ["destination_service", "destination_service_name", "destination_service_namespace"];

fn gauge_vectors() -> Result<(GaugeVec, IntGaugeVec, IntGaugeVec), prometheus::Error> {
    let last = GaugeVec::new(
        Opts::new(
            "portico_destination_last_activity_timestamp_seconds",
            "Unix time of the last activity (a person's request or message, a busy kernel) per destination.",
        ),
        &DESTINATION_LABELS,
    )?;
    let mut labels = DESTINATION_LABELS.to_vec();
    labels.push("kind");
    let open = IntGaugeVec::new(
        Opts::new("portico_destination_open_websockets", "Websockets open per destination, by kind."),
        &labels,
    )?;
    let busy = IntGaugeVec::new(
        Opts::new("portico_destination_busy_kernels", "Kernels whose last status was busy, per destination."),
        &DESTINATION_LABELS,
    )?;
    Ok((last, open, busy))
}

impl ActivityCollector {
    pub fn new(registry: Arc<ActivityRegistry>) -> Result<Self, prometheus::Error> {
        Ok(Self { registry, templates: gauge_vectors()? })
    }
}

impl Collector for ActivityCollector {
    fn desc(&self) -> Vec<&Desc> {
        let (last, open, busy) = &self.templates;
        let mut descs = last.desc();
        descs.extend(open.desc());
        descs.extend(busy.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok((last, open, busy)) = gauge_vectors() else { return Vec::new() };
        for state in self.registry.states() {
            let (name, namespace) = service_name_and_namespace(&state.host);
            let labels = [state.host.as_str(), name, namespace];
            last.with_label_values(&labels).set(state.last_activity_unix_ms as f64 / 1000.0);
            busy.with_label_values(&labels).set(i64::from(state.busy_kernels));
            let counts = [state.kernel_websockets, state.terminal_websockets, state.other_websockets];
            for (kind, count) in WebsocketKind::ALL.iter().zip(counts) {
                open.with_label_values(&[labels[0], labels[1], labels[2], kind.label()]).set(i64::from(count));
            }
        }
        let mut families = last.collect();
        families.extend(open.collect());
        families.extend(busy.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_counting_requests_create_or_touch_entries() {
        let registry = ActivityRegistry::default();
        let host = "nb.team.svc.cluster.local";
        registry.request_done(host, 80, &Method::GET, b"/api/kernels", &HeaderMap::new(), 200);
        assert!(registry.states().is_empty(), "a polling GET does not even create an entry");
        let before = now_ms();
        registry.request_done(host, 80, &Method::PUT, b"/api/contents/a", &HeaderMap::new(), 200);
        let states = registry.states();
        assert_eq!(states.len(), 1);
        assert!(states[0].last_activity_unix_ms >= before);
    }

    #[test]
    fn reports_carry_changes_busy_kernels_and_everything_on_a_new_stream() {
        let registry = ActivityRegistry::default();
        registry.destination("a.t.svc.cluster.local").touch();
        let b = registry.destination("b.t.svc.cluster.local");
        assert_eq!(registry.report(false).len(), 2, "new entries are changes");
        assert!(registry.report(false).is_empty(), "nothing changed since");
        b.kernel_busy(7, true);
        b.kernel_busy(7, true);
        let report = registry.report(false);
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].busy_kernels, 1, "one kernel seen busy by two connections");
        assert_eq!(registry.report(false).len(), 1, "a busy kernel is reported every time");
        b.kernel_busy(7, false);
        b.kernel_busy(7, false);
        registry.report(false);
        assert!(registry.report(false).is_empty());
        assert_eq!(registry.report(true).len(), 2);
    }

    #[test]
    fn metrics_are_labelled_like_istio() {
        let registry = Arc::new(ActivityRegistry::default());
        registry.destination("nb.team.svc.cluster.local").opened(WebsocketKind::Terminal);
        registry.destination("nb.team.svc.cluster.local").touch();
        let prometheus = prometheus::Registry::new();
        prometheus.register(Box::new(ActivityCollector::new(Arc::clone(&registry)).unwrap())).unwrap();
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &prometheus.gather(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("portico_destination_open_websockets{destination_service=\"nb.team.svc.cluster.local\",destination_service_name=\"nb\",destination_service_namespace=\"team\",kind=\"terminal\"} 1"), "{text}");
        assert!(text.contains("portico_destination_busy_kernels{"), "{text}");
        assert!(text.contains("portico_destination_last_activity_timestamp_seconds{"), "{text}");
    }
}
