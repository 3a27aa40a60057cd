//! The per-request series, one copy per CPU: each thread adds to its own,
//! and a scrape sums them.
//!
//! Why: every request adds to a counter, three histograms and a gauge, 15
//! atomic read-modify-writes. With one copy, the workers running at once
//! pass those cache lines back and forth on every request, a cost no
//! instruction count shows. Without the metrics at all, keep-alive CPU per
//! request was 1.7 us lower (interleaved A/B, bench/RESULTS.md, session
//! 13); a thread's own copy keeps the work and drops the contention, as
//! Envoy's per-worker stats do.
//!
//! A copy is plain `prometheus` vectors, registered nowhere: the registry
//! sees one [`ShardedRequests`] collector, which sums the copies' families
//! series by series at scrape time. Sums are exact: counters, gauges and
//! histograms over the same buckets all add up.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Metric, MetricFamily, MetricType};
use prometheus::{HistogramVec, IntCounterVec, IntGauge};

/// One copy of the per-request metrics.
pub struct RequestShard {
    pub requests_total: IntCounterVec,
    pub request_duration: HistogramVec,
    pub request_bytes: HistogramVec,
    pub response_bytes: HistogramVec,
    pub active_requests: IntGauge,
}

impl RequestShard {
    fn collectors(&self) -> [&dyn Collector; 5] {
        [&self.requests_total, &self.request_duration, &self.request_bytes, &self.response_bytes, &self.active_requests]
    }
}

/// Every copy; cloned into the registry as its collector.
#[derive(Clone)]
pub struct ShardedRequests {
    shards: Arc<[RequestShard]>,
}

impl ShardedRequests {
    /// `count` copies (at least one), each made by `make`.
    pub fn new(
        count: usize,
        make: impl Fn() -> Result<RequestShard, prometheus::Error>,
    ) -> Result<Self, prometheus::Error> {
        let shards = (0..count.max(1)).map(|_| make()).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { shards: shards.into() })
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// The calling thread's copy's index.
    pub fn local_index(&self) -> usize {
        crate::lanes::this_thread() % self.shards.len()
    }

    pub fn shard(&self, index: usize) -> &RequestShard {
        &self.shards[index % self.shards.len()]
    }

    /// The calling thread's copy.
    pub fn local(&self) -> &RequestShard {
        self.shard(self.local_index())
    }
}

impl Collector for ShardedRequests {
    fn desc(&self) -> Vec<&Desc> {
        // Every copy has the same names and labels: the first's stand for all.
        self.shards[0].collectors().into_iter().flat_map(|collector| collector.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families: Vec<MetricFamily> =
            self.shards[0].collectors().into_iter().flat_map(|collector| collector.collect()).collect();
        for shard in self.shards.iter().skip(1) {
            for other in shard.collectors().into_iter().flat_map(|collector| collector.collect()) {
                match families.iter_mut().find(|family| family.name() == other.name()) {
                    Some(family) => add_family(family, other),
                    None => families.push(other),
                }
            }
        }
        families
    }
}

/// Adds `other`'s series to `family`'s, matching series by their labels.
fn add_family(family: &mut MetricFamily, mut other: MetricFamily) {
    let kind = family.get_field_type();
    let position: HashMap<Vec<(String, String)>, usize> =
        family.get_metric().iter().enumerate().map(|(index, metric)| (labels_of(metric), index)).collect();
    for metric in other.take_metric() {
        match position.get(&labels_of(&metric)) {
            Some(&index) => add_metric(kind, &mut family.mut_metric()[index], &metric),
            None => family.mut_metric().push(metric),
        }
    }
}

fn labels_of(metric: &Metric) -> Vec<(String, String)> {
    metric.get_label().iter().map(|pair| (pair.name().to_owned(), pair.value().to_owned())).collect()
}

/// One series plus the same series of another copy. Only the kinds a
/// [`RequestShard`] holds occur: counters, gauges and histograms.
fn add_metric(kind: MetricType, into: &mut Metric, from: &Metric) {
    match kind {
        MetricType::COUNTER => {
            let mut counter = into.get_counter().clone();
            counter.set_value(counter.get_value() + from.get_counter().get_value());
            into.set_counter(counter);
        }
        MetricType::GAUGE => {
            let mut gauge = into.get_gauge().clone();
            gauge.set_value(gauge.get_value() + from.get_gauge().get_value());
            into.set_gauge(gauge);
        }
        MetricType::HISTOGRAM => {
            let (mut histogram, other) = (into.get_histogram().clone(), from.get_histogram());
            histogram.set_sample_count(histogram.get_sample_count() + other.get_sample_count());
            histogram.set_sample_sum(histogram.get_sample_sum() + other.get_sample_sum());
            let buckets = histogram
                .get_bucket()
                .iter()
                .zip(other.get_bucket())
                .map(|(bucket, other)| {
                    let mut bucket = bucket.clone();
                    bucket.set_cumulative_count(bucket.cumulative_count() + other.cumulative_count());
                    bucket
                })
                .collect();
            histogram.set_bucket(buckets);
            into.set_histogram(histogram);
        }
        MetricType::SUMMARY | MetricType::UNTYPED => {}
    }
}
