//! The dispatcher's own logic, tested without Wasm: native handlers (Rust
//! closures run through the same `Instance` API) on the in-memory log, with
//! wrappers that make the log fail or panic at chosen points.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use super::*;
use crate::event::{Event, Position, StoredEvent};
use crate::log::{
    AttemptRecord, ConsumerCommit, DeadLetter, LogConfig, NewEvent, Pending, StateChange,
    TopicConfig,
};
use crate::runtime::{
    Effects, Emit, Failure, LoadedPlugin, NativeHandler, PluginInfo, RuntimeConfig,
};

const DEADLINE: Duration = Duration::from_secs(20);

/// The log under test: a fresh in-memory log (the same contract as redb's,
/// checked by `host/tests/log_api.rs`), so these tests need neither disk nor Wasm.
fn fresh_log(config: LogConfig) -> Arc<dyn EventLog> {
    Arc::new(crate::log::MemoryLog::new(config).expect("log opens"))
}

fn event(ty: &str, subject: &str, data: &str) -> Event {
    let id = crate::event::new_event_id();
    Event {
        id: id.clone(),
        source: "test".into(),
        specversion: "1.0".into(),
        ty: ty.into(),
        subject: Some(subject.into()),
        time: crate::event::now_rfc3339(),
        datacontenttype: Some("text/plain".into()),
        dataschema: None,
        data: Some(data.as_bytes().to_vec()),
        correlationid: id,
        causationid: None,
        actor: None,
        extensions: BTreeMap::new(),
        stream: None,
        streamversion: None,
    }
}

/// An emit of `ty` to `topic` caused by `cause`, with a deterministic id.
fn emit_of(cause: &StoredEvent, topic: &str, ty: &str, data: Vec<u8>) -> Emit {
    let mut e = event(ty, cause.event.subject.as_deref().unwrap_or(""), "");
    e.id = format!("{}:{ty}", cause.event.id);
    e.data = Some(data);
    e.causationid = Some(cause.event.id.clone());
    Emit {
        topic: topic.into(),
        event: e,
    }
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        multiplier: 2.0,
        jitter: 0.0,
    }
}

fn native(name: &str, handler: NativeHandler) -> Arc<LoadedPlugin> {
    LoadedPlugin::native(
        PluginInfo {
            name: name.into(),
            version: "1.0.0".into(),
            subscriptions: vec![crate::runtime::Subscription {
                topic: "in".into(),
                event_type: "*".into(),
            }],
            retry: Some(policy(3)),
        },
        handler,
    )
}

/// A dispatcher over `log` with small batches, so tests reach the fast path
/// after a few events.
struct Harness {
    log: Arc<dyn EventLog>,
    dispatcher: Arc<Dispatcher>,
    events: broadcast::Receiver<DispatchEvent>,
}

impl Harness {
    fn new(log: Arc<dyn EventLog>, config: DispatchConfig) -> Self {
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).expect("runtime"));
        let dispatcher = Dispatcher::new(log.clone(), runtime, config);
        let events = dispatcher.subscribe();
        Harness {
            log,
            dispatcher,
            events,
        }
    }

    fn config() -> DispatchConfig {
        DispatchConfig {
            batch_size: 4,
            topic_scan_interval: Duration::from_millis(20),
            ..DispatchConfig::default()
        }
    }

    fn deploy(&self, plugin: Arc<LoadedPlugin>, settings: PluginSettings, load_number: u64) {
        self.dispatcher.deploy(Deployment {
            plugin,
            settings,
            load_number,
        });
    }

    async fn publish(&self, events: Vec<Event>) {
        let events = events
            .into_iter()
            .map(|e| NewEvent::to_topic("in", e))
            .collect();
        self.log.append(events).await.expect("append");
    }

    async fn read(&self, topic: &str) -> Vec<StoredEvent> {
        match self.log.topic(topic).await.expect("topic") {
            None => Vec::new(),
            Some(info) => {
                let mut out = Vec::new();
                for p in 0..info.partitions.len() as u32 {
                    out.extend(self.log.read(topic, p, 0, usize::MAX).await.expect("read"));
                }
                out
            }
        }
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.log
            .dead_letters(None, None, 1000)
            .await
            .expect("dead letters")
    }

    async fn committed(&self, plugin: &str) -> Option<u64> {
        self.log
            .committed_offset(plugin, "in", 0)
            .await
            .expect("offset")
    }

    async fn status(&self, plugin: &str) -> PluginStatus {
        self.dispatcher
            .plugins()
            .await
            .into_iter()
            .find(|p| p.name == plugin)
            .expect("plugin deployed")
    }

    /// Waits for `cond`, failing the test after the deadline.
    async fn until<F, Fut>(&self, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !cond().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn feed(&mut self) -> Vec<DispatchEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }
}

fn settings() -> PluginSettings {
    PluginSettings {
        grants: crate::runtime::Grants::all(),
        ..PluginSettings::default()
    }
}

/// Calls per event id.
#[derive(Default, Clone)]
struct Calls(Arc<Mutex<BTreeMap<String, u32>>>);

impl Calls {
    fn count(&self, e: &StoredEvent) -> u32 {
        let mut calls = self.0.lock().unwrap();
        let n = calls.entry(e.event.id.clone()).or_default();
        *n += 1;
        *n
    }

    fn of(&self, id: &str) -> u32 {
        self.0.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

// ---- refusals by the log park the call at once, with the log's reason ----

/// Emits one event per input into `out`; the data of an input whose subject
/// is `big` makes an emit of `big_bytes` bytes.
fn echo(calls: Calls, out: &'static str, big_bytes: usize) -> NativeHandler {
    Arc::new(move |e: &StoredEvent, _attempt| {
        calls.count(e);
        let data = if e.event.subject.as_deref() == Some("big") {
            vec![b'x'; big_bytes]
        } else {
            b"small".to_vec()
        };
        Ok(Effects {
            emits: vec![emit_of(e, out, "echo.done", data)],
            state: BTreeMap::from([(e.event.id.clone(), Some(b"seen".to_vec()))]),
        })
    })
}

/// `calls` is how often the handler saw the event: once alone; twice when
/// it was first called in a batch whose commit the log refused (which event
/// of the batch caused it is found by calling them one at a time).
async fn assert_parked_as_refused(h: &Harness, calls: &Calls, big: &Event, why: &str, n: u32) {
    let letters = h.dead_letters().await;
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    let dl = &letters[0].record;
    assert_eq!(dl.event.event.id, big.id);
    assert_eq!(dl.kind, FailureKind::Rejected);
    assert_eq!(dl.attempts, 1, "parked at its first attempt");
    assert!(
        dl.message.contains(why),
        "the log's reason is in the dead letter: {}",
        dl.message
    );
    assert_eq!(calls.of(&big.id), n, "an invalid request is never retried");
    // Nothing of the refused call is committed: no state written for it.
    assert_eq!(
        h.log.state_get("echo", &big.id).await.unwrap(),
        None,
        "the refused call's state write is not committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_too_large_for_the_log_is_parked_as_rejected_at_once_and_the_partition_moves_on() {
    let limit = 4096;
    let log = fresh_log(LogConfig {
        max_event_bytes: limit,
        ..LogConfig::default()
    });
    let h = Harness::new(log, Harness::config());
    let calls = Calls::default();
    // Just under the limit as data, over it once the envelope is stored.
    h.deploy(
        native("echo", echo(calls.clone(), "out", limit - 100)),
        settings(),
        1,
    );
    // The first events go the careful path (one at a time) ...
    let first = event("t", "big", "");
    let mut inputs = vec![first.clone()];
    inputs.extend((0..3).map(|i| event("t", &format!("s{i}"), "")));
    h.publish(inputs).await;
    h.until("the first four events settled", || async {
        h.committed("echo").await == Some(4)
    })
    .await;
    assert_parked_as_refused(&h, &calls, &first, &format!("the limit is {limit}"), 1).await;
    assert_eq!(h.read("out").await.len(), 3, "the small ones' emits");

    // ... then the fast path: a batch whose middle event's emit is refused
    // commits nothing of the batch, and its events are redone one at a time.
    let second = event("t", "big", "");
    let batch = vec![
        event("t", "s4", ""),
        event("t", "s5", ""),
        second.clone(),
        event("t", "s6", ""),
    ];
    // Clear the first letter so the check below sees only the second.
    let first_letter = h.dead_letters().await[0].id;
    assert!(h.log.delete_dead_letter(first_letter).await.unwrap());
    h.publish(batch.clone()).await;
    h.until("the batch settled", || async {
        h.committed("echo").await == Some(8)
    })
    .await;
    assert_parked_as_refused(&h, &calls, &second, "bytes encoded", 2).await;
    let out = h.read("out").await;
    assert_eq!(out.len(), 6, "every small event's emit, once");
    for e in batch.iter().filter(|e| e.id != second.id) {
        let emitted = out
            .iter()
            .filter(|o| o.event.causationid.as_deref() == Some(&e.id))
            .count();
        assert_eq!(emitted, 1, "effects of {} committed exactly once", e.id);
    }
    h.dispatcher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_to_an_unknown_topic_with_auto_create_off_is_parked_as_rejected_at_once() {
    let log = fresh_log(LogConfig {
        auto_create_topics: false,
        ..LogConfig::default()
    });
    log.create_topic("in", TopicConfig::default())
        .await
        .unwrap();
    let h = Harness::new(log, Harness::config());
    let calls = Calls::default();
    h.deploy(
        native("echo", echo(calls.clone(), "nowhere", 0)),
        settings(),
        1,
    );
    let e = event("t", "s", "");
    let later = event("t", "s", "");
    h.publish(vec![e.clone(), later.clone()]).await;
    h.until("both events settled", || async {
        h.committed("echo").await == Some(2)
    })
    .await;
    let letters = h.dead_letters().await;
    assert_eq!(letters.len(), 2, "each refused emit parks its event");
    for (dl, input) in letters.iter().zip([&e, &later]) {
        assert_eq!(dl.record.event.event.id, input.id);
        assert_eq!(dl.record.kind, FailureKind::Rejected);
        assert_eq!(dl.record.attempts, 1);
        assert!(
            dl.record.message.contains("unknown topic `nowhere`"),
            "{}",
            dl.record.message
        );
        assert_eq!(calls.of(&input.id), 1);
    }
    h.dispatcher.shutdown(Duration::from_secs(5)).await;
}

// ---- supervised consumers ----

/// A log that panics inside `read` the first time it is armed: a bug in the
/// consumer's own task, which the supervisor must survive.
struct PanicOnce {
    inner: Arc<dyn EventLog>,
    armed: AtomicBool,
}

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        fn $name(&self, $($arg: $ty),*) -> $ret {
            self.inner.$name($($arg),*)
        }
    )*};
}

macro_rules! delegate_all_but_read_and_commit {
    () => {
        delegate! {
            create_topic(name: &str, config: TopicConfig) -> Pending<crate::log::TopicInfo>;
            topics() -> Pending<Vec<crate::log::TopicInfo>>;
            topic(name: &str) -> Pending<Option<crate::log::TopicInfo>>;
            append(events: Vec<NewEvent>) -> Pending<Vec<crate::log::Appended>>;
            watch(topic: &str, partition: u32) -> Pending<crate::log::EndWatch>;
            append_to_stream(stream: &str, expected: crate::log::ExpectedVersion, events: Vec<NewEvent>) -> Pending<Vec<crate::log::Appended>>;
            read_stream(stream: &str, from_version: u64, max_events: usize) -> Pending<Vec<StoredEvent>>;
            stream_version(stream: &str) -> Pending<u64>;
            committed_offset(group: &str, topic: &str, partition: u32) -> Pending<Option<u64>>;
            set_offset(group: &str, topic: &str, partition: u32, next: u64) -> Pending<()>;
            attempts(group: &str, position: &Position) -> Pending<Option<AttemptRecord>>;
            state_get(namespace: &str, key: &str) -> Pending<Option<Vec<u8>>>;
            state_keys(namespace: &str, prefix: &str, limit: usize) -> Pending<Vec<String>>;
            dead_letters(plugin: Option<&str>, after: Option<DeadLetterId>, limit: usize) -> Pending<Vec<DeadLetter>>;
            dead_letter(id: DeadLetterId) -> Pending<Option<DeadLetter>>;
            delete_dead_letter(id: DeadLetterId) -> Pending<bool>;
            enforce_retention() -> Pending<crate::log::RetentionReport>;
            stats() -> crate::log::LogStats;
        }
    };
}

impl EventLog for PanicOnce {
    delegate_all_but_read_and_commit!();

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Pending<Vec<StoredEvent>> {
        if topic == "in" && self.armed.swap(false, Ordering::SeqCst) {
            panic!("injected panic in the consumer's read");
        }
        self.inner.read(topic, partition, from, max)
    }

    fn commit(&self, commit: ConsumerCommit) -> Pending<crate::log::CommitOutcome> {
        self.inner.commit(commit)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_panics_is_restarted_from_its_offset_and_its_events_are_handled() {
    let inner = fresh_log(LogConfig::default());
    let log = Arc::new(PanicOnce {
        inner,
        armed: AtomicBool::new(false),
    });
    let h = Harness::new(log.clone(), Harness::config());
    let calls = Calls::default();
    h.deploy(native("echo", echo(calls.clone(), "out", 0)), settings(), 1);
    h.publish((0..3).map(|i| event("t", &format!("s{i}"), "")).collect())
        .await;
    h.until("the first events handled", || async {
        h.read("out").await.len() == 3
    })
    .await;
    // The consumer's next read panics inside its task.
    log.armed.store(true, Ordering::SeqCst);
    h.publish((3..10).map(|i| event("t", &format!("s{i}"), "")).collect())
        .await;
    h.until("every event handled after the restart", || async {
        h.committed("echo").await == Some(10)
    })
    .await;
    assert!(!log.armed.load(Ordering::SeqCst), "the panic happened");
    let out = h.read("out").await;
    assert_eq!(out.len(), 10, "every event's effect exactly once");
    let status = h.status("echo").await;
    assert_eq!(status.consumer_restarts, 1);
    let error = status.consumer_error.unwrap_or_default();
    assert!(
        error.contains("panicked: injected panic") && error.contains("in/0"),
        "the cause is shown on the plugin: {error}"
    );
    h.dispatcher.shutdown(Duration::from_secs(5)).await;
}

// ---- breaker probes that end early hand the probe on ----

/// A log that fails the `fail_at`-th commit carrying only attempt records
/// (the bookkeeping written around calls) as a storage failure.
struct FailBookkeeping {
    inner: Arc<dyn EventLog>,
    seen: AtomicU32,
    fail_at: u32,
}

impl EventLog for FailBookkeeping {
    delegate_all_but_read_and_commit!();

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Pending<Vec<StoredEvent>> {
        self.inner.read(topic, partition, from, max)
    }

    fn commit(&self, commit: ConsumerCommit) -> Pending<crate::log::CommitOutcome> {
        let bookkeeping = commit.offset.is_none()
            && commit.emits.is_empty()
            && commit.dead_letter.is_none()
            && !commit.attempts.is_empty()
            && commit.attempts.iter().all(|a| a.record.is_some());
        if bookkeeping && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            return Pending::ready(Err(crate::log::LogError::Storage(
                crate::log::StorageFailure::new("test", std::io::Error::other("injected")),
            )));
        }
        self.inner.commit(commit)
    }
}

/// Fails with `retry` for the first `failures` calls, then succeeds.
fn flaky(calls: Arc<AtomicU32>, failures: u32, panic_on: Option<u32>) -> NativeHandler {
    Arc::new(move |e: &StoredEvent, _| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if Some(n) == panic_on {
            panic!("injected panic during call {n}");
        }
        if n <= failures {
            return Err(Failure::Retry(format!("down ({n})")));
        }
        Ok(Effects {
            emits: vec![emit_of(e, "out", "flaky.done", Vec::new())],
            state: BTreeMap::new(),
        })
    })
}

fn breaker_config() -> DispatchConfig {
    DispatchConfig {
        breaker: BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_millis(100),
        },
        ..Harness::config()
    }
}

async fn assert_breaker_closes_and_event_is_handled(h: &mut Harness) {
    h.until("the event handled once the plugin recovered", || async {
        h.read("out").await.len() == 1
    })
    .await;
    h.until("the breaker closed", || async {
        h.status("flaky").await.state == RunState::Running
    })
    .await;
    let states: Vec<_> = h
        .feed()
        .into_iter()
        .filter_map(|e| match e {
            DispatchEvent::Breaker { state, .. } => Some(state),
            _ => None,
        })
        .collect();
    assert_eq!(states.first(), Some(&BreakerState::Open));
    assert_eq!(states.last(), Some(&BreakerState::Closed));
    assert!(h.dead_letters().await.is_empty(), "nothing parked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_whose_bookkeeping_write_fails_hands_the_probe_on() {
    let inner = fresh_log(LogConfig::default());
    // Attempt-only commits, in order: before call 1, after its failure,
    // before call 2, after its failure (the breaker is open now), then before
    // call 3 — the probe's. That one fails.
    let log = Arc::new(FailBookkeeping {
        inner,
        seen: AtomicU32::new(0),
        fail_at: 5,
    });
    let mut h = Harness::new(log.clone(), breaker_config());
    let calls = Arc::new(AtomicU32::new(0));
    let settings = PluginSettings {
        retry: Some(policy(10)),
        ..settings()
    };
    h.deploy(native("flaky", flaky(calls.clone(), 2, None)), settings, 1);
    h.publish(vec![event("t", "s", "")]).await;
    assert_breaker_closes_and_event_is_handled(&mut h).await;
    assert!(
        log.seen.load(Ordering::SeqCst) >= 5,
        "the probe's write failed"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "the failed write stopped the probe before its call"
    );
    h.dispatcher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_whose_call_thread_dies_hands_the_probe_on() {
    let log = fresh_log(LogConfig::default());
    let mut h = Harness::new(log, breaker_config());
    let calls = Arc::new(AtomicU32::new(0));
    let settings = PluginSettings {
        retry: Some(policy(10)),
        ..settings()
    };
    // Two failures open the breaker; the third call, the probe, panics on
    // its blocking thread.
    h.deploy(
        native("flaky", flaky(calls.clone(), 2, Some(3))),
        settings,
        1,
    );
    h.publish(vec![event("t", "s", "")]).await;
    assert_breaker_closes_and_event_is_handled(&mut h).await;
    assert!(
        calls.load(Ordering::SeqCst) >= 4,
        "the probe was made again"
    );
    h.dispatcher.shutdown(Duration::from_secs(5)).await;
}

// ---- fences: a set-aside retry and a replay commit at most once ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_aside_retry_finished_elsewhere_commits_nothing() {
    let log = fresh_log(LogConfig::default());
    let h = Harness::new(log.clone(), Harness::config());
    let calls = Arc::new(AtomicU32::new(0));
    let other = log.clone();
    let handler: NativeHandler = Arc::new(move |e: &StoredEvent, _| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            return Err(Failure::Retry("not yet".into()));
        }
        // Meanwhile another consumer (a zombie's successor, another daemon)
        // finished this event: its set-aside record is gone.
        let key = format!(
            "set-aside/aside/{}/{}/{:020}",
            e.position.topic, e.position.partition, e.position.offset
        );
        other
            .commit(ConsumerCommit {
                group: "aside".into(),
                state: vec![StateChange {
                    namespace: "__evhost".into(),
                    key,
                    value: None,
                }],
                ..ConsumerCommit::default()
            })
            .wait()
            .expect("the other commit");
        Ok(Effects {
            emits: vec![emit_of(e, "out", "aside.done", Vec::new())],
            state: BTreeMap::from([("k".to_owned(), Some(b"v".to_vec()))]),
        })
    });
    let settings = PluginSettings {
        ordering: OrderingMode::NonBlocking,
        ..settings()
    };
    h.deploy(native("aside", handler), settings, 1);
    let e = event("t", "s", "");
    h.publish(vec![e.clone()]).await;
    h.until("the event set aside and retried", || async {
        h.log
            .attempts(
                "aside",
                &Position {
                    topic: "in".into(),
                    partition: 0,
                    offset: 0,
                },
            )
            .await
            .unwrap()
            .is_some_and(|r| r.attempts >= 2)
    })
    .await;
    // The retry's commit was refused by its fence: give it time to land if
    // it were going to, by waiting for a later event to be handled.
    h.publish(vec![event("t", "later", "")]).await;
    h.until("the later event handled", || async {
        h.read("out")
            .await
            .iter()
            .any(|o| o.event.causationid.as_deref() != Some(&e.id))
    })
    .await;
    let out = h.read("out").await;
    assert!(
        out.iter()
            .all(|o| o.event.causationid.as_deref() != Some(&e.id)),
        "the fenced retry's emit is not committed"
    );
    assert_eq!(
        h.log.state_get("aside", "k").await.unwrap().as_deref(),
        Some(&b"v"[..]),
        "the later event's own write"
    );
    assert!(h.dead_letters().await.is_empty());
    h.dispatcher.shutdown(Duration::from_secs(5)).await;
}

/// Parks one event of `plugin` through a commit, as a consumer would.
async fn park_one(h: &Harness, plugin: &str, e: &Event) -> DeadLetterId {
    h.publish(vec![e.clone()]).await;
    let stored = h
        .read("in")
        .await
        .into_iter()
        .find(|s| s.event.id == e.id)
        .expect("stored");
    let now = std::time::SystemTime::now();
    h.log
        .commit(ConsumerCommit {
            group: plugin.into(),
            dead_letter: Some(crate::log::DeadLetterRecord {
                event: stored,
                plugin: plugin.into(),
                plugin_version: "1.0.0 (load 1)".into(),
                plugin_digest: String::new(),
                kind: FailureKind::Rejected,
                message: "parked by the test".into(),
                attempts: 1,
                first_failure: now,
                last_failure: now,
            }),
            ..ConsumerCommit::default()
        })
        .await
        .expect("parked")
        .dead_letter
        .expect("an id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replays_of_one_letter_commit_its_effects_once() {
    let log = fresh_log(LogConfig::default());
    let h = Harness::new(log, Harness::config());
    // The plugin subscribes to nothing that is published, so only replays call it.
    let calls = Calls::default();
    let slow = calls.clone();
    let handler: NativeHandler = Arc::new(move |e: &StoredEvent, _| {
        slow.count(e);
        std::thread::sleep(Duration::from_millis(20));
        Ok(Effects {
            emits: vec![emit_of(e, "out", "replayed", Vec::new())],
            state: BTreeMap::new(),
        })
    });
    let mut plugin_info = native("replayer", handler.clone()).info.clone();
    plugin_info.subscriptions[0].topic = "elsewhere".into();
    h.deploy(LoadedPlugin::native(plugin_info, handler), settings(), 1);
    let mut letters = Vec::new();
    for i in 0..5 {
        letters.push(park_one(&h, "replayer", &event("t", &format!("s{i}"), "")).await);
    }
    let mut tasks = Vec::new();
    for id in &letters {
        for _ in 0..8 {
            let d = h.dispatcher.clone();
            let id = *id;
            tasks.push(tokio::spawn(async move { (id, d.replay(id).await) }));
        }
    }
    let mut succeeded = BTreeMap::<DeadLetterId, u32>::new();
    for t in tasks {
        let (id, result) = t.await.unwrap();
        match result {
            Ok(ReplayOutcome::Succeeded) => *succeeded.entry(id).or_default() += 1,
            Err(DispatchError::ReplayInProgress(_) | DispatchError::UnknownDeadLetter(_)) => {}
            other => panic!("unexpected replay outcome: {other:?}"),
        }
    }
    assert_eq!(succeeded.len(), 5, "every letter replayed");
    assert!(succeeded.values().all(|n| *n == 1), "{succeeded:?}");
    assert_eq!(
        h.read("out").await.len(),
        5,
        "exactly one effect per letter"
    );
    assert!(h.dead_letters().await.is_empty(), "no letter left");
    // A replay of a resolved letter is unknown.
    assert!(matches!(
        h.dispatcher.replay(letters[0]).await,
        Err(DispatchError::UnknownDeadLetter(_))
    ));
    assert_eq!(
        h.status("replayer").await.processed,
        5,
        "replays count as handled"
    );
    h.dispatcher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_letter_was_discarded_meanwhile_commits_nothing() {
    let log = fresh_log(LogConfig::default());
    let h = Harness::new(log.clone(), Harness::config());
    let discard = Arc::new(Mutex::new(None::<DeadLetterId>));
    let during = discard.clone();
    let handler: NativeHandler = Arc::new(move |e: &StoredEvent, _| {
        // The operator discards the letter while its replay runs.
        if let Some(id) = *during.lock().unwrap() {
            assert!(log.delete_dead_letter(id).wait().unwrap());
        }
        Ok(Effects {
            emits: vec![emit_of(e, "out", "replayed", Vec::new())],
            state: BTreeMap::from([("k".to_owned(), Some(b"v".to_vec()))]),
        })
    });
    let mut plugin_info = native("replayer", handler.clone()).info.clone();
    plugin_info.subscriptions[0].topic = "elsewhere".into();
    h.deploy(LoadedPlugin::native(plugin_info, handler), settings(), 1);
    let id = park_one(&h, "replayer", &event("t", "s", "")).await;
    *discard.lock().unwrap() = Some(id);
    let result = h.dispatcher.replay(id).await;
    assert!(
        matches!(result, Err(DispatchError::UnknownDeadLetter(_))),
        "{result:?}"
    );
    assert!(h.read("out").await.is_empty(), "its emit is not committed");
    assert_eq!(h.log.state_get("replayer", "k").await.unwrap(), None);
    h.dispatcher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_grant_trips_the_breaker_instead_of_draining_the_topic() {
    let log = fresh_log(LogConfig::default());
    let config = DispatchConfig {
        breaker: BreakerConfig {
            failure_threshold: 3,
            cool_down: Duration::from_secs(3600),
        },
        ..Harness::config()
    };
    let h = Harness::new(log, config);
    let calls = Calls::default();
    let seen = calls.clone();
    // What the runtime answers for a call refused a grant (see `runtime::instance`).
    let handler: NativeHandler = Arc::new(move |e: &StoredEvent, _| {
        seen.count(e);
        Err(Failure::Refused(
            "plugin `ungranted` has no `state` grant; add \"state = true\" under [grants] in ungranted.toml".into(),
        ))
    });
    h.deploy(native("ungranted", handler), settings(), 1);
    h.publish((0..10).map(|i| event("t", &format!("s{i}"), "")).collect())
        .await;
    h.until("the breaker opened after the third parking", || async {
        h.status("ungranted").await.state == RunState::Paused
            && h.committed("ungranted").await == Some(3)
    })
    .await;
    let letters = h.dead_letters().await;
    assert_eq!(
        letters.len(),
        3,
        "parked until the breaker opened, not the whole topic"
    );
    for dl in &letters {
        assert_eq!(dl.record.kind, FailureKind::Rejected);
        assert_eq!(dl.record.attempts, 1, "a refusal is not retried");
        assert!(
            dl.record.message.contains("ungranted.toml"),
            "{}",
            dl.record.message
        );
    }
    assert_eq!(h.committed("ungranted").await, Some(3));
    h.dispatcher.shutdown(Duration::from_secs(5)).await;
}

// ---- daemons sharing a log: each partition worked by one, effects once ----

const SHARED_PARTITIONS: u32 = 16;
/// Long beside the tick, so a handover quicker than it proves a release, not an expiry.
const LEASE_PERIOD: Duration = Duration::from_secs(3);

/// Two "daemons" (dispatchers) on one log that hands out leases, with fast lease timing.
async fn two_daemons(calls: [&Calls; 2]) -> (Arc<dyn EventLog>, [Harness; 2]) {
    let log: Arc<dyn EventLog> =
        Arc::new(crate::log::MemoryLog::with_leases(LogConfig::default()).expect("log opens"));
    log.create_topic(
        "in",
        TopicConfig {
            partitions: SHARED_PARTITIONS,
            ..TopicConfig::default()
        },
    )
    .await
    .expect("topic");
    let config = DispatchConfig {
        leases: LeaseSettings {
            period: LEASE_PERIOD,
            tick: Duration::from_millis(40),
        },
        ..Harness::config()
    };
    let daemons = calls.map(|calls| {
        let h = Harness::new(log.clone(), config.clone());
        h.deploy(native("echo", echo(calls.clone(), "out", 0)), settings(), 1);
        h
    });
    (log, daemons)
}

/// Who holds each partition of `in` for `echo` (None: nobody).
async fn holders(log: &Arc<dyn EventLog>) -> Vec<Option<String>> {
    let leases = log
        .leases()
        .expect("a shared log")
        .leases()
        .await
        .expect("leases");
    (0..SHARED_PARTITIONS)
        .map(|p| {
            leases
                .iter()
                .find(|l| l.key.group == "echo" && l.key.topic == "in" && l.key.partition == p)
                .and_then(|l| l.owner.clone())
        })
        .collect()
}

fn publish_inputs(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| event("t.in", &format!("s{i}"), "x"))
        .collect()
}

/// Each input's effect exactly once: one `out` event caused by each input.
async fn assert_each_effect_once(h: &Harness, inputs: &[Event]) {
    let out = h.read("out").await;
    let mut causes: Vec<_> = out
        .iter()
        .filter_map(|e| e.event.causationid.clone())
        .collect();
    causes.sort();
    let mut expected: Vec<_> = inputs.iter().map(|e| e.id.clone()).collect();
    expected.sort();
    assert_eq!(causes, expected, "one effect per input, none missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_sharing_a_log_split_its_partitions_and_commit_each_effect_once() {
    let (calls_a, calls_b) = (Calls::default(), Calls::default());
    let (log, [a, b]) = two_daemons([&calls_a, &calls_b]).await;
    a.until(
        "both daemons hold partitions, every partition held",
        || async {
            let held = holders(&log).await;
            let owners: std::collections::BTreeSet<_> = held.iter().flatten().collect();
            held.iter().all(Option::is_some) && owners.len() == 2
        },
    )
    .await;
    let inputs = publish_inputs(300);
    a.publish(inputs.clone()).await;
    a.until("every input handled", || async {
        a.read("out").await.len() >= 300
    })
    .await;
    assert_each_effect_once(&a, &inputs).await;
    let (by_a, by_b) = (
        calls_a.0.lock().unwrap().len(),
        calls_b.0.lock().unwrap().len(),
    );
    assert!(
        by_a > 0 && by_b > 0,
        "both daemons worked: {by_a} and {by_b}"
    );
    // Each daemon reports only the partitions it works, and together they cover all.
    let mut worked: Vec<u32> = Vec::new();
    for h in [&a, &b] {
        worked.extend(
            h.status("echo")
                .await
                .partitions
                .iter()
                .map(|p| p.partition),
        );
    }
    worked.sort();
    assert_eq!(worked, (0..SHARED_PARTITIONS).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_stops_hands_its_partitions_over_and_nothing_is_lost_or_doubled() {
    let (calls_a, calls_b) = (Calls::default(), Calls::default());
    let (log, [a, b]) = two_daemons([&calls_a, &calls_b]).await;
    a.until("both daemons hold partitions", || async {
        let held = holders(&log).await;
        let owners: std::collections::BTreeSet<_> = held.iter().flatten().collect();
        held.iter().all(Option::is_some) && owners.len() == 2
    })
    .await;
    let first = publish_inputs(100);
    a.publish(first.clone()).await;
    // a stops while work is in flight: what it did not commit, b does.
    a.dispatcher.shutdown(Duration::from_secs(5)).await;
    let released_at = tokio::time::Instant::now();
    b.until("b holds every partition", || async {
        let held = holders(&log).await;
        let owners: std::collections::BTreeSet<_> = held.iter().flatten().collect();
        held.iter().all(Option::is_some) && owners.len() == 1
    })
    .await;
    // Released leases are taken at b's next decision, not after a lease period.
    assert!(
        released_at.elapsed() < LEASE_PERIOD,
        "handed over in {:?}",
        released_at.elapsed()
    );
    let second = publish_inputs(100);
    b.publish(second.clone()).await;
    let all: Vec<Event> = first.into_iter().chain(second).collect();
    b.until("every input handled", || async {
        b.read("out").await.len() >= 200
    })
    .await;
    assert_each_effect_once(&b, &all).await;
}
