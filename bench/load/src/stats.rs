//! Measurements: each worker thread records into its own [`Recorder`] (no
//! locks on the hot path); [`Live`] counters feed the once-a-second progress
//! line; recorders merge into the final report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::error::OpError;

/// Latencies are recorded in microseconds, up to an hour (the histogram
/// grows past that rather than dropping a value).
const HIGHEST_US: u64 = 3_600_000_000;

/// One operation's latencies and error count.
#[derive(Clone, Debug)]
pub struct OpStats {
    pub latency_us: Histogram<u64>,
    pub errors: u64,
}

/// What one worker thread measured.
#[derive(Clone, Debug)]
pub struct Recorder {
    pub ops: BTreeMap<&'static str, OpStats>,
    pub errors: BTreeMap<String, u64>,
    /// The first message seen of each error kind.
    pub examples: BTreeMap<String, String>,
    /// An empty histogram with the bounds every operation uses.
    empty: Histogram<u64>,
}

impl Recorder {
    /// An empty recorder (fails only if the histogram bounds were invalid).
    pub fn new() -> Result<Recorder, hdrhistogram::CreationError> {
        let mut empty = Histogram::new_with_bounds(1, HIGHEST_US, 3)?;
        empty.auto(true);
        Ok(Recorder { ops: BTreeMap::new(), errors: BTreeMap::new(), examples: BTreeMap::new(), empty })
    }

    /// Records a completed operation.
    pub fn ok(&mut self, op: &'static str, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        let histogram = &mut self.op(op).latency_us;
        // Auto-resizing: a huge value grows the histogram; saturate only if that fails.
        if histogram.record(micros).is_err() {
            histogram.saturating_record(micros);
        }
    }

    /// Records a failed operation under its error kind.
    pub fn error(&mut self, op: &'static str, error: &OpError) {
        self.op(op).errors += 1;
        let kind = error.kind().into_owned();
        if !self.examples.contains_key(&kind) {
            self.examples.insert(kind.clone(), format!("{op}: {error}"));
        }
        *self.errors.entry(kind).or_default() += 1;
    }

    fn op(&mut self, op: &'static str) -> &mut OpStats {
        let empty = &self.empty;
        self.ops.entry(op).or_insert_with(|| OpStats { latency_us: empty.clone(), errors: 0 })
    }

    /// Adds `other`'s measurements to these.
    pub fn merge(&mut self, other: &Recorder) {
        for (name, stats) in &other.ops {
            let mine = self.op(name);
            // Both histograms auto-resize, so adding cannot run out of range.
            let _ = mine.latency_us.add(&stats.latency_us);
            mine.errors += stats.errors;
        }
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
        for (kind, example) in &other.examples {
            self.examples.entry(kind.clone()).or_insert_with(|| example.clone());
        }
    }

    /// Total errors of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Counters shared by all workers, read by the progress line.
#[derive(Debug, Default)]
pub struct Live {
    /// Completed operations (requests, executions, handshakes).
    pub done: AtomicU64,
    /// Failed operations.
    pub errors: AtomicU64,
    /// Currently open websockets / active sessions.
    pub open: AtomicI64,
}

impl Live {
    pub fn done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> (u64, u64, i64) {
        (self.done.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed), self.open.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_latencies_and_errors() {
        let mut a = Recorder::new().unwrap();
        a.ok("request", Duration::from_micros(100));
        a.error("request", &OpError::Status(503));
        let mut b = Recorder::new().unwrap();
        b.ok("request", Duration::from_micros(300));
        b.ok("request", Duration::from_secs(7200)); // beyond the initial bound
        b.error("execute", &OpError::Status(503));
        a.merge(&b);
        assert_eq!(a.ops["request"].latency_us.len(), 3);
        assert_eq!(a.ops["request"].errors, 1);
        assert_eq!(a.errors["status_503"], 2);
        assert_eq!(a.error_count(), 2);
        assert_eq!(a.examples["status_503"], "request: HTTP status 503");
        assert!(a.ops["request"].latency_us.max() >= 7_000_000_000);
    }
}
