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

use std::collections::BTreeMap;
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
    Failure as LogFailure, FailureKind, LogError, NewEvent, OffsetAdvance, StateChange,
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

/// The operator's policy, else the plugin's, else the host default.
fn retry_policy(d: &Deployment, default: &RetryPolicy) -> RetryPolicy {
    d.settings
        .retry
        .clone()
        .or_else(|| d.plugin.info.retry.clone())
        .unwrap_or_else(|| default.clone())
}

impl Worker {
    /// Calls the plugin, timing the call into the plugin's latency histogram.
    fn call(
        &mut self,
        shared: &PluginShared,
        event: &Arc<StoredEvent>,
        attempt: u32,
    ) -> Result<Effects, CallError> {
        let started = std::time::Instant::now();
        let result = self.instance.call(event, attempt);
        shared.latency.observe_duration(started.elapsed());
        let effects = result?;
        if let Some(check) = &shared.emit_check {
            check.apply(&self.deployment.plugin, &effects)?;
        }
        Ok(effects)
    }

    fn uses_state(&self) -> bool {
        self.deployment.settings.grants.state
    }

    fn non_blocking(&self) -> bool {
        self.deployment.settings.ordering == super::OrderingMode::NonBlocking
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
    let mut aside = SetAside::default();
    loop {
        if *ctx.stop.borrow() {
            return;
        }
        match step(&mut ctx, &mut worker, &mut careful, &mut aside).await {
            Ok(()) => {}
            Err(stop) => {
                let why = match stop {
                    Stop::Requested => return,
                    Stop::Log(e) => format!("log error: {e}"),
                    Stop::Worker(e) => format!("plugin call thread failed: {e}"),
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
    aside: &mut SetAside,
) -> Result<(), Stop> {
    let group = ctx.shared.name.clone();
    let next = match ctx
        .log
        .committed_offset(&group, &ctx.topic, ctx.partition)
        .await?
    {
        Some(next) => next,
        None => {
            // Register the group at the start, so retention keeps what it has not consumed.
            ctx.log
                .set_offset(&group, &ctx.topic, ctx.partition, 0)
                .await?;
            0
        }
    };
    refresh(ctx, worker);
    let non_blocking = worker.as_ref().is_some_and(Worker::non_blocking);
    if non_blocking || !aside.due.is_empty() {
        // Set-aside retries survive a switch back to strict ordering: they finish first.
        aside.load(ctx).await?;
        if let Some((offset, at, delivery)) = aside.next_due()
            && at <= tokio::time::Instant::now()
            && let Some(w) = worker.take()
        {
            *worker = Some(retry_aside(ctx, w, aside, offset, delivery).await?);
            return Ok(());
        }
    }
    let batch = ctx
        .log
        .read(&ctx.topic, ctx.partition, next, ctx.config.batch_size)
        .await?;
    // Again after the read: an event appended after a new version was
    // deployed is then always handled by that version (or a later one).
    refresh(ctx, worker);
    if batch.is_empty() {
        let end = ctx.log.watch(&ctx.topic, ctx.partition).await?;
        // Far enough in the future to mean "never" when nothing is set aside.
        let retry_at = aside.next_due().map_or_else(
            || tokio::time::Instant::now() + Duration::from_secs(3600),
            |(_, at, _)| at,
        );
        tokio::select! {
            r = end.wait_past(next) => { r?; }
            _ = ctx.stop.wait_for(|s| *s) => return Err(Stop::Requested),
            _ = ctx.current.changed() => {}
            _ = tokio::time::sleep_until(retry_at) => {}
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

    let semaphore = ctx.shared.concurrency();
    let _permit = match semaphore {
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
        let w = handle_carefully(ctx, w, aside, event, admission).await?;
        *worker = Some(w);
        return Ok(());
    }

    let (w, outcome) = call_batch(ctx, w, batch).await?;
    *worker = Some(w);
    if let Some((event, error)) = outcome {
        let w = worker.take().ok_or(Stop::Requested)?;
        let w = if w.non_blocking() {
            set_aside(
                ctx,
                &w.deployment,
                aside,
                &event,
                error,
                1,
                0,
                None,
                Admission::Normal,
                Place::InLine,
            )
            .await?;
            w
        } else {
            retry(ctx, w, event, error, 1, None, Admission::Normal).await?
        };
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
    let shared = ctx.shared.clone();
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
            match w.call(&shared, &event, 1) {
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
    aside: &mut SetAside,
    event: Arc<StoredEvent>,
    admission: Admission,
) -> Result<Worker, Stop> {
    let group = ctx.shared.name.clone();
    let position = event.position.clone();
    let record = ctx.log.attempts(&group, &position).await?;
    let done = record.as_ref().map_or(0, |r| r.attempts);
    let policy = retry_policy(&w.deployment, &ctx.config.default_retry);
    if done >= policy.max_attempts {
        // Every earlier attempt was recorded and none finished: the host went
        // down during each of them.
        park_poison_pill(ctx, &w.deployment, &event, record.as_ref(), Place::InLine).await?;
        return Ok(w);
    }
    let attempt = done + 1;
    pre_call(ctx, &event, record.clone()).await?;
    let first_failure = record.and_then(|r| r.first_failure);
    match call_and_commit(ctx, w, &event, attempt, admission, Place::InLine).await? {
        (w, None) => Ok(w),
        (w, Some(error)) if w.non_blocking() => {
            set_aside(
                ctx,
                &w.deployment,
                aside,
                &event,
                error,
                attempt,
                done,
                first_failure,
                admission,
                Place::InLine,
            )
            .await?;
            Ok(w)
        }
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
    place: Place,
) -> Result<(Worker, Option<CallError>), Stop> {
    let state_guard = if w.uses_state() {
        Some(ctx.shared.state_lock.lock().await)
    } else {
        None
    };
    let ev = event.clone();
    let shared = ctx.shared.clone();
    let (w, result) = blocking(w, move |w| w.call(&shared, &ev, attempt)).await?;
    let out = match result {
        Ok(effects) => {
            let group = ctx.shared.name.clone();
            let (offset, mut state) = finish(ctx, event, place);
            state.extend(effects.state.iter().map(|(k, v)| StateChange {
                namespace: group.clone(),
                key: k.clone(),
                value: v.clone(),
            }));
            commit(
                ctx,
                ConsumerCommit {
                    offset,
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

/// What to do with an event after a failed call.
enum Verdict {
    Park {
        kind: FailureKind,
        message: String,
    },
    Again {
        delay: Duration,
        record: AttemptRecord,
    },
}

/// Books a failed call (counters, breaker, event feed) and decides between
/// parking and another attempt. `counted` is the number of attempts that
/// used up the retry policy before this call and is updated. `delivery`
/// counts every call (the handler sees it as `attempt`); a failed breaker
/// probe does not count, since it says the plugin is still down, not that
/// this event is bad.
#[allow(clippy::too_many_arguments)] // one call site shape per mode; a struct would only rename them
fn judge(
    ctx: &ConsumerCtx,
    d: &Deployment,
    event: &StoredEvent,
    error: &CallError,
    delivery: u32,
    counted: &mut u32,
    admission: Admission,
    first: SystemTime,
) -> Verdict {
    let now = SystemTime::now();
    let (kind, healthy) = kind_of(&error.failure);
    ctx.shared.failed.fetch_add(1, Ordering::Relaxed);
    ctx.shared.set_error(error.to_string());
    record_breaker(ctx, admission, healthy);
    if admission != Admission::Probe || healthy {
        *counted += 1;
    }
    let policy = retry_policy(d, &ctx.config.default_retry);
    let rejected = matches!(error.failure, Failure::Rejected(_));
    let verdict = if rejected || *counted >= policy.max_attempts {
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
        Verdict::Park { kind, message }
    } else {
        let delay = backoff::delay_for_attempt(&policy, (*counted).max(1), fastrand::f64());
        // The failures so far; bumped again just before the next call (see
        // `pre_call`), so a host that dies during that call still counts it.
        let record = AttemptRecord {
            attempts: *counted,
            first_failure: Some(first),
            last_failure: Some(now),
            last_error: Some(LogFailure {
                kind,
                message: error.failure.to_string(),
            }),
        };
        Verdict::Again { delay, record }
    };
    ctx.emit(DispatchEvent::CallFailed {
        plugin: ctx.shared.name.clone(),
        position: event.position.clone(),
        event_id: event.event.id.clone(),
        attempt: delivery,
        kind: match &verdict {
            Verdict::Park { kind, .. } => *kind,
            Verdict::Again { .. } => kind,
        },
        message: error.failure.to_string(),
        at: now,
        retry_in: match &verdict {
            Verdict::Park { .. } => None,
            Verdict::Again { delay, .. } => Some(*delay),
        },
    });
    verdict
}

/// The retry path of strict ordering: the partition waits while its failed
/// event is retried with backoff.
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
        match judge(
            ctx,
            &w.deployment,
            &event,
            &error,
            delivery,
            &mut counted,
            admission,
            first,
        ) {
            Verdict::Park { kind, message } => {
                park(
                    ctx,
                    &w.deployment,
                    &event,
                    kind,
                    message,
                    counted,
                    first,
                    Place::InLine,
                )
                .await?;
                return Ok(w);
            }
            Verdict::Again { delay, record } => {
                tracing::debug!(plugin = %group, event_id = %event.event.id, delivery, "call failed, retrying in {delay:?}: {error}");
                commit(
                    ctx,
                    ConsumerCommit {
                        attempts: vec![AttemptUpdate {
                            position: event.position.clone(),
                            record: Some(record.clone()),
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
                pre_call(ctx, &event, Some(record)).await?;
            }
        }
        delivery += 1;
        // A new version deployed meanwhile gets the retry (it may be the fix).
        let mut slot = Some(w);
        refresh(ctx, &mut slot);
        w = slot.ok_or(Stop::Requested)?;
        match call_and_commit(ctx, w, &event, delivery, admission, Place::InLine).await? {
            (done, None) => return Ok(done),
            (again, Some(e)) => {
                w = again;
                error = e;
            }
        }
    }
}

/// Counts the coming call in the event's attempt record before it is made,
/// so a call that takes the host down is counted (poison-pill protection).
async fn pre_call(
    ctx: &ConsumerCtx,
    event: &StoredEvent,
    record: Option<AttemptRecord>,
) -> Result<(), Stop> {
    let record = record.unwrap_or(AttemptRecord {
        attempts: 0,
        first_failure: None,
        last_failure: None,
        last_error: None,
    });
    commit(
        ctx,
        ConsumerCommit {
            attempts: vec![AttemptUpdate {
                position: event.position.clone(),
                record: Some(AttemptRecord {
                    attempts: record.attempts + 1,
                    ..record
                }),
            }],
            ..commit_for(&ctx.shared.name)
        },
    )
    .await?;
    Ok(())
}

/// Where a failed event waits for its next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In the partition (strict ordering): its commit advances the offset.
    InLine,
    /// Set aside (non-blocking): the offset has moved on; its commit removes
    /// its set-aside entry instead.
    Aside,
}

/// Namespace of the host's own bookkeeping in the state table; plugin names
/// cannot start with `_`, so it never meets a plugin's state.
const HOST_NAMESPACE: &str = "__evhost";

fn aside_prefix(ctx: &ConsumerCtx) -> String {
    format!(
        "set-aside/{}/{}/{}/",
        ctx.shared.name, ctx.topic, ctx.partition
    )
}

fn aside_key(ctx: &ConsumerCtx, offset: u64) -> String {
    format!("{}{offset:020}", aside_prefix(ctx))
}

/// The offset advance and bookkeeping that end an event's handling.
fn finish(
    ctx: &ConsumerCtx,
    event: &StoredEvent,
    place: Place,
) -> (Option<OffsetAdvance>, Vec<StateChange>) {
    match place {
        Place::InLine => (Some(advance(ctx, event.position.offset + 1)), Vec::new()),
        Place::Aside => (
            None,
            vec![StateChange {
                namespace: HOST_NAMESPACE.to_owned(),
                key: aside_key(ctx, event.position.offset),
                value: None,
            }],
        ),
    }
}

/// Non-blocking mode: the partition's failed events waiting for a retry, by
/// offset, with when and as which delivery. Persisted as set-aside entries
/// (index) plus the events' attempt records, so a restart resumes them.
#[derive(Default)]
pub(super) struct SetAside {
    loaded: bool,
    due: BTreeMap<u64, (tokio::time::Instant, u32)>,
}

impl SetAside {
    async fn load(&mut self, ctx: &ConsumerCtx) -> Result<(), Stop> {
        if self.loaded {
            return Ok(());
        }
        let prefix = aside_prefix(ctx);
        for key in ctx
            .log
            .state_keys(HOST_NAMESPACE, &prefix, usize::MAX)
            .await?
        {
            if let Ok(offset) = key[prefix.len()..].parse::<u64>() {
                // After a restart they are due at once; their attempt records still count.
                self.due.insert(offset, (tokio::time::Instant::now(), 0));
            }
        }
        self.loaded = true;
        Ok(())
    }

    fn next_due(&self) -> Option<(u64, tokio::time::Instant, u32)> {
        self.due
            .iter()
            .min_by_key(|(_, (at, _))| *at)
            .map(|(o, (at, d))| (*o, *at, *d))
    }
}

/// Non-blocking mode: a failed event is parked or set aside; either way the
/// offset moves past it (unless it is already set aside) in the same commit.
#[allow(clippy::too_many_arguments)]
async fn set_aside(
    ctx: &ConsumerCtx,
    d: &Deployment,
    aside: &mut SetAside,
    event: &Arc<StoredEvent>,
    error: CallError,
    delivery: u32,
    mut counted: u32,
    first_failure: Option<SystemTime>,
    admission: Admission,
    place: Place,
) -> Result<(), Stop> {
    let group = ctx.shared.name.clone();
    let first = first_failure.unwrap_or_else(SystemTime::now);
    match judge(
        ctx,
        d,
        event,
        &error,
        delivery,
        &mut counted,
        admission,
        first,
    ) {
        Verdict::Park { kind, message } => {
            aside.due.remove(&event.position.offset);
            park(ctx, d, event, kind, message, counted, first, place).await
        }
        Verdict::Again { delay, record } => {
            let offset = match place {
                Place::InLine => Some(advance(ctx, event.position.offset + 1)),
                Place::Aside => None,
            };
            commit(
                ctx,
                ConsumerCommit {
                    offset,
                    attempts: vec![AttemptUpdate {
                        position: event.position.clone(),
                        record: Some(record),
                    }],
                    state: vec![StateChange {
                        namespace: HOST_NAMESPACE.to_owned(),
                        key: aside_key(ctx, event.position.offset),
                        value: Some(Vec::new()),
                    }],
                    ..commit_for(&group)
                },
            )
            .await?;
            aside.due.insert(
                event.position.offset,
                (tokio::time::Instant::now() + delay, delivery + 1),
            );
            Ok(())
        }
    }
}

/// Non-blocking mode: retries the set-aside event at `offset`.
async fn retry_aside(
    ctx: &mut ConsumerCtx,
    w: Worker,
    aside: &mut SetAside,
    offset: u64,
    delivery: u32,
) -> Result<Worker, Stop> {
    let group = ctx.shared.name.clone();
    let position = crate::event::Position {
        topic: ctx.topic.clone(),
        partition: ctx.partition,
        offset,
    };
    let record = ctx.log.attempts(&group, &position).await?;
    let found = ctx.log.read(&ctx.topic, ctx.partition, offset, 1).await?;
    let Some(event) = found
        .into_iter()
        .next()
        .filter(|e| e.position.offset == offset)
    else {
        tracing::warn!(plugin = %group, topic = %ctx.topic, partition = ctx.partition, offset, "set-aside event no longer in the log (retention); dropping its retries");
        commit(
            ctx,
            ConsumerCommit {
                attempts: vec![AttemptUpdate {
                    position,
                    record: None,
                }],
                state: vec![StateChange {
                    namespace: HOST_NAMESPACE.to_owned(),
                    key: aside_key(ctx, offset),
                    value: None,
                }],
                ..commit_for(&group)
            },
        )
        .await?;
        aside.due.remove(&offset);
        return Ok(w);
    };
    let event = Arc::new(event);
    // Failures so far, plus a call the host died in, if any.
    let counted = record.as_ref().map_or(0, |r| r.attempts);
    let delivery = delivery.max(counted + 1);
    let policy = retry_policy(&w.deployment, &ctx.config.default_retry);
    let first = record.as_ref().and_then(|r| r.first_failure);
    if counted >= policy.max_attempts {
        park_poison_pill(ctx, &w.deployment, &event, record.as_ref(), Place::Aside).await?;
        aside.due.remove(&offset);
        return Ok(w);
    }
    let admission = tokio::select! {
        a = ctx.shared.breaker.admit() => a,
        _ = ctx.stop.wait_for(|s| *s) => return Err(Stop::Requested),
    };
    pre_call(ctx, &event, record).await?;
    match call_and_commit(ctx, w, &event, delivery, admission, Place::Aside).await? {
        (w, None) => {
            aside.due.remove(&offset);
            Ok(w)
        }
        (w, Some(error)) => {
            set_aside(
                ctx,
                &w.deployment,
                aside,
                &event,
                error,
                delivery,
                counted,
                first,
                admission,
                Place::Aside,
            )
            .await?;
            Ok(w)
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

/// Parks an event whose attempts are used up although the last one never
/// finished: the host went down during it (a crash or kill).
async fn park_poison_pill(
    ctx: &ConsumerCtx,
    d: &Deployment,
    event: &Arc<StoredEvent>,
    record: Option<&AttemptRecord>,
    place: Place,
) -> Result<(), Stop> {
    let done = record.map_or(0, |r| r.attempts);
    let mut message = format!(
        "{done} attempts made; the last ended with the host stopping during the call (a crash or kill)"
    );
    if let Some(last) = record.and_then(|r| r.last_error.as_ref()) {
        message.push_str(&format!("; last failure before that: {}", last.message));
    }
    let first = record
        .and_then(|r| r.first_failure)
        .unwrap_or_else(SystemTime::now);
    park(
        ctx,
        d,
        event,
        FailureKind::HostError,
        message,
        done,
        first,
        place,
    )
    .await
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
    place: Place,
) -> Result<(), Stop> {
    let group = ctx.shared.name.clone();
    let (offset, state) = finish(ctx, event, place);
    let outcome = commit(
        ctx,
        ConsumerCommit {
            offset,
            state,
            attempts: vec![AttemptUpdate {
                position: event.position.clone(),
                record: None,
            }],
            dead_letter: Some(DeadLetterRecord {
                event: (**event).clone(),
                plugin: group.clone(),
                plugin_version: d.version_label(),
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
