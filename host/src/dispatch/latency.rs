//! Call latency per plugin: a fixed-bucket histogram of atomics, cheap enough
//! to update on every call from any thread, read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds in seconds: ×4 steps from 10 µs to ~10 s, then +Inf.
pub const BOUNDS: [f64; 11] = [
    0.00001, 0.00004, 0.00016, 0.00064, 0.00256, 0.01024, 0.04096, 0.16384, 0.65536, 2.62144,
    10.48576,
];

#[derive(Debug, Default)]
pub struct CallLatency {
    /// Per bucket (not cumulative); the last is +Inf.
    counts: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A reading of [`CallLatency`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySnapshot {
    /// `(upper bound in seconds, calls in this bucket)`, not cumulative; the
    /// last bound is infinity.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl CallLatency {
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        LatencySnapshot {
            count: buckets.iter().map(|b| b.1).sum(),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_the_bucket_of_their_duration() {
        let l = CallLatency::default();
        l.record(Duration::from_micros(5));
        l.record(Duration::from_micros(30));
        l.record(Duration::from_secs(60));
        let s = l.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.00001, 1));
        assert_eq!(s.buckets[1], (0.00004, 1));
        assert_eq!(s.buckets.last().unwrap(), &(f64::INFINITY, 1));
        assert!((s.sum_seconds - 60.000035).abs() < 1e-9);
    }
}
