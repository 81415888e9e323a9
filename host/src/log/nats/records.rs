//! The reads that decode records: events by offset, stream events by version, topics,
//! committed offsets, attempt records, state and dead letters. Each answers from the last
//! message of its subject (a tombstone reads as absent), so any process sees the same.

use async_nats::jetstream::message::StreamMessage;

use super::Shared;
use super::layout;
use super::read::{self, header_u64, is_mark, seq_of};
use super::write::View;
use crate::event::{Position, StoredEvent};
use crate::log::encoding::{decode_attempts, decode_dead_letter, decode_event_body, decode_stored};
use crate::log::{AttemptRecord, DeadLetter, DeadLetterId, LogError, TopicInfo};

pub(super) async fn topics(s: &Shared) -> Result<Vec<TopicInfo>, LogError> {
    let mut names = read::subjects(&s.stream, &s.layout.topics())
        .await?
        .iter()
        .map(|subject| s.layout.topic_of(subject))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if let (Some(config), _) = read::topic_config(&s.stream, &s.layout, &name).await? {
            out.push(read::topic_info(&s.stream, &s.layout, &name, config).await?);
        }
    }
    Ok(out)
}

pub(super) async fn locate(s: &Shared, topic: &str, partition: u32) -> Result<(), LogError> {
    View::default().locate(s, topic, partition).await
}

fn decode_event(msg: &StreamMessage, topic: &str, partition: u32) -> Result<StoredEvent, LogError> {
    Ok(StoredEvent {
        position: Position {
            topic: topic.to_owned(),
            partition,
            offset: header_u64(msg, layout::OFFSET)?,
        },
        event: decode_event_body(&msg.payload)?,
    })
}

pub(super) async fn read(
    s: &Shared,
    topic: &str,
    partition: u32,
    from: u64,
    max: usize,
) -> Result<Vec<StoredEvent>, LogError> {
    locate(s, topic, partition).await?;
    let subject = s.layout.events(topic, partition);
    let Some(last) = read::last(&s.stream, &subject).await? else {
        return Ok(Vec::new());
    };
    if max == 0 {
        return Ok(Vec::new());
    }
    let Some(start) = read::seek(&s.stream, &subject, layout::OFFSET, from, &last).await? else {
        return Ok(Vec::new());
    };
    read::scan(s, &subject, start.sequence, last.sequence, max, |m| {
        !is_mark(m)
    })
    .await?
    .iter()
    .map(|m| decode_event(m, topic, partition))
    .collect()
}

/// The event at an offset, if it is still stored.
pub(super) async fn event_at(
    s: &Shared,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<Option<StoredEvent>, LogError> {
    Ok(read(s, topic, partition, offset, 1)
        .await?
        .into_iter()
        .find(|e| e.position.offset == offset))
}

pub(super) async fn read_stream(
    s: &Shared,
    stream: &str,
    from_version: u64,
    max: usize,
) -> Result<Vec<StoredEvent>, LogError> {
    let subject = s.layout.stream(stream);
    let Some(last) = read::last(&s.stream, &subject).await? else {
        return Ok(Vec::new());
    };
    if max == 0 {
        return Ok(Vec::new());
    }
    let from = from_version.max(1);
    let Some(start) = read::seek(&s.stream, &subject, layout::VERSION, from, &last).await? else {
        return Ok(Vec::new());
    };
    read::scan(s, &subject, start.sequence, last.sequence, max, |_| true)
        .await?
        .iter()
        .map(|m| decode_stored(&m.payload))
        .collect()
}

/// A group's committed offset and the sequence of the message holding it.
pub(super) async fn committed(
    s: &Shared,
    group: &str,
    topic: &str,
    partition: u32,
) -> Result<(Option<u64>, u64), LogError> {
    let last = read::last(&s.stream, &s.layout.offset(group, topic, partition)).await?;
    let seq = seq_of(&last);
    let next = match last {
        Some(msg) => Some(
            std::str::from_utf8(&msg.payload)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| LogError::Corrupt("an offset that is not a number".into()))?,
        ),
        None => None,
    };
    Ok((next, seq))
}

/// The live value of an entry subject (state, attempts, dead letters): `None` when it has
/// no message or its last message is a tombstone; with the sequence a fence expects.
pub(super) async fn entry(
    s: &Shared,
    subject: &str,
) -> Result<(Option<StreamMessage>, u64), LogError> {
    let last = read::last(&s.stream, subject).await?;
    let seq = seq_of(&last);
    Ok((last.filter(|m| !is_mark(m)), seq))
}

pub(super) async fn attempts(
    s: &Shared,
    group: &str,
    position: &Position,
) -> Result<Option<AttemptRecord>, LogError> {
    locate(s, &position.topic, position.partition).await?;
    let subject = s
        .layout
        .attempts(group, &position.topic, position.partition, position.offset);
    match entry(s, &subject).await?.0 {
        Some(msg) => Ok(Some(decode_attempts(&msg.payload)?)),
        None => Ok(None),
    }
}

pub(super) async fn state_get(
    s: &Shared,
    namespace: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, LogError> {
    Ok(entry(s, &s.layout.state(namespace, key))
        .await?
        .0
        .map(|msg| msg.payload.to_vec()))
}

pub(super) async fn state_keys(
    s: &Shared,
    namespace: &str,
    prefix: &str,
    limit: usize,
) -> Result<Vec<String>, LogError> {
    if namespace.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys = read::subjects(&s.stream, &s.layout.state_namespace(namespace))
        .await?
        .iter()
        .map(|subject| s.layout.state_key_of(subject))
        .collect::<Result<Vec<_>, _>>()?;
    keys.retain(|k| k.starts_with(prefix));
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        if out.len() >= limit {
            break;
        }
        if entry(s, &s.layout.state(namespace, &key))
            .await?
            .0
            .is_some()
        {
            out.push(key);
        }
    }
    Ok(out)
}

/// A live dead letter and the sequence of its message.
pub(super) async fn dead_letter(
    s: &Shared,
    id: DeadLetterId,
) -> Result<Option<(DeadLetter, u64)>, LogError> {
    let (live, seq) = entry(s, &s.layout.dead_letter(id.0)).await?;
    match live {
        Some(msg) => {
            let (group, record) = decode_dead_letter(&msg.payload)?;
            Ok(Some((DeadLetter { id, group, record }, seq)))
        }
        None => Ok(None),
    }
}

pub(super) async fn dead_letters(
    s: &Shared,
    plugin: Option<&str>,
    after: Option<DeadLetterId>,
    limit: usize,
) -> Result<Vec<DeadLetter>, LogError> {
    let first = after.map_or(0, |id| id.0.saturating_add(1));
    let mut ids = read::subjects(&s.stream, &s.layout.dead_letters())
        .await?
        .iter()
        .map(|subject| s.layout.dead_letter_id_of(subject))
        .collect::<Result<Vec<_>, _>>()?;
    ids.retain(|id| *id >= first);
    ids.sort_unstable();
    let mut out = Vec::new();
    for id in ids {
        if out.len() >= limit {
            break;
        }
        if let Some((letter, _)) = dead_letter(s, DeadLetterId(id)).await?
            && plugin.is_none_or(|p| letter.record.plugin == p)
        {
            out.push(letter);
        }
    }
    Ok(out)
}

/// Every plugin's dead-letter count and the sequence of the message holding them (the fence
/// of a write that changes them). A stream from before the counts has no such message: the
/// letters are counted once, and the first write that changes a count stores them.
pub(super) async fn dead_letter_counts(
    s: &Shared,
) -> Result<(std::collections::BTreeMap<String, u64>, u64), LogError> {
    let last = read::last(&s.stream, &s.layout.dead_letter_counts()).await?;
    let seq = seq_of(&last);
    let mut counts = std::collections::BTreeMap::new();
    match last {
        Some(msg) => {
            let text = std::str::from_utf8(&msg.payload)
                .map_err(|_| LogError::Corrupt("dead-letter counts that are not UTF-8".into()))?;
            for line in text.lines() {
                let parsed = line
                    .split_once(' ')
                    .and_then(|(plugin, n)| Some((plugin.to_owned(), n.parse::<u64>().ok()?)));
                let Some((plugin, n)) = parsed else {
                    return Err(LogError::Corrupt(format!(
                        "a dead-letter count line {line:?} is not `PLUGIN COUNT`"
                    )));
                };
                counts.insert(plugin, n);
            }
        }
        None => {
            for letter in dead_letters(s, None, None, usize::MAX).await? {
                *counts.entry(letter.record.plugin).or_default() += 1;
            }
        }
    }
    Ok((counts, seq))
}

/// The message body of [`dead_letter_counts`] after moving `plugin`'s count by `delta`.
pub(super) fn encode_dead_letter_counts(
    mut counts: std::collections::BTreeMap<String, u64>,
    changes: &[(&str, i64)],
) -> String {
    for (plugin, delta) in changes {
        let n = counts.entry((*plugin).to_owned()).or_default();
        *n = n.saturating_add_signed(*delta);
    }
    counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(plugin, n)| format!("{plugin} {n}\n"))
        .collect()
}
