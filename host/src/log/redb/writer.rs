//! The single writer thread: group commit.
//!
//! Every write of the log is a [`Request`] on one channel. The writer takes the first request,
//! drains what else is queued (up to `max_batch_events`, lingering up to `max_linger`), applies
//! all of them in one redb write transaction and commits it with fsync
//! (`Durability::Immediate`); only then does it answer. So N concurrent publishers and
//! consumer commits share one fsync, and an answer always means "durable".
//!
//! Each request is decided before it writes anything: the checks that can reject it (unknown
//! topic, version conflict, offset conflict, oversize event, ...) run first, so a rejected
//! request leaves no trace in the shared transaction and the others still commit. A storage
//! error, by contrast, aborts the whole transaction and every request in it gets the error.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Instant, SystemTime};

use ::redb::{CommitError, ReadableTable, Table, WriteTransaction};

use super::Shared;
use super::error::storage;
use super::tables::*;
use crate::event::{Position, StoredEvent};
use crate::log::encoding::{
    Chunk, ChunkBuilder, decode_dead_letter, decode_event_body, encode_attempts,
    encode_dead_letter, encode_stored, millis_since_epoch,
};
use crate::log::pending::Answer;
use crate::log::rules::{self, Planned};
use crate::log::{
    Appended, CommitOutcome, ConsumerCommit, DeadLetterId, ExpectedVersion, LogError, NewEvent,
    PartitionInfo, RetentionReport, StateKey, TopicConfig, TopicInfo, partition_for, partition_key,
};

pub(super) enum Request {
    CreateTopic {
        name: String,
        config: TopicConfig,
        answer: Answer<TopicInfo>,
    },
    Append {
        events: Vec<NewEvent>,
        answer: Answer<Vec<Appended>>,
    },
    AppendStream {
        stream: String,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        answer: Answer<Vec<Appended>>,
    },
    Commit {
        commit: Box<ConsumerCommit>,
        answer: Answer<CommitOutcome>,
    },
    SetOffset {
        group: String,
        topic: String,
        partition: u32,
        next: u64,
        answer: Answer<()>,
    },
    DeleteDeadLetter {
        id: DeadLetterId,
        answer: Answer<bool>,
    },
    Retention {
        answer: Answer<RetentionReport>,
    },
    /// Finish what is queued before it, then stop.
    Shutdown,
}

/// A chunk this large is closed and the partition's next event starts another.
const CHUNK_BYTES: usize = 4 << 20;

/// A request's result, before the transaction commits.
enum Reply {
    Topic(TopicInfo),
    Appended(Vec<Appended>),
    Commit(CommitOutcome),
    Unit,
    Deleted(bool),
    Retention(RetentionReport),
}

impl Request {
    /// Its share of `max_batch_events`.
    fn weight(&self) -> usize {
        match self {
            Request::Append { events, .. } | Request::AppendStream { events, .. } => {
                events.len().max(1)
            }
            Request::Commit { commit, .. } => commit.emits.len().max(1),
            _ => 1,
        }
    }

    fn answer(self, result: Result<Reply, LogError>) {
        fn send<T>(
            answer: Answer<T>,
            result: Result<Reply, LogError>,
            pick: fn(Reply) -> Option<T>,
        ) {
            let result = result.and_then(|reply| {
                pick(reply)
                    .ok_or_else(|| LogError::Invalid("writer answered the wrong kind".into()))
            });
            // The asker may have stopped waiting; the write stands either way.
            let _ = answer.send(result);
        }
        match self {
            Request::CreateTopic { answer, .. } => send(answer, result, |r| match r {
                Reply::Topic(t) => Some(t),
                _ => None,
            }),
            Request::Append { answer, .. } | Request::AppendStream { answer, .. } => {
                send(answer, result, |r| match r {
                    Reply::Appended(a) => Some(a),
                    _ => None,
                })
            }
            Request::Commit { answer, .. } => send(answer, result, |r| match r {
                Reply::Commit(c) => Some(c),
                _ => None,
            }),
            Request::SetOffset { answer, .. } => send(answer, result, |r| match r {
                Reply::Unit => Some(()),
                _ => None,
            }),
            Request::DeleteDeadLetter { answer, .. } => send(answer, result, |r| match r {
                Reply::Deleted(d) => Some(d),
                _ => None,
            }),
            Request::Retention { answer, .. } => send(answer, result, |r| match r {
                Reply::Retention(r) => Some(r),
                _ => None,
            }),
            Request::Shutdown => {}
        }
    }
}

/// A failure that aborts the whole batch (storage errors). Request errors travel as the
/// inner `Err` of [`Applied`] instead.
pub(super) struct Fatal(pub(super) LogError);

macro_rules! fatal_from {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Fatal {
            fn from(e: $ty) -> Self {
                Fatal(LogError::from(e))
            }
        }
    )*};
}
fatal_from!(::redb::StorageError, ::redb::TableError);

/// Outer `Err`: abort the batch. Inner `Err`: this request is refused, nothing written.
pub(super) type Applied<T> = Result<Result<T, LogError>, Fatal>;

macro_rules! refuse {
    ($e:expr) => {
        return Ok(Err($e))
    };
}

/// What the writer knows to be committed. Only the writer writes, so this cache is exact.
#[derive(Debug, Default)]
pub(super) struct Committed {
    pub(super) topics: HashMap<String, TopicMeta>,
    pub(super) names: HashMap<u32, String>,
    pub(super) parts: HashMap<(u32, u32), PartitionInfo>,
    pub(super) next_topic_id: u32,
    pub(super) next_dead_letter_id: u64,
}

/// What a committed batch changed, merged into [`Committed`] only after the commit.
struct Effects {
    topics: HashMap<String, TopicMeta>,
    parts: HashMap<(u32, u32), PartitionInfo>,
    next_topic_id: u32,
    next_dead_letter_id: u64,
    events: u64,
    duplicates: u64,
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) rx: Receiver<Request>,
    pub(super) committed: Committed,
}

impl Writer {
    pub(super) fn run(mut self) {
        let max_events = self.shared.config.max_batch_events.max(1);
        let linger = self.shared.config.max_linger;
        let mut batch = Vec::new();
        'serve: loop {
            let first = match self.rx.recv() {
                Ok(Request::Shutdown) | Err(_) => break,
                Ok(r) => r,
            };
            let mut weight = first.weight();
            batch.push(first);
            let deadline = Instant::now() + linger;
            let mut stop = false;
            while weight < max_events {
                let next = match self.rx.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        match self.rx.recv_timeout(deadline - now) {
                            Ok(r) => r,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => {
                                stop = true;
                                break;
                            }
                        }
                    }
                };
                if let Request::Shutdown = next {
                    stop = true;
                    break;
                }
                weight += next.weight();
                batch.push(next);
            }
            self.process(std::mem::take(&mut batch));
            if stop {
                break 'serve;
            }
        }
        for signal in self.shared.signals().values() {
            signal.close();
        }
    }

    fn process(&mut self, mut batch: Vec<Request>) {
        let now = self.shared.config.clock.now();
        let shared = self.shared.clone();
        let stats = &shared.stats;
        let started = std::time::Instant::now();
        match self.execute(&mut batch, now) {
            Ok((replies, effects)) => {
                stats.transactions.fetch_add(1, Ordering::Relaxed);
                stats
                    .transaction_seconds
                    .observe_duration(started.elapsed());
                stats.transaction_events.observe(effects.events as f64);
                stats
                    .requests
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats
                    .events_appended
                    .fetch_add(effects.events, Ordering::Relaxed);
                stats
                    .duplicates
                    .fetch_add(effects.duplicates, Ordering::Relaxed);
                self.publish(effects);
                for (request, reply) in batch.into_iter().zip(replies) {
                    request.answer(reply);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "log write transaction failed");
                stats.failed_transactions.fetch_add(1, Ordering::Relaxed);
                stats
                    .requests
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for request in batch {
                    request.answer(Err(e.clone()));
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn execute(
        &mut self,
        batch: &mut [Request],
        now: SystemTime,
    ) -> Result<(Vec<Result<Reply, LogError>>, Effects), LogError> {
        let txn = self.shared.db.begin_write()?;
        let (replies, effects) = {
            let mut b = Batch::open(&txn, &self.committed, &self.shared, now)?;
            let mut replies = Vec::with_capacity(batch.len());
            for request in batch.iter_mut() {
                replies.push(b.apply(request).map_err(|Fatal(e)| e)?);
            }
            (replies, b.finish().map_err(|Fatal(e)| e)?)
        };
        #[cfg(test)]
        if self
            .shared
            .fail_next_commit
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            txn.abort()?;
            return Err(LogError::Storage(storage(crate::log::error::Internal(
                "injected failure before commit".into(),
            ))));
        }
        txn.commit().map_err(|e| match e {
            // Rolled back; new transactions may begin.
            CommitError::TransactionPoisoned => LogError::Storage(storage(e)),
            other => LogError::OutcomeUnknown(storage(other)),
        })?;
        Ok((replies, effects))
    }

    /// Makes a committed batch visible: caches first, then wake the watchers.
    fn publish(&mut self, effects: Effects) {
        let c = &mut self.committed;
        for (name, meta) in effects.topics {
            c.names.insert(meta.id, name.clone());
            c.topics.insert(name, meta);
        }
        c.next_topic_id = effects.next_topic_id;
        c.next_dead_letter_id = effects.next_dead_letter_id;
        let signals = self.shared.signals();
        for (key, info) in effects.parts {
            c.parts.insert(key, info);
            if let Some(name) = c.names.get(&key.0)
                && let Some(signal) = signals.get(&(name.clone(), key.1))
            {
                signal.advance(info.end);
            }
        }
    }
}

/// The tables of one write transaction.
pub(super) struct Tables<'t> {
    pub(super) meta: Table<'t, &'static str, u64>,
    pub(super) topics: Table<'t, &'static str, &'static [u8]>,
    pub(super) partitions: Table<'t, (u32, u32), (u64, u64, u64)>,
    pub(super) chunks: Table<'t, (u32, u32, u64), &'static [u8]>,
    pub(super) dedupe: Table<'t, (u32, &'static str), (u32, u64, u64)>,
    pub(super) dedupe_swept: Table<'t, (u32, u32), u64>,
    pub(super) streams: Table<'t, &'static str, u64>,
    pub(super) stream_events: Table<'t, (&'static str, u64), &'static [u8]>,
    pub(super) offsets: Table<'t, (&'static str, u32, u32), u64>,
    pub(super) state: Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub(super) attempts: Table<'t, (&'static str, u32, u32, u64), &'static [u8]>,
    pub(super) dead_letters: Table<'t, u64, &'static [u8]>,
    pub(super) dead_letters_by_plugin: Table<'t, (&'static str, u64), ()>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Self, ::redb::TableError> {
        Ok(Self {
            meta: txn.open_table(META)?,
            topics: txn.open_table(TOPICS)?,
            partitions: txn.open_table(PARTITIONS)?,
            chunks: txn.open_table(CHUNKS)?,
            dedupe: txn.open_table(DEDUPE)?,
            dedupe_swept: txn.open_table(DEDUPE_SWEPT)?,
            streams: txn.open_table(STREAMS)?,
            stream_events: txn.open_table(STREAM_EVENTS)?,
            offsets: txn.open_table(OFFSETS)?,
            state: txn.open_table(STATE)?,
            attempts: txn.open_table(ATTEMPTS)?,
            dead_letters: txn.open_table(DEAD_LETTERS)?,
            dead_letters_by_plugin: txn.open_table(DEAD_LETTERS_BY_PLUGIN)?,
        })
    }
}

/// One write transaction in progress, with what it changed on top of [`Committed`].
pub(super) struct Batch<'t, 'c> {
    pub(super) t: Tables<'t>,
    pub(super) committed: &'c Committed,
    pub(super) shared: &'c Shared,
    pub(super) now_ms: u64,
    /// Topics created or changed in this batch.
    pub(super) topics: HashMap<String, TopicMeta>,
    /// Partitions touched in this batch.
    pub(super) parts: HashMap<(u32, u32), PartitionInfo>,
    /// The events this batch appends to each partition: one chunk each, keyed by its first
    /// offset and written when the batch finishes.
    chunks: HashMap<(u32, u32), (u64, ChunkBuilder)>,
    next_topic_id: u32,
    next_dead_letter_id: u64,
    events: u64,
    duplicates: u64,
}

impl<'t, 'c> Batch<'t, 'c> {
    fn open(
        txn: &'t WriteTransaction,
        committed: &'c Committed,
        shared: &'c Shared,
        now: SystemTime,
    ) -> Result<Self, LogError> {
        Ok(Self {
            t: Tables::open(txn)?,
            committed,
            shared,
            now_ms: millis_since_epoch(now),
            topics: HashMap::new(),
            parts: HashMap::new(),
            chunks: HashMap::new(),
            next_topic_id: committed.next_topic_id,
            next_dead_letter_id: committed.next_dead_letter_id,
            events: 0,
            duplicates: 0,
        })
    }

    /// Writes the batch's chunks and bookkeeping rows and releases the tables.
    fn finish(mut self) -> Result<Effects, Fatal> {
        for ((topic, partition), (first, chunk)) in &self.chunks {
            self.t.chunks.insert(
                (*topic, *partition, *first),
                chunk.finish(self.now_ms).as_slice(),
            )?;
        }
        for ((topic, partition), info) in &self.parts {
            self.t
                .partitions
                .insert((*topic, *partition), part_to_row(info))?;
        }
        if self.next_topic_id != self.committed.next_topic_id {
            self.t
                .meta
                .insert(META_NEXT_TOPIC, u64::from(self.next_topic_id))?;
        }
        if self.next_dead_letter_id != self.committed.next_dead_letter_id {
            self.t
                .meta
                .insert(META_NEXT_DEAD_LETTER, self.next_dead_letter_id)?;
        }
        Ok(Effects {
            topics: self.topics,
            parts: self.parts,
            next_topic_id: self.next_topic_id,
            next_dead_letter_id: self.next_dead_letter_id,
            events: self.events,
            duplicates: self.duplicates,
        })
    }

    fn apply(&mut self, request: &mut Request) -> Applied<Reply> {
        Ok(match request {
            Request::CreateTopic { name, config, .. } => self
                .create_topic(name, config)
                .map(|r| r.map(Reply::Topic))?,
            Request::Append { events, .. } => self
                .append(std::mem::take(events))
                .map(|r| r.map(Reply::Appended))?,
            Request::AppendStream {
                stream,
                expected,
                events,
                ..
            } => self
                .append_stream(stream, *expected, std::mem::take(events))
                .map(|r| r.map(Reply::Appended))?,
            Request::Commit { commit, .. } => self
                .commit(std::mem::take(&mut **commit))
                .map(|r| r.map(Reply::Commit))?,
            Request::SetOffset {
                group,
                topic,
                partition,
                next,
                ..
            } => self
                .set_offset(group, topic, *partition, *next)
                .map(|r| r.map(|()| Reply::Unit))?,
            Request::DeleteDeadLetter { id, .. } => {
                Ok(Reply::Deleted(self.remove_dead_letter(*id)?))
            }
            Request::Retention { .. } => Ok(Reply::Retention(self.retention()?)),
            Request::Shutdown => Ok(Reply::Unit),
        })
    }

    pub(super) fn topic_meta(&self, name: &str) -> Option<&TopicMeta> {
        self.topics
            .get(name)
            .or_else(|| self.committed.topics.get(name))
    }

    /// The partition as of this point in the batch, without marking it touched.
    pub(super) fn part(&self, topic: u32, partition: u32) -> PartitionInfo {
        self.parts
            .get(&(topic, partition))
            .or_else(|| self.committed.parts.get(&(topic, partition)))
            .copied()
            .unwrap_or_default()
    }

    pub(super) fn part_mut(&mut self, topic: u32, partition: u32) -> &mut PartitionInfo {
        let committed = self.committed;
        self.parts.entry((topic, partition)).or_insert_with(|| {
            committed
                .parts
                .get(&(topic, partition))
                .copied()
                .unwrap_or_default()
        })
    }

    fn topic_info(&self, name: &str, meta: &TopicMeta) -> TopicInfo {
        TopicInfo {
            name: name.to_owned(),
            config: meta.config.clone(),
            partitions: (0..meta.config.partitions)
                .map(|p| self.part(meta.id, p))
                .collect(),
        }
    }

    /// The topic and partition count behind a position, or the request error.
    fn locate(&self, topic: &str, partition: u32) -> Result<&TopicMeta, LogError> {
        let meta = self
            .topic_meta(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
        if partition >= meta.config.partitions {
            return Err(LogError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: meta.config.partitions,
            });
        }
        Ok(meta)
    }

    fn create_topic(&mut self, name: &str, config: &TopicConfig) -> Applied<TopicInfo> {
        if let Err(e) = rules::check_topic_config(name, config) {
            refuse!(e);
        }
        let meta = match self.topic_meta(name) {
            Some(existing) if existing.config.partitions != config.partitions => {
                refuse!(LogError::TopicExists {
                    name: name.to_owned(),
                    partitions: existing.config.partitions,
                })
            }
            Some(existing) if existing.config == *config => existing.clone(),
            Some(existing) => {
                let meta = TopicMeta {
                    id: existing.id,
                    config: config.clone(),
                };
                self.t.topics.insert(name, meta.encode().as_slice())?;
                self.topics.insert(name.to_owned(), meta.clone());
                meta
            }
            None => self.insert_topic(name, config.clone())?,
        };
        Ok(Ok(self.topic_info(name, &meta)))
    }

    fn insert_topic(&mut self, name: &str, config: TopicConfig) -> Result<TopicMeta, Fatal> {
        let meta = TopicMeta {
            id: self.next_topic_id,
            config,
        };
        self.next_topic_id += 1;
        self.t.topics.insert(name, meta.encode().as_slice())?;
        self.topics.insert(name.to_owned(), meta.clone());
        Ok(meta)
    }

    /// Checks and encodes events; everything that can refuse them is decided here.
    /// `stream` is the stream name and the version of the first event.
    fn plan(
        &self,
        events: Vec<NewEvent>,
        stream: Option<(&str, u64)>,
    ) -> Result<Vec<Planned>, LogError> {
        rules::plan(events, stream, self.now_ms, &self.shared.config, |topic| {
            self.topic_meta(topic).is_some()
        })
    }

    /// The position of an id already in the topic within the dedupe window.
    fn duplicate_of(&self, topic: u32, id: &str) -> Result<Option<(u32, u64)>, Fatal> {
        Ok(self.t.dedupe.get((topic, id))?.and_then(|guard| {
            let (partition, offset, at_ms) = guard.value();
            rules::within_dedupe_window(self.now_ms, at_ms, &self.shared.config)
                .then_some((partition, offset))
        }))
    }

    /// Appends an event to its partition's chunk of this batch. A chunk that has grown past
    /// [`CHUNK_BYTES`] is written now and the next event starts another, so a huge batch
    /// never makes one huge value (redb's limit is 3 GiB; readers decode a chunk's prefix).
    fn push_to_chunk(
        &mut self,
        topic: u32,
        partition: u32,
        offset: u64,
        body: &[u8],
    ) -> Result<(), Fatal> {
        if let Some((first, chunk)) = self.chunks.get(&(topic, partition))
            && chunk.len() >= CHUNK_BYTES
        {
            self.t.chunks.insert(
                (topic, partition, *first),
                chunk.finish(self.now_ms).as_slice(),
            )?;
            self.chunks.remove(&(topic, partition));
        }
        self.chunks
            .entry((topic, partition))
            .or_insert_with(|| (offset, ChunkBuilder::default()))
            .1
            .push(body);
        Ok(())
    }

    /// The event at a position, as of this point in the batch (its own chunks included).
    fn event_at(
        &self,
        topic: u32,
        partition: u32,
        offset: u64,
    ) -> Result<Option<crate::event::Event>, Fatal> {
        if let Some((first, chunk)) = self.chunks.get(&(topic, partition))
            && offset >= *first
        {
            return match chunk.body(offset - first) {
                Ok(Some(body)) => Ok(decode_event_body(body).ok()),
                _ => Ok(None),
            };
        }
        let Some(row) = self
            .t
            .chunks
            .range((topic, partition, 0)..=(topic, partition, offset))?
            .next_back()
        else {
            return Ok(None);
        };
        let (key, value) = row?;
        let first = key.value().2;
        let Ok(mut chunk) = Chunk::open(value.value()) else {
            return Ok(None);
        };
        for _ in first..offset {
            if !matches!(chunk.next_body(), Ok(Some(_))) {
                return Ok(None);
            }
        }
        Ok(match chunk.next_body() {
            Ok(Some(body)) => decode_event_body(body).ok(),
            _ => None,
        })
    }

    /// Writes planned events; the only failures left are storage errors.
    fn write(&mut self, planned: Vec<Planned>) -> Result<Vec<Appended>, Fatal> {
        let mut out = Vec::with_capacity(planned.len());
        for Planned {
            topic,
            event,
            body,
            size,
        } in planned
        {
            let meta = match self.topic_meta(&topic) {
                Some(meta) => meta.clone(),
                None => self.insert_topic(&topic, rules::auto_topic_config(&self.shared.config))?,
            };
            let tid = meta.id;
            let partition = partition_for(partition_key(&event), meta.config.partitions);
            let offset = self.part(tid, partition).end;
            let now_ms = self.now_ms;
            // One B-tree descent for the common case: claim the id, and only if it was
            // already taken within the window put the original back and answer it.
            let previous = self
                .t
                .dedupe
                .insert((tid, event.id.as_str()), (partition, offset, now_ms))?
                .map(|g| g.value());
            if let Some(original @ (p, o, at_ms)) = previous
                && rules::within_dedupe_window(now_ms, at_ms, &self.shared.config)
            {
                self.t.dedupe.insert((tid, event.id.as_str()), original)?;
                self.duplicates += 1;
                out.push(Appended {
                    id: event.id,
                    position: Position {
                        topic,
                        partition: p,
                        offset: o,
                    },
                    stream_version: None,
                    duplicate: true,
                });
                continue;
            }
            let part = self.part_mut(tid, partition);
            part.end += 1;
            part.bytes += size as u64;
            self.push_to_chunk(tid, partition, offset, &body)?;
            self.events += 1;
            let position = Position {
                topic,
                partition,
                offset,
            };
            let appended = Appended {
                id: event.id.clone(),
                position: position.clone(),
                stream_version: event.streamversion,
                duplicate: false,
            };
            if let (Some(stream), Some(version)) = (event.stream.clone(), event.streamversion) {
                let stored = encode_stored(&StoredEvent { position, event });
                self.t
                    .stream_events
                    .insert((stream.as_str(), version), stored.as_slice())?;
            }
            out.push(appended);
        }
        Ok(out)
    }

    fn append(&mut self, events: Vec<NewEvent>) -> Applied<Vec<Appended>> {
        let planned = match self.plan(events, None) {
            Ok(planned) => planned,
            Err(e) => refuse!(e),
        };
        Ok(Ok(self.write(planned)?))
    }

    fn append_stream(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Applied<Vec<Appended>> {
        if let Err(e) = rules::check_stream_name(stream) {
            refuse!(e);
        }
        let current = self.t.streams.get(stream)?.map_or(0, |g| g.value());
        // A retry of an append that already went through: answer the originals.
        let retry = rules::stream_retry(&events, |topic, id| {
            let Some(meta) = self.topic_meta(topic) else {
                return Ok(None);
            };
            let Some((partition, offset)) = self.duplicate_of(meta.id, id)? else {
                return Ok(None);
            };
            Ok::<_, Fatal>(Some(rules::Original {
                partition,
                offset,
                stream_version: self
                    .event_at(meta.id, partition, offset)?
                    .and_then(|e| e.streamversion),
            }))
        })?;
        match retry {
            Err(e) => refuse!(e),
            Ok(Some(originals)) => {
                self.duplicates += originals.len() as u64;
                return Ok(Ok(originals));
            }
            Ok(None) => {}
        }
        if let ExpectedVersion::Exact(expected) = expected
            && expected != current
        {
            refuse!(LogError::VersionConflict {
                stream: stream.to_owned(),
                expected,
                current,
            });
        }
        let count = events.len() as u64;
        let planned = match self.plan(events, Some((stream, current + 1))) {
            Ok(planned) => planned,
            Err(e) => refuse!(e),
        };
        let appended = self.write(planned)?;
        if count > 0 {
            self.t.streams.insert(stream, current + count)?;
        }
        Ok(Ok(appended))
    }

    fn commit(&mut self, commit: ConsumerCommit) -> Applied<CommitOutcome> {
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
            refuse!(LogError::Invalid("a consumer commit needs a group".into()));
        }
        if let Some(fence) = lease {
            // One daemon holds the file: nothing here hands out leases to fence by.
            refuse!(LogError::Invalid(format!(
                "a redb log is worked by one daemon and keeps no leases; a commit fenced by the lease of {} does not belong here",
                fence.key
            )));
        }
        // The fences: what this commit resolves must still be there.
        if let Some(id) = resolve_dead_letter
            && self.t.dead_letters.get(id.0)?.is_none()
        {
            refuse!(LogError::DeadLetterGone(id));
        }
        if let Some(StateKey { namespace, key }) = requires_state
            && self
                .t
                .state
                .get((namespace.as_str(), key.as_str()))?
                .is_none()
        {
            refuse!(LogError::StateEntryGone { namespace, key });
        }
        for read in state_read {
            let now = self
                .t
                .state
                .get((read.namespace.as_str(), read.key.as_str()))?
                .map(|g| g.value().to_vec());
            if now != read.value {
                refuse!(LogError::StateMoved {
                    namespace: read.namespace,
                    key: read.key,
                });
            }
        }
        // Decide everything first ...
        let offset_row = match &offset {
            None => None,
            Some(advance) => {
                let meta = match self.locate(&advance.topic, advance.partition) {
                    Ok(meta) => meta.clone(),
                    Err(e) => refuse!(e),
                };
                let current = self
                    .t
                    .offsets
                    .get((group.as_str(), meta.id, advance.partition))?
                    .map(|g| g.value());
                let moved = advance.from.is_some_and(|from| current != Some(from));
                let behind = current.is_some_and(|current| advance.next <= current);
                if moved || behind {
                    refuse!(LogError::OffsetConflict {
                        group,
                        topic: advance.topic.clone(),
                        partition: advance.partition,
                        current: current.unwrap_or(0),
                        requested: advance.next,
                    });
                }
                let end = self.part(meta.id, advance.partition).end;
                if advance.next > end {
                    refuse!(LogError::Invalid(format!(
                        "offset {} is beyond the end ({end}) of {}/{}",
                        advance.next, advance.topic, advance.partition
                    )));
                }
                Some((meta.id, advance.partition, advance.next))
            }
        };
        let mut attempt_rows = Vec::with_capacity(attempts.len());
        for update in &attempts {
            let p = &update.position;
            let meta = match self.locate(&p.topic, p.partition) {
                Ok(meta) => meta,
                Err(e) => refuse!(e),
            };
            attempt_rows.push((
                meta.id,
                p.partition,
                p.offset,
                update.record.as_ref().map(encode_attempts),
            ));
        }
        if state
            .iter()
            .any(|s| s.namespace.is_empty() || s.key.is_empty())
        {
            refuse!(LogError::Invalid(
                "a state change needs a namespace and a key".into()
            ));
        }
        let parked = dead_letter
            .as_ref()
            .map(|record| (record.plugin.clone(), encode_dead_letter(&group, record)));
        let planned = match self.plan(emits, None) {
            Ok(planned) => planned,
            Err(e) => refuse!(e),
        };

        // ... then write; only storage errors can stop it now.
        if let Some((topic, partition, next)) = offset_row {
            self.t
                .offsets
                .insert((group.as_str(), topic, partition), next)?;
        }
        let emitted = self.write(planned)?;
        for change in &state {
            let key = (change.namespace.as_str(), change.key.as_str());
            match &change.value {
                Some(value) => {
                    self.t.state.insert(key, value.as_slice())?;
                }
                None => {
                    self.t.state.remove(key)?;
                }
            }
        }
        for (topic, partition, offset, record) in &attempt_rows {
            let key = (group.as_str(), *topic, *partition, *offset);
            match record {
                Some(record) => {
                    self.t.attempts.insert(key, record.as_slice())?;
                }
                None => {
                    self.t.attempts.remove(key)?;
                }
            }
        }
        let dead_letter = match parked {
            None => None,
            Some((plugin, record)) => {
                let id = self.next_dead_letter_id;
                self.next_dead_letter_id += 1;
                self.t.dead_letters.insert(id, record.as_slice())?;
                self.t
                    .dead_letters_by_plugin
                    .insert((plugin.as_str(), id), ())?;
                Some(DeadLetterId(id))
            }
        };
        if let Some(id) = resolve_dead_letter {
            self.remove_dead_letter(id)?;
        }
        Ok(Ok(CommitOutcome {
            emitted,
            dead_letter,
        }))
    }

    fn set_offset(&mut self, group: &str, topic: &str, partition: u32, next: u64) -> Applied<()> {
        if group.is_empty() {
            refuse!(LogError::Invalid("an offset needs a group".into()));
        }
        let tid = match self.locate(topic, partition) {
            Ok(meta) => meta.id,
            Err(e) => refuse!(e),
        };
        let end = self.part(tid, partition).end;
        if next > end {
            refuse!(LogError::Invalid(format!(
                "offset {next} is beyond the end ({end}) of {topic}/{partition}"
            )));
        }
        self.t.offsets.insert((group, tid, partition), next)?;
        Ok(Ok(()))
    }

    fn remove_dead_letter(&mut self, id: DeadLetterId) -> Result<bool, Fatal> {
        let plugin = {
            let Some(record) = self.t.dead_letters.remove(id.0)? else {
                return Ok(false);
            };
            decode_dead_letter(record.value()).map(|(_, r)| r.plugin)
        };
        // An undecodable record is still removed; its index entry then stays behind as a
        // dangling key that listing skips.
        if let Ok(plugin) = plugin {
            self.t
                .dead_letters_by_plugin
                .remove((plugin.as_str(), id.0))?;
        }
        Ok(true)
    }
}
