//! What the log's operations can fail with.

use std::error::Error as StdError;
use std::sync::Arc;

use super::DeadLetterId;

/// A failed log operation.
///
/// Every error belongs to one [`ErrorClass`] ([`LogError::class`]): a request *refused* as
/// invalid or *in conflict* with what is stored was decided before anything was written and
/// wrote nothing; a request that *failed* met the storage engine, and trying again may help.
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
         a commit to {requested} does not follow it"
    )]
    OffsetConflict {
        group: String,
        topic: String,
        partition: u32,
        current: u64,
        requested: u64,
    },
    /// A commit meant to resolve a dead letter found it already gone (another replay, or a
    /// discard, resolved it first); nothing of the commit was written.
    #[error("dead letter {0} is already resolved (replayed or discarded)")]
    DeadLetterGone(DeadLetterId),
    /// A commit fenced by a state entry (a set-aside event's record) found it gone: the event
    /// was finished by another commit; nothing of this one was written.
    #[error("state entry `{namespace}/{key}` this commit depends on is gone")]
    StateEntryGone { namespace: String, key: String },
    /// A state entry the commit's call read has another value now (another daemon's commit
    /// changed it): nothing was written; the call must be redone on fresh state.
    #[error("state entry `{namespace}/{key}` changed after the call read it")]
    StateMoved { namespace: String, key: String },
    /// A commit or lease operation fenced by a lease found it held by another daemon or at
    /// another epoch (the partition moved); nothing was written.
    #[error("the lease of {0} is held by another daemon now")]
    LeaseLost(String),
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

/// What a [`LogError`] says about the request, and so whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request itself is invalid (too large, unknown topic or partition, a bad name or
    /// shape): nothing was written, and the same request will be refused again. Never retry it.
    Refused,
    /// The request was valid but what is stored moved under it (an expected version, a
    /// committed offset, a resolved dead letter): nothing was written; re-read and decide anew.
    Conflict,
    /// The storage failed, or its outcome is unknown: the same request may succeed later.
    Failed,
}

impl LogError {
    /// Another daemon holds the lease the request was fenced by: the caller no longer works
    /// that partition.
    pub fn lease_lost(&self) -> bool {
        matches!(self, LogError::LeaseLost(_))
    }

    /// The call behind the commit read state that moved: redo it, do not drop it.
    pub fn state_moved(&self) -> bool {
        matches!(self, LogError::StateMoved { .. })
    }

    /// Whether the request was refused, conflicted, or failed.
    pub fn class(&self) -> ErrorClass {
        match self {
            LogError::UnknownTopic(_)
            | LogError::UnknownPartition { .. }
            | LogError::InvalidTopicName(_)
            | LogError::EventTooLarge { .. }
            | LogError::Invalid(_) => ErrorClass::Refused,
            LogError::TopicExists { .. }
            | LogError::VersionConflict { .. }
            | LogError::OffsetConflict { .. }
            | LogError::DeadLetterGone(_)
            | LogError::StateEntryGone { .. }
            | LogError::LeaseLost(_)
            | LogError::StateMoved { .. } => ErrorClass::Conflict,
            LogError::Corrupt(_)
            | LogError::UnsupportedFormat { .. }
            | LogError::Storage(_)
            | LogError::OutcomeUnknown(_)
            | LogError::Closed => ErrorClass::Failed,
        }
    }
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
