//! Helpers shared by the benchmark targets: the 256-byte JSON payload,
//! percentiles, peak RSS, and the per-call measurement of the Wasm boundary.

#![allow(dead_code)] // each bench target uses a different part

pub mod calls;

use std::time::Duration;

/// Size of every benchmark event's payload, in bytes.
pub const PAYLOAD: usize = 256;

/// A JSON object of exactly [`PAYLOAD`] bytes: `{"n":..,"sent_ns":..,"pad":"x..."}`.
/// Fixed-width numbers keep the size constant; the keys are in the order
/// serde_json (without `preserve_order`) writes them, so re-encoding it
/// (as the HTTP API does with structured-mode `data`) keeps it byte for byte.
pub fn payload(n: u64, sent_ns: u64) -> Vec<u8> {
    let head = format!("{{\"n\":{n},\"pad\":\"");
    let tail = format!("\",\"sent_ns\":{sent_ns}}}");
    let pad = PAYLOAD.saturating_sub(head.len() + tail.len());
    let mut out = Vec::with_capacity(PAYLOAD);
    out.extend_from_slice(head.as_bytes());
    out.extend(std::iter::repeat_n(b'x', pad));
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Nanoseconds since the Unix epoch (the clock a Wasm guest sees too).
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Sorted samples with percentile look-ups.
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn new(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        Samples(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0.5 = median) by nearest rank; zero when empty.
    pub fn pct(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0[((self.0.len() - 1) as f64 * q).round() as usize]
    }

    pub fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
}

/// Peak resident set size of a process (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Peak RSS of this process.
pub fn own_peak_rss() -> Option<u64> {
    peak_rss(std::process::id())
}
