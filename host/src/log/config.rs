//! Settings every backend honours.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::RetentionPolicy;

/// The log's settings; `Default` is what `evhost run` uses without a config file.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Create a topic on its first publish (with `default_partitions` and
    /// `default_retention`); off, publishing to an unknown topic fails.
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    pub default_retention: RetentionPolicy,
    /// An event id seen in a topic this recently is not appended again.
    pub dedupe_window: Duration,
    /// Group commit: a batch closes at this many events (a request is never split, so one
    /// large request can exceed it)...
    pub max_batch_events: usize,
    /// ...or when the queue is empty and this much time has passed since the batch's first
    /// request. Zero commits as soon as the queue is drained; requests that arrive during a
    /// commit form the next batch, so concurrency alone already batches.
    pub max_linger: Duration,
    /// An event larger than this (encoded) is refused.
    pub max_event_bytes: usize,
    /// The storage engine's page cache, in bytes. redb's own default (1 GiB)
    /// lets a busy daemon's memory grow with the data written.
    pub cache_bytes: usize,
    /// How often background retention runs.
    pub retention_interval: Duration,
    /// The wall clock for append times, retention and dedupe windows (tests replace it).
    pub clock: Clock,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            auto_create_topics: true,
            default_partitions: 1,
            default_retention: RetentionPolicy::default(),
            dedupe_window: Duration::from_secs(120),
            max_batch_events: 4096,
            max_linger: Duration::ZERO,
            max_event_bytes: 1 << 20,
            cache_bytes: 64 << 20,
            retention_interval: Duration::from_secs(30),
            clock: Clock::system(),
        }
    }
}

/// A source of wall-clock time.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(SystemTime::now))
    }

    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// Counters since the log was opened, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogStats {
    /// Write transactions committed (each one fsync'd).
    pub transactions: u64,
    /// Write transactions that failed; every request in them got the error.
    pub failed_transactions: u64,
    /// Write requests answered (appends, stream appends, commits, ...).
    pub requests: u64,
    pub events_appended: u64,
    pub duplicates: u64,
    /// Duration of each committed write transaction, fsync included.
    pub transaction_seconds: crate::histogram::HistogramSnapshot,
    /// Events appended (published and emitted) per committed transaction:
    /// how well group commit batches.
    pub transaction_events: crate::histogram::HistogramSnapshot,
    /// Why the log refuses writes now: the latest write transaction failed (cleared by the
    /// next one that commits), or the log is closed. `None`: writes go through.
    pub write_error: Option<String>,
}
