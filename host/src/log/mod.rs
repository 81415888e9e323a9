//! The durable event log: the broker and event store of the host.
//!
//! Everything the host stores goes through [`EventLog`]: topics split into partitions,
//! consumer-group offsets, the [`ConsumerCommit`] (a call's offset, emits, state, attempt
//! counters and dead letter in one transaction), event-sourcing streams and retention.
//! [`RedbLog`] is the embedded backend, [`MemoryLog`] the same contract in memory and
//! [`NatsLog`] the same contract on a NATS JetStream stream (see `ARCHITECTURE.md`, section
//! `log/`, for the guarantee each operation carries and how each backend keeps it).
//!
//! # Layout
//! - `lease`: members and partition leases, for logs several daemons share.
//! - `commit`: the write-side records (`NewEvent`, `ConsumerCommit`, dead letters, ...).
//! - `topic`: topic configuration and the partition hash.
//! - `pending`: [`Pending`], the answer every operation returns (await it or wait on it).
//! - `watch`: [`EndWatch`], waiting for new events without polling.
//! - `encoding`: the versioned binary record format.
//! - `rules`: the checks every backend runs before it writes (same request, same refusal).
//! - `memory`: the in-memory backend, also the executable specification of the contract.
//! - `redb/`: the redb backend — the only module that imports redb.
//! - `nats/`: the NATS JetStream backend — the only module that imports async-nats.

mod commit;
mod config;
mod encoding;
mod error;
mod lease;
mod memory;
pub mod nats;
mod pending;
mod periodic;
pub mod redb;
mod rules;
#[cfg(test)]
mod tests;
mod topic;
mod watch;

pub use self::commit::{
    Appended, AttemptRecord, AttemptUpdate, CommitOutcome, ConsumerCommit, DeadLetter,
    DeadLetterId, DeadLetterRecord, ExpectedVersion, Failure, FailureKind, NewEvent, OffsetAdvance,
    RetentionReport, StateChange, StateKey, StateRead,
};
pub use self::config::{Clock, LogConfig, LogStats};
pub use self::error::{ErrorClass, LogError, StorageFailure};
pub use self::lease::{LeaseFence, LeaseKey, LeaseState, Leases, MemberState};
pub use self::memory::MemoryLog;
pub use self::nats::{NatsConfig, NatsLog};
pub use self::pending::Pending;
pub use self::redb::RedbLog;
pub use self::topic::{
    PartitionInfo, RetentionPolicy, TopicConfig, TopicInfo, partition_for, partition_key,
    validate_topic_name,
};
pub use self::watch::EndWatch;

/// For the fuzz targets in `fuzz/` only, not an API: the record decoders are crate-private.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::encoding::decode_all;
}

use crate::event::{Position, StoredEvent};

/// The log as the rest of the host sees it.
///
/// Every operation answers through a [`Pending`], so it serves async callers (`.await`) and
/// blocking threads ([`Pending::wait`]) alike, and a backend may answer inline (redb reads)
/// or later (group-committed writes, network round trips).
///
/// Writes are acknowledged only once durable; a write that fails with a request error wrote
/// nothing. Reads see only committed data.
pub trait EventLog: Send + Sync {
    /// Creates a topic, or updates the retention of an existing one with the same partition
    /// count (a different count fails with [`LogError::TopicExists`]).
    fn create_topic(&self, name: &str, config: TopicConfig) -> Pending<TopicInfo>;

    /// All topics, by name.
    fn topics(&self) -> Pending<Vec<TopicInfo>>;

    fn topic(&self, name: &str) -> Pending<Option<TopicInfo>>;

    /// Appends events, in order, each to its topic and partition. Answered once durable, with
    /// one [`Appended`] per event; an id already in the topic within the dedupe window is not
    /// appended again and answers the original position. All events of one call are written
    /// together or, on a request error, none.
    fn append(&self, events: Vec<NewEvent>) -> Pending<Vec<Appended>>;

    /// Up to `max_events` events of one partition from offset `from` on, oldest first. An
    /// offset below the partition's start (deleted by retention) reads from the start.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_events: usize,
    ) -> Pending<Vec<StoredEvent>>;

    /// A handle that wakes when the partition's end offset moves.
    fn watch(&self, topic: &str, partition: u32) -> Pending<EndWatch>;

    /// Appends events to a stream if it is at `expected`; the events get the following
    /// versions and also land in their topics. A mismatch fails with
    /// [`LogError::VersionConflict`] (carrying the current version) and writes nothing.
    /// Retrying an append whose every id is already stored answers the originals.
    fn append_to_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Pending<Vec<Appended>>;

    /// Up to `max_events` events of a stream from `from_version` on, in version order. Topic
    /// retention does not shorten streams.
    fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max_events: usize,
    ) -> Pending<Vec<StoredEvent>>;

    /// The stream's current version (0: no events).
    fn stream_version(&self, stream: &str) -> Pending<u64>;

    /// Applies one consumer call's whole outcome in one transaction, or nothing of it.
    fn commit(&self, commit: ConsumerCommit) -> Pending<CommitOutcome>;

    /// The offset a group will consume next in a partition, if it ever committed one.
    fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Pending<Option<u64>>;

    /// Sets a group's offset unconditionally (registering a new group at its starting point,
    /// or an operator's seek). `next` may not exceed the partition's end.
    fn set_offset(&self, group: &str, topic: &str, partition: u32, next: u64) -> Pending<()>;

    fn attempts(&self, group: &str, position: &Position) -> Pending<Option<AttemptRecord>>;

    fn state_get(&self, namespace: &str, key: &str) -> Pending<Option<Vec<u8>>>;

    /// Keys of a namespace that start with `prefix`, in order, at most `limit`.
    fn state_keys(&self, namespace: &str, prefix: &str, limit: usize) -> Pending<Vec<String>>;

    /// Dead letters in parking order, of one plugin or all, after `after`, at most `limit`.
    fn dead_letters(
        &self,
        plugin: Option<&str>,
        after: Option<DeadLetterId>,
        limit: usize,
    ) -> Pending<Vec<DeadLetter>>;

    fn dead_letter(&self, id: DeadLetterId) -> Pending<Option<DeadLetter>>;

    /// Removes a dead letter; `false` if there was none with that id.
    fn delete_dead_letter(&self, id: DeadLetterId) -> Pending<bool>;

    /// Runs one retention pass now (it also runs in the background).
    fn enforce_retention(&self) -> Pending<RetentionReport>;

    fn stats(&self) -> LogStats;

    /// Members and partition leases, when several daemons may open this log at once; `None`
    /// for a log only one daemon can open (then it works every partition itself).
    fn leases(&self) -> Option<&dyn Leases> {
        None
    }
}
