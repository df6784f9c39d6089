//! A lock-free histogram of durations with fixed buckets, recorded on every request: one atomic
//! addition for the bucket and one for the sum (nanoseconds), no lock — prometheus-client's own
//! histogram takes a mutex per observation. The count is the buckets' sum. Encoded as an
//! OpenMetrics histogram in seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds (seconds) of request and stage durations: 10 µs to 60 s; then +Inf. (A native
/// model's single-row request takes 5–50 µs in the server: the first bounds tell those apart.)
pub const DURATION_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets: one per bound of [`DURATION_BUCKETS`], then +Inf.
pub const BUCKETS: usize = DURATION_BUCKETS.len() + 1;

#[derive(Debug)]
struct Counts {
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

/// A shared handle: clones record into the same counts.
#[derive(Debug, Clone)]
pub struct DurationHistogram(Arc<Counts>);

impl Default for DurationHistogram {
    fn default() -> Self {
        DurationHistogram(Arc::new(Counts {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }))
    }
}

impl DurationHistogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = DURATION_BUCKETS.partition_point(|bound| *bound < seconds);
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The count of each bucket now (not cumulative).
    pub fn buckets(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.0.buckets[i].load(Ordering::Relaxed))
    }

    /// Quantile `q` in seconds (see [`quantile`]; `None` without observations).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.buckets(), q)
    }

    pub fn count(&self) -> u64 {
        self.buckets().iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.buckets();
        let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(
            self.sum_seconds(),
            counts.iter().sum(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A quantile from per-bucket counts (bounds of [`DURATION_BUCKETS`], then +Inf), interpolated
/// linearly inside its bucket as Prometheus' `histogram_quantile` does; a quantile in the +Inf
/// bucket is the highest finite bound.
pub fn quantile(buckets: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, count) in buckets.iter().enumerate() {
        let upto = below + count;
        if *count > 0 && upto as f64 >= rank {
            let Some(upper) = DURATION_BUCKETS.get(i) else {
                return DURATION_BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { DURATION_BUCKETS[i - 1] };
            let within = ((rank - below as f64) / *count as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        below = upto;
    }
    DURATION_BUCKETS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_encode_cumulatively() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_micros(60));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let b = h.buckets();
        assert_eq!(b[3], 2, "(50 µs, 0.1 ms] (the bound is inclusive)");
        assert_eq!(b[8], 1, "≤ 5 ms");
        assert_eq!(b[BUCKETS - 1], 1, "+Inf");
        assert_eq!(h.count(), 4);
        assert!((h.sum_seconds() - 100.00316).abs() < 1e-9);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("d", "durations", h.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("d_bucket{le=\"0.0001\"} 2"), "{text}");
        assert!(text.contains("d_bucket{le=\"0.005\"} 3"), "{text}");
        assert!(text.contains("d_bucket{le=\"+Inf\"} 4"), "{text}");
        assert!(text.contains("d_count 4"), "{text}");
    }
}
