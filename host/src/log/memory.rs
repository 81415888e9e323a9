//! [`MemoryLog`]: the whole [`EventLog`] contract, in memory.
//!
//! One mutex over all the state makes every operation one atomic step, so each write is
//! simply "check everything, then write" with nothing in between. That keeps this file
//! short enough to be the executable specification of the contract (`ARCHITECTURE.md`,
//! "What a backend must provide"); `tests/log_api.rs` runs the same contract tests against
//! it and against redb.
//!
//! What it does not have: durability (nothing survives the process; "durable before the
//! answer" degenerates to "applied before the answer") and group commit (each write request
//! is its own transaction in [`LogStats`]). Requests are refused by the same rules
//! ([`super::rules`]) and events are sized by the same encoding as in redb, so a request
//! refused by one backend is refused by the other with the same error.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::{Bound, ControlFlow};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::encoding::millis_since_epoch;
use super::lease::{self, LeaseFence, LeaseKey, LeaseState, Leases, MemberState};
use super::periodic::Periodic;
use super::rules::{self, Planned};
use super::watch::{EndSignal, EndWatch};
use super::{
    Appended, AttemptRecord, CommitOutcome, ConsumerCommit, DeadLetter, DeadLetterId, EventLog,
    ExpectedVersion, LogConfig, LogError, LogStats, NewEvent, PartitionInfo, Pending,
    RetentionReport, StateKey, TopicConfig, TopicInfo, partition_for, partition_key,
};
use crate::event::{Event, Position, StoredEvent};
use crate::histogram::{BATCH_SIZES, COMMIT_SECONDS, Histogram};

/// The in-memory [`EventLog`]: every guarantee of the redb backend except surviving the
/// process. For tests, embedding and trying things out.
///
/// Dropping it (or [`MemoryLog::shutdown`]) stops the background retention thread and wakes
/// watchers with [`LogError::Closed`]; writes after a shutdown answer `Closed`.
pub struct MemoryLog {
    shared: Arc<Shared>,
    retention: Mutex<Option<Periodic>>,
    /// Answers [`EventLog::leases`]: several dispatchers in one process sharing the log.
    shared_by_daemons: bool,
}

struct Shared {
    config: LogConfig,
    store: Mutex<Store>,
    transaction_seconds: Histogram,
    transaction_events: Histogram,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Everything the log holds.
#[derive(Default)]
struct Store {
    closed: bool,
    topics: BTreeMap<String, Topic>,
    streams: HashMap<String, Vec<StoredEvent>>,
    /// (group, topic, partition) → the next offset the group consumes.
    offsets: HashMap<(String, String, u32), u64>,
    /// namespace → key → value; ordered for prefix listing.
    state: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// (group, position) → attempts.
    attempts: HashMap<(String, Position), AttemptRecord>,
    /// By id, which is parking order.
    dead_letters: BTreeMap<u64, DeadLetter>,
    next_dead_letter_id: u64,
    /// Watched partitions; advanced after every write that moved their end.
    signals: HashMap<(String, u32), Arc<EndSignal>>,
    counters: Counters,
    /// Members and leases, used only by a log made [`MemoryLog::with_leases`].
    leases: LeaseTable,
}

/// [`Leases`] in memory: every write takes the next `version`.
#[derive(Default)]
struct LeaseTable {
    version: u64,
    leases: BTreeMap<LeaseKey, (Option<String>, u64, u64)>,
    members: BTreeMap<String, (Vec<String>, u64)>,
}

impl LeaseTable {
    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Checks `fence` against the table and bumps the lease's version (what a fenced write
    /// does on every backend).
    fn touch(&mut self, fence: &LeaseFence) -> Result<(), LogError> {
        let current = self.leases.get(&fence.key).map(|(o, e, _)| (o, *e));
        if !lease::holds(fence, current) {
            return Err(lease::lost(fence));
        }
        let version = self.next_version();
        if let Some(entry) = self.leases.get_mut(&fence.key) {
            entry.2 = version;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Counters {
    transactions: u64,
    requests: u64,
    events_appended: u64,
    duplicates: u64,
}

struct Topic {
    config: TopicConfig,
    /// Exactly `config.partitions` entries (the count never changes).
    partitions: Vec<Partition>,
    /// Event id → where it was appended, and when (host ms).
    dedupe: HashMap<String, (u32, u64, u64)>,
    /// (append ms, event id): `dedupe` in expiry order. An id appended again after its
    /// entry expired has two index entries; only the one matching `dedupe` removes it.
    dedupe_by_time: BTreeSet<(u64, String)>,
}

impl Topic {
    fn new(config: TopicConfig) -> Self {
        Self {
            partitions: (0..config.partitions)
                .map(|_| Partition::default())
                .collect(),
            config,
            dedupe: HashMap::new(),
            dedupe_by_time: BTreeSet::new(),
        }
    }

    fn info(&self, name: &str) -> TopicInfo {
        TopicInfo {
            name: name.to_owned(),
            config: self.config.clone(),
            partitions: self.partitions.iter().map(Partition::info).collect(),
        }
    }
}

/// A partition: the retained events from `start` on, with no holes. The end is
/// `start + events.len()`, so retention emptying it keeps the next offset.
#[derive(Default)]
struct Partition {
    start: u64,
    events: VecDeque<Entry>,
    bytes: u64,
}

struct Entry {
    append_ms: u64,
    /// The encoded size, as redb stores it (retention and `PartitionInfo::bytes` count it).
    bytes: u64,
    event: Event,
}

impl Partition {
    fn end(&self) -> u64 {
        self.start + self.events.len() as u64
    }

    fn info(&self) -> PartitionInfo {
        PartitionInfo {
            start: self.start,
            end: self.end(),
            bytes: self.bytes,
        }
    }

    fn get(&self, offset: u64) -> Option<&Entry> {
        let index = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.events.get(index)
    }
}

impl Store {
    /// The partition behind a position, or the request error.
    fn partition(&self, topic: &str, partition: u32) -> Result<&Partition, LogError> {
        let t = self.topics.get(topic);
        rules::locate(topic, t.map(|t| t.config.partitions), partition)?;
        t.and_then(|t| t.partitions.get(partition as usize))
            .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))
    }

    fn state_exists(&self, namespace: &str, key: &str) -> bool {
        self.state
            .get(namespace)
            .is_some_and(|entries| entries.contains_key(key))
    }
}

impl MemoryLog {
    /// An empty log with `config` (its `clock`, dedupe window, limits and retention apply;
    /// the group-commit and cache settings have nothing to tune here).
    pub fn new(config: LogConfig) -> Result<Self, LogError> {
        let interval = config.retention_interval;
        let shared = Arc::new(Shared {
            config,
            store: Mutex::default(),
            transaction_seconds: Histogram::new(COMMIT_SECONDS),
            transaction_events: Histogram::new(BATCH_SIZES),
        });
        let retention = spawn_retention(Arc::downgrade(&shared), interval)
            .map_err(|e| LogError::Storage(super::StorageFailure::new("memory", e)))?;
        Ok(Self {
            shared,
            retention: Mutex::new(Some(retention)),
            shared_by_daemons: false,
        })
    }

    /// A log that, like a NATS one, several dispatchers may share: it keeps members and
    /// partition leases ([`EventLog::leases`]) and fences commits by them.
    pub fn with_leases(config: LogConfig) -> Result<Self, LogError> {
        let mut log = Self::new(config)?;
        log.shared_by_daemons = true;
        Ok(log)
    }

    /// Stops: watchers wake with [`LogError::Closed`], later writes answer it. Reads keep
    /// answering. Idempotent; also what dropping the log does.
    pub fn shutdown(&self) {
        let retention = self
            .retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(retention) = retention {
            retention.stop();
        }
        let mut store = self.shared.store();
        store.closed = true;
        for signal in store.signals.values() {
            signal.close();
        }
    }

    /// Runs one write request as one transaction: the request is applied whole or, on an
    /// error, not at all (every `apply` below checks before it writes).
    fn write<T>(&self, apply: impl FnOnce(&mut Txn<'_>) -> Result<T, LogError>) -> Pending<T> {
        Pending::ready(write(&self.shared, apply))
    }

    fn read<T>(&self, read: impl FnOnce(&Store) -> Result<T, LogError>) -> Pending<T> {
        Pending::ready(read(&self.shared.store()))
    }
}

impl Drop for MemoryLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn write<T>(
    shared: &Shared,
    apply: impl FnOnce(&mut Txn<'_>) -> Result<T, LogError>,
) -> Result<T, LogError> {
    let started = Instant::now();
    let mut store = shared.store();
    if store.closed {
        return Err(LogError::Closed);
    }
    let mut txn = Txn {
        now_ms: millis_since_epoch(shared.config.clock.now()),
        config: &shared.config,
        store: &mut store,
        moved: BTreeSet::new(),
        events: 0,
        duplicates: 0,
    };
    let result = apply(&mut txn);
    let Txn {
        moved,
        events,
        duplicates,
        ..
    } = txn;
    // Wake the watchers of every partition whose end moved; the lock is still held, so a
    // woken reader finds the events committed.
    for (topic, partition) in moved {
        let end = store.partition(&topic, partition).map(Partition::end);
        if let (Some(signal), Ok(end)) = (store.signals.get(&(topic, partition)), end) {
            signal.advance(end);
        }
    }
    let c = &mut store.counters;
    c.transactions += 1;
    c.requests += 1;
    c.events_appended += events;
    c.duplicates += duplicates;
    shared.transaction_events.observe(events as f64);
    shared
        .transaction_seconds
        .observe_duration(started.elapsed());
    result
}

/// One write request in progress.
struct Txn<'s> {
    store: &'s mut Store,
    config: &'s LogConfig,
    now_ms: u64,
    /// Partitions whose end this request moved.
    moved: BTreeSet<(String, u32)>,
    events: u64,
    duplicates: u64,
}

impl Txn<'_> {
    fn create_topic(&mut self, name: &str, config: TopicConfig) -> Result<TopicInfo, LogError> {
        rules::check_topic_config(name, &config)?;
        match self.store.topics.get_mut(name) {
            Some(existing) if existing.config.partitions != config.partitions => {
                Err(LogError::TopicExists {
                    name: name.to_owned(),
                    partitions: existing.config.partitions,
                })
            }
            Some(existing) => {
                existing.config = config;
                Ok(existing.info(name))
            }
            None => {
                let topic = Topic::new(config);
                let info = topic.info(name);
                self.store.topics.insert(name.to_owned(), topic);
                Ok(info)
            }
        }
    }

    fn plan(
        &self,
        events: Vec<NewEvent>,
        stream: Option<(&str, u64)>,
    ) -> Result<Vec<Planned>, LogError> {
        let topics = &self.store.topics;
        rules::plan(events, stream, self.now_ms, self.config, |t| {
            topics.contains_key(t)
        })
    }

    /// The position of an id already in the topic within the dedupe window.
    fn duplicate_of(&self, topic: &str, id: &str) -> Option<(u32, u64)> {
        let (partition, offset, at_ms) = *self.store.topics.get(topic)?.dedupe.get(id)?;
        rules::within_dedupe_window(self.now_ms, at_ms, self.config).then_some((partition, offset))
    }

    /// Writes planned events (creating their topics as needed); nothing can fail any more.
    fn write(&mut self, planned: Vec<Planned>) -> Vec<Appended> {
        let mut out = Vec::with_capacity(planned.len());
        for Planned {
            topic: name,
            event,
            size,
            ..
        } in planned
        {
            let duplicate = self.duplicate_of(&name, &event.id);
            let topic = self
                .store
                .topics
                .entry(name.clone())
                .or_insert_with(|| Topic::new(rules::auto_topic_config(self.config)));
            let partition = partition_for(partition_key(&event), topic.config.partitions);
            if let Some((partition, offset)) = duplicate {
                self.duplicates += 1;
                out.push(Appended {
                    id: event.id,
                    position: Position {
                        topic: name,
                        partition,
                        offset,
                    },
                    stream_version: None,
                    duplicate: true,
                });
                continue;
            }
            // `partition_for` is below the partition count, which is the vector's length.
            let part = &mut topic.partitions[partition as usize];
            let offset = part.end();
            part.bytes += size as u64;
            part.events.push_back(Entry {
                append_ms: self.now_ms,
                bytes: size as u64,
                event: event.clone(),
            });
            topic
                .dedupe
                .insert(event.id.clone(), (partition, offset, self.now_ms));
            topic.dedupe_by_time.insert((self.now_ms, event.id.clone()));
            self.events += 1;
            self.moved.insert((name.clone(), partition));
            let position = Position {
                topic: name,
                partition,
                offset,
            };
            out.push(Appended {
                id: event.id.clone(),
                position: position.clone(),
                stream_version: event.streamversion,
                duplicate: false,
            });
            if let Some(stream) = event.stream.clone() {
                // Planned with the versions that follow the stream's current one.
                self.store
                    .streams
                    .entry(stream)
                    .or_default()
                    .push(StoredEvent { position, event });
            }
        }
        out
    }

    fn append(&mut self, events: Vec<NewEvent>) -> Result<Vec<Appended>, LogError> {
        let planned = self.plan(events, None)?;
        Ok(self.write(planned))
    }

    fn append_stream(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Appended>, LogError> {
        rules::check_stream_name(stream)?;
        let current = self.store.streams.get(stream).map_or(0, |s| s.len() as u64);
        // A retry of an append that already went through: answer the originals.
        let retry = rules::stream_retry(&events, |topic, id| {
            Ok::<_, LogError>(self.duplicate_of(topic, id).map(|(partition, offset)| {
                rules::Original {
                    partition,
                    offset,
                    stream_version: self
                        .store
                        .partition(topic, partition)
                        .ok()
                        .and_then(|p| p.get(offset))
                        .and_then(|entry| entry.event.streamversion),
                }
            }))
        })??;
        if let Some(originals) = retry {
            self.duplicates += originals.len() as u64;
            return Ok(originals);
        }
        if let ExpectedVersion::Exact(expected) = expected
            && expected != current
        {
            return Err(LogError::VersionConflict {
                stream: stream.to_owned(),
                expected,
                current,
            });
        }
        let planned = self.plan(events, Some((stream, current + 1)))?;
        Ok(self.write(planned))
    }

    fn commit(&mut self, commit: ConsumerCommit) -> Result<CommitOutcome, LogError> {
        let ConsumerCommit {
            group,
            offset,
            emits,
            state,
            attempts,
            dead_letter,
            resolve_dead_letter,
            requires_state,
            lease,
            state_read,
        } = commit;
        if group.is_empty() {
            return Err(LogError::Invalid("a consumer commit needs a group".into()));
        }
        if let Some(fence) = &lease {
            let current = self
                .store
                .leases
                .leases
                .get(&fence.key)
                .map(|(o, e, _)| (o, *e));
            if !lease::holds(fence, current) {
                return Err(lease::lost(fence));
            }
        }
        // Decide everything first, in the order redb does (the first failing check names
        // the error): the fences ...
        if let Some(id) = resolve_dead_letter
            && !self.store.dead_letters.contains_key(&id.0)
        {
            return Err(LogError::DeadLetterGone(id));
        }
        if let Some(StateKey { namespace, key }) = requires_state
            && !self.store.state_exists(&namespace, &key)
        {
            return Err(LogError::StateEntryGone { namespace, key });
        }
        for read in state_read {
            let now = self
                .store
                .state
                .get(&read.namespace)
                .and_then(|entries| entries.get(&read.key));
            if now != read.value.as_ref() {
                return Err(LogError::StateMoved {
                    namespace: read.namespace,
                    key: read.key,
                });
            }
        }
        // ... the offset, the attempts' positions, the state keys, the emits ...
        let offset_key = match offset {
            None => None,
            Some(advance) => {
                let end = self
                    .store
                    .partition(&advance.topic, advance.partition)?
                    .end();
                let key = (group.clone(), advance.topic.clone(), advance.partition);
                let current = self.store.offsets.get(&key).copied();
                rules::check_offset_advance(&group, &advance, current, end)?;
                Some((key, advance.next))
            }
        };
        for update in &attempts {
            let p = &update.position;
            self.store.partition(&p.topic, p.partition)?;
        }
        rules::check_state_changes(&state)?;
        let planned = self.plan(emits, None)?;

        // ... then write; nothing can refuse the commit any more.
        if let Some(fence) = &lease {
            self.store.leases.touch(fence)?;
        }
        if let Some((key, next)) = offset_key {
            self.store.offsets.insert(key, next);
        }
        let emitted = self.write(planned);
        for change in state {
            match change.value {
                Some(value) => {
                    self.store
                        .state
                        .entry(change.namespace)
                        .or_default()
                        .insert(change.key, value);
                }
                None => {
                    if let Some(entries) = self.store.state.get_mut(&change.namespace) {
                        entries.remove(&change.key);
                        if entries.is_empty() {
                            self.store.state.remove(&change.namespace);
                        }
                    }
                }
            }
        }
        for update in attempts {
            let key = (group.clone(), update.position);
            match update.record {
                Some(record) => {
                    self.store.attempts.insert(key, record);
                }
                None => {
                    self.store.attempts.remove(&key);
                }
            }
        }
        let dead_letter = dead_letter.map(|record| {
            let id = DeadLetterId(self.store.next_dead_letter_id);
            self.store.next_dead_letter_id += 1;
            self.store.dead_letters.insert(
                id.0,
                DeadLetter {
                    id,
                    group: group.clone(),
                    record,
                },
            );
            id
        });
        if let Some(id) = resolve_dead_letter {
            self.store.dead_letters.remove(&id.0);
        }
        Ok(CommitOutcome {
            emitted,
            dead_letter,
        })
    }

    fn set_offset(
        &mut self,
        group: &str,
        topic: &str,
        partition: u32,
        next: u64,
    ) -> Result<(), LogError> {
        if group.is_empty() {
            return Err(LogError::Invalid("an offset needs a group".into()));
        }
        let end = self.store.partition(topic, partition)?.end();
        rules::check_offset_within(topic, partition, next, end)?;
        self.store
            .offsets
            .insert((group.to_owned(), topic.to_owned(), partition), next);
        Ok(())
    }

    /// Deletes partition prefixes by age and size, never at or past the slowest group's
    /// committed offset unless the policy says so, and expires dedupe entries.
    fn retention(&mut self) -> RetentionReport {
        let mut report = RetentionReport::default();
        let Store {
            topics, offsets, ..
        } = &mut *self.store;

        // The slowest group's committed offset per partition. A group that never committed
        // there holds nothing back.
        let mut floors: HashMap<(&str, u32), u64> = HashMap::new();
        for ((_, topic, partition), next) in offsets.iter() {
            floors
                .entry((topic.as_str(), *partition))
                .and_modify(|floor| *floor = (*floor).min(*next))
                .or_insert(*next);
        }

        for (name, topic) in topics.iter_mut() {
            let policy = &topic.config.retention;
            if policy.is_unbounded() {
                continue;
            }
            let max_age_ms = policy.max_age.map(|age| age.as_millis() as u64);
            for (partition, part) in (0u32..).zip(topic.partitions.iter_mut()) {
                let floor = if policy.delete_unconsumed {
                    u64::MAX
                } else {
                    floors
                        .get(&(name.as_str(), partition))
                        .copied()
                        .unwrap_or(u64::MAX)
                };
                while part.start < floor {
                    let Some(oldest) = part.events.front() else {
                        break;
                    };
                    let too_old = max_age_ms
                        .is_some_and(|max| self.now_ms.saturating_sub(oldest.append_ms) > max);
                    let too_big = policy
                        .max_partition_bytes
                        .is_some_and(|max| part.bytes > max);
                    if !(too_old || too_big) {
                        break;
                    }
                    part.bytes = part.bytes.saturating_sub(oldest.bytes);
                    report.bytes_deleted += oldest.bytes;
                    report.events_deleted += 1;
                    part.events.pop_front();
                    part.start += 1;
                }
            }
        }

        let horizon = self
            .now_ms
            .saturating_sub(self.config.dedupe_window.as_millis() as u64);
        for topic in topics.values_mut() {
            while topic
                .dedupe_by_time
                .first()
                .is_some_and(|(at_ms, _)| *at_ms < horizon)
            {
                let Some((at_ms, id)) = topic.dedupe_by_time.pop_first() else {
                    break;
                };
                if topic.dedupe.get(&id).is_some_and(|entry| entry.2 == at_ms) {
                    topic.dedupe.remove(&id);
                }
                report.dedupe_entries_expired += 1;
            }
        }
        report
    }
}

impl EventLog for MemoryLog {
    fn create_topic(&self, name: &str, config: TopicConfig) -> Pending<TopicInfo> {
        self.write(|txn| txn.create_topic(name, config))
    }

    fn topics(&self) -> Pending<Vec<TopicInfo>> {
        self.read(|store| {
            Ok(store
                .topics
                .iter()
                .map(|(name, topic)| topic.info(name))
                .collect())
        })
    }

    fn topic(&self, name: &str) -> Pending<Option<TopicInfo>> {
        self.read(|store| Ok(store.topics.get(name).map(|topic| topic.info(name))))
    }

    fn append(&self, events: Vec<NewEvent>) -> Pending<Vec<Appended>> {
        if events.is_empty() {
            return Pending::ready(Ok(Vec::new()));
        }
        self.write(|txn| txn.append(events))
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_events: usize,
    ) -> Pending<Vec<StoredEvent>> {
        self.read(|store| {
            let part = store.partition(topic, partition)?;
            // An offset below the start (deleted by retention) reads from the start.
            let skip = usize::try_from(from.saturating_sub(part.start))
                .unwrap_or(usize::MAX)
                .min(part.events.len());
            Ok((part.start + skip as u64..)
                .zip(part.events.range(skip..))
                .take(max_events)
                .map(|(offset, entry)| StoredEvent {
                    position: Position {
                        topic: topic.to_owned(),
                        partition,
                        offset,
                    },
                    event: entry.event.clone(),
                })
                .collect())
        })
    }

    fn watch(&self, topic: &str, partition: u32) -> Pending<EndWatch> {
        let mut store = self.shared.store();
        let end = match store.partition(topic, partition) {
            Ok(part) => part.end(),
            Err(e) => return Pending::ready(Err(e)),
        };
        let closed = store.closed;
        let signal = store
            .signals
            .entry((topic.to_owned(), partition))
            .or_default()
            .clone();
        // Under the lock: no write can move the end between reading it and registering.
        signal.advance(end);
        if closed {
            signal.close();
        }
        Pending::ready(Ok(EndWatch::new(signal)))
    }

    fn append_to_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Pending<Vec<Appended>> {
        self.write(|txn| txn.append_stream(stream, expected, events))
    }

    fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max_events: usize,
    ) -> Pending<Vec<StoredEvent>> {
        self.read(|store| {
            // Version v is at index v - 1; there is no version 0.
            let skip = usize::try_from(from_version.saturating_sub(1)).unwrap_or(usize::MAX);
            Ok(store
                .streams
                .get(stream)
                .map(|events| events.iter().skip(skip).take(max_events).cloned().collect())
                .unwrap_or_default())
        })
    }

    fn stream_version(&self, stream: &str) -> Pending<u64> {
        self.read(|store| Ok(store.streams.get(stream).map_or(0, |s| s.len() as u64)))
    }

    fn commit(&self, commit: ConsumerCommit) -> Pending<CommitOutcome> {
        self.write(|txn| txn.commit(commit))
    }

    fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Pending<Option<u64>> {
        self.read(|store| {
            store.partition(topic, partition)?;
            Ok(store
                .offsets
                .get(&(group.to_owned(), topic.to_owned(), partition))
                .copied())
        })
    }

    fn set_offset(&self, group: &str, topic: &str, partition: u32, next: u64) -> Pending<()> {
        self.write(|txn| txn.set_offset(group, topic, partition, next))
    }

    fn attempts(&self, group: &str, position: &Position) -> Pending<Option<AttemptRecord>> {
        self.read(|store| {
            store.partition(&position.topic, position.partition)?;
            Ok(store
                .attempts
                .get(&(group.to_owned(), position.clone()))
                .cloned())
        })
    }

    fn state_get(&self, namespace: &str, key: &str) -> Pending<Option<Vec<u8>>> {
        self.read(|store| Ok(state_get(store, namespace, key)))
    }

    fn state_keys(&self, namespace: &str, prefix: &str, limit: usize) -> Pending<Vec<String>> {
        self.read(|store| Ok(state_keys(store, namespace, prefix, limit)))
    }

    fn dead_letters(
        &self,
        plugin: Option<&str>,
        after: Option<DeadLetterId>,
        limit: usize,
    ) -> Pending<Vec<DeadLetter>> {
        self.read(|store| {
            let first = after.map_or(0, |id| id.0.saturating_add(1));
            Ok(store
                .dead_letters
                .range(first..)
                .map(|(_, letter)| letter)
                .filter(|letter| plugin.is_none_or(|p| letter.record.plugin == p))
                .take(limit)
                .cloned()
                .collect())
        })
    }

    fn dead_letter(&self, id: DeadLetterId) -> Pending<Option<DeadLetter>> {
        self.read(|store| Ok(store.dead_letters.get(&id.0).cloned()))
    }

    fn delete_dead_letter(&self, id: DeadLetterId) -> Pending<bool> {
        self.write(|txn| Ok(txn.store.dead_letters.remove(&id.0).is_some()))
    }

    fn enforce_retention(&self) -> Pending<RetentionReport> {
        self.write(|txn| Ok(txn.retention()))
    }

    fn stats(&self) -> LogStats {
        let store = self.shared.store();
        let c = &store.counters;
        LogStats {
            transactions: c.transactions,
            // Nothing here can fail a transaction.
            failed_transactions: 0,
            requests: c.requests,
            events_appended: c.events_appended,
            duplicates: c.duplicates,
            transaction_seconds: self.shared.transaction_seconds.snapshot(),
            transaction_events: self.shared.transaction_events.snapshot(),
        }
    }

    fn leases(&self) -> Option<&dyn Leases> {
        self.shared_by_daemons.then_some(self as &dyn Leases)
    }
}

fn state_get(store: &Store, namespace: &str, key: &str) -> Option<Vec<u8>> {
    store.state.get(namespace)?.get(key).cloned()
}

fn state_keys(store: &Store, namespace: &str, prefix: &str, limit: usize) -> Vec<String> {
    let Some(entries) = store.state.get(namespace) else {
        return Vec::new();
    };
    entries
        .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .map(|(key, _)| key)
        .take_while(|key| key.starts_with(prefix))
        .take(limit)
        .cloned()
        .collect()
}

/// The runtime reads plugin state through this (committed values only).
impl crate::runtime::StateStore for MemoryLog {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(state_get(&self.shared.store(), plugin, key))
    }

    fn keys(&self, plugin: &str, prefix: &str) -> Result<Vec<String>, String> {
        Ok(state_keys(&self.shared.store(), plugin, prefix, usize::MAX))
    }
}

/// The background thread that runs a retention pass every `retention_interval`. It holds
/// the log only weakly, so dropping the log is never held up by it.
fn spawn_retention(shared: Weak<Shared>, interval: Duration) -> std::io::Result<Periodic> {
    Periodic::spawn("evhost-memlog-retention", interval, move || {
        let Some(shared) = shared.upgrade() else {
            return ControlFlow::Break(());
        };
        match write(&shared, |txn| Ok(txn.retention())) {
            Ok(report) if report.events_deleted > 0 => tracing::debug!(
                events = report.events_deleted,
                bytes = report.bytes_deleted,
                "retention deleted events"
            ),
            Ok(_) => {}
            Err(_) => return ControlFlow::Break(()),
        }
        ControlFlow::Continue(())
    })
}

impl Leases for MemoryLog {
    fn heartbeat(&self, id: &str, groups: Vec<String>) -> Pending<()> {
        self.write(|txn| {
            let table = &mut txn.store.leases;
            let version = table.next_version();
            table.members.insert(id.to_owned(), (groups, version));
            Ok(())
        })
    }

    fn leave(&self, id: &str) -> Pending<()> {
        self.write(|txn| {
            txn.store.leases.members.remove(id);
            Ok(())
        })
    }

    fn members(&self) -> Pending<Vec<MemberState>> {
        self.read(|store| {
            Ok(store
                .leases
                .members
                .iter()
                .map(|(id, (groups, version))| MemberState {
                    id: id.clone(),
                    groups: groups.clone(),
                    version: *version,
                })
                .collect())
        })
    }

    fn leases(&self) -> Pending<Vec<LeaseState>> {
        self.read(|store| {
            Ok(store
                .leases
                .leases
                .iter()
                .map(|(key, (owner, epoch, version))| LeaseState {
                    key: key.clone(),
                    owner: owner.clone(),
                    epoch: *epoch,
                    version: *version,
                })
                .collect())
        })
    }

    fn acquire(&self, key: &LeaseKey, owner: &str, seen: u64) -> Pending<LeaseFence> {
        self.write(|txn| {
            let table = &mut txn.store.leases;
            let (version, epoch) = table
                .leases
                .get(key)
                .map_or((0, 0), |(_, epoch, version)| (*version, *epoch));
            if version != seen {
                return Err(LogError::LeaseLost(key.to_string()));
            }
            let fence = LeaseFence {
                key: key.clone(),
                owner: owner.to_owned(),
                epoch: epoch + 1,
            };
            let version = table.next_version();
            table
                .leases
                .insert(key.clone(), (Some(owner.to_owned()), fence.epoch, version));
            Ok(fence)
        })
    }

    fn renew(&self, fence: &LeaseFence) -> Pending<()> {
        self.write(|txn| txn.store.leases.touch(fence))
    }

    fn release(&self, fence: &LeaseFence) -> Pending<()> {
        self.write(|txn| {
            let table = &mut txn.store.leases;
            table.touch(fence)?;
            if let Some(entry) = table.leases.get_mut(&fence.key) {
                entry.0 = None;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_log_stops_its_retention_thread_and_wakes_watchers() {
        let log = MemoryLog::new(LogConfig {
            retention_interval: Duration::from_millis(1),
            ..LogConfig::default()
        })
        .unwrap();
        log.create_topic("t", TopicConfig::default())
            .wait()
            .unwrap();
        let watch = log.watch("t", 0).wait().unwrap();
        let waiter =
            std::thread::spawn(move || watch.wait_past_blocking(0, Duration::from_secs(10)));
        drop(log);
        assert!(matches!(waiter.join().unwrap(), Err(LogError::Closed)));
    }
}
