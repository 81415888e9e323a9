//! Work sharing between daemons on one log: members and partition leases.
//!
//! A log several daemons open at once (NATS) lets each partition of each consumer group be
//! worked by one live daemon at a time. A daemon announces itself with [`Leases::heartbeat`]
//! (the groups it can serve) and takes a partition with [`Leases::acquire`]; the
//! [`LeaseFence`] it gets back goes into every [`ConsumerCommit`](super::ConsumerCommit) of
//! that partition, and the log refuses a commit whose fence is no longer the lease's current
//! holder ([`LogError::LeaseLost`](super::LogError::LeaseLost)) in the same transaction that
//! would write it. So a daemon that was paused past its lease, and woke to find the partition
//! taken, commits nothing: the fence, not the timing, is what keeps effects exactly once.
//!
//! Liveness is judged by the reader, never by clocks compared across machines: every write
//! to a lease or member record (a renewal, a heartbeat, a fenced commit) gives it a new
//! [`version`](LeaseState::version); a record whose version has not moved for a whole lease
//! period on the reader's own clock belongs to a daemon that is gone.
//!
//! Logs only one daemon can open (redb holds a file lock, memory lives in one process) need
//! none of this: their [`EventLog::leases`](super::EventLog::leases) answers `None`, except a
//! [`MemoryLog::with_leases`](super::MemoryLog::with_leases) made to test the protocol.

use super::Pending;

/// One partition of one consumer group: the unit a lease covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKey {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

impl std::fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}/{}", self.group, self.topic, self.partition)
    }
}

/// Proof of holding a lease: its key, the holder and the epoch it was taken at. A commit
/// carrying it lands only while the lease still has this holder and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseFence {
    pub key: LeaseKey,
    pub owner: String,
    /// Grows by one at every acquisition: a holder that lost the lease and took it again
    /// has a new epoch, so a commit prepared under the old one is still refused.
    pub epoch: u64,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub key: LeaseKey,
    /// `None` once released: anyone may take it at once.
    pub owner: Option<String>,
    pub epoch: u64,
    /// Changes with every write to the record (acquire, renew, release, a fenced commit):
    /// what [`Leases::acquire`] expects, and what readers watch to judge liveness.
    pub version: u64,
}

/// A daemon sharing the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub id: String,
    /// The consumer groups (plugins) it has loaded and can serve.
    pub groups: Vec<String>,
    /// Changes with every heartbeat.
    pub version: u64,
}

/// Members and leases of a log shared by several daemons.
pub trait Leases: Send + Sync {
    /// Announces (or refreshes) daemon `id`, serving `groups`.
    fn heartbeat(&self, id: &str, groups: Vec<String>) -> Pending<()>;

    /// Removes daemon `id`'s announcement (a clean stop).
    fn leave(&self, id: &str) -> Pending<()>;

    /// Every announced daemon, live or not (liveness is the reader's call).
    fn members(&self) -> Pending<Vec<MemberState>>;

    /// Every lease ever taken, held or released.
    fn leases(&self) -> Pending<Vec<LeaseState>>;

    /// Takes `key` for `owner` if its record is still at version `seen` (0: never written),
    /// at the next epoch. A record that moved meanwhile answers
    /// [`LogError::LeaseLost`](super::LogError::LeaseLost) and writes nothing.
    fn acquire(&self, key: &LeaseKey, owner: &str, seen: u64) -> Pending<LeaseFence>;

    /// Refreshes a held lease (a new version, same epoch); `LeaseLost` when it has another
    /// holder or epoch.
    fn renew(&self, fence: &LeaseFence) -> Pending<()>;

    /// Gives a held lease up so another daemon may take it at once; `LeaseLost` when it was
    /// not held under `fence` any more.
    fn release(&self, fence: &LeaseFence) -> Pending<()>;
}

/// Whether `fence` is the current holder of `state` (`None`: never written).
pub(crate) fn holds(fence: &LeaseFence, state: Option<(&Option<String>, u64)>) -> bool {
    matches!(state, Some((Some(owner), epoch)) if *owner == fence.owner && epoch == fence.epoch)
}

pub(crate) fn lost(fence: &LeaseFence) -> super::LogError {
    super::LogError::LeaseLost(fence.key.to_string())
}
