//! Dispatch: every loaded plugin consumes the log as a consumer group.
//!
//! For each plugin a supervisor finds the topics its subscriptions match (new
//! topics are picked up as they appear) and runs one consumer per partition.
//! A consumer reads a batch, calls the plugin on a blocking thread, and commits
//! the batch's outcome — offset, emits, state — through the log's single
//! consumer-commit transaction. Failures are retried with backoff and parked in
//! the dead-letter store; a circuit breaker pauses a plugin that keeps failing.
//!
//! # Layout
//! - `matcher`: subscription globs → which topics, which event types.
//! - `backoff`: the retry delay of each attempt.
//! - `breaker`: the per-plugin circuit breaker.
//! - `overlay`: the state view of a call: committed state plus the batch's writes.
//! - `consumer`: one partition's read–call–commit loop.
//! - `supervisor`: one plugin's consumers across topics and partitions.
//! - `coordinator`: which partitions this daemon works when daemons share the log.
//! - `replay`: dead-letter replay through the current plugin version.
//! - `seek`: an operator's seek, applied by the partition's consumer between batches.

mod backoff;
mod breaker;
mod consumer;
mod coordinator;
mod matcher;
mod overlay;
mod replay;
mod seek;
mod supervisor;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

pub use self::backoff::delay_for_attempt;
pub use self::breaker::{BreakerConfig, BreakerState};
use self::coordinator::Coordinator;
pub use self::coordinator::LeaseSettings;
pub use self::matcher::Matcher;
pub use self::seek::Seeked;
use self::supervisor::Supervisor;
use crate::event::Position;
use crate::log::{DeadLetterId, EventLog, FailureKind, LogError};
use crate::runtime::{Grants, Limits, LoadedPlugin, RetryPolicy, Runtime, Subscription};

/// This daemon process's id (`HOST-PID-RANDOM`): its member id on a shared log, and the
/// maker named in the attempt records it writes before a call.
pub(crate) fn incarnation() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        format!(
            "{}-{}-{}",
            hostname(),
            std::process::id(),
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        )
    })
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "evhost".into())
}

/// Dispatcher-wide settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Most events one consumer reads, calls and commits as one batch.
    pub batch_size: usize,
    /// How often supervisors look for new topics.
    pub topic_scan_interval: Duration,
    /// Retry policy of plugins that declare none.
    pub default_retry: RetryPolicy,
    pub breaker: BreakerConfig,
    /// Checks every event a plugin emits before its call's effects are
    /// accepted (the daemon plugs the schema registry in here); a refused emit
    /// makes the call a rejection, so nothing of it is committed.
    pub emit_check: Option<EmitCheck>,
    /// Lease timing when several daemons share the log (NATS); unused otherwise.
    pub leases: LeaseSettings,
}

/// See [`DispatchConfig::emit_check`]: `Err` carries why the event is refused.
#[derive(Clone)]
pub struct EmitCheck(pub Arc<EmitCheckFn>);

/// The function behind an [`EmitCheck`].
pub type EmitCheckFn = dyn Fn(&crate::event::Event) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for EmitCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmitCheck")
    }
}

impl EmitCheck {
    /// Runs the check over the emits of a call of `plugin`, turning a refusal
    /// into the call's failure (a rejection).
    pub(crate) fn apply(
        &self,
        plugin: &LoadedPlugin,
        effects: &crate::runtime::Effects,
    ) -> Result<(), crate::runtime::CallError> {
        for emit in &effects.emits {
            (self.0)(&emit.event).map_err(|why| {
                let failure =
                    crate::runtime::Failure::Rejected(format!("emitted event refused: {why}"));
                crate::runtime::CallError::new(plugin, failure)
            })?;
        }
        Ok(())
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            batch_size: 64,
            topic_scan_interval: Duration::from_millis(250),
            default_retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            emit_check: None,
            leases: LeaseSettings::default(),
        }
    }
}

/// What the operator decides about a plugin (from its sidecar); everything
/// optional falls back to what the plugin describes or the host defaults.
#[derive(Debug, Clone, Default)]
pub struct PluginSettings {
    /// Replaces the plugin's own subscriptions when set.
    pub subscriptions: Option<Vec<Subscription>>,
    /// Replaces the plugin's own retry policy when set.
    pub retry: Option<RetryPolicy>,
    pub limits: Limits,
    /// Most partitions the plugin works on at once; `None` is no bound.
    pub concurrency: Option<usize>,
    pub config: BTreeMap<String, String>,
    pub grants: Grants,
    pub ordering: OrderingMode,
}

/// What a partition does while one of its events is being retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrderingMode {
    /// The partition waits: events are handled strictly in offset order.
    #[default]
    Strict,
    /// The failing event is set aside for its retries while later events
    /// flow: a retried event is handled after events that came after it.
    NonBlocking,
}

/// A plugin version as deployed: the loaded component plus its settings and
/// the load number that tells versions apart.
#[derive(Clone)]
pub struct Deployment {
    pub plugin: Arc<LoadedPlugin>,
    pub settings: PluginSettings,
    /// Monotonically increasing per data directory (the loader keeps the last
    /// one on disk); recorded in dead letters.
    pub load_number: u64,
}

impl Deployment {
    pub fn name(&self) -> &str {
        &self.plugin.info.name
    }

    /// The plugin's version and this deployment's load number, as recorded in
    /// dead letters: `1.2.0 (load 7)`. The plugin's own version alone does not
    /// tell two builds, or two sidecars, apart; the load number does.
    pub fn version_label(&self) -> String {
        format!("{} (load {})", self.plugin.info.version, self.load_number)
    }

    pub fn subscriptions(&self) -> &[Subscription] {
        self.settings
            .subscriptions
            .as_deref()
            .unwrap_or(&self.plugin.info.subscriptions)
    }
}

/// Running, paused by the breaker, or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Stopped,
}

/// One partition's progress.
#[derive(Debug, Clone)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// The next offset the plugin will consume.
    pub committed: u64,
    /// The partition's end offset.
    pub end: u64,
    pub lag: u64,
}

/// What `GET /v1/plugins` and the metrics show of a plugin.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub load_number: u64,
    pub state: RunState,
    pub subscriptions: Vec<Subscription>,
    /// Events handled successfully since start, replays included.
    pub processed: u64,
    pub failed: u64,
    /// Events this daemon parked since start (a running total).
    pub dead_lettered: u64,
    /// The plugin's dead letters in the store now (the log's count): what
    /// replays and discards bring down.
    pub dead_letters: u64,
    /// The last failure of the running version (a new version starts clean).
    pub last_error: Option<String>,
    /// Durations of the plugin's calls (successful or not).
    pub call_latency: crate::histogram::HistogramSnapshot,
    pub lag: u64,
    pub partitions: Vec<PartitionLag>,
    /// Consumer tasks of the plugin that ended unexpectedly and were restarted.
    pub consumer_restarts: u64,
    /// Why the last one ended.
    pub consumer_error: Option<String>,
    /// Consumers that ended unexpectedly and wait for their restart now.
    pub consumers_down: u64,
    /// What the operator granted the running version.
    pub grants: Grants,
}

/// Errors of dispatcher operations (not of plugin calls, which end up in
/// dead letters and counters).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no dead letter with id {0}")]
    UnknownDeadLetter(DeadLetterId),
    #[error("dead letter {0} is being replayed right now")]
    ReplayInProgress(DeadLetterId),
    #[error("plugin `{0}` is not loaded, so its dead letters cannot be replayed")]
    PluginNotLoaded(String),
    #[error("no plugin named `{0}` is loaded")]
    UnknownPlugin(String),
    #[error("plugin `{plugin}` does not consume topic `{topic}` (no subscription matches it)")]
    NotSubscribed { plugin: String, topic: String },
    #[error("offset {offset} is beyond the end ({end}) of {topic}/{partition}")]
    OffsetBeyondEnd {
        topic: String,
        partition: u32,
        offset: u64,
        end: u64,
    },
    #[error(
        "this daemon does not work {topic}/{partition} for plugin `{plugin}` now (another daemon sharing the log holds it, or its consumer has not started yet)"
    )]
    NotWorkedHere {
        plugin: String,
        topic: String,
        partition: u32,
    },
    #[error("a seek of plugin `{plugin}` on {topic}/{partition} is already waiting")]
    SeekInProgress {
        plugin: String,
        topic: String,
        partition: u32,
    },
    #[error(
        "the consumer of plugin `{plugin}` on {topic}/{partition} did not reach a batch boundary within {waited:?} (a call or its retries still run, or the consumer is restarting); nothing was changed"
    )]
    SeekTimeout {
        plugin: String,
        topic: String,
        partition: u32,
        waited: Duration,
    },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The result of replaying one dead letter.
#[derive(Debug, Clone)]
pub enum ReplayOutcome {
    /// Handled; the effects are committed and the dead letter removed.
    Succeeded,
    /// Failed again; the dead letter is updated (it has a new id).
    Failed { new_id: u64, message: String },
}

/// What happens in dispatch, for observers (metrics, tests, tracing).
#[derive(Debug, Clone)]
pub enum DispatchEvent {
    /// A call failed; `retry_in` is the backoff before the next attempt, or
    /// `None` when the event is parked instead.
    CallFailed {
        plugin: String,
        position: Position,
        event_id: String,
        attempt: u32,
        kind: FailureKind,
        message: String,
        at: SystemTime,
        retry_in: Option<Duration>,
    },
    /// An event went to the dead-letter store.
    Parked {
        plugin: String,
        position: Position,
        event_id: String,
        dead_letter: DeadLetterId,
        kind: FailureKind,
        attempts: u32,
    },
    /// A plugin's circuit breaker changed state.
    Breaker {
        plugin: String,
        state: BreakerState,
        at: SystemTime,
    },
}

/// Owns the plugins' supervisors. Cheap to share behind an `Arc`.
pub struct Dispatcher {
    log: Arc<dyn EventLog>,
    runtime: Arc<Runtime>,
    config: DispatchConfig,
    supervisors: Mutex<BTreeMap<String, Supervisor>>,
    events: broadcast::Sender<DispatchEvent>,
    /// Dead letters being replayed now: one replay of a letter at a time.
    replaying: replay::InFlight,
    /// Decides which partitions this daemon works, when daemons share the log.
    coordinator: Option<Arc<Coordinator>>,
}

impl Dispatcher {
    /// Must be called inside a tokio runtime: supervisors and consumers are tasks.
    pub fn new(log: Arc<dyn EventLog>, runtime: Arc<Runtime>, config: DispatchConfig) -> Arc<Self> {
        let coordinator = Coordinator::start(log.clone(), config.leases.clone());
        Arc::new(Dispatcher {
            coordinator,
            log,
            runtime,
            config,
            supervisors: Mutex::new(BTreeMap::new()),
            events: broadcast::channel(4096).0,
            replaying: replay::InFlight::default(),
        })
    }

    /// A feed of dispatch events from now on (lagging receivers lose the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<DispatchEvent> {
        self.events.subscribe()
    }

    /// Starts consuming for `deployment`, or swaps the running version of the
    /// plugin with the same name between batches (offsets carry over).
    pub fn deploy(&self, deployment: Deployment) {
        let mut sups = self
            .supervisors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match sups.get(deployment.name()) {
            Some(sup) => sup.replace(deployment),
            None => {
                let name = deployment.name().to_owned();
                let sup = Supervisor::start(
                    self.log.clone(),
                    self.runtime.clone(),
                    self.config.clone(),
                    deployment,
                    self.events.clone(),
                    self.coordinator.clone(),
                );
                sups.insert(name, sup);
            }
        }
    }

    /// Stops a plugin's consumers; its offsets, state and dead letters stay.
    pub async fn remove(&self, name: &str) -> bool {
        let sup = self
            .supervisors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        match sup {
            Some(sup) => {
                // A call still running after this ends at its own timeout, uncommitted.
                sup.join(Duration::from_secs(10)).await;
                if let Some(c) = &self.coordinator {
                    c.forget(name);
                }
                true
            }
            None => false,
        }
    }

    /// Status of every deployed plugin, by name.
    pub async fn plugins(&self) -> Vec<PluginStatus> {
        let sups: Vec<_> = {
            let sups = self
                .supervisors
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            sups.values().map(Supervisor::handle).collect()
        };
        let counts = match self.log.dead_letter_counts().await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!("cannot read the dead-letter counts: {e}");
                BTreeMap::new()
            }
        };
        let mut out = Vec::with_capacity(sups.len());
        for s in sups {
            let mut status = s.status(self.log.as_ref()).await;
            status.dead_letters = counts.get(&status.name).copied().unwrap_or(0);
            out.push(status);
        }
        out
    }

    /// Moves `plugin`'s offset on `topic`/`partition` to `offset` (back to
    /// re-handle events, forward to skip them). The partition's consumer
    /// applies it between batches, as a commit fenced by the offset it moves
    /// from; the answer comes once it is committed.
    pub async fn seek(
        &self,
        plugin: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Seeked, DispatchError> {
        seek::seek(self, plugin, topic, partition, offset).await
    }

    /// Plugins with consumers that ended unexpectedly and wait for their
    /// restart: `(plugin, consumers down, why the last one ended)`.
    pub fn consumers_down(&self) -> Vec<(String, u64, Option<String>)> {
        let sups = self
            .supervisors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sups.values().filter_map(|s| s.handle().down()).collect()
    }

    fn plugin_current(&self, plugin: &str) -> Option<supervisor::SupervisorHandle> {
        let sups = self
            .supervisors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sups.get(plugin).map(Supervisor::handle)
    }

    /// Replays one dead letter through the current version of its plugin. A
    /// letter already resolved is unknown; one being replayed is in progress.
    pub async fn replay(&self, id: DeadLetterId) -> Result<ReplayOutcome, DispatchError> {
        replay::replay(self, id).await
    }

    /// Replays every dead letter of `plugin`, oldest first; returns how many
    /// succeeded and how many failed again.
    pub async fn replay_all(&self, plugin: &str) -> Result<(usize, usize), DispatchError> {
        replay::replay_all(self, plugin).await
    }

    /// Stops all consumers: calls in flight get until `deadline` to finish and
    /// commit; after it they are abandoned uncommitted (and redelivered later).
    pub async fn shutdown(&self, deadline: Duration) {
        let sups: Vec<Supervisor> = std::mem::take(
            &mut *self
                .supervisors
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
        .into_values()
        .collect();
        // Signal all first so they wind down together, then wait for each.
        for s in &sups {
            s.signal_stop();
        }
        let until = tokio::time::Instant::now() + deadline;
        let mut abandoned = false;
        for s in sups {
            abandoned |= !s
                .join(until.saturating_duration_since(tokio::time::Instant::now()))
                .await;
        }
        if abandoned {
            // Their tasks are gone, but a call may still run on a blocking
            // thread until its timeout; stop it now so the process can exit.
            self.runtime.interrupt_all();
        }
        // Consumers are stopped: hand their partitions over at once instead of letting
        // the other daemons wait out the leases.
        if let Some(c) = &self.coordinator {
            c.shutdown().await;
        }
    }

    fn plugin_parts(&self, plugin: &str) -> Option<(Deployment, Arc<supervisor::PluginShared>)> {
        let sups = self
            .supervisors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sups.get(plugin)
            .map(|s| (s.current(), s.handle().shared().clone()))
    }
}

#[cfg(test)]
mod tests;
