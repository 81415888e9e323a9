//! What writes to the log: published events, stream appends and the consumer commit, with
//! the records the commit carries (state, attempts, dead letters).

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use crate::event::{Event, Position, StoredEvent, topic_for_type};

/// An event on its way into the log. The event is complete (`id`, `time`, `correlationid`
/// filled in by the caller); the log assigns topic (when absent), partition and offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Explicit topic; `None` derives it from the type ([`topic_for_type`]).
    pub topic: Option<String>,
    pub event: Event,
}

impl NewEvent {
    /// An event for the topic its type derives.
    pub fn new(event: Event) -> Self {
        Self { topic: None, event }
    }

    /// An event for an explicit topic.
    pub fn to_topic(topic: impl Into<String>, event: Event) -> Self {
        Self {
            topic: Some(topic.into()),
            event,
        }
    }

    /// The topic the event goes to.
    pub fn topic(&self) -> Cow<'_, str> {
        match &self.topic {
            Some(topic) => Cow::Borrowed(topic),
            None => Cow::Owned(topic_for_type(&self.event.ty)),
        }
    }
}

/// Where an appended (or deduplicated) event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub id: String,
    pub position: Position,
    /// The version it got in its stream, for stream appends.
    pub stream_version: Option<u64>,
    /// The id was already in the topic within the dedupe window: nothing was appended and
    /// `position` is the original's.
    pub duplicate: bool,
}

/// The version a stream append expects the stream to be at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version.
    Any,
    /// The stream's current version must be exactly this; `Exact(0)` means "the stream has
    /// no events yet". The first event of a stream gets version 1.
    Exact(u64),
}

/// One consumer call's whole outcome, written in one transaction or not at all. This is the
/// dispatcher's only way to write; an empty commit is a no-op.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerCommit {
    /// The consumer group (a plugin's subscription).
    pub group: String,
    pub offset: Option<OffsetAdvance>,
    /// Events the call emitted; they get the same dedupe and durability as published ones.
    pub emits: Vec<NewEvent>,
    pub state: Vec<StateChange>,
    /// Attempt counters of this group, set or cleared.
    pub attempts: Vec<AttemptUpdate>,
    /// Park an event in the dead-letter store.
    pub dead_letter: Option<DeadLetterRecord>,
    /// Remove a dead letter: its replay ended with this call. The letter is the commit's
    /// fence: when it is already gone (another replay or a discard resolved it), the commit is
    /// refused whole with [`LogError::DeadLetterGone`](super::LogError::DeadLetterGone), so a
    /// letter's effects are committed at most once however many replays race.
    pub resolve_dead_letter: Option<DeadLetterId>,
    /// A state entry that must exist for the commit to apply (a set-aside event's record,
    /// which is what fences its retries, as the offset fences in-line events). When it is
    /// gone the commit is refused whole with
    /// [`LogError::StateEntryGone`](super::LogError::StateEntryGone). Whether the entry stays
    /// is up to `state`.
    pub requires_state: Option<StateKey>,
    /// Makes `offset` an operator's seek: `offset.next` may then be anywhere up to the
    /// partition's end, backwards too. It must name the offset it moves from
    /// (`OffsetAdvance::from`), which fences it: a commit that moved the offset meanwhile
    /// makes the seek fail with [`LogError::OffsetConflict`](super::LogError::OffsetConflict)
    /// instead of interleaving.
    pub seek: bool,
    /// The lease under which the commit's partition is worked, on a log several daemons
    /// share: the commit lands only while the lease is still held under it, else it is
    /// refused whole with [`LogError::LeaseLost`](super::LogError::LeaseLost).
    pub lease: Option<super::LeaseFence>,
    /// State entries the call read, with the values it saw (`None`: absent): the commit
    /// lands only if each still has that value, else it is refused whole with
    /// [`LogError::StateMoved`](super::LogError::StateMoved) and the call is redone on fresh
    /// state. Daemons sharing a log fence their calls' reads so; one daemon alone
    /// serialises its consumers' state access instead and leaves this empty.
    pub state_read: Vec<StateRead>,
}

/// A state entry a call read, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRead {
    pub namespace: String,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// A key in a namespace of the state table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKey {
    pub namespace: String,
    pub key: String,
}

/// Move a group's committed offset on one partition to `next` (the offset after the event
/// handled). The log refuses a `next` that does not advance the committed offset — a second
/// commit for the same event is how a duplicated delivery shows, and refusing it keeps the
/// call's effects from landing twice — a `next` beyond the partition's end, and, when `from`
/// is set, any committed offset other than `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAdvance {
    pub topic: String,
    pub partition: u32,
    pub next: u64,
    /// The committed offset the commit's calls were read from: the commit lands only if
    /// that is still the committed offset. Without it, a consumer that read a stale offset
    /// (a replica lagging behind, a partition just taken over) and handled events already
    /// committed would commit their effects again as long as its `next` went further.
    pub from: Option<u64>,
}

/// A write to a plugin's key-value store: `Some` puts, `None` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The plugin name.
    pub namespace: String,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// Set (`Some`) or clear (`None`) the attempt record of the commit's group for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptUpdate {
    pub position: Position,
    pub record: Option<AttemptRecord>,
}

/// How often a group has tried one event. Written *before* a call, so an event that brings
/// the host down is still counted and eventually parked instead of looping forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempts: u32,
    pub first_failure: Option<SystemTime>,
    pub last_failure: Option<SystemTime>,
    pub last_error: Option<Failure>,
    /// The daemon process that counted the last attempt before making its call (set by the
    /// pre-call record, cleared by a record written after a call returned). While that
    /// process lives, the attempt did not take a host down: a consumer taking the event
    /// again (after a lease moved, a log error, a stale view) does not count it twice.
    pub started_by: Option<String>,
}

/// Why a call failed, as the dead-letter store and the attempt record keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// The kinds of failure a dead letter can record. A guest trap and the handler's own
/// rejection stay distinct all the way here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The handler returned a permanent error.
    Rejected,
    /// The guest trapped.
    Trap,
    /// The call ran past its time limit.
    Timeout,
    /// The guest ran into its memory limit.
    OutOfMemory,
    /// Transient failures used up the retry policy's attempts.
    RetriesExhausted,
    /// The host failed around the call.
    HostError,
}

impl FailureKind {
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Rejected,
        FailureKind::Trap,
        FailureKind::Timeout,
        FailureKind::OutOfMemory,
        FailureKind::RetriesExhausted,
        FailureKind::HostError,
    ];

    /// The name used in APIs and metrics (`retries-exhausted`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Rejected => "rejected",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::OutOfMemory => "out-of-memory",
            FailureKind::RetriesExhausted => "retries-exhausted",
            FailureKind::HostError => "host-error",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dead letter's id, assigned by the log in parking order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeadLetterId(pub u64);

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An event parked in the dead-letter store, as the dispatcher writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRecord {
    /// The full event, with its position.
    pub event: StoredEvent,
    pub plugin: String,
    pub plugin_version: String,
    pub plugin_digest: String,
    pub kind: FailureKind,
    pub message: String,
    pub attempts: u32,
    pub first_failure: SystemTime,
    pub last_failure: SystemTime,
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: DeadLetterId,
    /// The group whose commit parked it.
    pub group: String,
    pub record: DeadLetterRecord,
}

/// What a consumer commit produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    pub emitted: Vec<Appended>,
    pub dead_letter: Option<DeadLetterId>,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub events_deleted: u64,
    pub bytes_deleted: u64,
    pub dedupe_entries_expired: u64,
}
