//! Topics, partitions and where an event lands.

use std::time::Duration;

use crate::event::Event;

use super::LogError;

/// How a topic is created. The partition count is fixed at creation: changing it would
/// move subjects between partitions and break their order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub partitions: u32,
    pub retention: RetentionPolicy,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            retention: RetentionPolicy::default(),
        }
    }
}

/// What retention may delete from a topic. The default keeps everything.
///
/// Deletion always takes a prefix of a partition (oldest first), so offsets never have holes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Events appended longer ago than this may go (by host append time, not the event's
    /// own `time`, which the producer chose).
    pub max_age: Option<Duration>,
    /// Each partition keeps at most this many stored event bytes (as Kafka's
    /// `retention.bytes`, per partition, so partitions never compete for a shared budget).
    pub max_partition_bytes: Option<u64>,
    /// Off (the default): never delete an event some consumer group has not committed past.
    /// On: delete regardless, so a stalled consumer skips ahead.
    pub delete_unconsumed: bool,
}

impl RetentionPolicy {
    pub fn is_unbounded(&self) -> bool {
        self.max_age.is_none() && self.max_partition_bytes.is_none()
    }
}

/// A topic as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub config: TopicConfig,
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionInfo>,
}

/// The extent of one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The oldest offset still stored (retention moves it up).
    pub start: u64,
    /// The offset the next event will get; `end - start` events are stored.
    pub end: u64,
    /// Bytes of stored events, as retention counts them.
    pub bytes: u64,
}

/// Topic names follow [`crate::event::validate_topic`] (Kafka's rule), so they are safe in
/// URLs, file names and NATS subjects alike.
pub fn validate_topic_name(name: &str) -> Result<(), LogError> {
    crate::event::validate_topic(name).map_err(LogError::InvalidTopicName)
}

/// The key that picks an event's partition: its `subject` (the aggregate id); for a stream
/// event without one, the stream name (so a stream stays in one partition); otherwise the
/// event id, which spreads unkeyed events over the partitions (they have no order to keep).
pub fn partition_key(event: &Event) -> &str {
    event
        .subject
        .as_deref()
        .or(event.stream.as_deref())
        .unwrap_or(&event.id)
}

/// The partition for `key`: 64-bit FNV-1a of its UTF-8 bytes modulo the partition count.
/// FNV-1a is fixed by its spec (offset basis and prime below), so the mapping is the same on
/// every platform and version; std's `DefaultHasher` promises neither.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    (fnv1a64(key.as_bytes()) % u64::from(partitions.max(1))) as u32
}

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        assert_eq!(partition_for("order-42", 1), 0);
        for n in 1..20 {
            assert!(partition_for("order-42", n) < n);
            assert_eq!(partition_for("order-42", n), partition_for("order-42", n));
        }
        // Pinned values: changing the hash would silently reorder existing subjects.
        assert_eq!(partition_for("a", 8), (0xaf63dc4c8601ec8cu64 % 8) as u32);
        let spread: std::collections::BTreeSet<u32> = (0..64)
            .map(|i| partition_for(&format!("subject-{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4, "64 subjects should reach all 4 partitions");
    }

    #[test]
    fn topic_names_are_checked() {
        assert!(validate_topic_name("user-events").is_ok());
        assert!(validate_topic_name("a.b_c-D9").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("has space").is_err());
        assert!(validate_topic_name("slash/no").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }
}
