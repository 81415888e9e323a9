//! Reads: each one a redb read transaction, so it sees exactly the committed state.

use ::redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};

use super::tables::*;
use crate::event::{Position, StoredEvent};
use crate::log::encoding::{
    Chunk, decode_attempts, decode_dead_letter, decode_event_body, decode_stored,
};
use crate::log::{AttemptRecord, DeadLetter, DeadLetterId, LogError, TopicInfo};

pub(super) fn topic_meta(txn: &ReadTransaction, name: &str) -> Result<Option<TopicMeta>, LogError> {
    let topics = txn.open_table(TOPICS)?;
    topics
        .get(name)?
        .map(|g| TopicMeta::decode(g.value()))
        .transpose()
}

/// The topic of a position, or the error for a missing topic or partition.
pub(super) fn locate(
    txn: &ReadTransaction,
    topic: &str,
    partition: u32,
) -> Result<TopicMeta, LogError> {
    let meta = topic_meta(txn, topic)?.ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
    if partition >= meta.config.partitions {
        return Err(LogError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
            partitions: meta.config.partitions,
        });
    }
    Ok(meta)
}

fn topic_info(txn: &ReadTransaction, name: &str, meta: TopicMeta) -> Result<TopicInfo, LogError> {
    let parts = txn.open_table(PARTITIONS)?;
    let mut partitions = Vec::with_capacity(meta.config.partitions as usize);
    for p in 0..meta.config.partitions {
        partitions.push(
            parts
                .get((meta.id, p))?
                .map(|g| part_from_row(g.value()))
                .unwrap_or_default(),
        );
    }
    Ok(TopicInfo {
        name: name.to_owned(),
        config: meta.config,
        partitions,
    })
}

pub(super) fn topics(db: &Database) -> Result<Vec<TopicInfo>, LogError> {
    let txn = db.begin_read()?;
    let mut metas = Vec::new();
    for row in txn.open_table(TOPICS)?.iter()? {
        let (name, meta) = row?;
        metas.push((name.value().to_owned(), TopicMeta::decode(meta.value())?));
    }
    metas
        .into_iter()
        .map(|(name, meta)| topic_info(&txn, &name, meta))
        .collect()
}

pub(super) fn topic(db: &Database, name: &str) -> Result<Option<TopicInfo>, LogError> {
    let txn = db.begin_read()?;
    match topic_meta(&txn, name)? {
        Some(meta) => topic_info(&txn, name, meta).map(Some),
        None => Ok(None),
    }
}

/// The end offset of a partition as committed.
pub(super) fn partition_end(db: &Database, topic: &str, partition: u32) -> Result<u64, LogError> {
    let txn = db.begin_read()?;
    let meta = locate(&txn, topic, partition)?;
    Ok(txn
        .open_table(PARTITIONS)?
        .get((meta.id, partition))?
        .map_or(0, |g| g.value().1))
}

pub(super) fn read(
    db: &Database,
    topic: &str,
    partition: u32,
    from: u64,
    max_events: usize,
) -> Result<Vec<StoredEvent>, LogError> {
    let txn = db.begin_read()?;
    let meta = locate(&txn, topic, partition)?;
    let chunks = txn.open_table(CHUNKS)?;
    let mut out = Vec::with_capacity(max_events.min(1024));
    if max_events == 0 {
        return Ok(out);
    }
    // The chunk holding `from` is the last one starting at or before it; below the
    // retained start there is none, and reading begins with the first chunk.
    let seek = match chunks
        .range((meta.id, partition, 0)..=(meta.id, partition, from))?
        .next_back()
    {
        Some(row) => row?.0.value().2,
        None => from,
    };
    for row in chunks.range((meta.id, partition, seek)..=(meta.id, partition, u64::MAX))? {
        let (key, value) = row?;
        let mut offset = key.value().2;
        let mut chunk = Chunk::open(value.value())?;
        while let Some(body) = chunk.next_body()? {
            if offset >= from {
                out.push(StoredEvent {
                    position: Position {
                        topic: topic.to_owned(),
                        partition,
                        offset,
                    },
                    event: decode_event_body(body)?,
                });
                if out.len() == max_events {
                    return Ok(out);
                }
            }
            offset += 1;
        }
    }
    Ok(out)
}

pub(super) fn read_stream(
    db: &Database,
    stream: &str,
    from_version: u64,
    max_events: usize,
) -> Result<Vec<StoredEvent>, LogError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(STREAM_EVENTS)?;
    let mut out = Vec::with_capacity(max_events.min(1024));
    for row in table
        .range((stream, from_version)..=(stream, u64::MAX))?
        .take(max_events)
    {
        let (_, stored) = row?;
        out.push(decode_stored(stored.value())?);
    }
    Ok(out)
}

pub(super) fn stream_version(db: &Database, stream: &str) -> Result<u64, LogError> {
    let txn = db.begin_read()?;
    Ok(txn
        .open_table(STREAMS)?
        .get(stream)?
        .map_or(0, |g| g.value()))
}

pub(super) fn committed_offset(
    db: &Database,
    group: &str,
    topic: &str,
    partition: u32,
) -> Result<Option<u64>, LogError> {
    let txn = db.begin_read()?;
    let meta = locate(&txn, topic, partition)?;
    Ok(txn
        .open_table(OFFSETS)?
        .get((group, meta.id, partition))?
        .map(|g| g.value()))
}

pub(super) fn attempts(
    db: &Database,
    group: &str,
    position: &Position,
) -> Result<Option<AttemptRecord>, LogError> {
    let txn = db.begin_read()?;
    let meta = locate(&txn, &position.topic, position.partition)?;
    txn.open_table(ATTEMPTS)?
        .get((group, meta.id, position.partition, position.offset))?
        .map(|g| decode_attempts(g.value()))
        .transpose()
}

pub(super) fn state_get(
    db: &Database,
    namespace: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, LogError> {
    let txn = db.begin_read()?;
    Ok(txn
        .open_table(STATE)?
        .get((namespace, key))?
        .map(|g| g.value().to_vec()))
}

pub(super) fn state_keys(
    db: &Database,
    namespace: &str,
    prefix: &str,
    limit: usize,
) -> Result<Vec<String>, LogError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(STATE)?;
    let mut keys = Vec::new();
    for row in table.range((namespace, prefix)..)? {
        if keys.len() >= limit {
            break;
        }
        let (key, _) = row?;
        let (ns, key) = key.value();
        if ns != namespace || !key.starts_with(prefix) {
            break;
        }
        keys.push(key.to_owned());
    }
    Ok(keys)
}

fn dead_letter_in(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Option<DeadLetter>, LogError> {
    table
        .get(id)?
        .map(|g| {
            decode_dead_letter(g.value()).map(|(group, record)| DeadLetter {
                id: DeadLetterId(id),
                group,
                record,
            })
        })
        .transpose()
}

pub(super) fn dead_letter(db: &Database, id: DeadLetterId) -> Result<Option<DeadLetter>, LogError> {
    let txn = db.begin_read()?;
    dead_letter_in(&txn.open_table(DEAD_LETTERS)?, id.0)
}

pub(super) fn dead_letters(
    db: &Database,
    plugin: Option<&str>,
    after: Option<DeadLetterId>,
    limit: usize,
) -> Result<Vec<DeadLetter>, LogError> {
    let txn = db.begin_read()?;
    let letters = txn.open_table(DEAD_LETTERS)?;
    let first = after.map_or(0, |id| id.0.saturating_add(1));
    let mut out = Vec::new();
    match plugin {
        None => {
            for row in letters.range(first..)?.take(limit) {
                let (id, _) = row?;
                out.extend(dead_letter_in(&letters, id.value())?);
            }
        }
        Some(plugin) => {
            let index = txn.open_table(DEAD_LETTERS_BY_PLUGIN)?;
            for row in index.range((plugin, first)..=(plugin, u64::MAX))? {
                if out.len() >= limit {
                    break;
                }
                let (key, _) = row?;
                // Skips an index entry whose record is gone (see `remove_dead_letter`).
                out.extend(dead_letter_in(&letters, key.value().1)?);
            }
        }
    }
    Ok(out)
}

pub(super) fn dead_letter_counts(
    db: &Database,
) -> Result<std::collections::BTreeMap<String, u64>, LogError> {
    let txn = db.begin_read()?;
    let mut out = std::collections::BTreeMap::new();
    for row in txn.open_table(DEAD_LETTER_COUNTS)?.iter()? {
        let (plugin, n) = row?;
        out.insert(plugin.value().to_owned(), n.value());
    }
    Ok(out)
}
