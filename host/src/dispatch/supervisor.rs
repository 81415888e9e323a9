//! One plugin's consumers: finds the topics its subscriptions match, runs a
//! consumer per partition, follows new topics and new plugin versions, and
//! restarts (with backoff, from the committed offset) a consumer task that
//! ended unexpectedly — a panic, or a request the log refused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::breaker::{Breaker, BreakerState};
use super::consumer::{self, ConsumerCtx};
use super::coordinator::{Coordinator, Part};
use super::matcher::Matcher;
use super::{Deployment, DispatchConfig, DispatchEvent, PartitionLag, PluginStatus, RunState};
use crate::histogram::{CALL_SECONDS, Histogram};
use crate::log::{EventLog, LeaseFence};
use crate::runtime::Runtime;

/// What a plugin's consumers share.
pub(super) struct PluginShared {
    pub name: String,
    pub breaker: Arc<Breaker>,
    pub processed: AtomicU64,
    pub failed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Consumer tasks restarted after ending unexpectedly, and the last cause.
    pub consumer_restarts: AtomicU64,
    pub consumer_error: Mutex<Option<String>>,
    /// Consumers that ended unexpectedly and wait for their restart.
    pub consumers_down: AtomicU64,
    /// Operators' seeks waiting for their consumers.
    pub seeks: super::seek::Seeks,
    pub emit_check: Option<super::EmitCheck>,
    pub latency: Histogram,
    /// Held by a consumer from its batch's first call until the batch is
    /// committed when the plugin may use state, so that consumers of different
    /// partitions never read state another batch is about to change.
    pub state_lock: tokio::sync::Mutex<()>,
    /// Bounds the partitions worked on at once; replaced when a new version
    /// changes `concurrency` (permits of the old one run out with their batches).
    concurrency: Mutex<Option<Arc<Semaphore>>>,
    pub events: broadcast::Sender<DispatchEvent>,
}

fn semaphore(concurrency: Option<usize>) -> Option<Arc<Semaphore>> {
    concurrency.map(|n| Arc::new(Semaphore::new(n.max(1))))
}

impl PluginShared {
    pub fn concurrency(&self) -> Option<Arc<Semaphore>> {
        self.concurrency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_error(&self, message: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
    }
}

/// A deployment with its compiled matcher.
#[derive(Clone)]
pub(super) struct Current {
    pub deployment: Deployment,
    pub matcher: Matcher,
}

pub(super) struct Supervisor {
    handle: SupervisorHandle,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The parts of a supervisor that status queries need.
#[derive(Clone)]
pub(super) struct SupervisorHandle {
    shared: Arc<PluginShared>,
    current: watch::Receiver<Current>,
    current_tx: Arc<watch::Sender<Current>>,
    partitions: Arc<Mutex<Vec<(String, u32)>>>,
}

fn compile(deployment: Deployment) -> Current {
    let matcher = Matcher::new(deployment.subscriptions()).unwrap_or_else(|e| {
        // Subscriptions are validated when loaded; a bad pattern here consumes nothing.
        tracing::error!(
            plugin = deployment.name(),
            "invalid subscription pattern: {e}"
        );
        Matcher::none()
    });
    Current {
        deployment,
        matcher,
    }
}

impl Supervisor {
    pub fn start(
        log: Arc<dyn EventLog>,
        runtime: Arc<Runtime>,
        config: DispatchConfig,
        deployment: Deployment,
        events: broadcast::Sender<DispatchEvent>,
        coordinator: Option<Arc<Coordinator>>,
    ) -> Self {
        let name = deployment.name().to_owned();
        let feed = events.clone();
        let on_change = move |state: BreakerState| {
            tracing::warn!(plugin = %name, "circuit breaker is now {state:?}");
            let _ = feed.send(DispatchEvent::Breaker {
                plugin: name.clone(),
                state,
                at: std::time::SystemTime::now(),
            });
        };
        let shared = Arc::new(PluginShared {
            name: deployment.name().to_owned(),
            breaker: Arc::new(Breaker::new(config.breaker.clone(), on_change)),
            processed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            last_error: Mutex::new(None),
            consumer_restarts: AtomicU64::new(0),
            consumer_error: Mutex::new(None),
            consumers_down: AtomicU64::new(0),
            seeks: super::seek::Seeks::default(),
            emit_check: config.emit_check.clone(),
            latency: Histogram::new(CALL_SECONDS),
            state_lock: tokio::sync::Mutex::new(()),
            concurrency: Mutex::new(semaphore(deployment.settings.concurrency)),
            events,
        });
        let (current_tx, current_rx) = watch::channel(compile(deployment));
        let (stop_tx, stop_rx) = watch::channel(false);
        let handle = SupervisorHandle {
            shared: shared.clone(),
            current: current_rx.clone(),
            current_tx: Arc::new(current_tx),
            partitions: Arc::new(Mutex::new(Vec::new())),
        };
        let task = tokio::spawn(run(
            Env {
                log,
                runtime,
                config,
                coordinator,
            },
            handle.clone(),
            stop_rx,
        ));
        Supervisor {
            handle,
            stop: stop_tx,
            task,
        }
    }

    pub fn handle(&self) -> SupervisorHandle {
        self.handle.clone()
    }

    pub fn current(&self) -> Deployment {
        self.handle.current.borrow().deployment.clone()
    }

    /// Swaps in a new version; consumers pick it up between batches.
    pub fn replace(&self, deployment: Deployment) {
        let limit = deployment.settings.concurrency;
        if self.current().settings.concurrency != limit {
            *self
                .handle
                .shared
                .concurrency
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = semaphore(limit);
        }
        self.handle.current_tx.send_replace(compile(deployment));
        // The last error was the old version's; the new one starts clean.
        *self
            .handle
            .shared
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        // A new version may be the fix: an open breaker probes it at once
        // instead of waiting out the cool-down set for the old one.
        self.handle.shared.breaker.probe_now();
    }

    /// Asks the consumers to stop after their current batch.
    pub fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the consumers to stop, abandoning them after `deadline`;
    /// returns whether they stopped in time.
    pub async fn join(self, deadline: Duration) -> bool {
        self.signal_stop();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            tracing::warn!(plugin = %self.handle.shared.name, "consumers did not stop within {deadline:?}; abandoning their calls uncommitted");
            abort.abort();
            return false;
        }
        true
    }
}

impl SupervisorHandle {
    pub fn shared(&self) -> &Arc<PluginShared> {
        &self.shared
    }

    pub fn current_compiled(&self) -> Current {
        self.current.borrow().clone()
    }

    /// Whether this daemon works `topic`/`partition` for the plugin now (on
    /// a shared log: holds its lease).
    pub fn works(&self, topic: &str, partition: u32) -> bool {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(t, p)| t == topic && *p == partition)
    }

    /// `(plugin, consumers down, last cause)` when any consumer is down.
    pub fn down(&self) -> Option<(String, u64, Option<String>)> {
        let n = self.shared.consumers_down.load(Ordering::Relaxed);
        (n > 0).then(|| {
            (
                self.shared.name.clone(),
                n,
                self.shared
                    .consumer_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            )
        })
    }

    pub async fn status(&self, log: &dyn EventLog) -> PluginStatus {
        let current = self.current.borrow().clone();
        let d = &current.deployment;
        let consumed = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut partitions = Vec::new();
        let mut ends: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (topic, partition) in consumed {
            if !ends.contains_key(&topic)
                && let Ok(Some(info)) = log.topic(&topic).await
            {
                ends.insert(
                    topic.clone(),
                    info.partitions.iter().map(|p| p.end).collect(),
                );
            }
            let end = ends
                .get(&topic)
                .and_then(|e| e.get(partition as usize))
                .copied()
                .unwrap_or(0);
            let committed = log
                .committed_offset(d.name(), &topic, partition)
                .await
                .ok()
                .flatten()
                .unwrap_or(0);
            partitions.push(PartitionLag {
                topic,
                partition,
                committed,
                end,
                lag: end.saturating_sub(committed),
            });
        }
        let state = match self.shared.breaker.state() {
            BreakerState::Closed => RunState::Running,
            BreakerState::Open | BreakerState::HalfOpen => RunState::Paused,
        };
        PluginStatus {
            name: d.name().to_owned(),
            version: d.plugin.info.version.clone(),
            digest: d.plugin.digest.clone(),
            load_number: d.load_number,
            state,
            subscriptions: d.subscriptions().to_vec(),
            processed: self.shared.processed.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            dead_lettered: self.shared.dead_lettered.load(Ordering::Relaxed),
            dead_letters: 0,
            call_latency: self.shared.latency.snapshot(),
            last_error: self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
            consumer_restarts: self.shared.consumer_restarts.load(Ordering::Relaxed),
            consumer_error: self
                .shared
                .consumer_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            consumers_down: self.shared.consumers_down.load(Ordering::Relaxed),
            grants: d.settings.grants.clone(),
        }
    }
}

/// A consumer that ran for this long before ending is restarted without
/// the backoff its earlier failures built up.
const STABLE_RUN: Duration = Duration::from_secs(60);
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

struct Running {
    /// The lease it works under (shared logs).
    lease: Option<LeaseFence>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<consumer::Ended>>,
    started: Instant,
    /// Unexpected ends in a row before this start.
    failures: u32,
}

impl Running {
    async fn stop_and_join(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn finished(&self) -> bool {
        self.task.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// Why a finished consumer ended; it was not asked to (the supervisor
    /// asks only consumers it has already taken out of its map).
    async fn cause(mut self) -> String {
        let Some(task) = self.task.take() else {
            return "the consumer task is gone".into();
        };
        match task.await {
            Ok(consumer::Ended::Failed(why)) => why,
            Ok(consumer::Ended::Stopped) => "the consumer stopped without being asked to".into(),
            Ok(consumer::Ended::LeaseLost) => "another daemon took the partition".into(),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text panic payload".into());
                format!("panicked: {text}")
            }
            Err(e) => format!("the consumer task failed: {e}"),
        }
    }
}

/// Consumers are tasks of their own; when the supervisor is abandoned (its
/// task aborted after the shutdown deadline) they must go with it.
impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The delay before the `failures`-th restart in a row.
fn restart_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    FIRST_RESTART_DELAY
        .saturating_mul(1 << exp)
        .min(MAX_RESTART_DELAY)
}

/// What a supervisor works with.
struct Env {
    log: Arc<dyn EventLog>,
    runtime: Arc<Runtime>,
    config: DispatchConfig,
    coordinator: Option<Arc<Coordinator>>,
}

/// Waits for the coordinator to change the held set; forever without one.
async fn held_changed(changes: &mut Option<watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *changes = None;
            }
        }
        None => std::future::pending().await,
    }
}

async fn run(env: Env, handle: SupervisorHandle, mut stop: watch::Receiver<bool>) {
    let Env {
        log,
        runtime,
        config,
        coordinator,
    } = env;
    let name = handle.shared.name.clone();
    let mut consumers: BTreeMap<Part, Running> = BTreeMap::new();
    // Consumers that ended unexpectedly: when they may start again, and how
    // many times in a row they ended.
    let mut restarts: BTreeMap<Part, (Instant, u32)> = BTreeMap::new();
    let mut current = handle.current.clone();
    let mut changes = coordinator.as_ref().map(|c| c.changes());
    loop {
        let ended: Vec<_> = consumers
            .iter()
            .filter(|(_, r)| r.finished())
            .map(|(k, _)| k.clone())
            .collect();
        for key in ended {
            let Some(r) = consumers.remove(&key) else {
                continue;
            };
            let lease = r.lease.clone();
            let failures = if r.started.elapsed() >= STABLE_RUN {
                1
            } else {
                r.failures + 1
            };
            let cause = r.cause().await;
            if let (Some(c), Some(fence)) = (&coordinator, &lease)
                && cause == "another daemon took the partition"
            {
                c.lost(fence);
                continue;
            }
            let delay = restart_delay(failures);
            tracing::error!(plugin = %name, topic = %key.0, partition = key.1, "consumer ended unexpectedly ({cause}); restarting it in {delay:?} from the committed offset");
            handle
                .shared
                .consumer_restarts
                .fetch_add(1, Ordering::Relaxed);
            *handle
                .shared
                .consumer_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) =
                Some(format!("{}/{}: {cause}", key.0, key.1));
            restarts.insert(key, (Instant::now() + delay, failures));
        }
        let matcher = current.borrow_and_update().matcher.clone();
        match log.topics().await {
            Ok(topics) => {
                let mut wanted = Vec::new();
                for t in topics.iter().filter(|t| matcher.topic_matches(&t.name)) {
                    for p in 0..t.partitions.len() as u32 {
                        wanted.push((t.name.clone(), p));
                    }
                }
                // On a shared log, only the partitions this daemon holds a lease on.
                let held: Option<BTreeMap<Part, LeaseFence>> = coordinator.as_ref().map(|c| {
                    c.report(&name, &wanted, consumers.keys().cloned());
                    c.held(&name)
                });
                let lease_of = |key: &Part| held.as_ref().and_then(|h| h.get(key).cloned());
                let work: Vec<Part> = match &held {
                    Some(h) => wanted
                        .iter()
                        .filter(|k| h.contains_key(*k))
                        .cloned()
                        .collect(),
                    None => wanted.clone(),
                };
                // Consumers whose topic no longer matches, or whose lease is gone or
                // changed, stop; new ones start.
                let gone: Vec<_> = consumers
                    .iter()
                    .filter(|(k, r)| !work.contains(k) || r.lease != lease_of(k))
                    .map(|(k, _)| k.clone())
                    .collect();
                let stopped_some = !gone.is_empty();
                for key in gone {
                    if let Some(r) = consumers.remove(&key) {
                        r.stop_and_join().await;
                    }
                }
                if stopped_some && let Some(c) = &coordinator {
                    // Their leases may be handed over now.
                    c.report(&name, &wanted, consumers.keys().cloned());
                }
                restarts.retain(|k, _| work.contains(k));
                for key in &work {
                    if consumers.contains_key(key) {
                        continue;
                    }
                    let failures = match restarts.get(key) {
                        Some((at, _)) if *at > Instant::now() => continue,
                        Some((_, failures)) => *failures,
                        None => 0,
                    };
                    restarts.remove(key);
                    let (stop_tx, stop_rx) = watch::channel(false);
                    let lease = lease_of(key);
                    let ctx = ConsumerCtx {
                        log: log.clone(),
                        runtime: runtime.clone(),
                        config: config.clone(),
                        shared: handle.shared.clone(),
                        current: handle.current.clone(),
                        topic: key.0.clone(),
                        partition: key.1,
                        stop: stop_rx,
                        seek: handle.shared.seeks.subscribe(),
                        lease: lease.clone(),
                        committed: std::sync::atomic::AtomicU64::new(0),
                        coordinator: coordinator.clone(),
                    };
                    let task = tokio::spawn(consumer::run(ctx));
                    consumers.insert(
                        key.clone(),
                        Running {
                            lease,
                            stop: stop_tx,
                            task: Some(task),
                            started: Instant::now(),
                            failures,
                        },
                    );
                }
                if let Some(c) = &coordinator {
                    c.report(&name, &wanted, consumers.keys().cloned());
                }
                *handle
                    .partitions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = work;
            }
            Err(e) => tracing::warn!(plugin = %name, "cannot list topics: {e}"),
        }
        handle
            .shared
            .consumers_down
            .store(restarts.len() as u64, Ordering::Relaxed);
        let next_restart = restarts
            .values()
            .map(|(at, _)| *at)
            .min()
            .unwrap_or_else(|| Instant::now() + config.topic_scan_interval);
        let wake = next_restart.min(Instant::now() + config.topic_scan_interval);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = current.changed() => {}
            _ = held_changed(&mut changes) => {}
            _ = stop.changed() => break,
        }
    }
    for r in consumers.values() {
        let _ = r.stop.send(true);
    }
    for (_, r) in consumers {
        r.stop_and_join().await;
    }
    if let Some(c) = &coordinator {
        c.report(&name, &[], std::iter::empty());
    }
}
