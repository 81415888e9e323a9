//! The redb tables and their key layouts.
//!
//! Topics are keyed by a small numeric id (assigned at creation, never reused) so that the
//! hot tables carry fixed-width keys.

use ::redb::TableDefinition;

use crate::log::encoding::{Dec, Enc, decode_topic_config, encode_topic_config};
use crate::log::{LogError, PartitionInfo, TopicConfig};

/// The layout of the file's tables (`meta.format`). 1: one row per event in `events` plus
/// the `dedupe_by_time` index; 2: one chunk per (partition, transaction) in `chunks`, dedupe
/// expiry by a per-partition cursor. A format-1 file is migrated when it is opened.
pub(super) const LAYOUT: u64 = 2;

/// `format` (the [`LAYOUT`] of the file), `next_topic_id`, `next_dead_letter_id`.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const META_FORMAT: &str = "format";
pub(super) const META_NEXT_TOPIC: &str = "next_topic_id";
pub(super) const META_NEXT_DEAD_LETTER: &str = "next_dead_letter_id";

/// name → [`TopicMeta`]
pub(super) const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
/// (topic id, partition) → (start, end, bytes). Kept explicitly so the next offset survives
/// retention emptying a partition.
pub(super) const PARTITIONS: TableDefinition<(u32, u32), (u64, u64, u64)> =
    TableDefinition::new("partitions");
/// (topic id, partition, first offset) → chunk: the events one transaction appended to the
/// partition (`encoding::ChunkBuilder`). A read by offset seeks the last chunk starting at
/// or before it.
pub(super) const CHUNKS: TableDefinition<(u32, u32, u64), &[u8]> = TableDefinition::new("chunks");
/// (topic id, event id) → (partition, offset, append ms)
pub(super) const DEDUPE: TableDefinition<(u32, &str), (u32, u64, u64)> =
    TableDefinition::new("dedupe");
/// (topic id, partition) → offset: the dedupe entries of the partition's events before it
/// have been expired (the dedupe window passed, or retention deleted them).
pub(super) const DEDUPE_SWEPT: TableDefinition<(u32, u32), u64> =
    TableDefinition::new("dedupe_swept");

/// Layout 1 only, read once by the migration: (topic id, partition, offset) → event record.
pub(super) const EVENTS_V1: TableDefinition<(u32, u32, u64), &[u8]> =
    TableDefinition::new("events");
/// Layout 1 only: (append ms, topic id, event id) → (), the expiry order of `DEDUPE`.
pub(super) const DEDUPE_BY_TIME_V1: TableDefinition<(u64, u32, &str), ()> =
    TableDefinition::new("dedupe_by_time");
/// stream → current version
pub(super) const STREAMS: TableDefinition<&str, u64> = TableDefinition::new("streams");
/// (stream, version) → stored event (a copy: topic retention does not reach streams)
pub(super) const STREAM_EVENTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("stream_events");
/// (group, topic id, partition) → next offset
pub(super) const OFFSETS: TableDefinition<(&str, u32, u32), u64> = TableDefinition::new("offsets");
/// (namespace, key) → value
pub(super) const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("state");
/// (group, topic id, partition, offset) → attempt record
pub(super) const ATTEMPTS: TableDefinition<(&str, u32, u32, u64), &[u8]> =
    TableDefinition::new("attempts");
/// dead-letter id → dead letter
pub(super) const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// (plugin, dead-letter id) → ()
pub(super) const DEAD_LETTERS_BY_PLUGIN: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("dead_letters_by_plugin");
/// plugin → how many dead letters it has now (no zero rows); written in the transaction of
/// every park and removal. A file from before this table gets it filled at open.
pub(super) const DEAD_LETTER_COUNTS: TableDefinition<&str, u64> =
    TableDefinition::new("dead_letter_counts");

/// A topic's stored description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TopicMeta {
    pub(super) id: u32,
    pub(super) config: TopicConfig,
}

impl TopicMeta {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut enc = Enc::record();
        enc.uint(u64::from(self.id));
        encode_topic_config(&mut enc, &self.config);
        enc.finish()
    }

    pub(super) fn decode(buf: &[u8]) -> Result<Self, LogError> {
        let mut dec = Dec::record(buf, "topic")?;
        let id = dec.u32()?;
        let config = decode_topic_config(&mut dec)?;
        dec.end()?;
        Ok(Self { id, config })
    }
}

pub(super) fn part_from_row((start, end, bytes): (u64, u64, u64)) -> PartitionInfo {
    PartitionInfo { start, end, bytes }
}

pub(super) fn part_to_row(p: &PartitionInfo) -> (u64, u64, u64) {
    (p.start, p.end, p.bytes)
}
