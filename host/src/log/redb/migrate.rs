//! Opening a file written by an older release: layout 1 (one row per event in `events`, the
//! `dedupe_by_time` index) becomes layout 2 (chunks, the dedupe cursor) in one write
//! transaction when the log is opened. A crash during it leaves the file as it was (redb
//! commits all or nothing), so the next open simply migrates again.
//!
//! Events appended by one format-1 transaction share their append time, so consecutive
//! events of a partition with the same time become one chunk: age retention sees the same
//! times as before. Dedupe entries keep their layout; the old expiry index goes, and the new
//! cursor starts at each partition's retained start.

use std::collections::HashMap;
use std::time::Instant;

use ::redb::{Database, ReadableDatabase, ReadableTable};

use super::tables::*;
use crate::log::LogError;
use crate::log::encoding::{ChunkBuilder, decode_event_record, encode_event_body};

/// Events at most in one migrated chunk, so a reader never decodes a huge one.
const MAX_CHUNK_EVENTS: u64 = 4096;

/// Consecutive format-1 events of one partition and one append time: one chunk.
struct Run {
    partition: (u32, u32),
    first: u64,
    next: u64,
    append_ms: u64,
    chunk: ChunkBuilder,
}

impl Run {
    fn write(
        self,
        chunks: &mut ::redb::Table<'_, (u32, u32, u64), &'static [u8]>,
    ) -> Result<(), LogError> {
        let (topic, partition) = self.partition;
        chunks.insert(
            (topic, partition, self.first),
            self.chunk.finish(self.append_ms).as_slice(),
        )?;
        Ok(())
    }
}

pub(super) fn from_v1(db: &Database) -> Result<(), LogError> {
    let started = Instant::now();
    let starts: HashMap<(u32, u32), u64> = {
        let txn = db.begin_read()?;
        let parts = txn.open_table(PARTITIONS)?;
        let mut starts = HashMap::new();
        for row in parts.iter()? {
            let (key, value) = row?;
            starts.insert(key.value(), value.value().0);
        }
        starts
    };
    let txn = db.begin_write()?;
    let (events, chunks) = {
        let old = txn.open_table(EVENTS_V1)?;
        let mut new = txn.open_table(CHUNKS)?;
        let mut swept = txn.open_table(DEDUPE_SWEPT)?;
        let mut events = 0u64;
        let mut chunks = 0u64;
        let mut open: Option<Run> = None;
        for row in old.iter()? {
            let (key, record) = row?;
            let (topic, partition, offset) = key.value();
            let (append_ms, event) = decode_event_record(record.value())?;
            let continues = open.as_ref().is_some_and(|run| {
                run.partition == (topic, partition)
                    && run.next == offset
                    && run.append_ms == append_ms
                    && run.chunk.count() < MAX_CHUNK_EVENTS
            });
            if !continues && let Some(run) = open.take() {
                run.write(&mut new)?;
                chunks += 1;
            }
            let run = open.get_or_insert_with(|| Run {
                partition: (topic, partition),
                first: offset,
                next: offset,
                append_ms,
                chunk: ChunkBuilder::default(),
            });
            run.chunk.push(&encode_event_body(&event));
            run.next = offset + 1;
            events += 1;
        }
        if let Some(run) = open.take() {
            run.write(&mut new)?;
            chunks += 1;
        }
        for (key, start) in starts {
            swept.insert(key, start)?;
        }
        let mut meta = txn.open_table(META)?;
        meta.insert(META_FORMAT, LAYOUT)?;
        (events, chunks)
    };
    txn.delete_table(EVENTS_V1)?;
    txn.delete_table(DEDUPE_BY_TIME_V1)?;
    txn.commit()?;
    tracing::info!(
        events,
        chunks,
        "migrated the log from format 1 to format {LAYOUT} in {:?}",
        started.elapsed()
    );
    Ok(())
}
