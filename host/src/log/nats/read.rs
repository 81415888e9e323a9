//! Reading the stream: the last (or next) message of a subject by direct get, finding an
//! offset or version by binary search over stream sequences, partition extents, listing
//! subjects.
//!
//! Offsets are not stream sequences: the stream interleaves every subject, so a partition's
//! offsets are dense while its sequences have gaps. Each event message carries its offset
//! (`Evh-Offset`), which grows with the sequence within a subject; so "the first message of
//! a subject at or past offset o" is a binary search over sequences with
//! `direct_get next_by_subject`, about log2(stream length) round trips, no index to keep.

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};

use super::layout::{self, Layout};
use super::{Shared, storage};
use crate::log::encoding::{Dec, decode_topic_config};
use crate::log::{LogError, PartitionInfo, TopicConfig, TopicInfo};

/// The last message of `subject`, if it has any.
pub(super) async fn last(
    stream: &Stream,
    subject: &str,
) -> Result<Option<StreamMessage>, LogError> {
    found(stream.direct_get_last_for_subject(subject).await)
}

/// The first message of `subject` at or after sequence `from`.
pub(super) async fn next(
    stream: &Stream,
    subject: &str,
    from: u64,
) -> Result<Option<StreamMessage>, LogError> {
    found(
        stream
            .direct_get_next_for_subject(subject, Some(from.max(1)))
            .await,
    )
}

fn found(
    result: Result<StreamMessage, async_nats::jetstream::stream::DirectGetError>,
) -> Result<Option<StreamMessage>, LogError> {
    match result {
        Ok(msg) => Ok(Some(msg)),
        Err(e) => match e.kind() {
            DirectGetErrorKind::NotFound => Ok(None),
            DirectGetErrorKind::ErrorResponse(status, _) if status.as_u16() == 404 => Ok(None),
            _ => Err(storage(format!("direct get: {e}"))),
        },
    }
}

/// The sequence of `subject`'s last message, 0 if it has none: what a fence expects.
pub(super) fn seq_of(msg: &Option<StreamMessage>) -> u64 {
    msg.as_ref().map_or(0, |m| m.sequence)
}

pub(super) fn header<'m>(msg: &'m StreamMessage, name: &str) -> Option<&'m str> {
    msg.headers.get(name).map(|v| v.as_str())
}

pub(super) fn header_u64(msg: &StreamMessage, name: &str) -> Result<u64, LogError> {
    header(msg, name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            LogError::Corrupt(format!(
                "message {} on `{}` lacks a numeric {name}",
                msg.sequence, msg.subject
            ))
        })
}

/// A tombstone or a partition's end marker.
pub(super) fn is_mark(msg: &StreamMessage) -> bool {
    header(msg, layout::MARK).is_some()
}

/// The first message of `subject` whose numeric header `name` is at least `target`, with
/// `last` the subject's last message (a snapshot the search stays within).
pub(super) async fn seek(
    stream: &Stream,
    subject: &str,
    name: &str,
    target: u64,
    last: &StreamMessage,
) -> Result<Option<StreamMessage>, LogError> {
    if header_u64(last, name)? < target {
        return Ok(None);
    }
    let Some(first) = next(stream, subject, 1).await? else {
        return Ok(None);
    };
    if header_u64(&first, name)? >= target {
        return Ok(Some(first));
    }
    // The message at or after `lo` is below the target; the one at or after `hi` is not.
    let (mut lo, mut hi, mut at_hi) = (first.sequence, last.sequence, last.clone());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let Some(msg) = next(stream, subject, mid).await? else {
            return Err(storage(format!("`{subject}` lost messages during a read")));
        };
        if header_u64(&msg, name)? >= target {
            hi = mid;
            at_hi = msg;
        } else {
            lo = msg.sequence.max(mid);
        }
    }
    Ok(Some(at_hi))
}

/// The most messages one batched direct get asks for.
const GET_BATCH: usize = 256;

/// Up to `max` messages of `subject` (wildcards allowed) from sequence `from` on, in one
/// request: a batched direct get (`{"seq", "next_by_subj", "batch"}`), answered by the
/// messages and an end-of-batch status.
pub(super) async fn get_batch(
    s: &Shared,
    subject: &str,
    from: u64,
    max: usize,
) -> Result<Vec<StreamMessage>, LogError> {
    let inbox = s.client.new_inbox();
    let mut replies = s
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| storage(format!("batched get: {e}")))?;
    let request = serde_json::json!({ "seq": from.max(1), "next_by_subj": subject, "batch": max });
    s.client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{}", s.layout.stream_name()),
            inbox,
            request.to_string().into(),
        )
        .await
        .map_err(|e| storage(format!("batched get: {e}")))?;
    let mut out = Vec::new();
    while out.len() < max {
        let reply = tokio::time::timeout(Duration::from_secs(10), replies.next())
            .await
            .map_err(|_| storage(format!("batched get of `{subject}` timed out")))?;
        let Some(reply) = reply else {
            break;
        };
        match reply.status {
            // 204: the end of the batch; 404: nothing (more) on the subject.
            Some(status) if status.as_u16() == 204 || status.as_u16() == 404 => break,
            Some(status) if status.as_u16() != 200 => {
                return Err(storage(format!(
                    "batched get of `{subject}`: {status} {}",
                    reply.description.unwrap_or_default()
                )));
            }
            _ => {}
        }
        out.push(
            StreamMessage::try_from(reply)
                .map_err(|e| storage(format!("batched get of `{subject}`: {e}")))?,
        );
    }
    Ok(out)
}

/// The messages of `subject` from sequence `from` on, up to sequence `until`, at most `max`
/// that `keep` accepts; fetched in batches.
pub(super) async fn scan(
    s: &Shared,
    subject: &str,
    mut from: u64,
    until: u64,
    max: usize,
    mut keep: impl FnMut(&StreamMessage) -> bool,
) -> Result<Vec<StreamMessage>, LogError> {
    let mut out = Vec::new();
    while out.len() < max && from <= until {
        let want = (max - out.len()).min(GET_BATCH);
        let batch = get_batch(s, subject, from, want).await?;
        if batch.is_empty() {
            break;
        }
        for msg in batch {
            if msg.sequence > until {
                return Ok(out);
            }
            from = msg.sequence + 1;
            if keep(&msg) {
                out.push(msg);
                if out.len() >= max {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// The subjects matching `filter` (a wildcard subject), with their message counts.
pub(super) async fn subject_counts(
    stream: &Stream,
    filter: &str,
) -> Result<Vec<(String, usize)>, LogError> {
    let mut info = stream
        .info_with_subjects(filter)
        .await
        .map_err(|e| storage(format!("stream info: {e}")))?;
    let mut out = Vec::new();
    while let Some(entry) = info
        .try_next()
        .await
        .map_err(|e| storage(format!("stream info: {e}")))?
    {
        out.push(entry);
    }
    Ok(out)
}

/// The subjects matching `filter` (a wildcard subject).
pub(super) async fn subjects(stream: &Stream, filter: &str) -> Result<Vec<String>, LogError> {
    Ok(subject_counts(stream, filter)
        .await?
        .into_iter()
        .map(|(subject, _)| subject)
        .collect())
}

/// A topic's configuration, if it exists, with the sequence of its config message.
pub(super) async fn topic_config(
    stream: &Stream,
    layout: &Layout,
    topic: &str,
) -> Result<(Option<TopicConfig>, u64), LogError> {
    let msg = last(stream, &layout.topic(topic)).await?;
    let seq = seq_of(&msg);
    let config = match msg {
        Some(msg) => {
            let mut dec = Dec::record(&msg.payload, "topic config")?;
            let config = decode_topic_config(&mut dec)?;
            dec.end()?;
            Some(config)
        }
        None => None,
    };
    Ok((config, seq))
}

/// Where a partition ends, from its last message: the offset after the last event, or the
/// end a marker keeps. (0 and sequence 0 for a partition never written.)
pub(super) fn end_of(last: &Option<StreamMessage>) -> Result<u64, LogError> {
    match last {
        None => Ok(0),
        Some(msg) if is_mark(msg) => header_u64(msg, layout::OFFSET),
        Some(msg) => Ok(header_u64(msg, layout::OFFSET)? + 1),
    }
}

/// Running byte total after the last message.
pub(super) fn total_of(last: &Option<StreamMessage>) -> Result<u64, LogError> {
    match last {
        None => Ok(0),
        Some(msg) => header_u64(msg, layout::TOTAL),
    }
}

pub(super) async fn partition_info(
    stream: &Stream,
    layout: &Layout,
    topic: &str,
    partition: u32,
) -> Result<PartitionInfo, LogError> {
    let subject = layout.events(topic, partition);
    let last = last(stream, &subject).await?;
    let end = end_of(&last)?;
    let Some(last_msg) = &last else {
        return Ok(PartitionInfo::default());
    };
    if is_mark(last_msg) && last_msg.sequence > 0 {
        // A marker is the last message only while the partition is empty (retention purges
        // everything before it; an append goes after it).
        let first = next(stream, &subject, 1).await?;
        if first
            .as_ref()
            .is_none_or(|f| f.sequence == last_msg.sequence)
        {
            return Ok(PartitionInfo {
                start: end,
                end,
                bytes: 0,
            });
        }
    }
    let Some(first) = next(stream, &subject, 1).await? else {
        return Ok(PartitionInfo::default());
    };
    let first_event = if is_mark(&first) {
        next(stream, &subject, first.sequence + 1).await?
    } else {
        Some(first)
    };
    let Some(first_event) = first_event else {
        return Ok(PartitionInfo {
            start: end,
            end,
            bytes: 0,
        });
    };
    let before = header_u64(&first_event, layout::TOTAL)?
        .saturating_sub(header_u64(&first_event, layout::SIZE)?);
    Ok(PartitionInfo {
        start: header_u64(&first_event, layout::OFFSET)?,
        end,
        bytes: total_of(&last)?.saturating_sub(before),
    })
}

pub(super) async fn topic_info(
    stream: &Stream,
    layout: &Layout,
    topic: &str,
    config: TopicConfig,
) -> Result<TopicInfo, LogError> {
    let mut partitions = Vec::with_capacity(config.partitions as usize);
    for p in 0..config.partitions {
        partitions.push(partition_info(stream, layout, topic, p).await?);
    }
    Ok(TopicInfo {
        name: topic.to_owned(),
        config,
        partitions,
    })
}
