//! A latency histogram of atomics, exported through `prometheus-client` as an ordinary
//! histogram.
//!
//! Why not the crate's own `Histogram`: it takes a write lock per observation (its source marks
//! atomics as a to-do), and its counts can be read only by encoding the registry. Call durations
//! are recorded on every call on every core, and the dashboard and `mpreg top` read percentiles
//! every second, so this one is a fixed array of atomic buckets (10 µs × 2ⁿ up to ~42 s),
//! an atomic count and an atomic sum in nanoseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Finite buckets: 10 µs up to 10 µs × 2²² ≈ 42 s; one more counts the rest (`+Inf`).
pub const BUCKETS: usize = 23;
const FIRST_NS: u64 = 10_000;

/// The upper bound of bucket `i` in seconds.
pub fn upper_bound(i: usize) -> f64 {
    (FIRST_NS << i) as f64 / 1e9
}

/// The atomic counts behind both histograms: buckets of bounds `first × 2ⁱ`.
#[derive(Debug, Default)]
struct Cells {
    buckets: [AtomicU64; BUCKETS + 1],
    count: AtomicU64,
    /// The values' sum, in the histogram's own unit (nanoseconds, bytes).
    sum: AtomicU64,
}

impl Cells {
    /// Records `v`: three relaxed atomic adds.
    fn record(&self, v: u64, first: u64) {
        self.buckets[bucket_from(v, first)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// The counts now.
    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for (i, b) in self.buckets.iter().enumerate() {
            s.buckets[i] = b.load(Ordering::Relaxed);
        }
        s.count = self.count.load(Ordering::Relaxed);
        s.sum_ns = self.sum.load(Ordering::Relaxed);
        s
    }

    /// Encodes them as a Prometheus histogram, bounds and sum divided by `per_unit` (1e9 for
    /// nanoseconds shown as seconds).
    fn encode(&self, first: u64, per_unit: f64, mut encoder: MetricEncoder) -> std::fmt::Result {
        let s = self.snapshot();
        let buckets: Vec<(f64, u64)> = (0..=BUCKETS)
            .map(|i| {
                let bound = if i == BUCKETS {
                    f64::MAX
                } else {
                    (first << i) as f64 / per_unit
                };
                (bound, s.buckets[i])
            })
            .collect();
        let sum = s.sum_ns as f64 / per_unit;
        encoder.encode_histogram::<NoLabelSet>(sum, s.count, &buckets, None)
    }
}

/// A histogram of durations; clones share their counts.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram(Arc<Cells>);

/// Counts read at one moment: `buckets[i]` is the count of bucket `i` alone (not cumulative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Per-bucket counts; the last is `+Inf`.
    pub buckets: [u64; BUCKETS + 1],
    /// Observations.
    pub count: u64,
    /// Their sum, in nanoseconds.
    pub sum_ns: u64,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            buckets: [0; BUCKETS + 1],
            count: 0,
            sum_ns: 0,
        }
    }
}

/// The first bucket of bounds `first × 2ⁱ` that holds `v`.
fn bucket_from(v: u64, first: u64) -> usize {
    if v <= first {
        return 0;
    }
    // ceil(log2(v / first)), from the bit length of (v - 1) / first.
    let q = (v - 1) / first;
    ((u64::BITS - q.leading_zeros()) as usize).min(BUCKETS)
}

/// A histogram of sizes (bytes, or counts such as levels) on the same atomic cells, bounds
/// `first × 2ⁱ`: for the session's per-frame sizes, where a locked histogram cost more than
/// the rest of the frame's metrics together.
#[derive(Debug, Clone)]
pub struct SizeHistogram {
    cells: Arc<Cells>,
    first: u64,
}

impl SizeHistogram {
    /// Buckets `first`, `2 × first`, … (23 of them, then `+Inf`).
    pub fn new(first: u64) -> SizeHistogram {
        SizeHistogram {
            cells: Arc::default(),
            first: first.max(1),
        }
    }

    /// Records one value.
    pub fn observe(&self, v: u64) {
        self.cells.record(v, self.first);
    }
}

impl TypedMetric for SizeHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SizeHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.cells.encode(self.first, 1.0, encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl LatencyHistogram {
    /// Records one duration: three relaxed atomic adds.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.record(ns, FIRST_NS);
    }

    /// The counts now.
    pub fn snapshot(&self) -> Snapshot {
        self.0.snapshot()
    }
}

impl Snapshot {
    /// What was observed between `earlier` and this one.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let mut d = Snapshot::default();
        for i in 0..=BUCKETS {
            d.buckets[i] = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        d.count = self.count.saturating_sub(earlier.count);
        d.sum_ns = self.sum_ns.saturating_sub(earlier.sum_ns);
        d
    }

    /// Adds another snapshot's counts.
    pub fn add(&mut self, other: &Snapshot) {
        for i in 0..=BUCKETS {
            self.buckets[i] += other.buckets[i];
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
    }

    /// The `q` quantile (0..=1) in seconds, as Prometheus' `histogram_quantile` estimates it:
    /// linear within the bucket it falls in. `None` with no observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { upper_bound(i - 1) };
                if i == BUCKETS {
                    return Some(lower);
                }
                let within = (rank - seen as f64) / n as f64;
                return Some(lower + (upper_bound(i) - lower) * within);
            }
            seen += n;
        }
        Some(upper_bound(BUCKETS - 1))
    }

    /// The mean in seconds; `None` with no observations.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / 1e9 / self.count as f64)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(FIRST_NS, 1e9, encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket of a duration of `ns` nanoseconds: the first whose bound is at least `ns`.
    fn bucket_of(ns: u64) -> usize {
        bucket_from(ns, FIRST_NS)
    }

    #[test]
    fn durations_land_in_the_first_bucket_whose_bound_holds_them() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(10_000), 0);
        assert_eq!(bucket_of(10_001), 1);
        assert_eq!(bucket_of(20_000), 1);
        assert_eq!(bucket_of(20_001), 2);
        assert_eq!(bucket_of(40_000), 2);
        assert_eq!(bucket_of(u64::MAX), BUCKETS);
        for i in 0..BUCKETS {
            let ns = (upper_bound(i) * 1e9).round() as u64;
            assert_eq!(bucket_of(ns), i, "bound of bucket {i}");
            assert_eq!(bucket_of(ns + 1), i + 1, "just over bucket {i}");
        }
    }

    #[test]
    fn sizes_use_their_own_first_bound() {
        let h = SizeHistogram::new(64);
        h.observe(64);
        h.observe(65);
        h.observe(1 << 20);
        assert_eq!(h.cells.buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(h.cells.buckets[1].load(Ordering::Relaxed), 1);
        assert_eq!(
            h.cells.buckets[14].load(Ordering::Relaxed),
            1,
            "64 × 2^14 = 1 MiB"
        );
        assert_eq!(h.cells.count.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn quantiles_and_deltas_come_from_the_buckets() {
        let h = LatencyHistogram::default();
        let before = h.snapshot();
        for _ in 0..90 {
            h.observe(Duration::from_micros(15));
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(3));
        }
        let d = h.snapshot().since(&before);
        assert_eq!(d.count, 100);
        let p50 = d.quantile(0.5).expect("observed");
        assert!((0.000_010..=0.000_020).contains(&p50), "{p50}");
        let p99 = d.quantile(0.99).expect("observed");
        assert!((0.002..=0.006).contains(&p99), "{p99}");
        assert!(Snapshot::default().quantile(0.5).is_none());
        let mean = d.mean().expect("observed");
        assert!((mean - (90.0 * 15e-6 + 10.0 * 3e-3) / 100.0).abs() < 1e-9);
    }
}
