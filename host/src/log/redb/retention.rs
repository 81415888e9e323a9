//! Retention: deleting old partition prefixes and expired dedupe entries.
//!
//! A pass runs as one request of the group-commit writer (so it is just another part of a
//! batch, atomic with it), triggered by a background thread every `retention_interval` or on
//! demand. One pass deletes at most [`MAX_DELETIONS_PER_PASS`] entries of each kind so it
//! never holds up appends for long; the next pass continues.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use ::redb::ReadableTable;

use super::writer::{Batch, Fatal, Request};
use crate::log::encoding::event_record_append_ms;
use crate::log::{LogError, Pending, RetentionReport};

pub(super) const MAX_DELETIONS_PER_PASS: u64 = 100_000;

impl Batch<'_, '_> {
    pub(super) fn retention(&mut self) -> Result<RetentionReport, Fatal> {
        let mut report = RetentionReport::default();

        // The slowest group's committed offset per partition: nothing at or past it goes.
        let mut floors: HashMap<(u32, u32), u64> = HashMap::new();
        for row in self.t.offsets.iter()? {
            let (key, next) = row?;
            let (_, topic, partition) = key.value();
            let next = next.value();
            floors
                .entry((topic, partition))
                .and_modify(|floor| *floor = (*floor).min(next))
                .or_insert(next);
        }

        let mut topics: Vec<_> = self
            .committed
            .topics
            .iter()
            .chain(self.topics.iter())
            .filter(|(_, meta)| !meta.config.retention.is_unbounded())
            .map(|(_, meta)| meta.clone())
            .collect();
        topics.sort_by_key(|meta| meta.id);
        topics.dedup_by_key(|meta| meta.id);

        let mut budget = MAX_DELETIONS_PER_PASS;
        for meta in topics {
            let policy = &meta.config.retention;
            let max_age_ms = policy.max_age.map(|age| age.as_millis() as u64);
            for partition in 0..meta.config.partitions {
                if budget == 0 {
                    break;
                }
                let info = self.part(meta.id, partition);
                let floor = if policy.delete_unconsumed {
                    u64::MAX
                } else {
                    floors
                        .get(&(meta.id, partition))
                        .copied()
                        .unwrap_or(u64::MAX)
                };
                let limit = info.end.min(floor);
                if info.start >= limit {
                    continue;
                }
                let mut cut = info.start;
                let mut remaining = info.bytes;
                let mut deleted_bytes = 0;
                for row in self
                    .t
                    .events
                    .range((meta.id, partition, info.start)..(meta.id, partition, limit))?
                {
                    let (key, record) = row?;
                    let record = record.value();
                    let append_ms = match event_record_append_ms(record) {
                        Ok(ms) => ms,
                        Err(e) => {
                            tracing::warn!(error = %e, "retention stops at an unreadable event");
                            break;
                        }
                    };
                    let too_old =
                        max_age_ms.is_some_and(|max| self.now_ms.saturating_sub(append_ms) > max);
                    let too_big = policy
                        .max_partition_bytes
                        .is_some_and(|max| remaining > max);
                    if !(too_old || too_big) || budget == 0 {
                        break;
                    }
                    let len = record.len() as u64;
                    remaining = remaining.saturating_sub(len);
                    deleted_bytes += len;
                    cut = key.value().2 + 1;
                    budget -= 1;
                }
                if cut > info.start {
                    self.t.events.retain_in(
                        (meta.id, partition, info.start)..(meta.id, partition, cut),
                        |_, _| false,
                    )?;
                    report.events_deleted += cut - info.start;
                    report.bytes_deleted += deleted_bytes;
                    let part = self.part_mut(meta.id, partition);
                    part.start = cut;
                    part.bytes = part.bytes.saturating_sub(deleted_bytes);
                }
            }
        }

        // Dedupe entries older than the window. An id appended again after its entry expired
        // has a newer entry; only an entry whose time matches the index is removed.
        let window_ms = self.shared.config.dedupe_window.as_millis() as u64;
        let horizon = self.now_ms.saturating_sub(window_ms);
        let mut expired = Vec::new();
        for row in self.t.dedupe_by_time.range(..(horizon, 0u32, ""))? {
            if expired.len() as u64 >= MAX_DELETIONS_PER_PASS {
                break;
            }
            let (key, _) = row?;
            let (at_ms, topic, id) = key.value();
            expired.push((at_ms, topic, id.to_owned()));
        }
        for (at_ms, topic, id) in expired {
            self.t.dedupe_by_time.remove((at_ms, topic, id.as_str()))?;
            let current = self
                .t
                .dedupe
                .get((topic, id.as_str()))?
                .map(|g| g.value().2);
            if current == Some(at_ms) {
                self.t.dedupe.remove((topic, id.as_str()))?;
            }
            report.dedupe_entries_expired += 1;
        }
        Ok(report)
    }
}

/// The background thread that asks the writer for a retention pass now and then.
pub(super) struct RetentionTask {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl RetentionTask {
    pub(super) fn spawn(requests: Sender<Request>, interval: Duration) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("evhost-log-retention".into())
            .spawn(move || {
                let (flag, cv) = &*stopped;
                loop {
                    let guard = flag.lock().unwrap_or_else(PoisonError::into_inner);
                    let (guard, _) = cv
                        .wait_timeout_while(guard, interval, |stop| !*stop)
                        .unwrap_or_else(PoisonError::into_inner);
                    if *guard {
                        return;
                    }
                    drop(guard);
                    let (answer, pending) = Pending::channel();
                    if requests.send(Request::Retention { answer }).is_err() {
                        return;
                    }
                    match pending.wait() {
                        Ok(report) if report.events_deleted > 0 => {
                            tracing::debug!(
                                events = report.events_deleted,
                                bytes = report.bytes_deleted,
                                "retention deleted events"
                            );
                        }
                        Ok(_) => {}
                        Err(LogError::Closed) => return,
                        Err(e) => tracing::warn!(error = %e, "retention pass failed"),
                    }
                }
            })?;
        Ok(Self { stop, thread })
    }

    pub(super) fn stop(self) {
        let (flag, cv) = &*self.stop;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
        let _ = self.thread.join();
    }
}
