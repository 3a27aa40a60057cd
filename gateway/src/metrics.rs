//! Prometheus metrics with Istio's names and labels, so existing dashboards
//! and alerts keep working when Portico replaces the ingress gateway.

mod shards;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use shards::{RequestShard, ShardedRequests};

/// Istio's standard request labels (the subset a gateway knows).
const REQUEST_LABELS: [&str; 9] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "response_flags",
];

/// Istio's default duration buckets (milliseconds).
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// Istio's default size buckets (bytes).
const SIZE_BUCKETS: [f64; 8] = [1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0, 10000000.0];

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// `istio_requests_total`, the three Istio histograms and
    /// `portico_active_requests`, a copy per CPU (`shards.rs`).
    requests: ShardedRequests,
    pub active_websockets: IntGauge,
    pub config_reloads: IntCounterVec,
    pub config_diagnostics: IntGaugeVec,
    pub routes: IntGauge,
    /// Requests for a starting notebook held now ([`crate::waking`]).
    pub held_requests: IntGauge,
    /// Wakes of stopped notebooks asked of the controller.
    pub wake_requests: IntCounter,
}

/// Outcomes a [`SeriesCache`] holds at most: past it, requests resolve
/// their series by labels as before (a bound against unusual status and
/// flag mixes, not a size a gateway normally reaches).
const MAX_CACHED_OUTCOMES: usize = 4096;

/// The four series one outcome adds to in one copy, resolved from their
/// labels once.
///
/// Resolving by labels hashes nine label values and takes the vector's lock,
/// four times per request; a resolved series is a plain atomic update.
struct ShardSeries {
    requests: IntCounter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// One outcome's series in each copy, each resolved when its thread first
/// records the outcome (most outcomes never reach most copies).
pub struct OutcomeSeries {
    shards: Box<[OnceLock<ShardSeries>]>,
}

impl OutcomeSeries {
    fn new(shards: usize) -> Self {
        Self { shards: (0..shards).map(|_| OnceLock::new()).collect() }
    }
}

impl ShardSeries {
    fn observe(&self, record: &RequestRecord<'_>) {
        self.requests.inc();
        self.duration.observe(record.duration_ms);
        self.request_bytes.observe(record.request_bytes as f64);
        self.response_bytes.observe(record.response_bytes as f64);
    }
}

/// What tells one outcome's series from another's within one snapshot: the
/// route (by identity: the snapshot holds it, so its address is not
/// reused while the cache lives) and destination, and the labels a request
/// adds (protocol, status, flags). Workload labels are the gateway's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutcomeKey {
    pub route: usize,
    pub destination: usize,
    pub grpc: bool,
    pub status: u16,
    pub flags: &'static str,
}

/// Resolved series by outcome, kept in a routing snapshot: a route table
/// change starts a new cache, so series of removed routes are not held.
/// Reads take no lock (a new map is published on the rare miss).
#[derive(Default)]
pub struct SeriesCache {
    /// foldhash, not SipHash: the keys are the gateway's own (a route, a
    /// status), and the lookup runs on every request.
    series: ArcSwap<HashMap<OutcomeKey, Arc<OutcomeSeries>, foldhash::fast::RandomState>>,
}

/// What one finished request reports.
pub struct RequestRecord<'a> {
    pub workload: &'a str,
    pub workload_namespace: &'a str,
    pub destination_host: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub flags: &'a str,
    pub duration_ms: f64,
    pub request_bytes: usize,
    pub response_bytes: usize,
}

impl Metrics {
    /// Registers everything; fails only on a programming error (duplicate name).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = ShardedRequests::new(crate::lanes::count(), request_shard)?;
        let active_websockets = IntGauge::new("portico_active_websockets", "Upgraded (websocket) connections open.")?;
        let config_reloads = IntCounterVec::new(
            Opts::new("portico_config_reloads_total", "Configuration reloads by result (applied, unchanged, failed)."),
            &["result"],
        )?;
        let config_diagnostics = IntGaugeVec::new(
            Opts::new("portico_config_diagnostics", "Diagnostics of the applied configuration by severity."),
            &["severity"],
        )?;
        let routes = IntGauge::new("portico_routes", "Routes in the applied route table.")?;
        let held_requests =
            IntGauge::new("portico_held_requests", "Requests for a starting notebook held until it is ready.")?;
        let wake_requests =
            IntCounter::new("portico_wake_requests_total", "Wakes of stopped notebooks asked of the controller.")?;
        registry.register(Box::new(held_requests.clone()))?;
        registry.register(Box::new(wake_requests.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(active_websockets.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(config_diagnostics.clone()))?;
        registry.register(Box::new(routes.clone()))?;
        Ok(Self {
            registry,
            requests,
            active_websockets,
            config_reloads,
            config_diagnostics,
            routes,
            held_requests,
            wake_requests,
        })
    }

    /// Adds metrics computed at scrape time (per-destination activity).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// Records one finished request under Istio's labels.
    pub fn record(&self, record: &RequestRecord<'_>) {
        self.resolve(self.requests.local(), record).observe(record);
    }

    /// A request started (`portico_active_requests`).
    pub fn request_started(&self) {
        self.requests.local().active_requests.inc();
    }

    /// A request ended, on whichever thread: the copies' sum is what counts.
    pub fn request_ended(&self) {
        self.requests.local().active_requests.dec();
    }

    /// Records one forwarded request, resolving its series by labels only
    /// the first time `key` is seen in `cache`.
    pub fn record_cached(&self, cache: &SeriesCache, key: OutcomeKey, record: &RequestRecord<'_>) {
        let index = self.requests.local_index();
        let observe = |series: &OutcomeSeries| {
            let shard = series.shards[index].get_or_init(|| self.resolve(self.requests.shard(index), record));
            shard.observe(record);
        };
        if let Some(series) = cache.series.load().get(&key) {
            observe(series);
            return;
        }
        let series = Arc::new(OutcomeSeries::new(self.requests.len()));
        observe(&series);
        cache.series.rcu(|current| {
            let mut next = HashMap::clone(current);
            if next.len() < MAX_CACHED_OUTCOMES {
                next.insert(key, Arc::clone(&series));
            }
            next
        });
    }

    /// The series of `record`'s labels in copy `shard`.
    fn resolve(&self, shard: &RequestShard, record: &RequestRecord<'_>) -> ShardSeries {
        let (name, namespace) = service_name_and_namespace(record.destination_host);
        let mut code_buffer = itoa_buffer();
        let code = format_status(record.status, &mut code_buffer);
        let labels = [
            "source",
            record.workload,
            record.workload_namespace,
            if record.destination_host.is_empty() { "unknown" } else { record.destination_host },
            name,
            namespace,
            record.protocol,
            code,
            record.flags,
        ];
        ShardSeries {
            requests: shard.requests_total.with_label_values(&labels),
            duration: shard.request_duration.with_label_values(&labels),
            request_bytes: shard.request_bytes.with_label_values(&labels),
            response_bytes: shard.response_bytes.with_label_values(&labels),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        buffer
    }
}

/// One copy of the per-request series, with Istio's names and buckets.
fn request_shard() -> Result<RequestShard, prometheus::Error> {
    let histogram = |name: &str, help: &str, buckets: &[f64]| {
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), &REQUEST_LABELS)
    };
    Ok(RequestShard {
        requests_total: IntCounterVec::new(
            Opts::new("istio_requests_total", "Requests handled by the gateway."),
            &REQUEST_LABELS,
        )?,
        request_duration: histogram(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds.",
            &DURATION_BUCKETS,
        )?,
        request_bytes: histogram("istio_request_bytes", "Request size (headers and body) in bytes.", &SIZE_BUCKETS)?,
        response_bytes: histogram("istio_response_bytes", "Response size (headers and body) in bytes.", &SIZE_BUCKETS)?,
        active_requests: IntGauge::new("portico_active_requests", "Requests in flight.")?,
    })
}

/// `name.namespace.svc...` -> (`name`, `namespace`); `unknown` otherwise.
pub(crate) fn service_name_and_namespace(host: &str) -> (&str, &str) {
    let mut labels = host.split('.');
    match (labels.next(), labels.next(), labels.next()) {
        (Some(name), Some(namespace), Some("svc")) => (name, namespace),
        _ => ("unknown", "unknown"),
    }
}

fn itoa_buffer() -> [u8; 3] {
    [b'0'; 3]
}

/// A status code as text without allocating.
fn format_status(status: u16, buffer: &mut [u8; 3]) -> &str {
    let status = status.min(999);
    buffer[0] = b'0' + (status / 100) as u8;
    buffer[1] = b'0' + (status / 10 % 10) as u8;
    buffer[2] = b'0' + (status % 10) as u8;
    std::str::from_utf8(buffer).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_istio_names_and_labels() {
        let metrics = Metrics::new().unwrap();
        metrics.record(&RequestRecord {
            workload: "portico-gateway",
            workload_namespace: "istio-system",
            destination_host: "nb.team.svc.cluster.local",
            protocol: "http",
            status: 200,
            flags: "-",
            duration_ms: 3.0,
            request_bytes: 100,
            response_bytes: 1000,
        });
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains("istio_requests_total{"), "{text}");
        assert!(text.contains("destination_service_name=\"nb\""), "{text}");
        assert!(text.contains("destination_service_namespace=\"team\""), "{text}");
        assert!(text.contains("response_code=\"200\""), "{text}");
        assert!(text.contains("istio_request_duration_milliseconds_bucket"), "{text}");
    }

    #[test]
    fn cached_series_are_the_labelled_ones() {
        let metrics = Metrics::new().unwrap();
        let cache = SeriesCache::default();
        let record = |status| RequestRecord {
            workload: "gw",
            workload_namespace: "istio-system",
            destination_host: "nb.team.svc.cluster.local",
            protocol: "http",
            status,
            flags: "-",
            duration_ms: 1.0,
            request_bytes: 0,
            response_bytes: 10,
        };
        let key = |status| OutcomeKey { route: 1, destination: 0, grpc: false, status, flags: "-" };
        for _ in 0..3 {
            metrics.record_cached(&cache, key(200), &record(200));
        }
        metrics.record_cached(&cache, key(503), &record(503));
        metrics.record(&record(200));
        let labels = ["source", "gw", "istio-system", "nb.team.svc.cluster.local", "nb", "team", "http", "200", "-"];
        assert_eq!(total_of(&metrics, &labels), 4);
        assert_eq!(cache.series.load().len(), 2);
    }

    /// `istio_requests_total` of `labels`, as a scrape sums it.
    fn total_of(metrics: &Metrics, labels: &[&str]) -> u64 {
        (0..metrics.requests.len())
            .map(|index| metrics.requests.shard(index).requests_total.with_label_values(labels).get())
            .sum()
    }

    #[test]
    fn a_scrape_sums_what_every_thread_recorded() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let cache = Arc::new(SeriesCache::default());
        let record = |duration_ms| RequestRecord {
            workload: "gw",
            workload_namespace: "istio-system",
            destination_host: "nb.team.svc.cluster.local",
            protocol: "http",
            status: 200,
            flags: "-",
            duration_ms,
            request_bytes: 0,
            response_bytes: 10,
        };
        let key = OutcomeKey { route: 1, destination: 0, grpc: false, status: 200, flags: "-" };
        // Four threads, each its own copy where there are CPUs enough; a
        // request that starts on one thread may end on another.
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let (metrics, cache) = (Arc::clone(&metrics), Arc::clone(&cache));
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        metrics.record_cached(&cache, key, &record(2.0));
                    }
                    metrics.record(&record(2.0));
                    if thread % 2 == 0 {
                        metrics.request_started();
                        metrics.request_started();
                    } else {
                        metrics.request_ended();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = String::from_utf8(metrics.render()).unwrap();
        let series = "{destination_service=\"nb.team.svc.cluster.local\",destination_service_name=\"nb\",\
                      destination_service_namespace=\"team\",reporter=\"source\",request_protocol=\"http\",\
                      response_code=\"200\",response_flags=\"-\",source_workload=\"gw\",\
                      source_workload_namespace=\"istio-system\"}";
        assert!(text.contains(&format!("istio_requests_total{series} 44")), "{text}");
        assert!(text.contains(&format!("istio_request_duration_milliseconds_count{series} 44")), "{text}");
        assert!(text.contains(&format!("istio_request_duration_milliseconds_sum{series} 88")), "{text}");
        assert_eq!(text.matches("istio_requests_total{").count(), 1, "one series, not one per copy: {text}");
        assert!(text.contains("portico_active_requests 2\n"), "{text}");
    }
}
