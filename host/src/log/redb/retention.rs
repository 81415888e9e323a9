//! Retention: deleting old partition prefixes and expired dedupe entries.
//!
//! A pass runs as one request of the group-commit writer (so it is just another part of a
//! batch, atomic with it), triggered by a background thread every `retention_interval` or on
//! demand. One pass deletes at most about [`MAX_DELETIONS_PER_PASS`] events and as many dedupe
//! entries, in whole chunks, so it never holds up appends for long; the next pass continues.
//!
//! Retention deletes whole chunks (the events one transaction appended to a partition), so a
//! partition's retained start is always a chunk boundary. Dedupe entries expire chunk by
//! chunk too, behind a per-partition cursor (`dedupe_swept`): once a chunk is older than the
//! dedupe window, or deleted, the entries of its events are removed (an id appended again
//! later has a newer entry, which stays).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::mpsc::Sender;
use std::time::Duration;

use ::redb::ReadableTable;

use super::writer::{Batch, Fatal, Request};
use crate::log::encoding::{Chunk, ChunkBuilder, event_body_id, event_record_len};
use crate::log::periodic::Periodic;
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
                // Chunks deleted whole, and the chunk the cut falls into (rewritten without
                // its deleted prefix); the ids of the deleted events, for their dedupe entries.
                let mut whole = Vec::new();
                let mut rewrite = None;
                let mut ids = Vec::new();
                for row in self
                    .t
                    .chunks
                    .range((meta.id, partition, info.start)..(meta.id, partition, limit))?
                {
                    let (key, value) = row?;
                    let first = key.value().2;
                    let mut chunk = match Chunk::open(value.value()) {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            tracing::warn!(error = %e, "retention stops at an unreadable chunk");
                            break;
                        }
                    };
                    let too_old = max_age_ms
                        .is_some_and(|max| self.now_ms.saturating_sub(chunk.append_ms) > max);
                    let mut offset = first;
                    let mut kept = None;
                    while let Ok(Some(body)) = chunk.next_body() {
                        let too_big = policy
                            .max_partition_bytes
                            .is_some_and(|max| remaining > max);
                        if kept.is_none()
                            && (offset >= limit || !(too_old || too_big) || budget == 0)
                        {
                            kept = Some(ChunkBuilder::default());
                        }
                        match &mut kept {
                            Some(rest) => rest.push(body),
                            None => {
                                let size = event_record_len(chunk.append_ms, body.len()) as u64;
                                remaining = remaining.saturating_sub(size);
                                deleted_bytes += size;
                                budget -= 1;
                                ids.push(event_body_id(body).ok().map(str::to_owned));
                                cut = offset + 1;
                            }
                        }
                        offset += 1;
                    }
                    match kept {
                        None => whole.push(first),
                        Some(rest) => {
                            if cut > first {
                                rewrite = Some((first, rest.finish(chunk.append_ms)));
                            }
                            break;
                        }
                    }
                }
                if cut > info.start {
                    // Deleted events take their dedupe entries with them.
                    let swept = self.dedupe_swept(meta.id, partition)?;
                    for (offset, id) in (info.start..cut).zip(ids) {
                        if let Some(id) = id
                            && offset >= swept
                        {
                            self.expire_dedupe(meta.id, partition, offset, &id)?;
                        }
                    }
                    if cut > swept {
                        self.t.dedupe_swept.insert((meta.id, partition), cut)?;
                    }
                    for first in whole {
                        self.t.chunks.remove((meta.id, partition, first))?;
                    }
                    if let Some((first, rest)) = rewrite {
                        self.t.chunks.remove((meta.id, partition, first))?;
                        self.t
                            .chunks
                            .insert((meta.id, partition, cut), rest.as_slice())?;
                    }
                    report.events_deleted += cut - info.start;
                    report.bytes_deleted += deleted_bytes;
                    let part = self.part_mut(meta.id, partition);
                    part.start = cut;
                    part.bytes = part.bytes.saturating_sub(deleted_bytes);
                }
            }
        }

        // Dedupe entries of chunks older than the window, partition by partition.
        let window_ms = self.shared.config.dedupe_window.as_millis() as u64;
        let horizon = self.now_ms.saturating_sub(window_ms);
        let mut budget = MAX_DELETIONS_PER_PASS;
        let mut partitions: Vec<(u32, u32)> = self
            .committed
            .parts
            .keys()
            .chain(self.parts.keys())
            .copied()
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        for (topic, partition) in partitions {
            if budget == 0 {
                break;
            }
            let swept = self.dedupe_swept(topic, partition)?;
            let end = self.part(topic, partition).end;
            let mut due = Vec::new();
            for row in self
                .t
                .chunks
                .range((topic, partition, swept)..(topic, partition, end))?
            {
                let (key, value) = row?;
                let Ok(chunk) = Chunk::open(value.value()) else {
                    break;
                };
                // Older than the horizon: outside the window (`rules::within_dedupe_window`).
                if chunk.append_ms >= horizon || budget == 0 {
                    break;
                }
                budget = budget.saturating_sub(chunk.count);
                due.push((key.value().2, chunk.count));
            }
            let Some(&(last_first, last_count)) = due.last() else {
                continue;
            };
            for (first, _) in due {
                let ids = self.chunk_ids(topic, partition, first)?;
                report.dedupe_entries_expired += ids.len() as u64;
                for (offset, id) in (first..).zip(ids) {
                    if let Some(id) = id {
                        self.expire_dedupe(topic, partition, offset, &id)?;
                    }
                }
            }
            self.t
                .dedupe_swept
                .insert((topic, partition), last_first + last_count)?;
        }
        Ok(report)
    }
}

impl Batch<'_, '_> {
    fn dedupe_swept(&self, topic: u32, partition: u32) -> Result<u64, Fatal> {
        Ok(self
            .t
            .dedupe_swept
            .get((topic, partition))?
            .map_or(0, |g| g.value()))
    }

    /// The ids of the chunk at `first` (`None` for an event whose id does not decode).
    fn chunk_ids(
        &self,
        topic: u32,
        partition: u32,
        first: u64,
    ) -> Result<Vec<Option<String>>, Fatal> {
        let mut ids = Vec::new();
        if let Some(value) = self.t.chunks.get((topic, partition, first))?
            && let Ok(mut chunk) = Chunk::open(value.value())
        {
            while let Ok(Some(body)) = chunk.next_body() {
                ids.push(event_body_id(body).ok().map(str::to_owned));
            }
        }
        Ok(ids)
    }

    /// Removes the dedupe entry of `id` if it still points at this event (an id appended
    /// again later has a newer entry, which stays).
    fn expire_dedupe(
        &mut self,
        topic: u32,
        partition: u32,
        offset: u64,
        id: &str,
    ) -> Result<(), Fatal> {
        let current = self.t.dedupe.get((topic, id))?.map(|g| g.value());
        if current.is_some_and(|(p, o, _)| p == partition && o == offset) {
            self.t.dedupe.remove((topic, id))?;
        }
        Ok(())
    }
}

/// The background thread that asks the writer for a retention pass now and then.
pub(super) fn spawn_task(
    requests: Sender<Request>,
    interval: Duration,
) -> std::io::Result<Periodic> {
    Periodic::spawn("evhost-log-retention", interval, move || {
        let (answer, pending) = Pending::channel();
        if requests.send(Request::Retention { answer }).is_err() {
            return ControlFlow::Break(());
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
            Err(LogError::Closed) => return ControlFlow::Break(()),
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
        ControlFlow::Continue(())
    })
}
