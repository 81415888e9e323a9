//! The embedded backend: one redb file, one writer thread doing group commit, reads on
//! redb's MVCC snapshots from any thread. The only module of the host that imports redb.
//!
//! - `tables`: table definitions and key layouts.
//! - `writer`: the group-commit writer; every write goes through it.
//! - `read`: read operations.
//! - `retention`: the retention pass and its background trigger.
//! - `schemas`: the schema registry's table.
//! - `migrate`: opening a file of an older layout (format 1 → 2).
//! - `error`: redb errors into [`LogError`].

mod error;
mod migrate;
mod read;
mod retention;
mod schemas;
mod tables;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use ::redb::{Database, ReadableDatabase, ReadableTable};

use self::error::storage;
use self::tables::*;
use self::writer::{Committed, Request, Writer};
use super::periodic::Periodic;
use super::watch::{EndSignal, EndWatch};
use super::{
    Appended, AttemptRecord, CommitOutcome, ConsumerCommit, DeadLetter, DeadLetterId, EventLog,
    ExpectedVersion, LogConfig, LogError, LogStats, NewEvent, Pending, RetentionReport,
    TopicConfig, TopicInfo,
};
use crate::event::{Position, StoredEvent};
use crate::histogram::{BATCH_SIZES, COMMIT_SECONDS, Histogram};

/// The redb-backed [`EventLog`].
///
/// Dropping it (or [`RedbLog::shutdown`]) finishes the queued writes, stops the writer and
/// the retention thread, and wakes watchers with [`LogError::Closed`].
pub struct RedbLog {
    shared: Arc<Shared>,
    requests: Sender<Request>,
    writer: Mutex<Option<JoinHandle<()>>>,
    retention: Mutex<Option<Periodic>>,
}

/// What the writer thread and the readers share.
pub(super) struct Shared {
    pub(super) db: Database,
    pub(super) config: LogConfig,
    /// Watched partitions by (topic, partition); the writer advances them after each commit.
    signals: Mutex<HashMap<(String, u32), Arc<EndSignal>>>,
    pub(super) stats: Counters,
    /// Makes the next commit fail after all its requests were applied.
    #[cfg(test)]
    pub(super) fail_next_commit: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(super) fn signals(&self) -> MutexGuard<'_, HashMap<(String, u32), Arc<EndSignal>>> {
        self.signals.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) struct Counters {
    pub(super) transactions: AtomicU64,
    pub(super) failed_transactions: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) events_appended: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) transaction_seconds: Histogram,
    pub(super) transaction_events: Histogram,
    /// The error of the latest write transaction, when it failed.
    pub(super) write_error: Mutex<Option<String>>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            transactions: AtomicU64::new(0),
            failed_transactions: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            events_appended: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            transaction_seconds: Histogram::new(COMMIT_SECONDS),
            transaction_events: Histogram::new(BATCH_SIZES),
            write_error: Mutex::new(None),
        }
    }
}

impl RedbLog {
    /// Opens the log in the redb file at `path`, creating it if missing. After a crash redb
    /// repairs the file on open; every acknowledged write is there.
    pub fn open(path: impl AsRef<Path>, config: LogConfig) -> Result<Self, LogError> {
        let db = ::redb::Builder::new()
            .set_cache_size(config.cache_bytes)
            .create(path)?;
        let committed = init(&db)?;
        let shared = Arc::new(Shared {
            db,
            config,
            signals: Mutex::default(),
            stats: Counters::default(),
            #[cfg(test)]
            fail_next_commit: Default::default(),
        });
        let (requests, rx) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            rx,
            committed,
        };
        let writer = std::thread::Builder::new()
            .name("evhost-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| LogError::Storage(storage(e)))?;
        let retention = retention::spawn_task(requests.clone(), shared.config.retention_interval)
            .map_err(|e| LogError::Storage(storage(e)));
        let log = Self {
            shared,
            requests,
            writer: Mutex::new(Some(writer)),
            retention: Mutex::new(None),
        };
        // On error, dropping `log` stops the writer again.
        *log.retention.lock().unwrap_or_else(PoisonError::into_inner) = Some(retention?);
        Ok(log)
    }

    /// Finishes the writes queued so far and stops; later writes answer [`LogError::Closed`].
    /// Idempotent; also what dropping the log does.
    pub fn shutdown(&self) {
        let retention = self
            .retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(retention) = retention {
            retention.stop();
        }
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            let _ = self.requests.send(Request::Shutdown);
            let _ = writer.join();
        }
    }

    fn send<T>(&self, request: impl FnOnce(super::pending::Answer<T>) -> Request) -> Pending<T> {
        let (answer, pending) = Pending::channel();
        // A send after shutdown drops the request, and with it `answer`: the Pending then
        // resolves to LogError::Closed.
        let _ = self.requests.send(request(answer));
        pending
    }

    #[cfg(test)]
    pub(super) fn fail_next_commit(&self) {
        self.shared
            .fail_next_commit
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for RedbLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Creates the tables on first open, checks the format, and loads the writer's cache.
fn init(db: &Database) -> Result<Committed, LogError> {
    let format = {
        let txn = db.begin_read()?;
        match txn.open_table(META) {
            Ok(meta) => meta.get(META_FORMAT)?.map(|g| g.value()),
            Err(::redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    match format {
        None | Some(LAYOUT) => {}
        Some(1) => migrate::from_v1(db)?,
        Some(found) => {
            return Err(LogError::UnsupportedFormat {
                found,
                supported: LAYOUT,
            });
        }
    }
    let counted = {
        let txn = db.begin_read()?;
        match txn.open_table(DEAD_LETTER_COUNTS) {
            Ok(_) => true,
            Err(::redb::TableError::TableDoesNotExist(_)) => false,
            Err(e) => return Err(e.into()),
        }
    };
    let txn = db.begin_write()?;
    {
        // Opening a table in a write transaction creates it.
        let mut tables = writer::Tables::open(&txn)?;
        if format.is_none() {
            tables.meta.insert(META_FORMAT, LAYOUT)?;
        }
        if !counted {
            // A file from before the counts: count its letters once, in this transaction.
            let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
            for row in tables.dead_letters.iter()? {
                let (_, record) = row?;
                let (_, record) = super::encoding::decode_dead_letter(record.value())?;
                *counts.entry(record.plugin).or_default() += 1;
            }
            for (plugin, n) in counts {
                tables.dead_letter_counts.insert(plugin.as_str(), n)?;
            }
        }
    }
    txn.commit()?;

    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let mut committed = Committed {
        next_topic_id: meta
            .get(META_NEXT_TOPIC)?
            .map_or(0, |g| g.value())
            .try_into()
            .map_err(|_| LogError::Corrupt("next topic id out of range".into()))?,
        next_dead_letter_id: meta.get(META_NEXT_DEAD_LETTER)?.map_or(0, |g| g.value()),
        ..Committed::default()
    };
    for row in txn.open_table(TOPICS)?.iter()? {
        let (name, meta) = row?;
        let meta = TopicMeta::decode(meta.value())?;
        committed.names.insert(meta.id, name.value().to_owned());
        committed.topics.insert(name.value().to_owned(), meta);
    }
    for row in txn.open_table(PARTITIONS)?.iter()? {
        let (key, info) = row?;
        committed
            .parts
            .insert(key.value(), part_from_row(info.value()));
    }
    Ok(committed)
}

impl EventLog for RedbLog {
    fn create_topic(&self, name: &str, config: TopicConfig) -> Pending<TopicInfo> {
        self.send(|answer| Request::CreateTopic {
            name: name.to_owned(),
            config,
            answer,
        })
    }

    fn topics(&self) -> Pending<Vec<TopicInfo>> {
        Pending::ready(read::topics(&self.shared.db))
    }

    fn topic(&self, name: &str) -> Pending<Option<TopicInfo>> {
        Pending::ready(read::topic(&self.shared.db, name))
    }

    fn append(&self, events: Vec<NewEvent>) -> Pending<Vec<Appended>> {
        if events.is_empty() {
            return Pending::ready(Ok(Vec::new()));
        }
        self.send(|answer| Request::Append { events, answer })
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_events: usize,
    ) -> Pending<Vec<StoredEvent>> {
        Pending::ready(read::read(
            &self.shared.db,
            topic,
            partition,
            from,
            max_events,
        ))
    }

    fn watch(&self, topic: &str, partition: u32) -> Pending<EndWatch> {
        // Topics are never deleted, so once this passes the signal below is not orphaned.
        if let Err(e) = read::partition_end(&self.shared.db, topic, partition) {
            return Pending::ready(Err(e));
        }
        let signal = self
            .shared
            .signals()
            .entry((topic.to_owned(), partition))
            .or_default()
            .clone();
        // Registered before reading the end: a commit after the read advances the signal,
        // one before it is in the read.
        Pending::ready(
            read::partition_end(&self.shared.db, topic, partition).map(|end| {
                signal.advance(end);
                EndWatch::new(signal)
            }),
        )
    }

    fn append_to_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Pending<Vec<Appended>> {
        self.send(|answer| Request::AppendStream {
            stream: stream.to_owned(),
            expected,
            events,
            answer,
        })
    }

    fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max_events: usize,
    ) -> Pending<Vec<StoredEvent>> {
        Pending::ready(read::read_stream(
            &self.shared.db,
            stream,
            from_version,
            max_events,
        ))
    }

    fn stream_version(&self, stream: &str) -> Pending<u64> {
        Pending::ready(read::stream_version(&self.shared.db, stream))
    }

    fn commit(&self, commit: ConsumerCommit) -> Pending<CommitOutcome> {
        self.send(|answer| Request::Commit {
            commit: Box::new(commit),
            answer,
        })
    }

    fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Pending<Option<u64>> {
        Pending::ready(read::committed_offset(
            &self.shared.db,
            group,
            topic,
            partition,
        ))
    }

    fn set_offset(&self, group: &str, topic: &str, partition: u32, next: u64) -> Pending<()> {
        self.send(|answer| Request::SetOffset {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            next,
            answer,
        })
    }

    fn attempts(&self, group: &str, position: &Position) -> Pending<Option<AttemptRecord>> {
        Pending::ready(read::attempts(&self.shared.db, group, position))
    }

    fn state_get(&self, namespace: &str, key: &str) -> Pending<Option<Vec<u8>>> {
        Pending::ready(read::state_get(&self.shared.db, namespace, key))
    }

    fn state_keys(&self, namespace: &str, prefix: &str, limit: usize) -> Pending<Vec<String>> {
        Pending::ready(read::state_keys(&self.shared.db, namespace, prefix, limit))
    }

    fn dead_letters(
        &self,
        plugin: Option<&str>,
        after: Option<DeadLetterId>,
        limit: usize,
    ) -> Pending<Vec<DeadLetter>> {
        Pending::ready(read::dead_letters(&self.shared.db, plugin, after, limit))
    }

    fn dead_letter(&self, id: DeadLetterId) -> Pending<Option<DeadLetter>> {
        Pending::ready(read::dead_letter(&self.shared.db, id))
    }

    fn delete_dead_letter(&self, id: DeadLetterId) -> Pending<bool> {
        self.send(|answer| Request::DeleteDeadLetter { id, answer })
    }

    fn dead_letter_counts(&self) -> Pending<std::collections::BTreeMap<String, u64>> {
        Pending::ready(read::dead_letter_counts(&self.shared.db))
    }

    fn enforce_retention(&self) -> Pending<RetentionReport> {
        self.send(|answer| Request::Retention { answer })
    }

    fn stats(&self) -> LogStats {
        let c = &self.shared.stats;
        LogStats {
            transactions: c.transactions.load(Ordering::Relaxed),
            failed_transactions: c.failed_transactions.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            events_appended: c.events_appended.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            transaction_seconds: c.transaction_seconds.snapshot(),
            transaction_events: c.transaction_events.snapshot(),
            write_error: match &*self.writer.lock().unwrap_or_else(PoisonError::into_inner) {
                None => Some("the log is closed".into()),
                Some(w) if w.is_finished() => Some("the log's writer thread stopped".into()),
                Some(_) => c
                    .write_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            },
        }
    }

    fn put_schema(&self, schema: super::SchemaRecord) -> Pending<super::SchemaPut> {
        if self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            return Pending::ready(Err(LogError::Closed));
        }
        let result = schemas::put(&self.shared, &schema);
        let c = &self.shared.stats;
        c.requests.fetch_add(1, Ordering::Relaxed);
        if matches!(result, Ok(super::SchemaPut::Created)) {
            c.transactions.fetch_add(1, Ordering::Relaxed);
        }
        Pending::ready(result)
    }

    fn schemas(&self) -> Pending<Vec<super::SchemaRecord>> {
        Pending::ready(schemas::list(&self.shared.db))
    }
}

/// The runtime reads plugin state through this (committed values only: a call sees its own
/// buffered writes on top, which the runtime keeps).
impl crate::runtime::StateStore for RedbLog {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        read::state_get(&self.shared.db, plugin, key).map_err(|e| e.to_string())
    }

    fn keys(&self, plugin: &str, prefix: &str) -> Result<Vec<String>, String> {
        read::state_keys(&self.shared.db, plugin, prefix, usize::MAX).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
