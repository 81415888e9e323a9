//! Dispatch end to end: real plugins built from `plugins/`, the real
//! dispatcher, on each durable log backend — redb in a temp dir, and NATS
//! JetStream on a `nats-server` of the test's own — with the same assertions.

mod support;

#[path = "support/nats_server.rs"]
mod nats_server;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use evhost::dispatch::{
    BreakerConfig, BreakerState, Deployment, DispatchConfig, DispatchEvent, Dispatcher,
    OrderingMode, PluginSettings, RunState,
};
use evhost::event::{self, Event, StoredEvent};
use evhost::log::{
    DeadLetter, EventLog, FailureKind, LogConfig, NatsConfig, NatsLog, NewEvent, RedbLog,
    TopicConfig,
};
use evhost::runtime::{
    Grants, Limits, LoadedPlugin, RetryPolicy, Runtime, RuntimeConfig, Subscription,
};
use tokio::sync::broadcast;

const DEADLINE: Duration = Duration::from_secs(30);

/// The log a test runs on.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Redb,
    Nats,
}

/// What keeps a test's log alive: its directory, and for NATS its server.
struct Store {
    _dir: tempfile::TempDir,
    _server: Option<nats_server::NatsServer>,
}

fn open_log(backend: Backend) -> (Arc<dyn EventLog>, Store) {
    let dir = tempfile::tempdir().unwrap();
    match backend {
        Backend::Redb => {
            let log = RedbLog::open(dir.path().join("log.redb"), LogConfig::default())
                .expect("log opens");
            (
                Arc::new(log),
                Store {
                    _dir: dir,
                    _server: None,
                },
            )
        }
        Backend::Nats => {
            let server = nats_server::NatsServer::start();
            let config = NatsConfig::new(vec![server.url.clone()], "dispatch");
            // The log runs its own runtime: connect from a plain thread. The server
            // listens before JetStream is ready, so the first connect may need a retry.
            let log = std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    match NatsLog::connect(config.clone()) {
                        Ok(log) => return log,
                        Err(e) if std::time::Instant::now() < deadline => {
                            eprintln!("NATS log not ready yet: {e}");
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => panic!("cannot open the NATS log: {e}"),
                    }
                }
            })
            .join()
            .expect("connect thread");
            (
                Arc::new(log),
                Store {
                    _dir: dir,
                    _server: Some(server),
                },
            )
        }
    }
}

/// One test's world: the log (see [`Backend`]), a runtime, and a
/// dispatcher whose feed is subscribed before anything is deployed, so a test
/// sees every dispatch event. Each deployment gets the next load number, as
/// the loader hands them out.
struct Fixture {
    log: Arc<dyn EventLog>,
    runtime: Arc<Runtime>,
    config: DispatchConfig,
    dispatcher: Arc<Dispatcher>,
    feed: broadcast::Receiver<DispatchEvent>,
    loads: Cell<u64>,
    _store: Store,
}

impl Fixture {
    fn new(backend: Backend) -> Self {
        Self::with_config(backend, DispatchConfig::default())
    }

    fn with_config(backend: Backend, config: DispatchConfig) -> Self {
        let (log, store) = open_log(backend);
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
        let dispatcher = Dispatcher::new(log.clone(), runtime.clone(), config.clone());
        let feed = dispatcher.subscribe();
        Fixture {
            log,
            runtime,
            config,
            dispatcher,
            feed,
            loads: Cell::new(0),
            _store: store,
        }
    }

    /// A new dispatcher over the same log, as after a restart; shut the old
    /// one down first.
    fn restart(&mut self) {
        self.dispatcher =
            Dispatcher::new(self.log.clone(), self.runtime.clone(), self.config.clone());
        self.feed = self.dispatcher.subscribe();
    }

    /// Deploys the example plugin `name` (its crate name) from `plugins/`.
    fn deploy(&self, name: &str, settings: PluginSettings) {
        let plugin = self.runtime.load_file(&support::plugin(name)).unwrap();
        self.deploy_loaded(plugin, settings);
    }

    fn deploy_loaded(&self, plugin: Arc<LoadedPlugin>, settings: PluginSettings) {
        self.loads.set(self.loads.get() + 1);
        self.dispatcher.deploy(Deployment {
            plugin,
            settings,
            load_number: self.loads.get(),
        });
    }

    async fn create_topic(&self, name: &str, partitions: u32) {
        self.log
            .create_topic(
                name,
                TopicConfig {
                    partitions,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    async fn publish(&self, topic: &str, events: Vec<Event>) {
        let events = events
            .into_iter()
            .map(|e| NewEvent::to_topic(topic, e))
            .collect();
        self.log.append(events).await.expect("append");
    }

    async fn read_all(&self, topic: &str) -> Vec<StoredEvent> {
        let Some(info) = self.log.topic(topic).await.unwrap() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in 0..info.partitions.len() as u32 {
            out.extend(self.log.read(topic, p, 0, 1_000_000).await.unwrap());
        }
        out
    }

    /// Data of the `faulty.done` events `faulty` emitted, in log order.
    async fn done_events(&self) -> Vec<serde_json::Value> {
        self.read_all("faulty-results")
            .await
            .iter()
            .map(|e| serde_json::from_slice(e.event.data.as_deref().unwrap()).unwrap())
            .collect()
    }

    async fn counter_value(&self, key: &str) -> u64 {
        self.log
            .state_get("counter", key)
            .await
            .unwrap()
            .map(|v| serde_json::from_slice(&v).unwrap())
            .unwrap_or(0)
    }

    /// The first ten dead letters of all plugins.
    async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.log.dead_letters(None, None, 10).await.unwrap()
    }

    /// The dispatch events received so far.
    fn drain_feed(&mut self) -> Vec<DispatchEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.feed.try_recv() {
            out.push(e);
        }
        out
    }
}

fn ev(ty: &str, subject: &str, data: Option<serde_json::Value>) -> Event {
    let id = event::new_event_id();
    Event {
        id: id.clone(),
        source: "test".into(),
        specversion: "1.0".into(),
        ty: ty.into(),
        subject: Some(subject.into()),
        time: event::now_rfc3339(),
        datacontenttype: data.as_ref().map(|_| "application/json".into()),
        dataschema: None,
        data: data.map(|d| d.to_string().into_bytes()),
        correlationid: id,
        causationid: None,
        actor: None,
        extensions: BTreeMap::new(),
        stream: None,
        streamversion: None,
    }
}

async fn eventually<F, Fut>(what: &str, mut cond: F)
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sub(topic: &str, ty: &str) -> Subscription {
    Subscription {
        topic: topic.into(),
        event_type: ty.into(),
    }
}

fn policy(max_attempts: u32, initial_ms: u64) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(initial_ms),
        max_backoff: Duration::from_secs(5),
        multiplier: 2.0,
        jitter: 0.0,
    }
}

fn all_grants() -> Grants {
    Grants::all()
}

async fn every_matching_event_reaches_each_plugin_in_partition_order(backend: Backend) {
    let f = Fixture::new(backend);
    f.create_topic("work", 3).await;
    let mut events = Vec::new();
    for i in 0..150 {
        let ty = ["faulty.ok", "faulty.done", "other.thing"][i % 3];
        events.push(ev(ty, &format!("key-{}", i % 7), None));
    }
    f.publish("work", events).await;

    // Two plugins, different patterns over the same topic.
    f.deploy(
        "faulty",
        PluginSettings {
            subscriptions: Some(vec![sub("work", "faulty.ok")]),
            grants: all_grants(),
            ..Default::default()
        },
    );
    f.deploy(
        "counter",
        PluginSettings {
            subscriptions: Some(vec![sub("w*", "faulty.*")]),
            grants: all_grants(),
            ..Default::default()
        },
    );

    eventually("both plugins caught up", || async {
        f.done_events().await.len() == 50 && f.counter_value("count/total").await == 100
    })
    .await;
    assert_eq!(f.counter_value("count/type/faulty.ok").await, 50);
    assert_eq!(f.counter_value("count/type/faulty.done").await, 50);
    assert_eq!(
        f.counter_value("count/type/other.thing").await,
        0,
        "non-matching events are not handled"
    );

    // Per input partition, `faulty` handled the matching events in offset order.
    let stored = f.read_all("work").await;
    let done = f.done_events().await;
    let handled: Vec<&str> = done.iter().map(|d| d["event"].as_str().unwrap()).collect();
    for p in 0..3 {
        let expected: Vec<&str> = stored
            .iter()
            .filter(|e| e.position.partition == p && e.event.ty == "faulty.ok")
            .map(|e| e.event.id.as_str())
            .collect();
        let seen: Vec<&str> = handled
            .iter()
            .copied()
            .filter(|id| expected.contains(id))
            .collect();
        assert_eq!(seen, expected, "partition {p} out of order");
    }
    // The non-matching events still moved the offsets: nothing is lagging.
    eventually("no lag", || async {
        f.dispatcher.plugins().await.iter().all(|p| p.lag == 0)
    })
    .await;
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
}

async fn plugin_failing_twice_then_succeeding_commits_its_effects_once(backend: Backend) {
    let mut f = Fixture::new(backend);
    f.deploy(
        "faulty",
        PluginSettings {
            retry: Some(policy(5, 10)),
            grants: all_grants(),
            ..Default::default()
        },
    );
    let e = ev(
        "faulty.fail-until",
        "k",
        Some(serde_json::json!({"succeed_on_attempt": 3})),
    );
    f.publish("faulty-events", vec![e.clone()]).await;

    eventually("the event is handled", || async {
        !f.done_events().await.is_empty()
    })
    .await;
    let done = f.done_events().await;
    assert_eq!(done.len(), 1, "effects committed exactly once: {done:?}");
    assert_eq!(done[0]["attempt"], 3, "the handler saw its third delivery");
    let failures: Vec<u32> = f
        .drain_feed()
        .into_iter()
        .filter_map(|e| match e {
            DispatchEvent::CallFailed { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(failures, [1, 2]);
    // The attempt record is cleared with the successful commit.
    let stored = f.read_all("faulty-events").await;
    assert_eq!(
        f.log.attempts("faulty", &stored[0].position).await.unwrap(),
        None
    );
    assert!(f.dead_letters().await.is_empty());
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
}

async fn always_failing_event_is_parked_after_max_attempts_with_growing_backoff(backend: Backend) {
    let mut f = Fixture::new(backend);
    f.deploy(
        "faulty",
        PluginSettings {
            retry: Some(policy(4, 30)),
            grants: all_grants(),
            ..Default::default()
        },
    );
    f.publish(
        "faulty-events",
        vec![ev("faulty.retry", "k", None), ev("faulty.ok", "k", None)],
    )
    .await;

    eventually("parked", || async { !f.dead_letters().await.is_empty() }).await;
    let dl = f.log.dead_letters(Some("faulty"), None, 10).await.unwrap();
    assert_eq!(dl.len(), 1);
    let r = &dl[0].record;
    assert_eq!(r.kind, FailureKind::RetriesExhausted);
    assert_eq!(r.attempts, 4);
    assert_eq!(r.event.event.ty, "faulty.retry");
    assert!(r.message.contains("retry as asked"), "{}", r.message);
    assert!(!r.plugin_version.is_empty() && r.plugin_digest.len() == 64);
    assert!(r.first_failure <= r.last_failure);

    // The failure times recorded for attempts 1..4: the gaps grow with the backoff.
    let times: Vec<SystemTime> = f
        .drain_feed()
        .into_iter()
        .filter_map(|e| match e {
            DispatchEvent::CallFailed { at, .. } => Some(at),
            _ => None,
        })
        .collect();
    assert_eq!(times.len(), 4);
    let gaps: Vec<Duration> = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap())
        .collect();
    // Each wait is at least the policy's backoff for that attempt (30, 60, 120 ms): a
    // lower bound, so a busy machine (which only lengthens waits) cannot fake or hide it,
    // and without growth the third wait would be near 30 ms.
    for (i, gap) in gaps.iter().enumerate() {
        let backoff = Duration::from_millis(30 << i);
        assert!(
            *gap >= backoff,
            "backoff must grow: wait {i} is {gap:?}, under {backoff:?}: {gaps:?}"
        );
    }

    // The consumer moved on to the next event.
    eventually("next event handled", || async {
        f.done_events().await.len() == 1
    })
    .await;
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
}

async fn reject_is_parked_at_once_and_traps_and_timeouts_keep_their_kind(backend: Backend) {
    let f = Fixture::new(backend);
    f.deploy(
        "faulty",
        PluginSettings {
            retry: Some(policy(2, 5)),
            limits: Limits {
                timeout: Duration::from_millis(200),
                ..Limits::default()
            },
            grants: all_grants(),
            ..Default::default()
        },
    );
    f.publish(
        "faulty-events",
        vec![
            ev("faulty.reject", "k", None),
            ev("faulty.panic", "k", None),
            ev("faulty.loop", "k", None),
        ],
    )
    .await;
    eventually("three parked", || async {
        f.dead_letters().await.len() == 3
    })
    .await;
    let dl = f.log.dead_letters(Some("faulty"), None, 10).await.unwrap();
    let kinds: Vec<(FailureKind, u32)> = dl
        .iter()
        .map(|d| (d.record.kind, d.record.attempts))
        .collect();
    assert_eq!(
        kinds,
        [
            (FailureKind::Rejected, 1),
            (FailureKind::Trap, 2),
            (FailureKind::Timeout, 2)
        ],
        "{dl:#?}"
    );
    assert!(
        dl[1].record.message.contains("panic requested"),
        "{}",
        dl[1].record.message
    );
    // The consumer counts a letter right after its commit returns: wait for the third.
    eventually("three counted", || async {
        f.dispatcher.plugins().await[0].dead_lettered == 3
    })
    .await;
    let status = f.dispatcher.plugins().await;
    assert_eq!(status[0].dead_lettered, 3);
    assert!(status[0].last_error.is_some());
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
}

async fn replay_after_fixing_the_plugin_commits_effects_and_removes_the_dead_letter(
    backend: Backend,
) {
    let f = Fixture::new(backend);
    // Without the emit grant, `faulty.ok` cannot emit and rejects.
    f.deploy("faulty", PluginSettings::default());
    f.publish("faulty-events", vec![ev("faulty.ok", "k", None)])
        .await;
    eventually("parked", || async { !f.dead_letters().await.is_empty() }).await;
    let id = f.dead_letters().await[0].id;

    // Replay against the same (still broken) version fails and keeps a record.
    let outcome = f.dispatcher.replay(id).await.unwrap();
    let evhost::dispatch::ReplayOutcome::Failed { new_id, message } = outcome else {
        panic!("replay should fail before the fix: {outcome:?}")
    };
    assert!(message.contains("emit"), "{message}");
    let again = f.dead_letters().await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id.0, new_id);
    assert_eq!(again[0].record.attempts, 2);

    // The operator grants emit: a new version of the deployment.
    f.deploy(
        "faulty",
        PluginSettings {
            grants: Grants::new(vec!["faulty.*".into()], false).unwrap(),
            ..Default::default()
        },
    );
    let (ok, failed) = f.dispatcher.replay_all("faulty").await.unwrap();
    assert_eq!((ok, failed), (1, 0));
    assert!(f.dead_letters().await.is_empty());
    assert_eq!(
        f.done_events().await.len(),
        1,
        "the replayed call's emit is committed"
    );
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
}

async fn breaker_opens_pauses_half_opens_and_closes(backend: Backend) {
    let cool_down = Duration::from_millis(800);
    let mut f = Fixture::with_config(
        backend,
        DispatchConfig {
            breaker: BreakerConfig {
                failure_threshold: 3,
                cool_down,
            },
            ..Default::default()
        },
    );
    f.deploy(
        "faulty",
        PluginSettings {
            retry: Some(policy(4, 5)),
            grants: all_grants(),
            ..Default::default()
        },
    );
    // Deliveries 1–3 fail (the breaker opens), the probe at delivery 4 fails
    // (it opens again, without using up an attempt), the probe at 5 succeeds.
    f.publish(
        "faulty-events",
        vec![ev(
            "faulty.fail-until",
            "k",
            Some(serde_json::json!({"succeed_on_attempt": 5})),
        )],
    )
    .await;
    eventually("paused", || async {
        f.dispatcher.plugins().await[0].state == RunState::Paused
    })
    .await;
    eventually("handled", || async { f.done_events().await.len() == 1 }).await;
    assert_eq!(f.done_events().await[0]["attempt"], 5);
    assert!(
        f.dead_letters().await.is_empty(),
        "the outage drained nothing"
    );
    assert_eq!(f.dispatcher.plugins().await[0].state, RunState::Running);

    let transitions: Vec<(BreakerState, SystemTime)> = f
        .drain_feed()
        .into_iter()
        .filter_map(|e| match e {
            DispatchEvent::Breaker { state, at, .. } => Some((state, at)),
            _ => None,
        })
        .collect();
    use BreakerState::*;
    let states: Vec<BreakerState> = transitions.iter().map(|t| t.0).collect();
    assert_eq!(states, [Open, HalfOpen, Open, HalfOpen, Closed]);
    // Each pause lasted the cool-down.
    for pair in [(0, 1), (2, 3)] {
        let paused = transitions[pair.1]
            .1
            .duration_since(transitions[pair.0].1)
            .unwrap();
        assert!(paused >= cool_down, "paused only {paused:?}");
    }
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
}

async fn shutdown_abandons_a_call_past_the_deadline_without_committing_it(backend: Backend) {
    let f = Fixture::new(backend);
    f.deploy(
        "faulty",
        PluginSettings {
            limits: Limits {
                timeout: Duration::from_secs(20),
                ..Limits::default()
            },
            grants: all_grants(),
            ..Default::default()
        },
    );
    f.publish(
        "faulty-events",
        vec![ev("faulty.ok", "k", None), ev("faulty.loop", "k", None)],
    )
    .await;
    // The first event is committed; the second is stuck in its call.
    eventually("first handled", || async {
        f.log
            .committed_offset("faulty", "faulty-events", 0)
            .await
            .unwrap()
            == Some(1)
    })
    .await;
    let started = tokio::time::Instant::now();
    f.dispatcher.shutdown(Duration::from_millis(300)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited for the runaway call"
    );
    assert_eq!(
        f.log
            .committed_offset("faulty", "faulty-events", 0)
            .await
            .unwrap(),
        Some(1),
        "the abandoned call committed nothing"
    );
    assert!(f.dead_letters().await.is_empty());
}

async fn idempotency_helper_skips_an_event_id_delivered_again(backend: Backend) {
    let f = Fixture::new(backend);
    // The same event (same id) reaches the counter twice, through two topics.
    let e = ev("order.created", "o-1", None);
    f.publish("orders-a", vec![e.clone()]).await;
    f.publish(
        "orders-b",
        vec![e.clone(), ev("order.created", "o-2", None)],
    )
    .await;
    f.deploy(
        "counter",
        PluginSettings {
            subscriptions: Some(vec![sub("orders-*", "order.*")]),
            grants: all_grants(),
            ..Default::default()
        },
    );
    eventually("all delivered", || async {
        f.dispatcher
            .plugins()
            .await
            .first()
            .is_some_and(|p| p.processed == 3 && p.lag == 0)
    })
    .await;
    assert_eq!(
        f.counter_value("count/total").await,
        2,
        "the repeated id was counted once"
    );
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
}

async fn non_blocking_mode_lets_later_events_pass_a_failing_one(backend: Backend) {
    let f = Fixture::new(backend);
    f.deploy(
        "faulty",
        PluginSettings {
            retry: Some(policy(3, 200)),
            ordering: OrderingMode::NonBlocking,
            grants: all_grants(),
            ..Default::default()
        },
    );
    let slow = ev(
        "faulty.fail-until",
        "k",
        Some(serde_json::json!({"succeed_on_attempt": 2})),
    );
    let (a, b) = (ev("faulty.ok", "k", None), ev("faulty.ok", "k", None));
    f.publish("faulty-events", vec![slow.clone(), a.clone(), b.clone()])
        .await;

    eventually("all three handled", || async {
        f.done_events().await.len() == 3
    })
    .await;
    let order: Vec<String> = f
        .done_events()
        .await
        .iter()
        .map(|d| d["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        [a.id, b.id, slow.id],
        "later events passed the set-aside one"
    );
    assert_eq!(f.done_events().await[2]["attempt"], 2);
    // Nothing left set aside or parked, and no lag.
    assert!(
        f.log
            .state_keys("__evhost", "set-aside/", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(f.dead_letters().await.is_empty());
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
}

async fn set_aside_event_keeps_its_attempts_across_a_restart(backend: Backend) {
    let mut f = Fixture::new(backend);
    let settings = PluginSettings {
        retry: Some(policy(3, 300)),
        ordering: OrderingMode::NonBlocking,
        grants: all_grants(),
        ..Default::default()
    };
    f.deploy("faulty", settings.clone());
    f.publish(
        "faulty-events",
        vec![ev("faulty.retry", "k", None), ev("faulty.ok", "k", None)],
    )
    .await;
    eventually("first attempt failed and the next event passed", || async {
        f.done_events().await.len() == 1
    })
    .await;
    let failed_before: usize = f
        .drain_feed()
        .iter()
        .filter(|e| matches!(e, DispatchEvent::CallFailed { .. }))
        .count();
    assert_eq!(failed_before, 1);
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        f.log
            .state_keys("__evhost", "set-aside/", 10)
            .await
            .unwrap()
            .len(),
        1,
        "persisted as set aside"
    );

    // A new dispatcher, as after a restart: the set-aside event resumes.
    f.restart();
    f.deploy("faulty", settings);
    eventually("parked", || async { !f.dead_letters().await.is_empty() }).await;
    let dl = f.dead_letters().await;
    assert_eq!(dl[0].record.kind, FailureKind::RetriesExhausted);
    assert_eq!(
        dl[0].record.attempts, 3,
        "the attempt before the restart counted"
    );
    assert!(
        f.log
            .state_keys("__evhost", "set-aside/", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.done_events().await.len(),
        1,
        "the later event was handled once"
    );
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
}

async fn a_native_handler_runs_through_the_same_pipeline(backend: Backend) {
    use evhost::runtime::{Effects, Failure, PluginInfo};
    let f = Fixture::new(backend);
    let info = PluginInfo {
        name: "native-sum".into(),
        version: "1".into(),
        subscriptions: vec![sub("numbers", "*")],
        retry: Some(policy(1, 1)),
    };
    let handler = Arc::new(|e: &StoredEvent, _attempt: u32| {
        let v: serde_json::Value =
            serde_json::from_slice(e.event.data.as_deref().unwrap_or(b"null"))
                .map_err(|e| Failure::Rejected(e.to_string()))?;
        let mut effects = Effects::default();
        effects
            .state
            .insert(format!("seen/{}", v["n"]), Some(b"1".to_vec()));
        Ok(effects)
    });
    f.deploy_loaded(
        LoadedPlugin::native(info, handler),
        PluginSettings {
            grants: all_grants(),
            ..Default::default()
        },
    );
    let events = (0..10)
        .map(|n| ev("number.seen", "k", Some(serde_json::json!({ "n": n }))))
        .collect();
    f.publish("numbers", events).await;
    eventually("all seen", || async {
        f.log
            .state_keys("native-sum", "seen/", 100)
            .await
            .unwrap()
            .len()
            == 10
    })
    .await;
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
}

/// Runs a native plugin whose calls each take a while over 4 partitions and
/// returns the most calls that were ever in flight at once.
async fn most_concurrent_calls(backend: Backend, concurrency: Option<usize>) -> usize {
    use evhost::runtime::{Effects, PluginInfo};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let f = Fixture::new(backend);
    f.create_topic("work", 4).await;
    let events = (0..40)
        .map(|i| ev("job.run", &format!("key-{i}"), None))
        .collect();
    f.publish("work", events).await;
    let (in_flight, most, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (fl, m, n) = (in_flight.clone(), most.clone(), done.clone());
    let handler = Arc::new(move |_: &StoredEvent, _: u32| {
        let now = fl.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(now, Ordering::SeqCst);
        // The work a handler does; long enough for calls on other partitions to overlap.
        std::thread::sleep(Duration::from_millis(15));
        fl.fetch_sub(1, Ordering::SeqCst);
        n.fetch_add(1, Ordering::SeqCst);
        Ok(Effects::default())
    });
    let info = PluginInfo {
        name: "slow".into(),
        version: "1".into(),
        subscriptions: vec![sub("work", "*")],
        retry: None,
    };
    f.deploy_loaded(
        LoadedPlugin::native(info, handler),
        PluginSettings {
            concurrency,
            ..Default::default()
        },
    );
    eventually("all handled", || async {
        done.load(Ordering::SeqCst) == 40
    })
    .await;
    f.dispatcher.shutdown(Duration::from_secs(5)).await;
    most.load(Ordering::SeqCst)
}

async fn concurrency_bounds_the_partitions_a_plugin_works_on_at_once(backend: Backend) {
    assert_eq!(most_concurrent_calls(backend, Some(1)).await, 1);
    // Without the bound the same workload does overlap, so the check above can fail.
    assert!(most_concurrent_calls(backend, None).await >= 2);
}

/// Every scenario above, on each backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Redb).await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Nats).await
                }
            )*
        }
    };
}

on_every_backend!(
    every_matching_event_reaches_each_plugin_in_partition_order,
    plugin_failing_twice_then_succeeding_commits_its_effects_once,
    always_failing_event_is_parked_after_max_attempts_with_growing_backoff,
    reject_is_parked_at_once_and_traps_and_timeouts_keep_their_kind,
    replay_after_fixing_the_plugin_commits_effects_and_removes_the_dead_letter,
    breaker_opens_pauses_half_opens_and_closes,
    shutdown_abandons_a_call_past_the_deadline_without_committing_it,
    idempotency_helper_skips_an_event_id_delivered_again,
    non_blocking_mode_lets_later_events_pass_a_failing_one,
    set_aside_event_keeps_its_attempts_across_a_restart,
    a_native_handler_runs_through_the_same_pipeline,
    concurrency_bounds_the_partitions_a_plugin_works_on_at_once,
);
