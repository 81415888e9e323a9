//! One partition's consumer: read a batch, call the plugin on a blocking
//! thread, commit the batch's outcome in one log transaction; retry a failed
//! event with backoff (attempts persisted before each call) and park it when
//! the policy is used up.
//!
//! Poison pills: in the fast path attempts are not persisted (that would cost
//! a write per event), so after every (re)start a consumer handles its first
//! `batch_size` events one at a time with the attempt persisted *before* the
//! call. An event that kills the host is thus counted from its second
//! delivery on and parked once the count reaches the policy's maximum.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::breaker::Admission;
use super::matcher::TypeFilter;
use super::overlay::Overlay;
use super::supervisor::{Current, PluginShared};
use super::{Deployment, DispatchConfig, DispatchEvent, backoff};
use crate::event::StoredEvent;
use crate::log::{
    AttemptRecord, AttemptUpdate, ConsumerCommit, DeadLetterRecord, EventLog,
    Failure as LogFailure, FailureKind, LogError, NewEvent, OffsetAdvance,
};
use crate::runtime::{
    CallError, Effects, Failure, Instance, InstanceSettings, RetryPolicy, Runtime,
};

/// Pause after a log error before trying again.
const LOG_ERROR_PAUSE: Duration = Duration::from_millis(200);

pub(super) struct ConsumerCtx {
    pub log: Arc<dyn EventLog>,
    pub runtime: Arc<Runtime>,
    pub config: DispatchConfig,
    pub shared: Arc<PluginShared>,
    pub current: watch::Receiver<Current>,
    pub topic: String,
    pub partition: u32,
    pub stop: watch::Receiver<bool>,
}

/// The plugin version a consumer currently calls, with its live instance.
struct Worker {
    deployment: Deployment,
    instance: Instance,
    overlay: Arc<Overlay>,
    filter: TypeFilter,
}

impl Worker {
    fn retry_policy(&self, default: &RetryPolicy) -> RetryPolicy {
        let d = &self.deployment;
        d.settings
            .retry
            .clone()
            .or_else(|| d.plugin.info.retry.clone())
            .unwrap_or_else(|| default.clone())
    }

    fn uses_state(&self) -> bool {
        self.deployment.settings.grants.state
    }
}

/// Why processing stopped early.
enum Stop {
    Requested,
    Log(LogError),
    /// The blocking thread running a call died; the instance went with it.
    Worker(String),
}

impl From<LogError> for Stop {
    fn from(e: LogError) -> Self {
        Stop::Log(e)
    }
}

pub(super) async fn run(mut ctx: ConsumerCtx) {
    let mut careful = ctx.config.batch_size;
    let mut worker: Option<Worker> = None;
    loop {
        if *ctx.stop.borrow() {
            return;
        }
        match step(&mut ctx, &mut worker, &mut careful).await {
            Ok(()) => {}
            Err(Stop::Requested) => return,
            Err(stop) => {
                let why = match stop {
                    Stop::Log(e) => format!("log error: {e}"),
                    Stop::Worker(e) => format!("plugin call thread failed: {e}"),
                    Stop::Requested => unreachable!("handled above"),
                };
                tracing::warn!(plugin = %ctx.shared.name, topic = %ctx.topic, partition = ctx.partition, "{why}; resuming from the committed offset");
                if let Some(w) = &worker {
                    w.overlay.discard();
                }
                if pause(&mut ctx.stop, LOG_ERROR_PAUSE).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sleeps `d` unless a stop is requested first.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> Result<(), Stop> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = stop.wait_for(|s| *s) => Err(Stop::Requested),
    }
}

/// Makes sure `worker` runs the current deployment; a new version takes over
/// here, between batches, with a fresh instance.
fn refresh(ctx: &mut ConsumerCtx, worker: &mut Option<Worker>) {
    let current = ctx.current.borrow_and_update().clone();
    let stale = worker
        .as_ref()
        .is_none_or(|w| w.deployment.load_number != current.deployment.load_number);
    if stale {
        let overlay = Arc::new(Overlay::new(ctx.log.clone()));
        let d = current.deployment;
        let settings = InstanceSettings {
            limits: d.settings.limits.clone(),
            grants: d.settings.grants.clone(),
            config: d.settings.config.clone(),
            state: overlay.clone(),
        };
        *worker = Some(Worker {
            instance: ctx.runtime.instance(d.plugin.clone(), settings),
            overlay,
            filter: current.matcher.type_filter(&ctx.topic),
            deployment: d,
        });
    }
}

/// One round: read from the committed offset and handle what is there.
async fn step(
    ctx: &mut ConsumerCtx,
    worker: &mut Option<Worker>,
    careful: &mut usize,
) -> Result<(), Stop> {
    let group = ctx.shared.name.clone();
    let next = ctx
        .log
        .committed_offset(&group, &ctx.topic, ctx.partition)
        .await?
        .unwrap_or(0);
    refresh(ctx, worker);
    let batch = ctx
        .log
        .read(&ctx.topic, ctx.partition, next, ctx.config.batch_size)
        .await?;
    if batch.is_empty() {
        let end = ctx.log.watch(&ctx.topic, ctx.partition).await?;
        tokio::select! {
            r = end.wait_past(next) => { r?; }
            _ = ctx.stop.wait_for(|s| *s) => return Err(Stop::Requested),
            _ = ctx.current.changed() => {}
        }
        return Ok(());
    }
    let Some(w) = worker.take() else {
        return Ok(());
    };

    // Skip what the plugin does not subscribe to, up to the first match.
    let first_match = batch.iter().position(|e| w.filter.matches(&e.event.ty));
    let Some(first_match) = first_match else {
        let last = batch.last().map_or(next, |e| e.position.offset + 1);
        *worker = Some(w);
        commit(
            ctx,
            ConsumerCommit {
                offset: Some(advance(ctx, last)),
                ..commit_for(&group)
            },
        )
        .await?;
        return Ok(());
    };

    let _permit = match &ctx.shared.concurrency {
        Some(sem) => Some(
            sem.clone()
                .acquire_owned()
                .await
                .map_err(|_| Stop::Requested)?,
        ),
        None => None,
    };
    let admission = tokio::select! {
        a = ctx.shared.breaker.admit() => a,
        _ = ctx.stop.wait_for(|s| *s) => { *worker = Some(w); return Err(Stop::Requested) }
    };

    if *careful > 0 || admission == Admission::Probe {
        *careful = careful.saturating_sub(1);
        let event = Arc::new(batch[first_match].clone());
        // Events before it (not subscribed) are skipped in the same commit.
        let w = handle_carefully(ctx, w, event, admission).await?;
        *worker = Some(w);
        return Ok(());
    }

    let (w, outcome) = call_batch(ctx, w, batch).await?;
    *worker = Some(w);
    if let Some((event, error)) = outcome {
        let w = worker.take().ok_or(Stop::Requested)?;
        let w = retry(ctx, w, event, error, 1, None, Admission::Normal).await?;
        *worker = Some(w);
    }
    Ok(())
}

fn commit_for(group: &str) -> ConsumerCommit {
    ConsumerCommit {
        group: group.to_owned(),
        ..Default::default()
    }
}

fn advance(ctx: &ConsumerCtx, next: u64) -> OffsetAdvance {
    OffsetAdvance {
        topic: ctx.topic.clone(),
        partition: ctx.partition,
        next,
    }
}

async fn commit(ctx: &ConsumerCtx, c: ConsumerCommit) -> Result<crate::log::CommitOutcome, Stop> {
    Ok(ctx.log.commit(c).await?)
}

fn emits_of(effects: Effects) -> Vec<NewEvent> {
    effects
        .emits
        .into_iter()
        .map(|e| NewEvent::to_topic(e.topic, e.event))
        .collect()
}

/// Runs `call` with the worker's instance on a blocking thread.
async fn blocking<T: Send + 'static>(
    w: Worker,
    call: impl FnOnce(&mut Worker) -> T + Send + 'static,
) -> Result<(Worker, T), Stop> {
    tokio::task::spawn_blocking(move || {
        let mut w = w;
        let out = call(&mut w);
        (w, out)
    })
    .await
    .map_err(|e| Stop::Worker(e.to_string()))
}

/// The fast path: calls the batch's matching events in order on one blocking
/// thread, then commits the successful prefix (offset, emits, state) at once.
/// Returns the first failed event, if any, for the retry path.
async fn call_batch(
    ctx: &ConsumerCtx,
    w: Worker,
    batch: Vec<StoredEvent>,
) -> Result<(Worker, Option<(Arc<StoredEvent>, CallError)>), Stop> {
    let state_guard = if w.uses_state() {
        Some(ctx.shared.state_lock.lock().await)
    } else {
        None
    };
    let start = batch.first().map_or(0, |e| e.position.offset);
    let (w, (next, emits, handled, failure)) = blocking(w, move |w| {
        let mut next = start;
        let mut emits = Vec::new();
        let mut handled = 0u64;
        for event in batch {
            if !w.filter.matches(&event.event.ty) {
                next = event.position.offset + 1;
                continue;
            }
            let event = Arc::new(event);
            match w.instance.call(&event, 1) {
                Ok(mut effects) => {
                    w.overlay.apply(std::mem::take(&mut effects.state));
                    emits.extend(emits_of(effects));
                    handled += 1;
                    next = event.position.offset + 1;
                }
                Err(e) => return (next, emits, handled, Some((event, e))),
            }
        }
        (next, emits, handled, None)
    })
    .await?;
    let group = ctx.shared.name.clone();
    let c = ConsumerCommit {
        offset: (next > start || handled > 0).then(|| advance(ctx, next)),
        emits,
        state: w.overlay.take(&group),
        ..commit_for(&group)
    };
    if c.offset.is_some() {
        if let Err(e) = commit(ctx, c).await {
            w.overlay.discard();
            return Err(e);
        }
        ctx.shared.processed.fetch_add(handled, Ordering::Relaxed);
        if handled > 0 {
            record_breaker(ctx, Admission::Normal, true);
        }
    }
    drop(state_guard);
    Ok((w, failure))
}

/// The careful path: the attempt is persisted before the call.
async fn handle_carefully(
    ctx: &mut ConsumerCtx,
    w: Worker,
    event: Arc<StoredEvent>,
    admission: Admission,
) -> Result<Worker, Stop> {
    let group = ctx.shared.name.clone();
    let position = event.position.clone();
    let record = ctx.log.attempts(&group, &position).await?;
    let done = record.as_ref().map_or(0, |r| r.attempts);
    let policy = w.retry_policy(&ctx.config.default_retry);
    if done >= policy.max_attempts {
        // Every earlier attempt was recorded and none finished: the host went
        // down during each of them.
        let r = record.unwrap_or_else(|| unreachable!("done > 0 implies a record"));
        let mut message = format!(
            "the host stopped during each of the {done} attempts (a crash or kill while calling)"
        );
        if let Some(last) = &r.last_error {
            message.push_str(&format!("; last failure before that: {}", last.message));
        }
        let now = SystemTime::now();
        park(
            ctx,
            &w.deployment,
            &event,
            FailureKind::HostError,
            message,
            done,
            r.first_failure.unwrap_or(now),
        )
        .await?;
        return Ok(w);
    }
    let attempt = done + 1;
    let pre = AttemptRecord {
        attempts: attempt,
        ..record.clone().unwrap_or(AttemptRecord {
            attempts: 0,
            first_failure: None,
            last_failure: None,
            last_error: None,
        })
    };
    commit(
        ctx,
        ConsumerCommit {
            attempts: vec![AttemptUpdate {
                position: position.clone(),
                record: Some(pre),
            }],
            ..commit_for(&group)
        },
    )
    .await?;
    let first_failure = record.and_then(|r| r.first_failure);
    match call_and_commit(ctx, w, &event, attempt, admission).await? {
        (w, None) => Ok(w),
        (w, Some(error)) => retry(ctx, w, event, error, attempt, first_failure, admission).await,
    }
}

/// Calls one event and, on success, commits its offset, effects and the
/// clearing of its attempt record.
async fn call_and_commit(
    ctx: &ConsumerCtx,
    w: Worker,
    event: &Arc<StoredEvent>,
    attempt: u32,
    admission: Admission,
) -> Result<(Worker, Option<CallError>), Stop> {
    let state_guard = if w.uses_state() {
        Some(ctx.shared.state_lock.lock().await)
    } else {
        None
    };
    let ev = event.clone();
    let (w, result) = blocking(w, move |w| w.instance.call(&ev, attempt)).await?;
    let out = match result {
        Ok(effects) => {
            let group = ctx.shared.name.clone();
            let state = effects
                .state
                .iter()
                .map(|(k, v)| crate::log::StateChange {
                    namespace: group.clone(),
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect();
            commit(
                ctx,
                ConsumerCommit {
                    offset: Some(advance(ctx, event.position.offset + 1)),
                    emits: emits_of(effects),
                    state,
                    attempts: vec![AttemptUpdate {
                        position: event.position.clone(),
                        record: None,
                    }],
                    ..commit_for(&group)
                },
            )
            .await?;
            ctx.shared.processed.fetch_add(1, Ordering::Relaxed);
            record_breaker(ctx, admission, true);
            None
        }
        Err(e) => Some(e),
    };
    drop(state_guard);
    Ok((w, out))
}

/// The retry path for one event whose delivery `delivery` failed with `error`.
///
/// `delivery` counts every call of the event (the handler sees it as
/// `attempt`); `counted` only those that use up the retry policy — a failed
/// breaker probe does not, since it says the plugin is still down, not that
/// this event is bad.
async fn retry(
    ctx: &mut ConsumerCtx,
    mut w: Worker,
    event: Arc<StoredEvent>,
    mut error: CallError,
    mut delivery: u32,
    first_failure: Option<SystemTime>,
    mut admission: Admission,
) -> Result<Worker, Stop> {
    let group = ctx.shared.name.clone();
    let first = first_failure.unwrap_or_else(SystemTime::now);
    let mut counted = delivery.saturating_sub(1);
    loop {
        let now = SystemTime::now();
        let (kind, healthy) = kind_of(&error.failure);
        ctx.shared.failed.fetch_add(1, Ordering::Relaxed);
        ctx.shared.set_error(error.to_string());
        record_breaker(ctx, admission, healthy);
        if admission != Admission::Probe || healthy {
            counted += 1;
        }
        let policy = w.retry_policy(&ctx.config.default_retry);
        let rejected = matches!(error.failure, Failure::Rejected(_));
        if rejected || counted >= policy.max_attempts {
            let kind = if matches!(error.failure, Failure::Retry(_)) {
                FailureKind::RetriesExhausted
            } else {
                kind
            };
            let message = if rejected {
                error.failure.to_string()
            } else {
                format!("after {counted} attempt(s): {}", error.failure)
            };
            ctx.emit(DispatchEvent::CallFailed {
                plugin: group.clone(),
                position: event.position.clone(),
                event_id: event.event.id.clone(),
                attempt: delivery,
                kind,
                message: error.failure.to_string(),
                at: now,
                retry_in: None,
            });
            park(ctx, &w.deployment, &event, kind, message, counted, first).await?;
            return Ok(w);
        }
        let delay = backoff::delay_for_attempt(&policy, counted.max(1), fastrand::f64());
        ctx.emit(DispatchEvent::CallFailed {
            plugin: group.clone(),
            position: event.position.clone(),
            event_id: event.event.id.clone(),
            attempt: delivery,
            kind,
            message: error.failure.to_string(),
            at: now,
            retry_in: Some(delay),
        });
        tracing::debug!(plugin = %group, event_id = %event.event.id, delivery, "call failed, retrying in {delay:?}: {error}");
        // Persist the next attempt before making it (see the module docs).
        let record = AttemptRecord {
            attempts: counted + 1,
            first_failure: Some(first),
            last_failure: Some(now),
            last_error: Some(LogFailure {
                kind,
                message: error.failure.to_string(),
            }),
        };
        commit(
            ctx,
            ConsumerCommit {
                attempts: vec![AttemptUpdate {
                    position: event.position.clone(),
                    record: Some(record),
                }],
                ..commit_for(&group)
            },
        )
        .await?;
        pause(&mut ctx.stop, delay).await?;
        admission = tokio::select! {
            a = ctx.shared.breaker.admit() => a,
            _ = ctx.stop.wait_for(|s| *s) => return Err(Stop::Requested),
        };
        delivery += 1;
        // A new version deployed meanwhile gets the retry (it may be the fix).
        let mut slot = Some(w);
        refresh(ctx, &mut slot);
        w = slot.ok_or(Stop::Requested)?;
        match call_and_commit(ctx, w, &event, delivery, admission).await? {
            (done, None) => return Ok(done),
            (again, Some(e)) => {
                w = again;
                error = e;
            }
        }
    }
}

impl ConsumerCtx {
    fn emit(&self, e: DispatchEvent) {
        let _ = self.shared.events.send(e);
    }
}

fn record_breaker(ctx: &ConsumerCtx, admission: Admission, healthy: bool) {
    ctx.shared.breaker.record(admission, healthy);
}

/// The dead-letter kind of a failure, and whether it is a health problem of
/// the plugin (a rejection is the handler deciding, not failing).
pub(super) fn kind_of(f: &Failure) -> (FailureKind, bool) {
    match f {
        Failure::Rejected(_) => (FailureKind::Rejected, true),
        Failure::Retry(_) => (FailureKind::RetriesExhausted, false),
        Failure::Trap(_) | Failure::StackOverflow | Failure::OutOfFuel(_) => {
            (FailureKind::Trap, false)
        }
        Failure::Timeout(_) => (FailureKind::Timeout, false),
        Failure::OutOfMemory(_) => (FailureKind::OutOfMemory, false),
        Failure::Host(_) => (FailureKind::HostError, false),
    }
}

/// Parks `event`: dead letter, offset past it and its attempt record cleared, in one commit.
#[allow(clippy::too_many_arguments)]
async fn park(
    ctx: &ConsumerCtx,
    d: &Deployment,
    event: &Arc<StoredEvent>,
    kind: FailureKind,
    message: String,
    attempts: u32,
    first_failure: SystemTime,
) -> Result<(), Stop> {
    let group = ctx.shared.name.clone();
    let outcome = commit(
        ctx,
        ConsumerCommit {
            offset: Some(advance(ctx, event.position.offset + 1)),
            attempts: vec![AttemptUpdate {
                position: event.position.clone(),
                record: None,
            }],
            dead_letter: Some(DeadLetterRecord {
                event: (**event).clone(),
                plugin: group.clone(),
                plugin_version: d.plugin.info.version.clone(),
                plugin_digest: d.plugin.digest.clone(),
                kind,
                message: message.clone(),
                attempts,
                first_failure,
                last_failure: SystemTime::now(),
            }),
            ..commit_for(&group)
        },
    )
    .await?;
    ctx.shared.dead_lettered.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(plugin = %group, event_id = %event.event.id, %kind, attempts, "event parked in the dead-letter store: {message}");
    if let Some(id) = outcome.dead_letter {
        ctx.emit(DispatchEvent::Parked {
            plugin: group,
            position: event.position.clone(),
            event_id: event.event.id.clone(),
            dead_letter: id,
            kind,
            attempts,
        });
    }
    Ok(())
}
