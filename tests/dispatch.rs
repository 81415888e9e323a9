//! Dispatch end to end: real plugins built from `plugins/`, the real redb log,
//! the real dispatcher; crash tests kill a real child process with SIGKILL.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use evhost::dispatch::{
    BreakerConfig, BreakerState, Deployment, DispatchConfig, DispatchEvent, Dispatcher,
    OrderingMode, PluginSettings, RunState,
};
use evhost::event::{self, Event, StoredEvent};
use evhost::log::{EventLog, FailureKind, LogConfig, NewEvent, RedbLog, TopicConfig};
use evhost::runtime::{Grants, Limits, RetryPolicy, Runtime, RuntimeConfig, Subscription};
use tokio::sync::broadcast;

const DEADLINE: Duration = Duration::from_secs(30);

fn open_log(dir: &Path) -> Arc<dyn EventLog> {
    Arc::new(RedbLog::open(dir.join("log.redb"), LogConfig::default()).expect("log opens"))
}

fn runtime() -> Arc<Runtime> {
    Arc::new(Runtime::new(RuntimeConfig::default()).unwrap())
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

async fn publish(log: &Arc<dyn EventLog>, topic: &str, events: Vec<Event>) {
    let events = events
        .into_iter()
        .map(|e| NewEvent::to_topic(topic, e))
        .collect();
    log.append(events).await.expect("append");
}

async fn read_all(log: &Arc<dyn EventLog>, topic: &str) -> Vec<StoredEvent> {
    let Some(info) = log.topic(topic).await.unwrap() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in 0..info.partitions.len() as u32 {
        out.extend(log.read(topic, p, 0, 1_000_000).await.unwrap());
    }
    out
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

fn deploy(d: &Dispatcher, rt: &Runtime, plugin: &str, load_number: u64, settings: PluginSettings) {
    let plugin = rt.load_file(&support::plugin(plugin)).unwrap();
    d.deploy(Deployment {
        plugin,
        settings,
        load_number,
    });
}

fn all_grants() -> Grants {
    Grants::all()
}

/// Data of the `faulty.done` events `faulty` emitted, in log order.
async fn done_events(log: &Arc<dyn EventLog>) -> Vec<serde_json::Value> {
    read_all(log, "faulty-results")
        .await
        .iter()
        .map(|e| serde_json::from_slice(e.event.data.as_deref().unwrap()).unwrap())
        .collect()
}

async fn counter_value(log: &Arc<dyn EventLog>, key: &str) -> u64 {
    log.state_get("counter", key)
        .await
        .unwrap()
        .map(|v| serde_json::from_slice(&v).unwrap())
        .unwrap_or(0)
}

fn drain(rx: &mut broadcast::Receiver<DispatchEvent>) -> Vec<DispatchEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matching_event_reaches_each_plugin_in_partition_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    log.create_topic(
        "work",
        TopicConfig {
            partitions: 3,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut events = Vec::new();
    for i in 0..150 {
        let ty = ["faulty.ok", "faulty.done", "other.thing"][i % 3];
        events.push(ev(ty, &format!("key-{}", i % 7), None));
    }
    publish(&log, "work", events).await;

    let rt = runtime();
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
    // Two plugins, different patterns over the same topic.
    deploy(
        &d,
        &rt,
        "faulty",
        1,
        PluginSettings {
            subscriptions: Some(vec![sub("work", "faulty.ok")]),
            grants: all_grants(),
            ..Default::default()
        },
    );
    deploy(
        &d,
        &rt,
        "counter",
        1,
        PluginSettings {
            subscriptions: Some(vec![sub("w*", "faulty.*")]),
            grants: all_grants(),
            ..Default::default()
        },
    );

    eventually("both plugins caught up", || async {
        done_events(&log).await.len() == 50 && counter_value(&log, "count/total").await == 100
    })
    .await;
    assert_eq!(counter_value(&log, "count/type/faulty.ok").await, 50);
    assert_eq!(counter_value(&log, "count/type/faulty.done").await, 50);
    assert_eq!(
        counter_value(&log, "count/type/other.thing").await,
        0,
        "non-matching events are not handled"
    );

    // Per input partition, `faulty` handled the matching events in offset order.
    let stored = read_all(&log, "work").await;
    let done = done_events(&log).await;
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
        d.plugins().await.iter().all(|p| p.lag == 0)
    })
    .await;
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_failing_twice_then_succeeding_commits_its_effects_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let rt = runtime();
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
    let mut feed = d.subscribe();
    deploy(
        &d,
        &rt,
        "faulty",
        1,
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
    publish(&log, "faulty-events", vec![e.clone()]).await;

    eventually("the event is handled", || async {
        !done_events(&log).await.is_empty()
    })
    .await;
    let done = done_events(&log).await;
    assert_eq!(done.len(), 1, "effects committed exactly once: {done:?}");
    assert_eq!(done[0]["attempt"], 3, "the handler saw its third delivery");
    let failures: Vec<u32> = drain(&mut feed)
        .into_iter()
        .filter_map(|e| match e {
            DispatchEvent::CallFailed { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(failures, [1, 2]);
    // The attempt record is cleared with the successful commit.
    let stored = read_all(&log, "faulty-events").await;
    assert_eq!(
        log.attempts("faulty", &stored[0].position).await.unwrap(),
        None
    );
    assert!(log.dead_letters(None, None, 10).await.unwrap().is_empty());
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_failing_event_is_parked_after_max_attempts_with_growing_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let rt = runtime();
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
    let mut feed = d.subscribe();
    deploy(
        &d,
        &rt,
        "faulty",
        1,
        PluginSettings {
            retry: Some(policy(4, 30)),
            grants: all_grants(),
            ..Default::default()
        },
    );
    publish(
        &log,
        "faulty-events",
        vec![ev("faulty.retry", "k", None), ev("faulty.ok", "k", None)],
    )
    .await;

    eventually("parked", || async {
        !log.dead_letters(None, None, 10).await.unwrap().is_empty()
    })
    .await;
    let dl = log.dead_letters(Some("faulty"), None, 10).await.unwrap();
    assert_eq!(dl.len(), 1);
    let r = &dl[0].record;
    assert_eq!(r.kind, FailureKind::RetriesExhausted);
    assert_eq!(r.attempts, 4);
    assert_eq!(r.event.event.ty, "faulty.retry");
    assert!(r.message.contains("retry as asked"), "{}", r.message);
    assert!(!r.plugin_version.is_empty() && r.plugin_digest.len() == 64);
    assert!(r.first_failure <= r.last_failure);

    // The failure times recorded for attempts 1..4: the gaps grow with the backoff.
    let times: Vec<SystemTime> = drain(&mut feed)
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
    assert!(gaps[0] >= Duration::from_millis(30), "{gaps:?}");
    assert!(
        gaps[0] < gaps[1] && gaps[1] < gaps[2],
        "backoff must grow: {gaps:?}"
    );

    // The consumer moved on to the next event.
    eventually("next event handled", || async {
        done_events(&log).await.len() == 1
    })
    .await;
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_is_parked_at_once_and_traps_and_timeouts_keep_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let rt = runtime();
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
    deploy(
        &d,
        &rt,
        "faulty",
        1,
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
    publish(
        &log,
        "faulty-events",
        vec![
            ev("faulty.reject", "k", None),
            ev("faulty.panic", "k", None),
            ev("faulty.loop", "k", None),
        ],
    )
    .await;
    eventually("three parked", || async {
        log.dead_letters(None, None, 10).await.unwrap().len() == 3
    })
    .await;
    let dl = log.dead_letters(Some("faulty"), None, 10).await.unwrap();
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
    let status = d.plugins().await;
    assert_eq!(status[0].dead_lettered, 3);
    assert!(status[0].last_error.is_some());
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_fixing_the_plugin_commits_effects_and_removes_the_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let rt = runtime();
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
    // Without the emit grant, `faulty.ok` cannot emit and rejects.
    deploy(&d, &rt, "faulty", 1, PluginSettings::default());
    publish(&log, "faulty-events", vec![ev("faulty.ok", "k", None)]).await;
    eventually("parked", || async {
        !log.dead_letters(None, None, 10).await.unwrap().is_empty()
    })
    .await;
    let id = log.dead_letters(None, None, 10).await.unwrap()[0].id;

    // Replay against the same (still broken) version fails and keeps a record.
    let outcome = d.replay(id).await.unwrap();
    let evhost::dispatch::ReplayOutcome::Failed { new_id, message } = outcome else {
        panic!("replay should fail before the fix: {outcome:?}")
    };
    assert!(message.contains("emit"), "{message}");
    let again = log.dead_letters(None, None, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id.0, new_id);
    assert_eq!(again[0].record.attempts, 2);

    // The operator grants emit: a new version of the deployment.
    deploy(
        &d,
        &rt,
        "faulty",
        2,
        PluginSettings {
            grants: Grants::new(vec!["faulty.*".into()], false).unwrap(),
            ..Default::default()
        },
    );
    let (ok, failed) = d.replay_all("faulty").await.unwrap();
    assert_eq!((ok, failed), (1, 0));
    assert!(log.dead_letters(None, None, 10).await.unwrap().is_empty());
    assert_eq!(
        done_events(&log).await.len(),
        1,
        "the replayed call's emit is committed"
    );
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_pauses_half_opens_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let rt = runtime();
    let cool_down = Duration::from_millis(800);
    let config = DispatchConfig {
        breaker: BreakerConfig {
            failure_threshold: 3,
            cool_down,
        },
        ..Default::default()
    };
    let d = Dispatcher::new(log.clone(), rt.clone(), config);
    let mut feed = d.subscribe();
    deploy(
        &d,
        &rt,
        "faulty",
        1,
        PluginSettings {
            retry: Some(policy(4, 5)),
            grants: all_grants(),
            ..Default::default()
        },
    );
    // Deliveries 1–3 fail (the breaker opens), the probe at delivery 4 fails
    // (it opens again, without using up an attempt), the probe at 5 succeeds.
    publish(
        &log,
        "faulty-events",
        vec![ev(
            "faulty.fail-until",
            "k",
            Some(serde_json::json!({"succeed_on_attempt": 5})),
        )],
    )
    .await;
    eventually("paused", || async {
        d.plugins().await[0].state == RunState::Paused
    })
    .await;
    eventually("handled", || async { done_events(&log).await.len() == 1 }).await;
    assert_eq!(done_events(&log).await[0]["attempt"], 5);
    assert!(
        log.dead_letters(None, None, 10).await.unwrap().is_empty(),
        "the outage drained nothing"
    );
    assert_eq!(d.plugins().await[0].state, RunState::Running);

    let transitions: Vec<(BreakerState, SystemTime)> = drain(&mut feed)
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
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_abandons_a_call_past_the_deadline_without_committing_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let rt = runtime();
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
    deploy(
        &d,
        &rt,
        "faulty",
        1,
        PluginSettings {
            limits: Limits {
                timeout: Duration::from_secs(20),
                ..Limits::default()
            },
            grants: all_grants(),
            ..Default::default()
        },
    );
    publish(
        &log,
        "faulty-events",
        vec![ev("faulty.ok", "k", None), ev("faulty.loop", "k", None)],
    )
    .await;
    // The first event is committed; the second is stuck in its call.
    eventually("first handled", || async {
        log.committed_offset("faulty", "faulty-events", 0)
            .await
            .unwrap()
            == Some(1)
    })
    .await;
    let started = tokio::time::Instant::now();
    d.shutdown(Duration::from_millis(300)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited for the runaway call"
    );
    assert_eq!(
        log.committed_offset("faulty", "faulty-events", 0)
            .await
            .unwrap(),
        Some(1),
        "the abandoned call committed nothing"
    );
    assert!(log.dead_letters(None, None, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_helper_skips_an_event_id_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    // The same event (same id) reaches the counter twice, through two topics.
    let e = ev("order.created", "o-1", None);
    publish(&log, "orders-a", vec![e.clone()]).await;
    publish(
        &log,
        "orders-b",
        vec![e.clone(), ev("order.created", "o-2", None)],
    )
    .await;
    let rt = runtime();
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
    deploy(
        &d,
        &rt,
        "counter",
        1,
        PluginSettings {
            subscriptions: Some(vec![sub("orders-*", "order.*")]),
            grants: all_grants(),
            ..Default::default()
        },
    );
    eventually("all delivered", || async {
        d.plugins()
            .await
            .first()
            .is_some_and(|p| p.processed == 3 && p.lag == 0)
    })
    .await;
    assert_eq!(
        counter_value(&log, "count/total").await,
        2,
        "the repeated id was counted once"
    );
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_blocking_mode_lets_later_events_pass_a_failing_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let rt = runtime();
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
    deploy(
        &d,
        &rt,
        "faulty",
        1,
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
    publish(
        &log,
        "faulty-events",
        vec![slow.clone(), a.clone(), b.clone()],
    )
    .await;

    eventually("all three handled", || async {
        done_events(&log).await.len() == 3
    })
    .await;
    let order: Vec<String> = done_events(&log)
        .await
        .iter()
        .map(|d| d["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        [a.id, b.id, slow.id],
        "later events passed the set-aside one"
    );
    assert_eq!(done_events(&log).await[2]["attempt"], 2);
    // Nothing left set aside or parked, and no lag.
    assert!(
        log.state_keys("__evhost", "set-aside/", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(log.dead_letters(None, None, 10).await.unwrap().is_empty());
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_aside_event_keeps_its_attempts_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let rt = runtime();
    let settings = PluginSettings {
        retry: Some(policy(3, 300)),
        ordering: OrderingMode::NonBlocking,
        grants: all_grants(),
        ..Default::default()
    };
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
    let mut feed = d.subscribe();
    deploy(&d, &rt, "faulty", 1, settings.clone());
    publish(
        &log,
        "faulty-events",
        vec![ev("faulty.retry", "k", None), ev("faulty.ok", "k", None)],
    )
    .await;
    eventually("first attempt failed and the next event passed", || async {
        done_events(&log).await.len() == 1
    })
    .await;
    let failed_before: usize = drain(&mut feed)
        .iter()
        .filter(|e| matches!(e, DispatchEvent::CallFailed { .. }))
        .count();
    assert_eq!(failed_before, 1);
    d.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        log.state_keys("__evhost", "set-aside/", 10)
            .await
            .unwrap()
            .len(),
        1,
        "persisted as set aside"
    );

    // A new dispatcher, as after a restart: the set-aside event resumes.
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
    deploy(&d, &rt, "faulty", 2, settings);
    eventually("parked", || async {
        !log.dead_letters(None, None, 10).await.unwrap().is_empty()
    })
    .await;
    let dl = log.dead_letters(None, None, 10).await.unwrap();
    assert_eq!(dl[0].record.kind, FailureKind::RetriesExhausted);
    assert_eq!(
        dl[0].record.attempts, 3,
        "the attempt before the restart counted"
    );
    assert!(
        log.state_keys("__evhost", "set-aside/", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        done_events(&log).await.len(),
        1,
        "the later event was handled once"
    );
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_handler_runs_through_the_same_pipeline() {
    use evhost::runtime::{Effects, Failure, LoadedPlugin, PluginInfo};
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let rt = runtime();
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
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
    d.deploy(Deployment {
        plugin: LoadedPlugin::native(info, handler),
        settings: PluginSettings {
            grants: all_grants(),
            ..Default::default()
        },
        load_number: 1,
    });
    let events = (0..10)
        .map(|n| ev("number.seen", "k", Some(serde_json::json!({ "n": n }))))
        .collect();
    publish(&log, "numbers", events).await;
    eventually("all seen", || async {
        log.state_keys("native-sum", "seen/", 100)
            .await
            .unwrap()
            .len()
            == 10
    })
    .await;
    d.shutdown(Duration::from_secs(5)).await;
}

/// Runs a native plugin whose calls each take a while over 4 partitions and
/// returns the most calls that were ever in flight at once.
async fn most_concurrent_calls(concurrency: Option<usize>) -> usize {
    use evhost::runtime::{Effects, LoadedPlugin, PluginInfo};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    log.create_topic(
        "work",
        TopicConfig {
            partitions: 4,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let events = (0..40)
        .map(|i| ev("job.run", &format!("key-{i}"), None))
        .collect();
    publish(&log, "work", events).await;
    let rt = runtime();
    let d = Dispatcher::new(log.clone(), rt.clone(), DispatchConfig::default());
    let (in_flight, most, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (f, m, n) = (in_flight.clone(), most.clone(), done.clone());
    let handler = Arc::new(move |_: &StoredEvent, _: u32| {
        let now = f.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(now, Ordering::SeqCst);
        // The work a handler does; long enough for calls on other partitions to overlap.
        std::thread::sleep(Duration::from_millis(15));
        f.fetch_sub(1, Ordering::SeqCst);
        n.fetch_add(1, Ordering::SeqCst);
        Ok(Effects::default())
    });
    let info = PluginInfo {
        name: "slow".into(),
        version: "1".into(),
        subscriptions: vec![sub("work", "*")],
        retry: None,
    };
    d.deploy(Deployment {
        plugin: LoadedPlugin::native(info, handler),
        settings: PluginSettings {
            concurrency,
            ..Default::default()
        },
        load_number: 1,
    });
    eventually("all handled", || async {
        done.load(Ordering::SeqCst) == 40
    })
    .await;
    d.shutdown(Duration::from_secs(5)).await;
    most.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bounds_the_partitions_a_plugin_works_on_at_once() {
    assert_eq!(most_concurrent_calls(Some(1)).await, 1);
    // Without the bound the same workload does overlap, so the check above can fail.
    assert!(most_concurrent_calls(None).await >= 2);
}
