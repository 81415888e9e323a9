//! The event log through its public interface: the contract of `EventLog`, run against every
//! backend (`redb::*` on a real redb file, `memory::*` on `MemoryLog`, `nats::*` on
//! `NatsLog` against a `nats-server` each test starts), plus what only redb has (group
//! commit) and what only NATS has (several logs on one server, `nats_shared::*`).
//!
//! Each contract test is a generic function `NAME<L: Backend>`; `contract_tests!` at the end
//! stamps out `redb::NAME`, `memory::NAME` and `nats::NAME` from it. A test listed there runs
//! on all three. What is one backend's alone stays there, each with its reason: durability
//! (`reopen` closes and reopens the redb file, or connects a new `NatsLog` to the same
//! server; on the memory log it keeps the log, so the contract after it is still checked),
//! group commit (`Backend::GROUP_COMMIT`, and `concurrent_consumer_commits_share_transactions`),
//! and crashes (`log_crash.rs`). The NATS tests need nats-server 2.12+ (see
//! `tests/support/nats_server.rs`); without one they fail with what to install, never skip.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use evhost::event::{Event, Position};
use evhost::log::*;

#[path = "../../tests/support/nats_server.rs"]
mod nats_server;

// ---------------------------------------------------------------------------------------
// harness

/// A backend the contract tests run against.
trait Backend: EventLog + evhost::runtime::StateStore + Sized + 'static {
    /// The log survives being closed and opened again (redb: it is a file).
    const DURABLE: bool;
    /// Concurrent writes share transactions (redb's group commit); the memory log applies
    /// each request as its own transaction.
    const GROUP_COMMIT: bool;

    /// What the log needs running beside it for as long as the test (NATS: the server).
    type Env;

    fn env(dir: &Path) -> Self::Env;

    fn open(env: &Self::Env, dir: &Path, config: LogConfig) -> Self;

    fn shutdown(&self);
}

impl Backend for RedbLog {
    const DURABLE: bool = true;
    const GROUP_COMMIT: bool = true;
    type Env = ();

    fn env(_dir: &Path) {}

    fn open(_env: &(), dir: &Path, config: LogConfig) -> Self {
        RedbLog::open(dir.join("log.redb"), config).unwrap()
    }

    fn shutdown(&self) {
        RedbLog::shutdown(self)
    }
}

impl Backend for MemoryLog {
    const DURABLE: bool = false;
    const GROUP_COMMIT: bool = false;
    type Env = ();

    fn env(_dir: &Path) {}

    /// With leases, as a NATS log has them: the other contract tests hold with them on, and
    /// the lease tests have an in-process reference beside NATS.
    fn open(_env: &(), _dir: &Path, config: LogConfig) -> Self {
        MemoryLog::with_leases(config).unwrap()
    }

    fn shutdown(&self) {
        MemoryLog::shutdown(self)
    }
}

/// NATS JetStream: each test starts its own `nats-server` (stopped when the harness drops,
/// also on a panic). "Reopen" connects a new `NatsLog` to the same server, so what follows
/// it checks that every acknowledged write is in the server, not in the dropped client.
impl Backend for NatsLog {
    const DURABLE: bool = true;
    const GROUP_COMMIT: bool = false;
    type Env = nats_server::NatsServer;

    fn env(_dir: &Path) -> nats_server::NatsServer {
        nats_server::NatsServer::start()
    }

    fn open(server: &nats_server::NatsServer, _dir: &Path, config: LogConfig) -> Self {
        let config = NatsConfig {
            log: config,
            ..NatsConfig::new(vec![server.url.clone()], "test")
        };
        // The server listens before JetStream is ready: retry the first connect briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match NatsLog::connect(config.clone()) {
                Ok(log) => return log,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("NATS log not ready yet: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot open the NATS log: {e}"),
            }
        }
    }

    fn shutdown(&self) {
        NatsLog::shutdown(self)
    }
}

/// A log in a temp dir, on a manual clock.
struct Harness<L: Backend> {
    dir: tempfile::TempDir,
    config: LogConfig,
    clock: Arc<AtomicU64>,
    log: L,
    // Declared after the log, so it outlives it.
    env: L::Env,
}

const T0_MS: u64 = 1_800_000_000_000;

impl<L: Backend> Harness<L> {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(configure: impl FnOnce(&mut LogConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicU64::new(T0_MS));
        let c = clock.clone();
        let mut config = LogConfig {
            clock: Clock::from_fn(move || {
                UNIX_EPOCH + Duration::from_millis(c.load(Ordering::SeqCst))
            }),
            ..LogConfig::default()
        };
        configure(&mut config);
        let env = L::env(dir.path());
        let log = L::open(&env, dir.path(), config.clone());
        Self {
            dir,
            config,
            clock,
            log,
            env,
        }
    }

    /// Closes the log and opens the same file again, so what follows checks that every
    /// acknowledged write survived. The memory log has nothing to reopen and stays as it is,
    /// so what follows checks the same contract on it, without the restart.
    fn reopen(self) -> Self {
        if !L::DURABLE {
            return self;
        }
        let Harness {
            dir,
            config,
            clock,
            log,
            env,
        } = self;
        drop(log);
        let log = L::open(&env, dir.path(), config.clone());
        Self {
            dir,
            config,
            clock,
            log,
            env,
        }
    }

    fn advance(&self, by: Duration) {
        self.clock
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    fn publish(&self, topic: &str, events: Vec<Event>) -> Vec<Appended> {
        self.log
            .append(
                events
                    .into_iter()
                    .map(|e| NewEvent::to_topic(topic, e))
                    .collect(),
            )
            .wait()
            .unwrap()
    }

    fn read_all(&self, topic: &str, partition: u32) -> Vec<evhost::event::StoredEvent> {
        self.log
            .read(topic, partition, 0, usize::MAX)
            .wait()
            .unwrap()
    }

    fn ids(&self, topic: &str, partition: u32) -> Vec<String> {
        self.read_all(topic, partition)
            .into_iter()
            .map(|s| s.event.id)
            .collect()
    }

    fn partition(&self, topic: &str, partition: u32) -> PartitionInfo {
        self.log.topic(topic).wait().unwrap().unwrap().partitions[partition as usize]
    }
}

fn event(id: &str) -> Event {
    event_of(id, "order.created", None)
}

fn event_of(id: &str, ty: &str, subject: Option<&str>) -> Event {
    Event {
        id: id.into(),
        source: "/test".into(),
        specversion: "1.0".into(),
        ty: ty.into(),
        subject: subject.map(Into::into),
        time: "2026-11-02T10:00:00Z".into(),
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        data: Some(format!(r#"{{"id":"{id}"}}"#).into_bytes()),
        correlationid: id.into(),
        causationid: None,
        actor: None,
        extensions: BTreeMap::new(),
        stream: None,
        streamversion: None,
    }
}

fn at(topic: &str, partition: u32, offset: u64) -> Position {
    Position {
        topic: topic.into(),
        partition,
        offset,
    }
}

/// Polls `condition` until it holds or `deadline` passes.
fn eventually(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if condition() {
            return true;
        }
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}

// ---------------------------------------------------------------------------------------
// append and read

fn reads_run_across_batch_boundaries_in_offset_order<L: Backend>() {
    let h = Harness::<L>::new();
    let before = h.log.stats().transactions;
    for batch in 0..10 {
        let events = (0..7)
            .map(|i| event(&format!("e{}", batch * 7 + i)))
            .collect();
        let acks = h.publish("orders", events);
        let offsets: Vec<u64> = acks.iter().map(|a| a.position.offset).collect();
        assert_eq!(offsets, (batch * 7..batch * 7 + 7).collect::<Vec<u64>>());
    }
    assert!(
        h.log.stats().transactions - before >= 10,
        "one transaction per sequential call"
    );

    let read = h.log.read("orders", 0, 5, 30).wait().unwrap();
    let offsets: Vec<u64> = read.iter().map(|s| s.position.offset).collect();
    assert_eq!(offsets, (5..35).collect::<Vec<u64>>());
    let ids: Vec<String> = read.iter().map(|s| s.event.id.clone()).collect();
    assert_eq!(ids, (5..35).map(|i| format!("e{i}")).collect::<Vec<_>>());
    assert_eq!(read[0].event, event("e5"), "events read back as written");

    assert_eq!(h.read_all("orders", 0).len(), 70);
    assert!(h.log.read("orders", 0, 70, 10).wait().unwrap().is_empty());
    let h = h.reopen();
    assert_eq!(
        h.ids("orders", 0),
        (0..70).map(|i| format!("e{i}")).collect::<Vec<_>>()
    );
    let ack = h.publish("orders", vec![event("after-reopen")]);
    assert_eq!(ack[0].position.offset, 70, "offsets continue after reopen");
}

fn one_subject_stays_in_one_partition_in_order<L: Backend>() {
    let h = Harness::<L>::new();
    h.log
        .create_topic(
            "orders",
            TopicConfig {
                partitions: 4,
                ..TopicConfig::default()
            },
        )
        .wait()
        .unwrap();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..40 {
        let subject = format!("order-{}", i % 8);
        let id = format!("e{i}");
        let ack = h.publish(
            "orders",
            vec![event_of(&id, "order.updated", Some(&subject))],
        );
        assert_eq!(ack[0].position.partition, partition_for(&subject, 4));
        expected.entry(subject).or_default().push(id);
    }
    let used: BTreeSet<u32> = expected.keys().map(|s| partition_for(s, 4)).collect();
    assert!(used.len() > 1, "8 subjects spread over several partitions");
    for (subject, ids) in expected {
        let p = partition_for(&subject, 4);
        let in_partition: Vec<String> = h
            .read_all("orders", p)
            .into_iter()
            .filter(|s| s.event.subject.as_deref() == Some(&subject))
            .map(|s| s.event.id)
            .collect();
        assert_eq!(in_partition, ids, "{subject} in order");
    }
}

fn topics_are_auto_created_unless_switched_off<L: Backend>() {
    let h = Harness::<L>::new();
    let ack = h
        .log
        .append(vec![NewEvent::new(event_of("u1", "user.created", None))])
        .wait()
        .unwrap();
    assert_eq!(
        ack[0].position,
        at("user-events", 0, 0),
        "topic derived from the type"
    );
    let info = h.log.topic("user-events").wait().unwrap().unwrap();
    assert_eq!(info.config.partitions, 1);
    assert_eq!(info.partitions[0].end, 1);

    let h = Harness::<L>::with(|c| c.auto_create_topics = false);
    let refused = h
        .log
        .append(vec![NewEvent::to_topic("nope", event("x"))])
        .wait();
    assert!(matches!(refused, Err(LogError::UnknownTopic(t)) if t == "nope"));
    assert!(
        h.log.topics().wait().unwrap().is_empty(),
        "nothing half-written"
    );

    h.log
        .create_topic(
            "nope",
            TopicConfig {
                partitions: 3,
                ..TopicConfig::default()
            },
        )
        .wait()
        .unwrap();
    h.publish("nope", vec![event("x")]);
    let again = h
        .log
        .create_topic(
            "nope",
            TopicConfig {
                partitions: 3,
                ..TopicConfig::default()
            },
        )
        .wait()
        .unwrap();
    assert_eq!(
        again.partitions.iter().map(|p| p.end).sum::<u64>(),
        1,
        "idempotent"
    );
    let other = h
        .log
        .create_topic(
            "nope",
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .wait();
    assert!(matches!(
        other,
        Err(LogError::TopicExists { partitions: 3, .. })
    ));
    let bad = h
        .log
        .create_topic("bad name", TopicConfig::default())
        .wait();
    assert!(matches!(bad, Err(LogError::InvalidTopicName(_))));
    let read = h.log.read("nope", 3, 0, 10).wait();
    assert!(matches!(
        read,
        Err(LogError::UnknownPartition { partitions: 3, .. })
    ));
}

fn a_refused_request_leaves_its_batch_neighbours_alone<L: Backend>() {
    let h = Harness::<L>::with(|c| {
        c.auto_create_topics = false;
        c.max_linger = Duration::from_millis(200);
    });
    h.log
        .create_topic("orders", TopicConfig::default())
        .wait()
        .unwrap();
    let before = h.log.stats().transactions;
    // Sent back to back: the writer lingers, so all three share one transaction.
    let good1 = h.log.append(vec![NewEvent::to_topic("orders", event("a"))]);
    let bad = h.log.append(vec![
        NewEvent::to_topic("orders", event("b")),
        NewEvent::to_topic("missing", event("c")),
    ]);
    let good2 = h.log.append(vec![NewEvent::to_topic("orders", event("d"))]);
    assert!(good1.wait().is_ok());
    assert!(matches!(bad.wait(), Err(LogError::UnknownTopic(_))));
    assert!(good2.wait().is_ok());
    if L::GROUP_COMMIT {
        assert_eq!(
            h.log.stats().transactions - before,
            1,
            "one shared transaction"
        );
    }
    assert_eq!(
        h.ids("orders", 0),
        ["a", "d"],
        "b went nowhere with its request"
    );
}

fn oversize_events_and_stray_stream_fields_are_refused<L: Backend>() {
    let h = Harness::<L>::with(|c| c.max_event_bytes = 512);
    let mut big = event("big");
    big.data = Some(vec![b'x'; 600]);
    let refused = h
        .log
        .append(vec![
            NewEvent::to_topic("t", event("small")),
            NewEvent::to_topic("t", big),
        ])
        .wait();
    assert!(
        matches!(refused, Err(LogError::EventTooLarge { ref id, limit: 512, .. }) if id == "big")
    );
    let mut stray = event("stray");
    stray.stream = Some("s".into());
    let refused = h.log.append(vec![NewEvent::to_topic("t", stray)]).wait();
    assert!(matches!(refused, Err(LogError::Invalid(_))));
    assert!(
        h.log.topics().wait().unwrap().is_empty(),
        "neither request wrote anything"
    );
}

// ---------------------------------------------------------------------------------------
// dedupe

fn a_republished_id_is_acked_with_the_original_offset_and_stored_once<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("orders", vec![event("a"), event("b")]);
    let again = h.publish("orders", vec![event("c"), event("a")]);
    assert!(!again[0].duplicate);
    assert!(again[1].duplicate);
    assert_eq!(
        again[1].position,
        at("orders", 0, 0),
        "the original's position"
    );
    let same_request = h.publish("orders", vec![event("d"), event("d")]);
    assert_eq!(same_request[1].position, same_request[0].position);
    assert!(same_request[1].duplicate);
    assert_eq!(h.ids("orders", 0), ["a", "b", "c", "d"]);

    // Dedupe is per topic.
    let other = h.publish("audit", vec![event("a")]);
    assert!(!other[0].duplicate);

    // It survives a restart.
    let h = h.reopen();
    assert!(h.publish("orders", vec![event("b")])[0].duplicate);
    // Counted since open: the memory log, not reopened, also counts the two above.
    let since_open = if L::DURABLE { 1 } else { 3 };
    assert_eq!(h.log.stats().duplicates, since_open);
}

fn concurrent_publishes_of_one_id_append_it_once<L: Backend>() {
    let h = Harness::<L>::with(|c| c.max_linger = Duration::from_millis(5));
    let log = Arc::new(h.log);
    let barrier = Arc::new(Barrier::new(16));
    let acks: Vec<Appended> = (0..16)
        .map(|_| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                log.append(vec![NewEvent::to_topic("orders", event("same"))])
                    .wait()
                    .unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(acks.iter().filter(|a| !a.duplicate).count(), 1);
    assert!(acks.iter().all(|a| a.position == at("orders", 0, 0)));
    assert_eq!(log.read("orders", 0, 0, 100).wait().unwrap().len(), 1);
}

fn an_id_is_appended_again_after_the_dedupe_window<L: Backend>() {
    let h = Harness::<L>::with(|c| c.dedupe_window = Duration::from_secs(60));
    h.publish("orders", vec![event("a")]);
    h.advance(Duration::from_secs(30));
    assert!(
        h.publish("orders", vec![event("a")])[0].duplicate,
        "inside the window"
    );
    h.advance(Duration::from_secs(31));
    let late = h.publish("orders", vec![event("a")]);
    assert!(!late[0].duplicate, "outside the window");
    assert_eq!(late[0].position.offset, 1);

    // Expiry cleans the old entry up but not the fresh one.
    let report = h.log.enforce_retention().wait().unwrap();
    assert_eq!(report.dedupe_entries_expired, 1);
    assert!(
        h.publish("orders", vec![event("a")])[0].duplicate,
        "the new entry survived"
    );
    h.advance(Duration::from_secs(61));
    let report = h.log.enforce_retention().wait().unwrap();
    assert_eq!(report.dedupe_entries_expired, 1);
}

// ---------------------------------------------------------------------------------------
// consumer groups and the consumer commit

fn advance_to(group: &str, topic: &str, partition: u32, next: u64) -> ConsumerCommit {
    ConsumerCommit {
        group: group.into(),
        offset: Some(OffsetAdvance {
            topic: topic.into(),
            partition,
            next,
            from: None,
        }),
        ..ConsumerCommit::default()
    }
}

fn offsets_are_kept_per_group_topic_and_partition<L: Backend>() {
    let h = Harness::<L>::new();
    h.log
        .create_topic(
            "orders",
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .wait()
        .unwrap();
    for i in 0..6 {
        h.publish(
            "orders",
            vec![event_of(
                &format!("e{i}"),
                "order.x",
                Some(&format!("s{i}")),
            )],
        );
    }
    let ends: Vec<u64> = h
        .log
        .topic("orders")
        .wait()
        .unwrap()
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.end)
        .collect();
    let (p, end) = ends
        .iter()
        .enumerate()
        .max_by_key(|(_, e)| **e)
        .map(|(p, e)| (p as u32, *e))
        .unwrap();
    assert!(end >= 2);

    assert_eq!(
        h.log
            .committed_offset("billing", "orders", p)
            .wait()
            .unwrap(),
        None
    );
    h.log
        .commit(advance_to("billing", "orders", p, 1))
        .wait()
        .unwrap();
    h.log
        .commit(advance_to("billing", "orders", p, 2))
        .wait()
        .unwrap();
    h.log
        .commit(advance_to("shipping", "orders", p, 1))
        .wait()
        .unwrap();
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", p)
            .wait()
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        h.log
            .committed_offset("shipping", "orders", p)
            .wait()
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 1 - p)
            .wait()
            .unwrap(),
        None
    );

    let beyond = h
        .log
        .commit(advance_to("billing", "orders", p, end + 1))
        .wait();
    assert!(matches!(beyond, Err(LogError::Invalid(_))));
    let unknown = h.log.commit(advance_to("billing", "nope", 0, 1)).wait();
    assert!(matches!(unknown, Err(LogError::UnknownTopic(_))));

    // An operator seek may go back.
    h.log.set_offset("shipping", "orders", p, 0).wait().unwrap();
    let h = h.reopen();
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", p)
            .wait()
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        h.log
            .committed_offset("shipping", "orders", p)
            .wait()
            .unwrap(),
        Some(0)
    );
}

fn a_second_commit_for_the_same_event_writes_nothing<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("orders", vec![event("e0"), event("e1")]);
    let mut commit = advance_to("billing", "orders", 0, 1);
    commit.emits = vec![NewEvent::to_topic("invoices", event("inv-1"))];
    commit.state = vec![StateChange {
        namespace: "billing".into(),
        key: "total".into(),
        value: Some(b"1".to_vec()),
    }];
    h.log.commit(commit).wait().unwrap();

    // The same event handled again (a duplicated delivery): its commit is refused whole.
    let mut again = advance_to("billing", "orders", 0, 1);
    again.emits = vec![NewEvent::to_topic("invoices", event("inv-1-again"))];
    again.state = vec![StateChange {
        namespace: "billing".into(),
        key: "total".into(),
        value: Some(b"2".to_vec()),
    }];
    let refused = h.log.commit(again).wait();
    assert!(
        matches!(
            refused,
            Err(LogError::OffsetConflict {
                current: 1,
                requested: 1,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(h.ids("invoices", 0), ["inv-1"]);
    assert_eq!(
        h.log.state_get("billing", "total").wait().unwrap(),
        Some(b"1".to_vec())
    );
}

fn a_commit_with_one_invalid_part_is_refused_whole<L: Backend>() {
    let h = Harness::<L>::with(|c| c.auto_create_topics = false);
    h.log
        .create_topic("orders", TopicConfig::default())
        .wait()
        .unwrap();
    h.publish("orders", vec![event("e0")]);
    let record = dead_letter_record("billing", at("orders", 0, 0), FailureKind::Rejected);
    let commit = ConsumerCommit {
        group: "billing".into(),
        offset: Some(OffsetAdvance {
            topic: "orders".into(),
            partition: 0,
            next: 1,
            from: None,
        }),
        emits: vec![
            NewEvent::to_topic("orders", event("emitted-ok")),
            NewEvent::to_topic("no-such-topic", event("emitted-bad")),
        ],
        state: vec![StateChange {
            namespace: "billing".into(),
            key: "k".into(),
            value: Some(b"v".to_vec()),
        }],
        attempts: vec![AttemptUpdate {
            position: at("orders", 0, 0),
            record: Some(AttemptRecord {
                attempts: 1,
                first_failure: None,
                last_failure: None,
                last_error: None,
                started_by: None,
            }),
        }],
        dead_letter: Some(record),
        resolve_dead_letter: None,
        requires_state: None,
        seek: false,
        lease: None,
        state_read: Vec::new(),
    };
    let refused = h.log.commit(commit).wait();
    assert!(matches!(refused, Err(LogError::UnknownTopic(t)) if t == "no-such-topic"));
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        None
    );
    assert_eq!(h.ids("orders", 0), ["e0"], "no emit landed");
    assert_eq!(h.log.state_get("billing", "k").wait().unwrap(), None);
    assert_eq!(
        h.log
            .attempts("billing", &at("orders", 0, 0))
            .wait()
            .unwrap(),
        None
    );
    assert!(
        h.log
            .dead_letters(None, None, 10)
            .wait()
            .unwrap()
            .is_empty()
    );
}

fn dead_letter_record(plugin: &str, position: Position, kind: FailureKind) -> DeadLetterRecord {
    let first = UNIX_EPOCH + Duration::from_nanos(1_800_000_000_000_000_123);
    DeadLetterRecord {
        event: evhost::event::StoredEvent {
            event: event(&format!("evt-{}", position.offset)),
            position,
        },
        plugin: plugin.into(),
        plugin_version: "1.0.0".into(),
        plugin_digest: "sha256:0123".into(),
        kind,
        message: format!("{kind} happened"),
        attempts: 3,
        first_failure: first,
        last_failure: first + Duration::from_secs(4),
    }
}

fn a_consumer_commit_writes_all_its_parts_together<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("orders", vec![event("e0"), event("e1"), event("e2")]);
    h.publish("invoices", vec![event("already-there")]);

    let attempt = AttemptRecord {
        attempts: 2,
        first_failure: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10)),
        last_failure: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(12)),
        last_error: Some(Failure {
            kind: FailureKind::Trap,
            message: "unreachable".into(),
        }),
        started_by: None,
    };
    let commit = ConsumerCommit {
        group: "billing".into(),
        offset: Some(OffsetAdvance {
            topic: "orders".into(),
            partition: 0,
            next: 1,
            from: None,
        }),
        emits: vec![
            NewEvent::new(event_of("inv-1", "invoice.created", None)),
            NewEvent::to_topic("invoices", event("already-there")),
        ],
        state: vec![
            StateChange {
                namespace: "billing".into(),
                key: "count".into(),
                value: Some(b"1".to_vec()),
            },
            StateChange {
                namespace: "billing".into(),
                key: "gone".into(),
                value: None,
            },
        ],
        attempts: vec![AttemptUpdate {
            position: at("orders", 0, 1),
            record: Some(attempt.clone()),
        }],
        dead_letter: Some(dead_letter_record(
            "billing",
            at("orders", 0, 0),
            FailureKind::Rejected,
        )),
        resolve_dead_letter: None,
        requires_state: None,
        seek: false,
        lease: None,
        state_read: Vec::new(),
    };
    let outcome = h.log.commit(commit).wait().unwrap();

    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        Some(1)
    );
    assert_eq!(outcome.emitted.len(), 2);
    assert_eq!(
        outcome.emitted[0].position,
        at("invoice-events", 0, 0),
        "derived topic"
    );
    assert!(
        outcome.emitted[1].duplicate,
        "emits follow the dedupe rules"
    );
    assert_eq!(outcome.emitted[1].position, at("invoices", 0, 0));
    assert_eq!(h.ids("invoice-events", 0), ["inv-1"]);
    assert_eq!(h.ids("invoices", 0), ["already-there"]);
    assert_eq!(
        h.log.state_get("billing", "count").wait().unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(
        h.log
            .attempts("billing", &at("orders", 0, 1))
            .wait()
            .unwrap(),
        Some(attempt)
    );
    assert_eq!(
        h.log
            .attempts("shipping", &at("orders", 0, 1))
            .wait()
            .unwrap(),
        None,
        "per group"
    );
    let id = outcome.dead_letter.unwrap();
    let parked = h.log.dead_letter(id).wait().unwrap().unwrap();
    assert_eq!(parked.group, "billing");
    assert_eq!(
        parked.record,
        dead_letter_record("billing", at("orders", 0, 0), FailureKind::Rejected)
    );

    // Clearing: the next call succeeds and clears its attempt record.
    let mut clear = advance_to("billing", "orders", 0, 2);
    clear.attempts = vec![AttemptUpdate {
        position: at("orders", 0, 1),
        record: None,
    }];
    clear.state = vec![StateChange {
        namespace: "billing".into(),
        key: "count".into(),
        value: None,
    }];
    h.log.commit(clear).wait().unwrap();
    assert_eq!(
        h.log
            .attempts("billing", &at("orders", 0, 1))
            .wait()
            .unwrap(),
        None
    );
    assert_eq!(h.log.state_get("billing", "count").wait().unwrap(), None);
}

fn dead_letters_are_listed_by_plugin_fetched_and_deleted<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("orders", (0..6).map(|i| event(&format!("e{i}"))).collect());
    let mut ids = Vec::new();
    for (i, plugin) in ["billing", "shipping", "billing", "billing", "shipping"]
        .iter()
        .enumerate()
    {
        let commit = ConsumerCommit {
            group: (*plugin).into(),
            dead_letter: Some(dead_letter_record(
                plugin,
                at("orders", 0, i as u64),
                FailureKind::ALL[i],
            )),
            ..ConsumerCommit::default()
        };
        ids.push(h.log.commit(commit).wait().unwrap().dead_letter.unwrap());
    }
    let billing = h
        .log
        .dead_letters(Some("billing"), None, 100)
        .wait()
        .unwrap();
    assert_eq!(
        billing.iter().map(|d| d.id).collect::<Vec<_>>(),
        [ids[0], ids[2], ids[3]]
    );
    assert!(billing.iter().all(|d| d.record.plugin == "billing"));
    assert_eq!(billing[1].record.kind, FailureKind::Timeout);
    let page = h
        .log
        .dead_letters(Some("billing"), Some(ids[0]), 1)
        .wait()
        .unwrap();
    assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[2]]);
    assert_eq!(h.log.dead_letters(None, None, 100).wait().unwrap().len(), 5);
    assert_eq!(
        h.log
            .dead_letters(None, Some(ids[3]), 100)
            .wait()
            .unwrap()
            .len(),
        1
    );

    assert!(h.log.delete_dead_letter(ids[2]).wait().unwrap());
    assert!(!h.log.delete_dead_letter(ids[2]).wait().unwrap());
    assert_eq!(h.log.dead_letter(ids[2]).wait().unwrap(), None);

    // A successful replay resolves its dead letter in the same commit.
    let replay = ConsumerCommit {
        group: "billing".into(),
        state: vec![StateChange {
            namespace: "billing".into(),
            key: "replayed".into(),
            value: Some(vec![1]),
        }],
        resolve_dead_letter: Some(ids[0]),
        ..ConsumerCommit::default()
    };
    h.log.commit(replay).wait().unwrap();
    let h = h.reopen();
    let billing = h
        .log
        .dead_letters(Some("billing"), None, 100)
        .wait()
        .unwrap();
    assert_eq!(billing.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[3]]);
    // Ids keep counting after a restart.
    let commit = ConsumerCommit {
        group: "billing".into(),
        dead_letter: Some(dead_letter_record(
            "billing",
            at("orders", 0, 5),
            FailureKind::HostError,
        )),
        ..ConsumerCommit::default()
    };
    let next = h.log.commit(commit).wait().unwrap().dead_letter.unwrap();
    assert!(next > ids[4]);
}

fn state_keys_are_listed_by_prefix_within_a_namespace<L: Backend>() {
    let h = Harness::<L>::new();
    let put = |ns: &str, key: &str| StateChange {
        namespace: ns.into(),
        key: key.into(),
        value: Some(key.as_bytes().to_vec()),
    };
    h.log
        .commit(ConsumerCommit {
            group: "g".into(),
            state: vec![
                put("cart", "user:1"),
                put("cart", "user:2"),
                put("cart", "usr"),
                put("cart", "order:1"),
                put("carts", "user:9"),
            ],
            ..ConsumerCommit::default()
        })
        .wait()
        .unwrap();
    assert_eq!(
        h.log.state_keys("cart", "user:", 10).wait().unwrap(),
        ["user:1", "user:2"]
    );
    assert_eq!(
        h.log.state_keys("cart", "", 10).wait().unwrap(),
        ["order:1", "user:1", "user:2", "usr"]
    );
    assert_eq!(
        h.log.state_keys("cart", "u", 2).wait().unwrap(),
        ["user:1", "user:2"]
    );
    assert_eq!(
        h.log.state_get("carts", "user:9").wait().unwrap(),
        Some(b"user:9".to_vec())
    );
    assert_eq!(h.log.state_get("cart", "user:9").wait().unwrap(), None);
}

// redb only: group commit is how the redb writer shares one fsync between concurrent
// requests; the memory log has no fsync to share and applies each request on its own.
#[test]
fn concurrent_consumer_commits_share_transactions() {
    let h = Harness::<RedbLog>::with(|c| c.max_linger = Duration::from_millis(20));
    h.publish("orders", vec![event("e0")]);
    let log = Arc::new(h.log);
    let before = log.stats().transactions;
    let barrier = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut commit = advance_to(&format!("group-{i}"), "orders", 0, 1);
                commit.emits = vec![NewEvent::to_topic("out", event(&format!("out-{i}")))];
                log.commit(commit).wait().unwrap()
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let used = log.stats().transactions - before;
    assert!(used < 32, "32 commits took {used} transactions");
    assert_eq!(log.read("out", 0, 0, 100).wait().unwrap().len(), 32);
}

// ---------------------------------------------------------------------------------------
// streams

fn a_stream_append_checks_the_expected_version<L: Backend>() {
    let h = Harness::<L>::new();
    let events = |ids: &[&str]| -> Vec<NewEvent> {
        ids.iter()
            .map(|id| NewEvent::new(event_of(id, "cart.changed", None)))
            .collect()
    };
    let acks = h
        .log
        .append_to_stream(
            "cart-7",
            ExpectedVersion::Exact(0),
            events(&["c1", "c2", "c3"]),
        )
        .wait()
        .unwrap();
    assert_eq!(
        acks.iter().map(|a| a.stream_version).collect::<Vec<_>>(),
        [Some(1), Some(2), Some(3)]
    );
    assert_eq!(h.log.stream_version("cart-7").wait().unwrap(), 3);

    // The events also landed in their topic, with the stream fields set.
    let in_topic = h.read_all("cart-events", 0);
    assert_eq!(in_topic.len(), 3);
    assert_eq!(in_topic[2].event.stream.as_deref(), Some("cart-7"));
    assert_eq!(in_topic[2].event.streamversion, Some(3));

    let conflict = h
        .log
        .append_to_stream("cart-7", ExpectedVersion::Exact(1), events(&["c4"]))
        .wait();
    assert!(
        matches!(
            conflict,
            Err(LogError::VersionConflict {
                expected: 1,
                current: 3,
                ..
            })
        ),
        "{conflict:?}"
    );
    assert_eq!(
        h.partition("cart-events", 0).end,
        3,
        "a conflict writes nothing"
    );
    assert_eq!(h.log.stream_version("cart-7").wait().unwrap(), 3);

    h.log
        .append_to_stream("cart-7", ExpectedVersion::Any, events(&["c4"]))
        .wait()
        .unwrap();
    let from2 = h.log.read_stream("cart-7", 2, 10).wait().unwrap();
    assert_eq!(
        from2
            .iter()
            .map(|s| s.event.id.as_str())
            .collect::<Vec<_>>(),
        ["c2", "c3", "c4"]
    );
    assert_eq!(
        from2[0].position,
        at("cart-events", 0, 1),
        "the stream knows the topic position"
    );

    // Retrying an append that went through answers the originals.
    let retry = h
        .log
        .append_to_stream(
            "cart-7",
            ExpectedVersion::Exact(0),
            events(&["c1", "c2", "c3"]),
        )
        .wait()
        .unwrap();
    assert!(retry.iter().all(|a| a.duplicate));
    assert_eq!(retry[1].stream_version, Some(2));
    let partly = h
        .log
        .append_to_stream("cart-7", ExpectedVersion::Any, events(&["c4", "c5"]))
        .wait();
    assert!(matches!(partly, Err(LogError::Invalid(_))));
    assert_eq!(h.log.stream_version("cart-7").wait().unwrap(), 4);

    let h = h.reopen();
    assert_eq!(h.log.read_stream("cart-7", 0, 100).wait().unwrap().len(), 4);
    assert_eq!(h.log.stream_version("other").wait().unwrap(), 0);
}

fn concurrent_stream_writers_get_exactly_one_winner_per_version<L: Backend>() {
    const WRITERS: usize = 8;
    const TARGET: u64 = 40;
    let h = Harness::<L>::with(|c| c.max_linger = Duration::from_millis(2));
    let log = Arc::new(h.log);
    let barrier = Arc::new(Barrier::new(WRITERS));
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                let (mut wins, mut conflicts, mut attempt) = (Vec::new(), 0, 0);
                loop {
                    let current = log.stream_version("account-1").wait().unwrap();
                    if attempt == 0 {
                        // Every writer has read version 0 before any appends: the first
                        // round races for certain, however fast the backend.
                        barrier.wait();
                    }
                    if current >= TARGET {
                        return (wins, conflicts);
                    }
                    attempt += 1;
                    let e = NewEvent::new(event_of(
                        &format!("w{w}-{attempt}"),
                        "account.debited",
                        None,
                    ));
                    match log
                        .append_to_stream("account-1", ExpectedVersion::Exact(current), vec![e])
                        .wait()
                    {
                        Ok(acks) => {
                            assert_eq!(acks[0].stream_version, Some(current + 1));
                            wins.push(current + 1);
                        }
                        Err(LogError::VersionConflict {
                            expected,
                            current: now,
                            ..
                        }) => {
                            assert_eq!(expected, current);
                            assert!(now > expected, "a conflict reports a newer version");
                            conflicts += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let mut all_wins = Vec::new();
    let mut conflicts = 0;
    for t in threads {
        let (wins, c) = t.join().unwrap();
        all_wins.extend(wins);
        conflicts += c;
    }
    all_wins.sort();
    assert_eq!(
        all_wins,
        (1..=TARGET).collect::<Vec<_>>(),
        "exactly one winner per version"
    );
    assert!(conflicts > 0, "the writers did race");
    let stream = log.read_stream("account-1", 1, 1000).wait().unwrap();
    assert_eq!(
        stream
            .iter()
            .map(|s| s.event.streamversion.unwrap())
            .collect::<Vec<_>>(),
        (1..=TARGET).collect::<Vec<_>>()
    );
    assert_eq!(
        log.read("account-events", 0, 0, 1000).wait().unwrap().len() as u64,
        TARGET
    );
}

// ---------------------------------------------------------------------------------------
// waiting for new events

async fn an_async_waiter_wakes_when_an_event_is_appended<L: Backend>() {
    let h = Harness::<L>::new();
    h.log
        .create_topic("orders", TopicConfig::default())
        .await
        .unwrap();
    let log = Arc::new(h.log);
    let watch = log.watch("orders", 0).await.unwrap();
    assert_eq!(watch.end(), 0);
    let waiter = tokio::spawn(async move { watch.wait_past(0).await });
    let early = tokio::time::timeout(Duration::from_millis(50), async {
        while !waiter.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        early.is_err(),
        "the waiter returned before any event existed"
    );
    log.append(vec![NewEvent::to_topic("orders", event("a"))])
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken");
    assert_eq!(end.unwrap().unwrap(), 1);
    let read = log.read("orders", 0, 0, 10).await.unwrap();
    assert_eq!(read.len(), 1, "a woken reader finds the event committed");
}

fn a_blocking_waiter_wakes_when_an_event_is_appended_and_on_shutdown<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("orders", vec![event("a")]);
    let watch = h.log.watch("orders", 0).wait().unwrap();
    assert_eq!(watch.end(), 1);
    assert_eq!(
        watch.wait_past_blocking(0, Duration::ZERO).unwrap(),
        Some(1)
    );
    assert_eq!(
        watch
            .wait_past_blocking(1, Duration::from_millis(20))
            .unwrap(),
        None
    );
    let w = watch.clone();
    let waiter = std::thread::spawn(move || w.wait_past_blocking(2, Duration::from_secs(10)));
    h.publish("orders", vec![event("b")]);
    h.publish("orders", vec![event("c")]);
    assert_eq!(waiter.join().unwrap().unwrap(), Some(3));

    let w = watch.clone();
    let waiter = std::thread::spawn(move || w.wait_past_blocking(10, Duration::from_secs(10)));
    h.log.shutdown();
    assert!(matches!(waiter.join().unwrap(), Err(LogError::Closed)));
    assert!(matches!(
        h.log
            .append(vec![NewEvent::to_topic("orders", event("z"))])
            .wait(),
        Err(LogError::Closed)
    ));
    assert!(h.log.watch("nope", 0).wait().is_err());
}

// ---------------------------------------------------------------------------------------
// retention

fn retained<L: Backend>(h: &Harness<L>, topic: &str) -> Vec<u64> {
    h.read_all(topic, 0)
        .iter()
        .map(|s| s.position.offset)
        .collect()
}

fn retention_deletes_events_older_than_max_age<L: Backend>() {
    let h = Harness::<L>::new();
    h.log
        .create_topic(
            "metrics",
            TopicConfig {
                partitions: 1,
                retention: RetentionPolicy {
                    max_age: Some(Duration::from_secs(60)),
                    ..RetentionPolicy::default()
                },
            },
        )
        .wait()
        .unwrap();
    h.publish(
        "metrics",
        (0..5).map(|i| event(&format!("old{i}"))).collect(),
    );
    h.advance(Duration::from_secs(45));
    h.publish(
        "metrics",
        (0..3).map(|i| event(&format!("new{i}"))).collect(),
    );
    assert_eq!(
        h.log.enforce_retention().wait().unwrap().events_deleted,
        0,
        "nothing old enough"
    );
    h.advance(Duration::from_secs(20));
    let report = h.log.enforce_retention().wait().unwrap();
    assert_eq!(report.events_deleted, 5);
    assert!(report.bytes_deleted > 0);
    assert_eq!(
        retained(&h, "metrics"),
        [5, 6, 7],
        "offsets of the survivors unchanged"
    );
    let info = h.partition("metrics", 0);
    assert_eq!((info.start, info.end), (5, 8));
    assert_eq!(
        h.log.read("metrics", 0, 2, 10).wait().unwrap()[0]
            .position
            .offset,
        5
    );

    h.advance(Duration::from_secs(60));
    h.log.enforce_retention().wait().unwrap();
    assert!(retained(&h, "metrics").is_empty());
    let h = h.reopen();
    let ack = h.publish("metrics", vec![event("after")]);
    assert_eq!(
        ack[0].position.offset, 8,
        "an emptied partition keeps counting"
    );
    assert_eq!(h.partition("metrics", 0).start, 8);
}

fn retention_keeps_each_partition_under_max_bytes<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("probe", vec![event("e00")]);
    let one = h.partition("probe", 0).bytes;
    h.log
        .create_topic(
            "logs",
            TopicConfig {
                partitions: 1,
                retention: RetentionPolicy {
                    max_partition_bytes: Some(one * 4),
                    ..RetentionPolicy::default()
                },
            },
        )
        .wait()
        .unwrap();
    h.publish(
        "logs",
        (0..10).map(|i| event(&format!("e{i:02}"))).collect(),
    );
    assert_eq!(h.partition("logs", 0).bytes, one * 10);
    let report = h.log.enforce_retention().wait().unwrap();
    assert_eq!(report.events_deleted, 6);
    assert_eq!(report.bytes_deleted, one * 6);
    assert_eq!(retained(&h, "logs"), [6, 7, 8, 9], "the newest stay");
    assert_eq!(h.partition("logs", 0).bytes, one * 4);
}

fn retention_never_passes_the_slowest_group_unless_told_to<L: Backend>() {
    let policy = |delete_unconsumed| TopicConfig {
        partitions: 1,
        retention: RetentionPolicy {
            max_age: Some(Duration::from_secs(1)),
            max_partition_bytes: None,
            delete_unconsumed,
        },
    };
    let h = Harness::<L>::new();
    h.log.create_topic("kept", policy(false)).wait().unwrap();
    h.log.create_topic("dropped", policy(true)).wait().unwrap();
    for topic in ["kept", "dropped"] {
        h.publish(
            topic,
            (0..10).map(|i| event(&format!("{topic}{i}"))).collect(),
        );
        h.log
            .commit(advance_to("fast", topic, 0, 9))
            .wait()
            .unwrap();
        h.log
            .commit(advance_to("slow", topic, 0, 3))
            .wait()
            .unwrap();
    }
    h.advance(Duration::from_secs(10));
    h.log.enforce_retention().wait().unwrap();
    assert_eq!(
        retained(&h, "kept"),
        (3..10).collect::<Vec<_>>(),
        "slow group's floor"
    );
    assert!(retained(&h, "dropped").is_empty());

    h.log
        .commit(advance_to("slow", "kept", 0, 7))
        .wait()
        .unwrap();
    h.log.enforce_retention().wait().unwrap();
    assert_eq!(
        retained(&h, "kept"),
        [7, 8, 9],
        "fast group at 9, slow now at 7"
    );
}

fn retention_runs_in_the_background<L: Backend>() {
    let h = Harness::<L>::with(|c| {
        c.retention_interval = Duration::from_millis(10);
        c.default_retention = RetentionPolicy {
            max_age: Some(Duration::from_secs(1)),
            ..RetentionPolicy::default()
        };
    });
    h.publish("auto", (0..3).map(|i| event(&format!("e{i}"))).collect());
    assert!(
        !h.log
            .topic("auto")
            .wait()
            .unwrap()
            .unwrap()
            .config
            .retention
            .is_unbounded()
    );
    h.advance(Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(10), || h.partition("auto", 0).start
            == 3),
        "background retention never ran"
    );
    assert!(retained(&h, "auto").is_empty());
}

fn unique_ids_in_acks_match_the_log<L: Backend>() {
    // Many publishers, one topic: every ack points at its own event, and there are no gaps.
    let h = Harness::<L>::new();
    let log = Arc::new(h.log);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..50)
                    .flat_map(|i| {
                        let events = (0..3)
                            .map(|j| NewEvent::to_topic("busy", event(&format!("t{t}-{i}-{j}"))))
                            .collect();
                        log.append(events).wait().unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let acks: Vec<Appended> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let stored = log.read("busy", 0, 0, usize::MAX).wait().unwrap();
    assert_eq!(stored.len(), 8 * 50 * 3);
    let offsets: HashSet<u64> = acks.iter().map(|a| a.position.offset).collect();
    assert_eq!(offsets.len(), acks.len());
    for ack in &acks {
        assert_eq!(stored[ack.position.offset as usize].event.id, ack.id);
    }
    let stats = log.stats();
    assert_eq!(stats.events_appended, 1200);
    if L::GROUP_COMMIT {
        assert!(
            stats.transactions < 400,
            "concurrent publishers share fsyncs: {stats:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// the fences of dead-letter replay and set-aside retries, and error classes

/// Parks an event of `orders` for `billing` and answers the letter's id.
fn park<L: Backend>(h: &Harness<L>, offset: u64) -> DeadLetterId {
    let commit = ConsumerCommit {
        group: "billing".into(),
        dead_letter: Some(dead_letter_record(
            "billing",
            at("orders", 0, offset),
            FailureKind::Rejected,
        )),
        ..ConsumerCommit::default()
    };
    h.log.commit(commit).wait().unwrap().dead_letter.unwrap()
}

/// A replay's commit: an emit, a state write and an attempt record, resolving `letter`.
fn replay_of(letter: DeadLetterId, tag: &str) -> ConsumerCommit {
    ConsumerCommit {
        group: "billing".into(),
        emits: vec![NewEvent::to_topic(
            "replayed",
            event(&format!("replay-{tag}")),
        )],
        state: vec![StateChange {
            namespace: "billing".into(),
            key: "replayed-by".into(),
            value: Some(tag.as_bytes().to_vec()),
        }],
        attempts: vec![AttemptUpdate {
            position: at("orders", 0, 2),
            record: Some(AttemptRecord {
                attempts: 1,
                first_failure: None,
                last_failure: None,
                last_error: None,
                started_by: None,
            }),
        }],
        resolve_dead_letter: Some(letter),
        ..ConsumerCommit::default()
    }
}

fn a_commit_resolving_a_gone_dead_letter_is_refused_whole<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("orders", vec![event("e0"), event("e1"), event("e2")]);
    h.log
        .commit(advance_to("billing", "orders", 0, 1))
        .wait()
        .unwrap();
    let discarded = park(&h, 0);
    let replayed = park(&h, 1);
    let nothing_written = |h: &Harness<L>, state: Option<&[u8]>, replays: usize| {
        assert_eq!(
            h.log
                .topic("replayed")
                .wait()
                .unwrap()
                .map_or(0, |t| t.partitions[0].end),
            replays as u64,
            "no emit of a refused replay"
        );
        assert_eq!(
            h.log
                .state_get("billing", "replayed-by")
                .wait()
                .unwrap()
                .as_deref(),
            state
        );
        assert_eq!(
            h.log
                .committed_offset("billing", "orders", 0)
                .wait()
                .unwrap(),
            Some(1),
            "offset unchanged"
        );
    };

    // Discarded, then replayed: the replay's effects are refused whole.
    assert!(h.log.delete_dead_letter(discarded).wait().unwrap());
    let mut late = replay_of(discarded, "late");
    late.offset = Some(OffsetAdvance {
        topic: "orders".into(),
        partition: 0,
        next: 3,
        from: None,
    });
    let refused = h.log.commit(late).wait();
    assert!(
        matches!(refused, Err(LogError::DeadLetterGone(id)) if id == discarded),
        "{refused:?}"
    );
    nothing_written(&h, None, 0);
    assert_eq!(
        h.log
            .attempts("billing", &at("orders", 0, 2))
            .wait()
            .unwrap(),
        None,
        "attempts unchanged"
    );
    assert!(h.log.dead_letter(replayed).wait().unwrap().is_some());

    // Replayed once: applied, and the letter is resolved with it.
    h.log.commit(replay_of(replayed, "first")).wait().unwrap();
    assert_eq!(h.ids("replayed", 0), ["replay-first"]);
    assert_eq!(h.log.dead_letter(replayed).wait().unwrap(), None);
    let attempt = h
        .log
        .attempts("billing", &at("orders", 0, 2))
        .wait()
        .unwrap();
    assert!(attempt.is_some());

    // Replayed again (a second replay that raced the first): refused whole.
    let mut again = replay_of(replayed, "second");
    again.attempts[0].record = None;
    let refused = h.log.commit(again).wait();
    assert!(
        matches!(refused, Err(LogError::DeadLetterGone(id)) if id == replayed),
        "{refused:?}"
    );
    nothing_written(&h, Some(b"first"), 1);
    assert_eq!(
        h.log
            .attempts("billing", &at("orders", 0, 2))
            .wait()
            .unwrap(),
        attempt,
        "attempts unchanged"
    );
}

fn concurrent_replays_of_one_dead_letter_commit_once<L: Backend>() {
    const REPLAYS: usize = 8;
    // A linger lets redb batch the racing commits into one transaction: the fence must hold
    // inside a batch as well as across batches.
    let h = Harness::<L>::with(|c| c.max_linger = Duration::from_millis(20));
    h.publish("orders", vec![event("e0"), event("e1"), event("e2")]);
    let letter = park(&h, 0);
    let log = Arc::new(h.log);
    let barrier = Arc::new(Barrier::new(REPLAYS));
    let threads: Vec<_> = (0..REPLAYS)
        .map(|i| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                log.commit(replay_of(letter, &i.to_string())).wait()
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<usize> = (0..REPLAYS).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let gone = results
        .iter()
        .filter(|r| matches!(r, Err(LogError::DeadLetterGone(id)) if *id == letter))
        .count();
    assert_eq!(gone, REPLAYS - 1, "{results:?}");

    let emitted = log.read("replayed", 0, 0, 100).wait().unwrap();
    assert_eq!(
        emitted
            .iter()
            .map(|s| s.event.id.clone())
            .collect::<Vec<_>>(),
        [format!("replay-{}", winners[0])],
        "exactly the winner's emit"
    );
    assert_eq!(
        log.state_get("billing", "replayed-by").wait().unwrap(),
        Some(winners[0].to_string().into_bytes())
    );
    assert_eq!(log.dead_letter(letter).wait().unwrap(), None);
}

/// Plugin instances read state through the log (`runtime::StateStore`): committed values
/// only, keys by prefix, namespaces apart.
fn the_runtime_reads_committed_plugin_state_through_the_log<L: Backend>() {
    use evhost::runtime::StateStore;
    let h = Harness::<L>::new();
    let put = |key: &str| StateChange {
        namespace: "counter".into(),
        key: key.into(),
        value: Some(key.as_bytes().to_vec()),
    };
    h.log
        .commit(ConsumerCommit {
            group: "counter".into(),
            state: vec![put("count/a"), put("count/b"), put("other")],
            ..ConsumerCommit::default()
        })
        .wait()
        .unwrap();
    assert_eq!(
        StateStore::get(&h.log, "counter", "count/a").unwrap(),
        Some(b"count/a".to_vec())
    );
    assert_eq!(
        StateStore::keys(&h.log, "counter", "count/").unwrap(),
        ["count/a", "count/b"]
    );
    assert_eq!(
        StateStore::get(&h.log, "other-plugin", "count/a").unwrap(),
        None
    );
}

fn a_commit_requiring_a_gone_state_entry_is_refused_whole<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("orders", vec![event("e0"), event("e1")]);
    let record = StateKey {
        namespace: "billing".into(),
        key: "set-aside/orders/0/0".into(),
    };
    // The retry of a set-aside event: fenced by its record, which it deletes.
    let retry = |tag: &str| ConsumerCommit {
        group: "billing".into(),
        offset: Some(OffsetAdvance {
            topic: "orders".into(),
            partition: 0,
            next: 1,
            from: None,
        }),
        emits: vec![NewEvent::to_topic("out", event(&format!("out-{tag}")))],
        state: vec![
            StateChange {
                namespace: "billing".into(),
                key: "total".into(),
                value: Some(tag.as_bytes().to_vec()),
            },
            StateChange {
                namespace: record.namespace.clone(),
                key: record.key.clone(),
                value: None,
            },
        ],
        attempts: vec![AttemptUpdate {
            position: at("orders", 0, 0),
            record: None,
        }],
        requires_state: Some(record.clone()),
        ..ConsumerCommit::default()
    };

    let missing = h.log.commit(retry("early")).wait();
    assert!(
        matches!(
            &missing,
            Err(LogError::StateEntryGone { namespace, key })
                if *namespace == record.namespace && *key == record.key
        ),
        "{missing:?}"
    );
    assert_eq!(h.log.topic("out").wait().unwrap(), None, "no emit");
    assert_eq!(h.log.state_get("billing", "total").wait().unwrap(), None);
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        None
    );

    // Set aside: the record exists, with an attempt counter.
    let attempt = AttemptRecord {
        attempts: 3,
        first_failure: None,
        last_failure: None,
        last_error: None,
        started_by: None,
    };
    h.log
        .commit(ConsumerCommit {
            group: "billing".into(),
            state: vec![StateChange {
                namespace: record.namespace.clone(),
                key: record.key.clone(),
                value: Some(b"parked".to_vec()),
            }],
            attempts: vec![AttemptUpdate {
                position: at("orders", 0, 0),
                record: Some(attempt.clone()),
            }],
            ..ConsumerCommit::default()
        })
        .wait()
        .unwrap();

    // The retry applies whole while the record is there ...
    h.log.commit(retry("first")).wait().unwrap();
    assert_eq!(h.ids("out", 0), ["out-first"]);
    assert_eq!(
        h.log.state_get("billing", "total").wait().unwrap(),
        Some(b"first".to_vec())
    );
    assert_eq!(
        h.log
            .state_get(&record.namespace, &record.key)
            .wait()
            .unwrap(),
        None
    );
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        h.log
            .attempts("billing", &at("orders", 0, 0))
            .wait()
            .unwrap(),
        None
    );

    // ... and a zombie retry after it is refused by the fence, even with a fresh offset.
    let mut zombie = retry("zombie");
    zombie.offset = Some(OffsetAdvance {
        topic: "orders".into(),
        partition: 0,
        next: 2,
        from: None,
    });
    zombie.attempts[0].record = Some(attempt);
    let refused = h.log.commit(zombie).wait();
    assert!(
        matches!(refused, Err(LogError::StateEntryGone { .. })),
        "{refused:?}"
    );
    assert_eq!(h.ids("out", 0), ["out-first"]);
    assert_eq!(
        h.log.state_get("billing", "total").wait().unwrap(),
        Some(b"first".to_vec())
    );
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        h.log
            .attempts("billing", &at("orders", 0, 0))
            .wait()
            .unwrap(),
        None
    );
}

fn errors_say_refused_conflict_or_failed<L: Backend>() {
    let h = Harness::<L>::with(|c| {
        c.auto_create_topics = false;
        c.max_event_bytes = 512;
    });
    let class = |e: LogError| e.class();
    h.log
        .create_topic("orders", TopicConfig::default())
        .wait()
        .unwrap();
    h.publish("orders", vec![event("e0")]);

    // Refused: the request itself is wrong.
    let mut big = event("big");
    big.data = Some(vec![b'x'; 600]);
    let too_large = h.log.append(vec![NewEvent::to_topic("orders", big)]).wait();
    assert!(matches!(too_large, Err(LogError::EventTooLarge { .. })));
    assert_eq!(class(too_large.unwrap_err()), ErrorClass::Refused);
    let unknown = h
        .log
        .append(vec![NewEvent::to_topic("nope", event("x"))])
        .wait();
    assert!(matches!(unknown, Err(LogError::UnknownTopic(_))));
    assert_eq!(class(unknown.unwrap_err()), ErrorClass::Refused);
    let partition = h.log.read("orders", 7, 0, 1).wait();
    assert!(matches!(partition, Err(LogError::UnknownPartition { .. })));
    assert_eq!(class(partition.unwrap_err()), ErrorClass::Refused);
    let invalid = h.log.commit(advance_to("", "orders", 0, 1)).wait();
    assert!(matches!(invalid, Err(LogError::Invalid(_))));
    assert_eq!(class(invalid.unwrap_err()), ErrorClass::Refused);
    let name = h
        .log
        .create_topic("bad name", TopicConfig::default())
        .wait();
    assert!(matches!(name, Err(LogError::InvalidTopicName(_))));
    assert_eq!(class(name.unwrap_err()), ErrorClass::Refused);

    // Conflict: valid, but what is stored moved under it.
    h.log
        .commit(advance_to("billing", "orders", 0, 1))
        .wait()
        .unwrap();
    let offset = h.log.commit(advance_to("billing", "orders", 0, 1)).wait();
    assert!(matches!(offset, Err(LogError::OffsetConflict { .. })));
    assert_eq!(class(offset.unwrap_err()), ErrorClass::Conflict);
    let version = h
        .log
        .append_to_stream(
            "cart-1",
            ExpectedVersion::Exact(3),
            vec![NewEvent::to_topic("orders", event("c1"))],
        )
        .wait();
    assert!(matches!(version, Err(LogError::VersionConflict { .. })));
    assert_eq!(class(version.unwrap_err()), ErrorClass::Conflict);
    let exists = h
        .log
        .create_topic(
            "orders",
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .wait();
    assert!(matches!(exists, Err(LogError::TopicExists { .. })));
    assert_eq!(class(exists.unwrap_err()), ErrorClass::Conflict);
    let gone = h
        .log
        .commit(ConsumerCommit {
            group: "billing".into(),
            resolve_dead_letter: Some(DeadLetterId(99)),
            ..ConsumerCommit::default()
        })
        .wait();
    assert!(matches!(
        gone,
        Err(LogError::DeadLetterGone(DeadLetterId(99)))
    ));
    assert_eq!(class(gone.unwrap_err()), ErrorClass::Conflict);
    let entry = h
        .log
        .commit(ConsumerCommit {
            group: "billing".into(),
            requires_state: Some(StateKey {
                namespace: "billing".into(),
                key: "nope".into(),
            }),
            ..ConsumerCommit::default()
        })
        .wait();
    assert!(matches!(entry, Err(LogError::StateEntryGone { .. })));
    assert_eq!(class(entry.unwrap_err()), ErrorClass::Conflict);

    // Failed: the log could not do it (here: it is shut down; a storage failure is classed
    // in the lib's unit tests, which can inject one into redb).
    h.log.shutdown();
    let closed = h
        .log
        .append(vec![NewEvent::to_topic("orders", event("late"))])
        .wait();
    assert!(matches!(closed, Err(LogError::Closed)));
    assert_eq!(class(closed.unwrap_err()), ErrorClass::Failed);
}

// ---------------------------------------------------------------------------------------
// the schema registry

fn schema(ty: &str, version: &str, text: &str, at: &str) -> SchemaRecord {
    SchemaRecord {
        ty: ty.into(),
        version: version.into(),
        schema: text.into(),
        registered_at: at.into(),
    }
}

fn schemas_are_stored_once_listed_in_order_and_immutable<L: Backend>() {
    let h = Harness::<L>::new();
    assert!(h.log.schemas().wait().unwrap().is_empty());
    let put = |r: SchemaRecord| h.log.put_schema(r).wait();
    let object = r#"{"type":"object"}"#;
    assert_eq!(
        put(schema("user.created", "2", object, "t1")).unwrap(),
        SchemaPut::Created
    );
    assert_eq!(
        put(schema("a.b", "1", "true", "t2")).unwrap(),
        SchemaPut::Created
    );
    assert_eq!(
        put(schema("user.created", "10", "{}", "t3")).unwrap(),
        SchemaPut::Created
    );
    // The same text again: nothing written, the first registration kept.
    assert_eq!(
        put(schema("user.created", "2", object, "t9")).unwrap(),
        SchemaPut::Unchanged
    );
    // Other text under a registered version: a conflict, nothing written.
    let conflict = put(schema("user.created", "2", "{}", "t9")).unwrap_err();
    assert!(
        matches!(conflict, LogError::SchemaConflict { .. }),
        "{conflict}"
    );
    assert_eq!(conflict.class(), ErrorClass::Conflict);
    // Refused: empty names, oversize text.
    let empty = put(schema("", "1", "{}", "t")).unwrap_err();
    assert_eq!(empty.class(), ErrorClass::Refused);
    let huge = "x".repeat(MAX_SCHEMA_BYTES + 1);
    assert_eq!(
        put(schema("big", "1", &huge, "t")).unwrap_err().class(),
        ErrorClass::Refused
    );

    let expected = vec![
        schema("a.b", "1", "true", "t2"),
        schema("user.created", "10", "{}", "t3"),
        schema("user.created", "2", object, "t1"),
    ];
    assert_eq!(h.log.schemas().wait().unwrap(), expected);
    // Durable, and retention does not touch them.
    let h = h.reopen();
    h.log.enforce_retention().wait().unwrap();
    assert_eq!(h.log.schemas().wait().unwrap(), expected);
    assert!(matches!(
        h.log.put_schema(schema("a.b", "1", "false", "t")).wait(),
        Err(LogError::SchemaConflict { .. })
    ));
}

fn concurrent_puts_of_one_schema_version_store_exactly_one<L: Backend>() {
    let h = Harness::<L>::new();
    let log = Arc::new(h.log);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let text = format!(r#"{{"title":"writer {i}"}}"#);
                (
                    text.clone(),
                    log.put_schema(schema("t", "1", &text, "t")).wait(),
                )
            })
        })
        .collect();
    let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<&String> = outcomes
        .iter()
        .filter(|(_, r)| matches!(r, Ok(SchemaPut::Created)))
        .map(|(text, _)| text)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .filter(|(_, r)| r.is_err())
            .all(|(_, r)| matches!(r, Err(LogError::SchemaConflict { .. }))),
        "{outcomes:?}"
    );
    let stored = log.schemas().wait().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(&stored[0].schema, winners[0]);
}

// ---------------------------------------------------------------------------------------
// NATS: several logs (daemons) on one server
//
// One `NatsLog` runs its own writes one at a time, so the contract tests above race only
// inside one process. These race several logs against one server, where nothing but the
// server's fences (`Nats-Expected-Last-Subject-Sequence` in an atomic batch) keeps the
// guarantees.

mod nats_shared {
    use super::*;

    fn open(server: &nats_server::NatsServer, prefix: &str) -> NatsLog {
        NatsLog::connect(NatsConfig::new(vec![server.url.clone()], prefix)).unwrap()
    }

    /// `n` logs of one installation on a fresh server (the first one creates the stream).
    fn logs(n: usize) -> (nats_server::NatsServer, Vec<Arc<NatsLog>>) {
        let server = nats_server::NatsServer::start();
        let first = <NatsLog as Backend>::open(&server, Path::new("."), LogConfig::default());
        let mut logs = vec![Arc::new(first)];
        logs.extend((1..n).map(|_| Arc::new(open(&server, "test"))));
        (server, logs)
    }

    /// Runs `f(log index, thread index)` on `threads` threads per log, all released at once.
    fn race<T: Send + 'static>(
        logs: &[Arc<NatsLog>],
        threads: usize,
        f: impl Fn(&NatsLog, usize, usize) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let barrier = Arc::new(Barrier::new(logs.len() * threads));
        let handles: Vec<_> = logs
            .iter()
            .enumerate()
            .flat_map(|(l, log)| (0..threads).map(move |t| (l, t, log.clone())))
            .map(|(l, t, log)| {
                let (f, barrier) = (f.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    f(&log, l, t)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    /// Only the server's fence ("no message yet" on the version's subject) decides here.
    #[test]
    fn puts_of_one_schema_version_from_several_logs_store_exactly_one() {
        let (_server, logs) = logs(4);
        let outcomes = race(&logs, 2, |log, l, t| {
            let text = format!(r#"{{"title":"log {l} thread {t}"}}"#);
            (
                text.clone(),
                log.put_schema(schema("t", "1", &text, "t")).wait(),
            )
        });
        let winners: Vec<&String> = outcomes
            .iter()
            .filter(|(_, r)| matches!(r, Ok(SchemaPut::Created)))
            .map(|(text, _)| text)
            .collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|(text, r)| match r {
            Ok(_) => text == winners[0],
            Err(e) => matches!(e, LogError::SchemaConflict { .. }),
        }));
        // Every log lists the one winner, including a new one.
        for log in &logs {
            let stored = log.schemas().wait().unwrap();
            assert_eq!(stored.len(), 1);
            assert_eq!(&stored[0].schema, winners[0]);
        }
    }

    #[test]
    fn appends_from_several_logs_get_dense_offsets_and_one_copy_per_id() {
        let (_server, logs) = logs(4);
        let acks: Vec<Appended> = race(&logs, 2, |log, l, t| {
            (0..10)
                .flat_map(|b| {
                    let events = (0..3)
                        .map(|i| NewEvent::to_topic("busy", event(&format!("l{l}-t{t}-b{b}-{i}"))))
                        .collect();
                    log.append(events).wait().unwrap()
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        let stored = logs[0].read("busy", 0, 0, usize::MAX).wait().unwrap();
        assert_eq!(stored.len(), 4 * 2 * 10 * 3);
        let offsets: Vec<u64> = stored.iter().map(|s| s.position.offset).collect();
        assert_eq!(offsets, (0..240).collect::<Vec<u64>>(), "dense, no gaps");
        for ack in &acks {
            assert!(!ack.duplicate);
            assert_eq!(stored[ack.position.offset as usize].event.id, ack.id);
        }

        let same = race(&logs, 2, |log, _, _| {
            log.append(vec![NewEvent::to_topic("busy", event("same"))])
                .wait()
                .unwrap()
                .remove(0)
        });
        assert_eq!(same.iter().filter(|a| !a.duplicate).count(), 1, "{same:?}");
        assert!(same.iter().all(|a| a.position == at("busy", 0, 240)));
        assert_eq!(logs[3].partition_end("busy"), 241);
    }

    #[test]
    fn of_racing_commits_for_one_event_exactly_one_lands_whole() {
        let (_server, logs) = logs(4);
        logs[0]
            .append(vec![NewEvent::to_topic("orders", event("e0"))])
            .wait()
            .unwrap();
        let results = race(&logs, 2, |log, l, t| {
            let tag = format!("{l}-{t}");
            log.commit(ConsumerCommit {
                emits: vec![NewEvent::to_topic("out", event(&format!("emit-{tag}")))],
                state: vec![StateChange {
                    namespace: "billing".into(),
                    key: "handled-by".into(),
                    value: Some(tag.clone().into_bytes()),
                }],
                dead_letter: None,
                ..advance_to("billing", "orders", 0, 1)
            })
            .wait()
            .map(|_| tag)
        });
        let winners: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(
            results.iter().filter(|r| r.is_err()).all(|r| matches!(
                r,
                Err(LogError::OffsetConflict {
                    current: 1,
                    requested: 1,
                    ..
                })
            )),
            "{results:?}"
        );
        let emitted = logs[1].read("out", 0, 0, 100).wait().unwrap();
        assert_eq!(
            emitted
                .iter()
                .map(|s| s.event.id.clone())
                .collect::<Vec<_>>(),
            [format!("emit-{}", winners[0])],
            "only the winner's emit"
        );
        assert_eq!(
            logs[2].state_get("billing", "handled-by").wait().unwrap(),
            Some(winners[0].clone().into_bytes())
        );
        assert_eq!(
            logs[3]
                .committed_offset("billing", "orders", 0)
                .wait()
                .unwrap(),
            Some(1)
        );
    }

    #[test]
    fn racing_logs_park_dead_letters_under_distinct_ids_and_one_stream_writer_wins() {
        let (_server, logs) = logs(3);
        logs[0]
            .append(vec![NewEvent::to_topic("orders", event("e0"))])
            .wait()
            .unwrap();
        let stored = logs[0].read("orders", 0, 0, 1).wait().unwrap().remove(0);
        let ids = race(&logs, 2, move |log, l, t| {
            let mut record =
                dead_letter_record("billing", stored.position.clone(), FailureKind::Trap);
            record.message = format!("{l}-{t}");
            log.commit(ConsumerCommit {
                group: "billing".into(),
                dead_letter: Some(record),
                ..ConsumerCommit::default()
            })
            .wait()
            .unwrap()
            .dead_letter
            .unwrap()
        });
        let mut ids: Vec<u64> = ids.into_iter().map(|id| id.0).collect();
        ids.sort_unstable();
        let first = ids[0];
        assert_eq!(
            ids,
            (first..first + 6).collect::<Vec<_>>(),
            "distinct, in order"
        );
        assert_eq!(
            logs[1].dead_letters(None, None, 100).wait().unwrap().len(),
            6
        );

        let results = race(&logs, 2, |log, l, t| {
            log.append_to_stream(
                "order-1",
                ExpectedVersion::Exact(0),
                vec![NewEvent::to_topic("orders", event(&format!("s-{l}-{t}")))],
            )
            .wait()
        });
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(
            results
                .iter()
                .filter(|r| r.is_err())
                .all(|r| matches!(r, Err(LogError::VersionConflict { current: 1, .. }))),
            "{results:?}"
        );
        assert_eq!(logs[2].stream_version("order-1").wait().unwrap(), 1);
    }

    #[test]
    fn installations_with_different_prefixes_do_not_see_each_other() {
        let (server, logs) = logs(1);
        let other = open(&server, "other");
        logs[0]
            .append(vec![NewEvent::to_topic("orders", event("a"))])
            .wait()
            .unwrap();
        assert!(other.topic("orders").wait().unwrap().is_none());
        let ack = other
            .append(vec![NewEvent::to_topic("orders", event("a"))])
            .wait()
            .unwrap();
        assert!(!ack[0].duplicate, "dedupe is per installation");
        assert_eq!(ack[0].position.offset, 0);
    }

    #[test]
    fn a_watch_wakes_when_another_log_appends() {
        let (_server, logs) = logs(2);
        logs[0]
            .append(vec![NewEvent::to_topic("orders", event("a"))])
            .wait()
            .unwrap();
        let watch = logs[1].watch("orders", 0).wait().unwrap();
        assert_eq!(watch.end(), 1);
        let waiter =
            std::thread::spawn(move || watch.wait_past_blocking(2, Duration::from_secs(10)));
        for id in ["b", "c"] {
            logs[0]
                .append(vec![NewEvent::to_topic("orders", event(id))])
                .wait()
                .unwrap();
        }
        assert_eq!(
            waiter.join().unwrap().unwrap(),
            Some(3),
            "woken by the other log"
        );
    }

    #[tokio::test]
    async fn a_stream_made_without_atomic_batches_is_switched_on_at_open() {
        let server = nats_server::NatsServer::start();
        let js = async_nats::jetstream::new(async_nats::connect(&server.url).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "EVHOST_test".into(),
            subjects: vec!["evh.test.>".into()],
            max_messages: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap();
        let url = server.url.clone();
        let log = tokio::task::spawn_blocking(move || open_url(&url, "test"))
            .await
            .unwrap();
        let acks = log
            .append(vec![NewEvent::to_topic("orders", event("a"))])
            .await
            .unwrap();
        assert_eq!(acks[0].position, at("orders", 0, 0));
        let config = js
            .get_stream("EVHOST_test")
            .await
            .unwrap()
            .cached_info()
            .config
            .clone();
        assert!(config.allow_atomic_publish && config.allow_direct && config.republish.is_some());
        assert_eq!(config.max_messages, 1_000_000, "the operator's limits stay");
    }

    #[test]
    fn an_append_over_the_batch_limit_is_refused_whole_unless_the_limit_is_raised() {
        let many = || -> Vec<NewEvent> {
            (0..600)
                .map(|i| NewEvent::to_topic("orders", event(&format!("e{i}"))))
                .collect()
        };
        // 600 events are 1200 messages: over the server's default 1000.
        let (_server, logs) = logs(1);
        let refused = logs[0].append(many()).wait();
        assert!(matches!(refused, Err(LogError::Invalid(_))), "{refused:?}");
        assert!(
            logs[0].topic("orders").wait().unwrap().is_none(),
            "nothing written"
        );

        let server = nats_server::NatsServer::start_with("  limits { batch { max_msgs: 2000 } }");
        let log = NatsLog::connect(NatsConfig {
            max_batch_messages: 2000,
            ..NatsConfig::new(vec![server.url.clone()], "test")
        })
        .unwrap();
        let acks = log.append(many()).wait().unwrap();
        assert_eq!(acks.last().unwrap().position, at("orders", 0, 599));
        assert_eq!(
            log.read("orders", 0, 0, usize::MAX).wait().unwrap().len(),
            600
        );
    }

    #[tokio::test]
    async fn retention_keeps_one_message_per_offset_and_state_subject() {
        let server = nats_server::NatsServer::start();
        let url = server.url.clone();
        let log = tokio::task::spawn_blocking(move || open_url(&url, "test"))
            .await
            .unwrap();
        let events = (0..30)
            .map(|i| NewEvent::to_topic("orders", event(&format!("e{i}"))))
            .collect();
        log.append(events).await.unwrap();
        for next in 1..=30 {
            log.commit(ConsumerCommit {
                state: vec![StateChange {
                    namespace: "billing".into(),
                    key: "seen".into(),
                    value: Some(next.to_string().into_bytes()),
                }],
                ..advance_to("billing", "orders", 0, next)
            })
            .await
            .unwrap();
        }
        let js = async_nats::jetstream::new(async_nats::connect(&server.url).await.unwrap());
        let stream = js.get_stream("EVHOST_test").await.unwrap();
        let count = |filter: &'static str| {
            let stream = stream.clone();
            async move {
                use futures_util::TryStreamExt;
                let subjects: Vec<(String, usize)> = stream
                    .info_with_subjects(filter)
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                assert_eq!(subjects.len(), 1, "{subjects:?}");
                subjects[0].1
            }
        };
        assert_eq!(count("evh.test.off.>").await, 30, "a message per commit");
        assert_eq!(count("evh.test.state.>").await, 30);

        log.enforce_retention().await.unwrap();
        assert_eq!(count("evh.test.off.>").await, 1);
        assert_eq!(count("evh.test.state.>").await, 1);
        assert_eq!(count("evh.test.ev.>").await, 30, "events are not compacted");
        assert_eq!(
            log.committed_offset("billing", "orders", 0).await.unwrap(),
            Some(30)
        );
        assert_eq!(
            log.state_get("billing", "seen").await.unwrap(),
            Some(b"30".to_vec())
        );
        // The fences still match: the next commit lands, a stale one is refused.
        log.append(vec![NewEvent::to_topic("orders", event("e30"))])
            .await
            .unwrap();
        log.commit(advance_to("billing", "orders", 0, 31))
            .await
            .unwrap();
        assert!(matches!(
            log.commit(advance_to("billing", "orders", 0, 31)).await,
            Err(LogError::OffsetConflict { .. })
        ));
    }

    fn open_url(url: &str, prefix: &str) -> NatsLog {
        NatsLog::connect(NatsConfig::new(vec![url.to_owned()], prefix)).unwrap()
    }

    trait End {
        fn partition_end(&self, topic: &str) -> u64;
    }

    impl End for NatsLog {
        fn partition_end(&self, topic: &str) -> u64 {
            self.topic(topic).wait().unwrap().unwrap().partitions[0].end
        }
    }
}

/// A commit fenced by the state its call read lands only while that state is as read: the
/// guard against lost updates when daemons on different partitions share a plugin's state.
fn a_commit_whose_read_state_moved_is_refused_whole<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("orders", vec![event("e0"), event("e1"), event("e2")]);
    let put = |key: &str, value: &[u8]| StateChange {
        namespace: "billing".into(),
        key: key.into(),
        value: Some(value.to_vec()),
    };
    let read = |key: &str, value: Option<&[u8]>| StateRead {
        namespace: "billing".into(),
        key: key.into(),
        value: value.map(<[u8]>::to_vec),
    };
    h.log
        .commit(ConsumerCommit {
            state: vec![put("total", b"1")],
            ..advance_to("billing", "orders", 0, 1)
        })
        .wait()
        .unwrap();
    // Two calls both read total = 1 and absent `seen`; the first to commit wins ...
    let call = |next: u64, tag: &str| ConsumerCommit {
        state: vec![put("total", b"2"), put("seen", tag.as_bytes())],
        state_read: vec![read("total", Some(b"1")), read("seen", None)],
        emits: vec![NewEvent::to_topic(
            "effects",
            event(&format!("effect-{tag}")),
        )],
        ..advance_to("billing", "orders", 0, next)
    };
    h.log.commit(call(2, "first")).wait().unwrap();
    // ... the second, whose reads are stale now, writes nothing.
    let stale = h.log.commit(call(3, "second")).wait();
    assert!(
        matches!(&stale, Err(LogError::StateMoved { key, .. }) if key == "total"),
        "{stale:?}"
    );
    assert_eq!(stale.unwrap_err().class(), ErrorClass::Conflict);
    // An entry read as absent that appeared meanwhile fences as well.
    let absent = h
        .log
        .commit(ConsumerCommit {
            state_read: vec![read("seen", None)],
            ..advance_to("billing", "orders", 0, 3)
        })
        .wait();
    assert!(
        matches!(&absent, Err(LogError::StateMoved { key, .. }) if key == "seen"),
        "{absent:?}"
    );
    let h = h.reopen();
    assert_eq!(
        h.log.state_get("billing", "total").wait().unwrap(),
        Some(b"2".to_vec())
    );
    assert_eq!(
        h.log.state_get("billing", "seen").wait().unwrap(),
        Some(b"first".to_vec())
    );
    assert_eq!(h.ids("effects", 0), ["effect-first"]);
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        Some(2)
    );
    // Redone on fresh state, it lands; reads that still hold cost nothing else.
    h.log
        .commit(ConsumerCommit {
            state: vec![put("total", b"3")],
            state_read: vec![read("total", Some(b"2")), read("seen", Some(b"first"))],
            ..advance_to("billing", "orders", 0, 3)
        })
        .wait()
        .unwrap();
    assert_eq!(
        h.log.state_get("billing", "total").wait().unwrap(),
        Some(b"3".to_vec())
    );
    assert_eq!(
        h.log.state_get("billing", "seen").wait().unwrap(),
        Some(b"first".to_vec())
    );
}

/// A consumer that read a stale committed offset (a lagging replica, a partition just taken
/// over) and handled events already committed must not commit them again, even when its
/// batch goes further than what is committed: the advance names the offset it read from.
fn a_commit_from_a_stale_offset_is_refused_even_if_it_goes_further<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("orders", (0..6).map(|i| event(&format!("e{i}"))).collect());
    let from = |from: Option<u64>, next: u64, tag: &str| ConsumerCommit {
        emits: vec![NewEvent::to_topic(
            "effects",
            event(&format!("effect-{tag}")),
        )],
        offset: Some(OffsetAdvance {
            topic: "orders".into(),
            partition: 0,
            next,
            from,
        }),
        group: "billing".into(),
        ..ConsumerCommit::default()
    };
    // No offset yet: an advance that names one is refused.
    let unregistered = h.log.commit(from(Some(0), 2, "unregistered")).wait();
    assert!(
        matches!(unregistered, Err(LogError::OffsetConflict { .. })),
        "{unregistered:?}"
    );
    h.log.commit(from(None, 1, "a")).wait().unwrap();
    h.log.commit(from(Some(1), 3, "b")).wait().unwrap();
    // Read at 1, handled 1..5: 3 is committed meanwhile, so this is refused whole.
    let stale = h.log.commit(from(Some(1), 5, "stale")).wait();
    assert!(
        matches!(
            stale,
            Err(LogError::OffsetConflict {
                current: 3,
                requested: 5,
                ..
            })
        ),
        "{stale:?}"
    );
    h.log.commit(from(Some(3), 5, "c")).wait().unwrap();
    let h = h.reopen();
    assert_eq!(h.ids("effects", 0), ["effect-a", "effect-b", "effect-c"]);
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        Some(5)
    );
}

// ---------------------------------------------------------------------------------------
// leases: logs several daemons share (memory with leases, NATS); redb has none

fn lease_key(topic: &str, partition: u32) -> LeaseKey {
    LeaseKey {
        group: "billing".into(),
        topic: topic.into(),
        partition,
    }
}

/// A commit of `tag`'s effects on orders/0 (offset to `next`, an emit, a state write), under
/// `lease`.
fn leased_commit(lease: &LeaseFence, next: u64, tag: &str) -> ConsumerCommit {
    ConsumerCommit {
        emits: vec![NewEvent::to_topic(
            "effects",
            event(&format!("effect-{tag}")),
        )],
        state: vec![StateChange {
            namespace: "billing".into(),
            key: "last".into(),
            value: Some(tag.as_bytes().to_vec()),
        }],
        lease: Some(lease.clone()),
        ..advance_to("billing", "orders", 0, next)
    }
}

fn lease_state<L: Backend>(log: &L, key: &LeaseKey) -> Option<LeaseState> {
    let leases = log.leases().unwrap();
    leases
        .leases()
        .wait()
        .unwrap()
        .into_iter()
        .find(|l| l.key == *key)
}

/// A redb log is one daemon's: it hands out no leases and refuses a commit fenced by one.
fn a_log_one_daemon_owns_has_no_leases<L: Backend>() {
    let h = Harness::<L>::new();
    if h.log.leases().is_some() {
        return;
    }
    h.publish("orders", vec![event("e0")]);
    let fence = LeaseFence {
        key: lease_key("orders", 0),
        owner: "a".into(),
        epoch: 1,
    };
    let refused = h.log.commit(leased_commit(&fence, 1, "a")).wait();
    assert!(matches!(refused, Err(LogError::Invalid(_))), "{refused:?}");
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        None
    );
}

/// The lease protocol: one holder at a time, the holder's commits land, and once another
/// daemon took the lease the old holder's commit, renewal and release are refused whole.
fn a_lease_fences_the_commits_of_its_partition<L: Backend>() {
    let h = Harness::<L>::new();
    let Some(leases) = h.log.leases() else {
        return;
    };
    h.publish("orders", vec![event("e0"), event("e1"), event("e2")]);
    let key = lease_key("orders", 0);
    assert_eq!(lease_state(&h.log, &key), None);

    let a = leases.acquire(&key, "daemon-a", 0).wait().unwrap();
    assert_eq!((a.owner.as_str(), a.epoch), ("daemon-a", 1));
    // Another daemon that read "never written" before a took it loses.
    let late = leases.acquire(&key, "daemon-b", 0).wait();
    assert!(matches!(late, Err(LogError::LeaseLost(_))), "{late:?}");

    // The holder commits; every write to the record moves its version.
    let v1 = lease_state(&h.log, &key).unwrap().version;
    h.log.commit(leased_commit(&a, 1, "a1")).wait().unwrap();
    let v2 = lease_state(&h.log, &key).unwrap().version;
    assert!(v2 > v1, "a fenced commit moves the lease's version");
    leases.renew(&a).wait().unwrap();
    let held = lease_state(&h.log, &key).unwrap();
    assert!(held.version > v2, "a renewal moves the lease's version");
    assert_eq!((held.owner.as_deref(), held.epoch), (Some("daemon-a"), 1));

    // b takes the lease from the version it saw (a looked gone to it) ...
    let b = leases
        .acquire(&key, "daemon-b", held.version)
        .wait()
        .unwrap();
    assert_eq!(b.epoch, 2);
    // ... and a, waking up, can change nothing.
    let zombie = h.log.commit(leased_commit(&a, 2, "a2")).wait();
    assert!(matches!(zombie, Err(LogError::LeaseLost(_))), "{zombie:?}");
    assert_eq!(zombie.unwrap_err().class(), ErrorClass::Conflict);
    for lost in [leases.renew(&a).wait(), leases.release(&a).wait()] {
        assert!(matches!(lost, Err(LogError::LeaseLost(_))), "{lost:?}");
    }
    let h = h.reopen();
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        Some(1),
        "the zombie's offset is not written"
    );
    assert_eq!(h.ids("effects", 0), ["effect-a1"], "nor its emit");
    assert_eq!(
        h.log.state_get("billing", "last").wait().unwrap(),
        Some(b"a1".to_vec()),
        "nor its state"
    );
    // The new holder's commit lands.
    h.log.commit(leased_commit(&b, 2, "b2")).wait().unwrap();
    assert_eq!(h.ids("effects", 0), ["effect-a1", "effect-b2"]);
}

/// A released lease is free at once; whoever takes it next gets a new epoch, and a commit
/// prepared before the release is refused even if its daemon takes the lease back.
fn a_released_lease_is_taken_at_the_next_epoch<L: Backend>() {
    let h = Harness::<L>::new();
    let Some(leases) = h.log.leases() else {
        return;
    };
    h.publish("orders", vec![event("e0"), event("e1")]);
    let key = lease_key("orders", 0);
    let first = leases.acquire(&key, "daemon-a", 0).wait().unwrap();
    leases.release(&first).wait().unwrap();
    let released = lease_state(&h.log, &key).unwrap();
    assert_eq!((released.owner, released.epoch), (None, 1));
    let again = leases
        .acquire(&key, "daemon-a", released.version)
        .wait()
        .unwrap();
    assert_eq!(again.epoch, 2);
    let stale = h.log.commit(leased_commit(&first, 1, "old")).wait();
    assert!(matches!(stale, Err(LogError::LeaseLost(_))), "{stale:?}");
    h.log
        .commit(leased_commit(&again, 1, "new"))
        .wait()
        .unwrap();
    assert_eq!(h.ids("effects", 0), ["effect-new"]);
}

/// Daemons racing for a free lease: exactly one gets it.
fn racing_acquisitions_of_one_lease_have_one_winner<L: Backend>() {
    const DAEMONS: usize = 8;
    let h = Harness::<L>::new();
    if h.log.leases().is_none() {
        return;
    }
    let log = Arc::new(h.log);
    let barrier = Arc::new(Barrier::new(DAEMONS));
    let threads: Vec<_> = (0..DAEMONS)
        .map(|i| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let leases = log.leases().unwrap();
                leases
                    .acquire(&lease_key("orders", 0), &format!("daemon-{i}"), 0)
                    .wait()
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let held = lease_state(&*log, &lease_key("orders", 0)).unwrap();
    assert_eq!(held.owner.as_deref(), Some(winners[0].owner.as_str()));
}

/// Members announce the groups they serve; each heartbeat moves the version readers judge
/// liveness by; a member that leaves is gone from the list.
fn members_announce_their_groups_and_leave<L: Backend>() {
    let h = Harness::<L>::new();
    let Some(leases) = h.log.leases() else {
        return;
    };
    leases
        .heartbeat("daemon-a", vec!["billing".into(), "mailer".into()])
        .wait()
        .unwrap();
    leases.heartbeat("daemon/b", vec![]).wait().unwrap();
    let members = leases.members().wait().unwrap();
    let a = members.iter().find(|m| m.id == "daemon-a").unwrap();
    assert_eq!(a.groups, ["billing", "mailer"]);
    assert!(members.iter().any(|m| m.id == "daemon/b"), "{members:?}");
    let before = a.version;
    leases
        .heartbeat("daemon-a", vec!["billing".into()])
        .wait()
        .unwrap();
    let members = leases.members().wait().unwrap();
    let a = members.iter().find(|m| m.id == "daemon-a").unwrap();
    assert!(a.version > before);
    assert_eq!(a.groups, ["billing"]);
    leases.leave("daemon-a").wait().unwrap();
    let ids: Vec<_> = leases
        .members()
        .wait()
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["daemon/b"]);
}

fn dead_letter_counts_follow_park_resolve_and_delete<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("orders", vec![event("e0"), event("e1"), event("e2")]);
    let counts = |h: &Harness<L>| h.log.dead_letter_counts().wait().unwrap();
    assert!(counts(&h).is_empty());
    let a = park(&h, 0);
    let b = park(&h, 1);
    let c = park(&h, 2);
    let shipping = ConsumerCommit {
        group: "shipping".into(),
        dead_letter: Some(dead_letter_record(
            "shipping",
            at("orders", 0, 0),
            FailureKind::Trap,
        )),
        ..ConsumerCommit::default()
    };
    let s = h.log.commit(shipping).wait().unwrap().dead_letter.unwrap();
    assert_eq!(
        counts(&h),
        BTreeMap::from([("billing".to_owned(), 3), ("shipping".to_owned(), 1)])
    );
    // A replay that succeeds resolves its letter; one that fails again parks a new letter in
    // the same commit: the count stays.
    h.log.commit(replay_of(a, "ok")).wait().unwrap();
    let mut again = replay_of(b, "again");
    again.emits.clear();
    again.dead_letter = Some(dead_letter_record(
        "billing",
        at("orders", 0, 1),
        FailureKind::Trap,
    ));
    h.log.commit(again).wait().unwrap();
    assert_eq!(
        counts(&h),
        BTreeMap::from([("billing".to_owned(), 2), ("shipping".to_owned(), 1)])
    );
    // A refused commit counts nothing.
    assert!(h.log.commit(replay_of(a, "twice")).wait().is_err());
    assert!(h.log.delete_dead_letter(s).wait().unwrap());
    assert!(!h.log.delete_dead_letter(s).wait().unwrap());
    assert!(h.log.delete_dead_letter(c).wait().unwrap());
    let h = h.reopen();
    assert_eq!(counts(&h), BTreeMap::from([("billing".to_owned(), 1)]));
    assert_eq!(
        h.log.dead_letters(None, None, 100).wait().unwrap().len(),
        1,
        "the count agrees with the letters"
    );
}

fn a_seek_is_a_commit_fenced_by_the_offset_it_moves_from<L: Backend>() {
    let h = Harness::<L>::new();
    h.publish("orders", vec![event("e0"), event("e1"), event("e2")]);
    h.log
        .commit(advance_to("billing", "orders", 0, 3))
        .wait()
        .unwrap();
    let seek = |from: u64, to: u64| {
        let mut c = advance_to("billing", "orders", 0, to);
        c.seek = true;
        if let Some(advance) = &mut c.offset {
            advance.from = Some(from);
        }
        c
    };
    // Backwards, from the offset it is at.
    h.log.commit(seek(3, 1)).wait().unwrap();
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        Some(1)
    );
    // A commit moved it after the seek was decided: refused, nothing moves.
    h.log
        .commit(advance_to("billing", "orders", 0, 2))
        .wait()
        .unwrap();
    let stale = h.log.commit(seek(1, 0)).wait();
    assert!(
        matches!(
            stale,
            Err(LogError::OffsetConflict {
                current: 2,
                requested: 0,
                ..
            })
        ),
        "{stale:?}"
    );
    assert_eq!(stale.unwrap_err().class(), ErrorClass::Conflict);
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        Some(2)
    );
    // Not beyond the end; to the end is fine.
    assert!(matches!(
        h.log.commit(seek(2, 4)).wait(),
        Err(LogError::Invalid(_))
    ));
    h.log.commit(seek(2, 3)).wait().unwrap();
    // A seek that does not name where it moves from is refused: it would be unfenced.
    let unfenced = h
        .log
        .commit(ConsumerCommit {
            seek: true,
            ..advance_to("billing", "orders", 0, 0)
        })
        .wait();
    assert!(
        matches!(unfenced, Err(LogError::Invalid(_))),
        "{unfenced:?}"
    );
    assert_eq!(
        h.log
            .committed_offset("billing", "orders", 0)
            .wait()
            .unwrap(),
        Some(3)
    );
}

// ---------------------------------------------------------------------------------------
// every contract test, once per backend

/// Stamps out `redb::NAME`, `memory::NAME` and `nats::NAME` for each generic contract test
/// `NAME<L>`.
macro_rules! contract_tests {
    (sync: $($name:ident),* $(,)?; async: $($async_name:ident),* $(,)?) => {
        contract_tests!(@backend redb, RedbLog; $($name),*; $($async_name),*);
        contract_tests!(@backend memory, MemoryLog; $($name),*; $($async_name),*);
        contract_tests!(@backend nats, NatsLog; $($name),*; $($async_name),*);
    };
    (@backend $module:ident, $log:ident; $($name:ident),*; $($async_name:ident),*) => {
        mod $module {
            use super::$log;
            $(
                #[test]
                fn $name() {
                    super::$name::<$log>()
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $async_name() {
                    super::$async_name::<$log>().await
                }
            )*
        }
    };
}

contract_tests! {
    sync:
        the_runtime_reads_committed_plugin_state_through_the_log,
        reads_run_across_batch_boundaries_in_offset_order,
        one_subject_stays_in_one_partition_in_order,
        topics_are_auto_created_unless_switched_off,
        a_refused_request_leaves_its_batch_neighbours_alone,
        oversize_events_and_stray_stream_fields_are_refused,
        a_republished_id_is_acked_with_the_original_offset_and_stored_once,
        concurrent_publishes_of_one_id_append_it_once,
        an_id_is_appended_again_after_the_dedupe_window,
        offsets_are_kept_per_group_topic_and_partition,
        a_second_commit_for_the_same_event_writes_nothing,
        a_commit_with_one_invalid_part_is_refused_whole,
        a_consumer_commit_writes_all_its_parts_together,
        dead_letters_are_listed_by_plugin_fetched_and_deleted,
        state_keys_are_listed_by_prefix_within_a_namespace,
        a_stream_append_checks_the_expected_version,
        concurrent_stream_writers_get_exactly_one_winner_per_version,
        a_blocking_waiter_wakes_when_an_event_is_appended_and_on_shutdown,
        retention_deletes_events_older_than_max_age,
        retention_keeps_each_partition_under_max_bytes,
        retention_never_passes_the_slowest_group_unless_told_to,
        retention_runs_in_the_background,
        unique_ids_in_acks_match_the_log,
        a_commit_resolving_a_gone_dead_letter_is_refused_whole,
        concurrent_replays_of_one_dead_letter_commit_once,
        a_commit_requiring_a_gone_state_entry_is_refused_whole,
        errors_say_refused_conflict_or_failed,
        a_log_one_daemon_owns_has_no_leases,
        a_lease_fences_the_commits_of_its_partition,
        a_released_lease_is_taken_at_the_next_epoch,
        racing_acquisitions_of_one_lease_have_one_winner,
        members_announce_their_groups_and_leave,
        a_commit_whose_read_state_moved_is_refused_whole,
        a_commit_from_a_stale_offset_is_refused_even_if_it_goes_further,
        schemas_are_stored_once_listed_in_order_and_immutable,
        concurrent_puts_of_one_schema_version_store_exactly_one,
        dead_letter_counts_follow_park_resolve_and_delete,
        a_seek_is_a_commit_fenced_by_the_offset_it_moves_from;
    async:
        an_async_waiter_wakes_when_an_event_is_appended,
}
