//! A fixed-bucket histogram of atomics: cheap enough to update on every call
//! or transaction from any thread, read at scrape time. Kept free of any
//! metrics crate so the log and dispatch can record without depending on how
//! the daemon exports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Seconds, ×4 steps from 10 µs to ~10 s: plugin calls.
pub const CALL_SECONDS: &[f64] = &[
    0.00001, 0.00004, 0.00016, 0.00064, 0.00256, 0.01024, 0.04096, 0.16384, 0.65536, 2.62144,
    10.48576,
];

/// Seconds, ×2 steps from 100 µs to ~3.3 s: log transactions (fsync included).
pub const COMMIT_SECONDS: &[f64] = &[
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

/// Counts, ×4 steps from 1 to 16,384: events or requests per transaction.
pub const BATCH_SIZES: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0];

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); one more than `bounds`, for +Inf.
    counts: Box<[AtomicU64]>,
    /// The sum in millionths, so it fits an atomic integer.
    sum_micros: AtomicU64,
}

/// A reading of a [`Histogram`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations in this bucket)`, not cumulative; the last
    /// bound is infinity.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|b| b.1).sum(),
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_of_their_value() {
        let h = Histogram::new(CALL_SECONDS);
        h.observe_duration(Duration::from_micros(5));
        h.observe_duration(Duration::from_micros(30));
        h.observe_duration(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.00001, 1));
        assert_eq!(s.buckets[1], (0.00004, 1));
        assert_eq!(s.buckets.last().unwrap(), &(f64::INFINITY, 1));
        assert!((s.sum - 60.000035).abs() < 1e-6);
    }
}
