//! What the log's operations can fail with.

use std::error::Error as StdError;
use std::sync::Arc;

/// A failed log operation.
///
/// Request errors (everything but [`LogError::Storage`], [`LogError::OutcomeUnknown`] and
/// [`LogError::Closed`]) are decided before anything is written: the request wrote nothing.
/// The type is `Clone` because one failed transaction answers every request batched into it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    #[error("topic `{topic}` has {partitions} partition(s); there is no partition {partition}")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("topic `{name}` already exists with {partitions} partition(s)")]
    TopicExists { name: String, partitions: u32 },
    /// Carries the reason, which names the topic.
    #[error("invalid topic: {0}")]
    InvalidTopicName(String),
    #[error("event `{id}` takes {size} bytes encoded; the limit is {limit}")]
    EventTooLarge {
        id: String,
        size: usize,
        limit: usize,
    },
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An expected-version append found the stream elsewhere; nothing was written.
    #[error("stream `{stream}` is at version {current}, not the expected {expected}")]
    VersionConflict {
        stream: String,
        expected: u64,
        current: u64,
    },
    /// A consumer commit tried to move a group's offset to where it already is or behind it
    /// (someone else committed that event first); nothing of the commit was written.
    #[error(
        "group `{group}` has committed offset {current} on {topic}/{partition}; \
         a commit to {requested} would not advance it"
    )]
    OffsetConflict {
        group: String,
        topic: String,
        partition: u32,
        current: u64,
        requested: u64,
    },
    /// Stored bytes that do not decode: a bug or a damaged file.
    #[error("stored data does not decode: {0}")]
    Corrupt(String),
    #[error("the log's on-disk format is version {found}; this build reads version {supported}")]
    UnsupportedFormat { found: u64, supported: u64 },
    /// The storage engine failed before committing: nothing of the batch was written.
    #[error(transparent)]
    Storage(StorageFailure),
    /// The commit itself failed: the batch is either fully durable or not at all, and the
    /// backend cannot tell which. The backend refuses writes until it is reopened.
    #[error("commit outcome unknown; reopen the log: {0}")]
    OutcomeUnknown(StorageFailure),
    #[error("the log is shut down")]
    Closed,
}

/// An error of the storage engine under the log, kept opaque so that only the backend
/// module depends on the engine's types.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{backend} failed: {source}")]
pub struct StorageFailure {
    backend: &'static str,
    #[source]
    source: Arc<dyn StdError + Send + Sync>,
}

impl StorageFailure {
    pub fn new(backend: &'static str, source: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            backend,
            source: Arc::new(source),
        }
    }

    /// Which backend failed (`"redb"`, ...).
    pub fn backend(&self) -> &'static str {
        self.backend
    }
}

/// A failure made up by the log itself (fault injection in tests).
#[cfg(test)]
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Internal(pub(crate) String);
