//! The rules a request must pass, the same for every backend.
//!
//! Each function decides a refusal from the request and from what the backend looked up for
//! it, and writes nothing, so every backend refuses the same requests with the same errors
//! and sizes events the same way. (The redb writer still carries its own copy of these
//! rules; `tests/log_api.rs` runs the contract against both backends, which keeps them equal.)

use crate::event::Event;

use super::encoding::{encode_event_body, event_record_len};
use super::{
    LogConfig, LogError, NewEvent, OffsetAdvance, StateChange, TopicConfig, validate_topic_name,
};

/// The most partitions a topic may have.
pub(crate) const MAX_PARTITIONS: u32 = 4096;
/// The longest stream name, in bytes.
pub(crate) const MAX_STREAM_NAME: usize = 1024;

/// A topic that `create_topic` may create (or update).
pub(crate) fn check_topic_config(name: &str, config: &TopicConfig) -> Result<(), LogError> {
    validate_topic_name(name)?;
    if config.partitions == 0 || config.partitions > MAX_PARTITIONS {
        return Err(LogError::Invalid(format!(
            "a topic has 1 to {MAX_PARTITIONS} partitions, not {}",
            config.partitions
        )));
    }
    Ok(())
}

/// How a topic created by its first event is configured.
pub(crate) fn auto_topic_config(config: &LogConfig) -> TopicConfig {
    TopicConfig {
        partitions: config.default_partitions.clamp(1, MAX_PARTITIONS),
        retention: config.default_retention.clone(),
    }
}

/// A position names an existing topic (`partitions`: its partition count, if it exists) and
/// one of its partitions.
pub(crate) fn locate(topic: &str, partitions: Option<u32>, partition: u32) -> Result<(), LogError> {
    let partitions = partitions.ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
    if partition >= partitions {
        return Err(LogError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
            partitions,
        });
    }
    Ok(())
}

pub(crate) fn check_stream_name(stream: &str) -> Result<(), LogError> {
    if stream.is_empty() || stream.len() > MAX_STREAM_NAME {
        return Err(LogError::Invalid(format!(
            "a stream name has 1 to {MAX_STREAM_NAME} bytes"
        )));
    }
    Ok(())
}

/// An event that passed every check and only needs writing.
pub(crate) struct Planned {
    pub(crate) topic: String,
    pub(crate) event: Event,
    /// The event's encoding (`encode_event_body`).
    pub(crate) body: Vec<u8>,
    /// What size limits and retention count (`event_record_len`).
    pub(crate) size: usize,
}

/// Checks and encodes events; everything that can refuse them is decided here. `stream` is
/// the stream name and the version of the first event; `topic_exists` answers for the
/// state the events will be written into.
pub(crate) fn plan(
    events: Vec<NewEvent>,
    stream: Option<(&str, u64)>,
    now_ms: u64,
    config: &LogConfig,
    topic_exists: impl Fn(&str) -> bool,
) -> Result<Vec<Planned>, LogError> {
    let mut planned = Vec::with_capacity(events.len());
    for (i, new) in events.into_iter().enumerate() {
        let topic = new.topic().into_owned();
        validate_topic_name(&topic)?;
        if !config.auto_create_topics && !topic_exists(&topic) {
            return Err(LogError::UnknownTopic(topic));
        }
        let mut event = new.event;
        if event.id.is_empty() {
            return Err(LogError::Invalid("an event has an empty id".into()));
        }
        match stream {
            Some((name, first)) => {
                event.stream = Some(name.to_owned());
                event.streamversion = Some(first + i as u64);
            }
            None if event.stream.is_some() || event.streamversion.is_some() => {
                return Err(LogError::Invalid(format!(
                    "event `{}` names a stream: stream events are appended to their stream",
                    event.id
                )));
            }
            None => {}
        }
        let body = encode_event_body(&event);
        let size = event_record_len(now_ms, body.len());
        if size > config.max_event_bytes {
            return Err(LogError::EventTooLarge {
                id: event.id,
                size,
                limit: config.max_event_bytes,
            });
        }
        planned.push(Planned {
            topic,
            event,
            body,
            size,
        });
    }
    Ok(planned)
}

/// Whether a dedupe entry written at `at_ms` still dedupes at `now_ms`. A clock that went
/// backwards keeps the entry (saturating age 0).
pub(crate) fn within_dedupe_window(now_ms: u64, at_ms: u64, config: &LogConfig) -> bool {
    now_ms.saturating_sub(at_ms) < config.dedupe_window.as_millis() as u64
}

/// The offset a consumer commit moves to must advance the group's committed offset
/// (`current`) and stay within the partition (`end`).
pub(crate) fn check_offset_advance(
    group: &str,
    advance: &OffsetAdvance,
    current: Option<u64>,
    end: u64,
) -> Result<(), LogError> {
    let moved = advance.from.is_some_and(|from| current != Some(from));
    let behind = current.is_some_and(|current| advance.next <= current);
    if moved || behind {
        return Err(LogError::OffsetConflict {
            group: group.to_owned(),
            topic: advance.topic.clone(),
            partition: advance.partition,
            current: current.unwrap_or(0),
            requested: advance.next,
        });
    }
    check_offset_within(&advance.topic, advance.partition, advance.next, end)
}

/// An offset a group may be set to: at most the partition's end.
pub(crate) fn check_offset_within(
    topic: &str,
    partition: u32,
    next: u64,
    end: u64,
) -> Result<(), LogError> {
    if next > end {
        return Err(LogError::Invalid(format!(
            "offset {next} is beyond the end ({end}) of {topic}/{partition}"
        )));
    }
    Ok(())
}

pub(crate) fn check_state_changes(state: &[StateChange]) -> Result<(), LogError> {
    if state
        .iter()
        .any(|s| s.namespace.is_empty() || s.key.is_empty())
    {
        return Err(LogError::Invalid(
            "a state change needs a namespace and a key".into(),
        ));
    }
    Ok(())
}

/// Where a stored event is, for [`stream_retry`]: its position and stream version.
pub(crate) struct Original {
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) stream_version: Option<u64>,
}

/// A stream append whose every event id is already stored (within the dedupe window) is
/// the retry of an append that went through: it answers the originals (`Some`). None
/// stored: a new append (`None`). Some but not all, or an id twice in one request: refused.
/// `stored(topic, id)` finds an event's original in the backend.
pub(crate) fn stream_retry<E>(
    events: &[NewEvent],
    mut stored: impl FnMut(&str, &str) -> Result<Option<Original>, E>,
) -> Result<Result<Option<Vec<super::Appended>>, LogError>, E> {
    let mut originals = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for new in events {
        let topic = new.topic();
        if !seen.insert((topic.clone().into_owned(), new.event.id.as_str())) {
            return Ok(Err(LogError::Invalid(format!(
                "event id `{}` appears twice in one stream append",
                new.event.id
            ))));
        }
        if let Some(original) = stored(&topic, &new.event.id)? {
            originals.push(super::Appended {
                id: new.event.id.clone(),
                position: crate::event::Position {
                    topic: topic.into_owned(),
                    partition: original.partition,
                    offset: original.offset,
                },
                stream_version: original.stream_version,
                duplicate: true,
            });
        }
    }
    Ok(match originals.len() {
        0 => Ok(None),
        n if n == events.len() => Ok(Some(originals)),
        n => Err(LogError::Invalid(format!(
            "{n} of the {} event ids are already stored; a stream append is retried whole",
            events.len()
        ))),
    })
}
