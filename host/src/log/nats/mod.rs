//! [`NatsLog`]: the [`EventLog`] on NATS JetStream (nats-server 2.12+, atomic batches).
//!
//! Everything lives in one JetStream stream, `EVHOST_<prefix>` over `evh.<prefix>.>`
//! (`layout`), so that any write — an append, a stream append, a whole consumer commit — is
//! one atomic batch (`batch`): a batch spans one stream only. Each write reads the last
//! message of the subjects it depends on (direct get), runs the same checks as every other
//! backend (`super::rules`), and publishes one batch fenced with
//! `Nats-Expected-Last-Subject-Sequence` on exactly those subjects: if any moved in between,
//! the server refuses the whole batch and the write is decided again from a fresh read.
//! `ARCHITECTURE.md`, section `log/`, "How the NATS backend does it", has the whole design.
//!
//! - `layout`: subjects, the escaping of names into tokens, header names.
//! - `batch`: the atomic batch publish and its fences.
//! - `read`: direct gets, offset search, partition extents, reads.
//! - `write`: appends, stream appends, the consumer commit, offsets, dead letters.
//! - `records`: the reads that decode records (events, streams, offsets, state, ...).
//! - `retention`: the retention pass and dedupe expiry.
//! - `lease`: members and partition leases of daemons sharing the log.

mod batch;
mod layout;
mod lease;
mod read;
mod records;
mod retention;
mod write;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, stream::Stream};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use self::layout::Layout;
use super::watch::{EndSignal, EndWatch};
use super::{
    Appended, AttemptRecord, CommitOutcome, ConsumerCommit, DeadLetter, DeadLetterId, EventLog,
    ExpectedVersion, LeaseFence, LeaseKey, LeaseState, Leases, LogConfig, LogError, LogStats,
    MemberState, NewEvent, Pending, RetentionReport, StorageFailure, TopicConfig, TopicInfo,
};
use crate::event::{Position, StoredEvent};
use crate::histogram::{BATCH_SIZES, COMMIT_SECONDS, Histogram};

/// Where the NATS log lives and how it is replicated.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port` URLs of the cluster's servers (any of them will do).
    pub servers: Vec<String>,
    /// Names this installation in a shared cluster: the stream is `EVHOST_<prefix>`, the
    /// subjects `evh.<prefix>.…`. 1 to 32 of `[A-Za-z0-9_-]`.
    pub prefix: String,
    /// The stream's replicas: 1, or 3 on a cluster (an ack then means "stored on a quorum").
    pub replicas: usize,
    /// The most messages one atomic batch may hold: the server's
    /// `jetstream { limits { batch { max_msgs } } }` (1000 unless raised there). An event
    /// takes two messages (three in a stream), so this bounds the events of one append or
    /// commit; a bigger one is refused with [`LogError::Invalid`], never split.
    pub max_batch_messages: usize,
    /// The log settings every backend honours (clock, dedupe window, limits, retention).
    pub log: LogConfig,
}

impl NatsConfig {
    pub fn new(servers: Vec<String>, prefix: impl Into<String>) -> Self {
        Self {
            servers,
            prefix: prefix.into(),
            replicas: 1,
            max_batch_messages: batch::MAX_BATCH,
            log: LogConfig::default(),
        }
    }
}

/// The [`EventLog`] on a NATS JetStream stream. It owns a small tokio runtime its requests
/// run on, so it answers async and blocking callers alike.
///
/// Dropping it (or [`NatsLog::shutdown`]) stops background retention and wakes watchers with
/// [`LogError::Closed`]; writes after a shutdown answer `Closed`. What is stored stays in
/// the stream.
pub struct NatsLog {
    shared: Arc<Shared>,
    runtime: Mutex<Option<Runtime>>,
    handle: tokio::runtime::Handle,
    /// Writes run one after the other, in the order they were submitted (`writer`).
    writes: mpsc::UnboundedSender<Job>,
}

/// A write waiting for its turn.
type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

pub(super) struct Shared {
    client: async_nats::Client,
    stream: Stream,
    layout: Layout,
    config: LogConfig,
    /// [`NatsConfig::max_batch_messages`].
    max_batch: usize,
    /// Held by a retention pass.
    retention: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    signals: Mutex<HashMap<(String, u32), Arc<EndSignal>>>,
    counters: Mutex<Counters>,
    transaction_seconds: Histogram,
    transaction_events: Histogram,
}

#[derive(Default)]
struct Counters {
    transactions: u64,
    failed_transactions: u64,
    requests: u64,
    events_appended: u64,
    duplicates: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

/// A failure of the server or the connection, before anything was written.
pub(super) fn storage(what: impl std::fmt::Display) -> LogError {
    LogError::Storage(StorageFailure::new("nats", Failure(what.to_string())))
}

impl Shared {
    fn check_open(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::SeqCst) {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    fn now_ms(&self) -> u64 {
        super::encoding::millis_since_epoch(self.config.clock.now())
    }

    /// Wakes the watchers of partitions whose end moved.
    fn advanced(&self, moved: &[((String, u32), u64)]) {
        let signals = lock(&self.signals);
        for (key, end) in moved {
            if let Some(signal) = signals.get(key) {
                signal.advance(*end);
            }
        }
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut lock(&self.counters));
    }
}

impl NatsLog {
    /// Connects and creates (or opens) the installation's stream.
    pub fn connect(config: NatsConfig) -> Result<Self, LogError> {
        let layout = Layout::new(&config.prefix)?;
        if !matches!(config.replicas, 1 | 3) {
            return Err(LogError::Invalid(format!(
                "a NATS log has 1 or 3 replicas, not {}",
                config.replicas
            )));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("evhost-nats")
            .enable_all()
            .build()
            .map_err(|e| storage(format!("cannot start the NATS runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (tx, pending) = Pending::channel();
        handle.spawn(async move {
            let _ = tx.send(open(config, layout).await);
        });
        let shared = Arc::new(pending.wait()?);
        retention::spawn_background(&handle, Arc::downgrade(&shared));
        handle.spawn(refresh_watched(Arc::downgrade(&shared)));
        // The writer: one write at a time, in submission order, so that two writes a caller
        // issues one after the other land in that order (as with the other backends). Each
        // write is still fenced, so writers in other processes cannot break it.
        let (writes, mut queue) = mpsc::unbounded_channel::<Job>();
        handle.spawn(async move {
            while let Some(job) = queue.recv().await {
                job.await;
            }
        });
        Ok(Self {
            shared,
            runtime: Mutex::new(Some(runtime)),
            handle,
            writes,
        })
    }

    /// Stops: watchers wake with [`LogError::Closed`], later writes answer it. Idempotent;
    /// also what dropping the log does.
    pub fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for signal in lock(&self.shared.signals).values() {
            signal.close();
        }
    }

    /// Runs `op` on the log's runtime and answers through a [`Pending`].
    fn run<T, F>(&self, op: impl FnOnce(Arc<Shared>) -> F) -> Pending<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, LogError>> + Send + 'static,
    {
        let (tx, pending) = Pending::channel();
        let future = op(self.shared.clone());
        self.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        pending
    }

    /// Like [`NatsLog::run`], for writes: refused once shut down, counted in [`LogStats`].
    fn write<T, F>(&self, op: impl FnOnce(Arc<Shared>) -> F) -> Pending<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, LogError>> + Send + 'static,
    {
        if let Err(e) = self.shared.check_open() {
            return Pending::ready(Err(e));
        }
        let shared = self.shared.clone();
        let (tx, pending) = Pending::channel();
        let future = op(self.shared.clone());
        let job: Job = Box::pin(async move {
            let result = future.await;
            shared.count(|c| c.requests += 1);
            let _ = tx.send(result);
        });
        // A send fails only once the writer is gone (the log is being dropped): the dropped
        // job's answer is then `Closed`.
        let _ = self.writes.send(job);
        pending
    }
}

/// How often watched partitions' ends are read back, in case announcements were lost.
const WATCH_REFRESH: Duration = Duration::from_secs(1);

/// Announcements of stored events are core NATS messages: at most once. One sent while this
/// client was reconnecting, or by a stream leader that died right after committing, never
/// arrives, and a consumer waiting for it would wait until the next append. So every watched
/// partition's end is also read back every [`WATCH_REFRESH`]: a lost wake-up costs at most
/// that long. Ends with the log.
async fn refresh_watched(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(WATCH_REFRESH).await;
        let Some(s) = shared.upgrade() else {
            return;
        };
        if s.check_open().is_err() {
            return;
        }
        let watched: Vec<((String, u32), Arc<EndSignal>)> = lock(&s.signals)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((topic, partition), signal) in watched {
            match read::last(&s.stream, &s.layout.events(&topic, partition)).await {
                Ok(last) => {
                    if let Ok(end) = read::end_of(&last) {
                        signal.advance(end);
                    }
                }
                Err(e) => tracing::debug!(%topic, partition, "cannot read the end back: {e}"),
            }
        }
    }
}

/// Advances a partition's end from the stream's announcements of stored events, whichever
/// process wrote them. Ends with the log's runtime.
async fn follow(mut subscriber: async_nats::Subscriber, signal: Arc<EndSignal>) {
    use futures_util::StreamExt;
    while let Some(msg) = subscriber.next().await {
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .and_then(|v| v.as_str().parse::<u64>().ok())
        };
        let Some(offset) = header(layout::OFFSET) else {
            continue;
        };
        let marker = msg
            .headers
            .as_ref()
            .is_some_and(|h| h.get(layout::MARK).is_some());
        signal.advance(if marker { offset } else { offset + 1 });
    }
}

async fn open(config: NatsConfig, layout: Layout) -> Result<Shared, LogError> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(config.servers.as_slice())
        .await
        .map_err(|e| storage(format!("cannot connect to {:?}: {e}", config.servers)))?;
    let js = jetstream::new(client.clone());
    let wanted = jetstream::stream::Config {
        name: layout.stream_name().to_owned(),
        subjects: vec![layout.all()],
        storage: jetstream::stream::StorageType::File,
        num_replicas: config.replicas,
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        allow_direct: true,
        allow_atomic_publish: true,
        // Watchers in every process learn of stored events from this (sent only once a
        // batch is committed; core subscribers of the stream's own subjects would also
        // see uncommitted and abandoned batch messages).
        republish: Some(jetstream::stream::Republish {
            source: layout.all_events(),
            destination: layout.all_events_stored(),
            headers_only: true,
        }),
        description: Some("evhost event log".into()),
        ..Default::default()
    };
    let cannot = |e: &dyn std::fmt::Display| {
        storage(format!(
            "cannot create or open stream {}: {e}",
            layout.stream_name()
        ))
    };
    let mut stream = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| cannot(&e))?;
    // A stream made by an older build, or by hand, may lack what the backend relies on:
    // switch it on, keeping everything else (limits, replicas) as the operator set it.
    let existing = stream.cached_info().config.clone();
    if !existing.allow_atomic_publish
        || !existing.allow_direct
        || existing.republish != wanted.republish
    {
        js.update_stream(jetstream::stream::Config {
            allow_atomic_publish: true,
            allow_direct: true,
            republish: wanted.republish,
            ..existing
        })
        .await
        .map_err(|e| cannot(&e))?;
        stream = js
            .get_stream(layout.stream_name())
            .await
            .map_err(|e| cannot(&e))?;
    }
    Ok(Shared {
        client,
        stream,
        layout,
        max_batch: config.max_batch_messages.max(1),
        retention: tokio::sync::Mutex::new(()),
        config: config.log,
        closed: AtomicBool::new(false),
        signals: Mutex::new(HashMap::new()),
        counters: Mutex::new(Counters::default()),
        transaction_seconds: Histogram::new(COMMIT_SECONDS),
        transaction_events: Histogram::new(BATCH_SIZES),
    })
}

impl Drop for NatsLog {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(runtime) = lock(&self.runtime).take() {
            // Not `drop`: that blocks, and panics when the log is dropped in async code.
            runtime.shutdown_background();
        }
    }
}

impl EventLog for NatsLog {
    fn create_topic(&self, name: &str, config: TopicConfig) -> Pending<TopicInfo> {
        let name = name.to_owned();
        self.write(move |s| async move { write::create_topic(&s, &name, config).await })
    }

    fn topics(&self) -> Pending<Vec<TopicInfo>> {
        self.run(|s| async move { records::topics(&s).await })
    }

    fn topic(&self, name: &str) -> Pending<Option<TopicInfo>> {
        let name = name.to_owned();
        self.run(move |s| async move {
            match read::topic_config(&s.stream, &s.layout, &name).await?.0 {
                Some(config) => Ok(Some(
                    read::topic_info(&s.stream, &s.layout, &name, config).await?,
                )),
                None => Ok(None),
            }
        })
    }

    fn append(&self, events: Vec<NewEvent>) -> Pending<Vec<Appended>> {
        if events.is_empty() {
            return Pending::ready(Ok(Vec::new()));
        }
        self.write(move |s| async move { write::append(&s, events).await })
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_events: usize,
    ) -> Pending<Vec<StoredEvent>> {
        let topic = topic.to_owned();
        self.run(
            move |s| async move { records::read(&s, &topic, partition, from, max_events).await },
        )
    }

    fn watch(&self, topic: &str, partition: u32) -> Pending<EndWatch> {
        let topic = topic.to_owned();
        self.run(move |s| async move {
            let (config, _) = read::topic_config(&s.stream, &s.layout, &topic).await?;
            super::rules::locate(&topic, config.map(|c| c.partitions), partition)?;
            // Registered (and subscribed) before the end is read, so no append in between
            // is missed (an advance never lowers the end).
            let key = (topic.clone(), partition);
            let existing = lock(&s.signals).get(&key).cloned();
            let signal = match existing {
                Some(signal) => signal,
                None => {
                    let subscriber = s
                        .client
                        .subscribe(s.layout.events_stored(&topic, partition))
                        .await
                        .map_err(|e| storage(format!("cannot watch {topic}/{partition}: {e}")))?;
                    let mut signals = lock(&s.signals);
                    match signals.get(&key) {
                        // Another watch of the same partition won the race: its subscriber
                        // serves both.
                        Some(signal) => signal.clone(),
                        None => {
                            let signal = Arc::<EndSignal>::default();
                            signals.insert(key, signal.clone());
                            tokio::spawn(follow(subscriber, signal.clone()));
                            signal
                        }
                    }
                }
            };
            if s.closed.load(Ordering::SeqCst) {
                signal.close();
            }
            let last = read::last(&s.stream, &s.layout.events(&topic, partition)).await?;
            signal.advance(read::end_of(&last)?);
            Ok(EndWatch::new(signal))
        })
    }

    fn append_to_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Pending<Vec<Appended>> {
        let stream = stream.to_owned();
        self.write(
            move |s| async move { write::append_to_stream(&s, &stream, expected, events).await },
        )
    }

    fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max_events: usize,
    ) -> Pending<Vec<StoredEvent>> {
        let stream = stream.to_owned();
        self.run(move |s| async move {
            records::read_stream(&s, &stream, from_version, max_events).await
        })
    }

    fn stream_version(&self, stream: &str) -> Pending<u64> {
        let stream = stream.to_owned();
        self.run(move |s| async move {
            let last = read::last(&s.stream, &s.layout.stream(&stream)).await?;
            match last {
                Some(msg) => read::header_u64(&msg, layout::VERSION),
                None => Ok(0),
            }
        })
    }

    fn commit(&self, commit: ConsumerCommit) -> Pending<CommitOutcome> {
        self.write(move |s| async move { write::commit(&s, commit).await })
    }

    fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Pending<Option<u64>> {
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.run(move |s| async move {
            records::locate(&s, &topic, partition).await?;
            records::committed(&s, &group, &topic, partition)
                .await
                .map(|(next, _)| next)
        })
    }

    fn set_offset(&self, group: &str, topic: &str, partition: u32, next: u64) -> Pending<()> {
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.write(
            move |s| async move { write::set_offset(&s, &group, &topic, partition, next).await },
        )
    }

    fn attempts(&self, group: &str, position: &Position) -> Pending<Option<AttemptRecord>> {
        let (group, position) = (group.to_owned(), position.clone());
        self.run(move |s| async move { records::attempts(&s, &group, &position).await })
    }

    fn state_get(&self, namespace: &str, key: &str) -> Pending<Option<Vec<u8>>> {
        let (namespace, key) = (namespace.to_owned(), key.to_owned());
        self.run(move |s| async move { records::state_get(&s, &namespace, &key).await })
    }

    fn state_keys(&self, namespace: &str, prefix: &str, limit: usize) -> Pending<Vec<String>> {
        let (namespace, prefix) = (namespace.to_owned(), prefix.to_owned());
        self.run(move |s| async move { records::state_keys(&s, &namespace, &prefix, limit).await })
    }

    fn dead_letters(
        &self,
        plugin: Option<&str>,
        after: Option<DeadLetterId>,
        limit: usize,
    ) -> Pending<Vec<DeadLetter>> {
        let plugin = plugin.map(str::to_owned);
        self.run(move |s| async move {
            records::dead_letters(&s, plugin.as_deref(), after, limit).await
        })
    }

    fn dead_letter(&self, id: DeadLetterId) -> Pending<Option<DeadLetter>> {
        self.run(move |s| async move { records::dead_letter(&s, id).await.map(|d| d.map(|d| d.0)) })
    }

    fn delete_dead_letter(&self, id: DeadLetterId) -> Pending<bool> {
        self.write(move |s| async move { write::delete_dead_letter(&s, id).await })
    }

    fn enforce_retention(&self) -> Pending<RetentionReport> {
        self.write(|s| async move { retention::run(&s).await })
    }

    fn leases(&self) -> Option<&dyn Leases> {
        Some(self)
    }

    fn stats(&self) -> LogStats {
        let c = lock(&self.shared.counters);
        LogStats {
            transactions: c.transactions,
            failed_transactions: c.failed_transactions,
            requests: c.requests,
            events_appended: c.events_appended,
            duplicates: c.duplicates,
            transaction_seconds: self.shared.transaction_seconds.snapshot(),
            transaction_events: self.shared.transaction_events.snapshot(),
        }
    }
}

impl Leases for NatsLog {
    fn heartbeat(&self, id: &str, groups: Vec<String>) -> Pending<()> {
        let id = id.to_owned();
        self.run(move |s| async move { lease::heartbeat(&s, &id, groups).await })
    }

    fn leave(&self, id: &str) -> Pending<()> {
        let id = id.to_owned();
        self.run(move |s| async move { lease::leave(&s, &id).await })
    }

    fn members(&self) -> Pending<Vec<MemberState>> {
        self.run(|s| async move { lease::members(&s).await })
    }

    fn leases(&self) -> Pending<Vec<LeaseState>> {
        self.run(|s| async move { lease::leases(&s).await })
    }

    fn acquire(&self, key: &LeaseKey, owner: &str, seen: u64) -> Pending<LeaseFence> {
        let (key, owner) = (key.clone(), owner.to_owned());
        self.run(move |s| async move { lease::acquire(&s, &key, &owner, seen).await })
    }

    fn renew(&self, fence: &LeaseFence) -> Pending<()> {
        let fence = fence.clone();
        self.run(move |s| async move {
            let owner = Some(fence.owner.clone());
            lease::rewrite(&s, &fence, owner).await
        })
    }

    fn release(&self, fence: &LeaseFence) -> Pending<()> {
        let fence = fence.clone();
        self.run(move |s| async move { lease::rewrite(&s, &fence, None).await })
    }
}

/// The runtime reads plugin state through this (committed values only).
impl crate::runtime::StateStore for NatsLog {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.state_get(plugin, key)
            .wait()
            .map_err(|e| e.to_string())
    }

    fn keys(&self, plugin: &str, prefix: &str) -> Result<Vec<String>, String> {
        self.state_keys(plugin, prefix, usize::MAX)
            .wait()
            .map_err(|e| e.to_string())
    }
}

/// Keeps `Weak` in scope for `retention` (the background task holds the log weakly).
pub(super) type WeakShared = Weak<Shared>;
