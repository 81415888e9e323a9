//! One partition's consumer: read a batch, call the plugin on a blocking
//! thread, commit the batch's outcome in one log transaction; retry a failed
//! event with backoff (attempts persisted before each call) and park it when
//! the policy is used up.
//!
//! # Layout
//! One module per delivery path, all around [`delivery::Delivery`] (one event
//! on its way: where it waits, how often it was called, how its outcome is
//! committed, judged and parked):
//! - `batch`: the fast path — a batch's matching events called in order and
//!   committed together.
//! - `careful`: the poison-pill path — one event at a time, its attempt
//!   persisted before the call.
//! - `retry`: strict ordering — the partition waits while its failed event is
//!   retried with backoff.
//! - `aside`: non-blocking ordering — a failed event is set aside for its
//!   retries while later events flow.
//! - `delivery`: what every path shares: the call, the commit of its effects
//!   (a refusal parks the event as `rejected`, a conflict means another commit
//!   finished it), the verdict after a failure, parking.
//!
//! Poison pills: in the fast path attempts are not persisted (that would cost
//! a write per event), so after every (re)start a consumer handles its first
//! `batch_size` events one at a time with the attempt persisted *before* the
//! call. An event that kills the host is thus counted from its second
//! delivery on and parked once the count reaches the policy's maximum.

mod aside;
mod batch;
mod careful;
mod delivery;
mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

pub(super) use self::delivery::kind_of;
use super::breaker::Ticket;
use super::matcher::TypeFilter;
use super::overlay::Overlay;
use super::supervisor::{Current, PluginShared};
use super::{Deployment, DispatchConfig, DispatchEvent};
use crate::event::StoredEvent;
use crate::log::{
    CommitOutcome, ConsumerCommit, ErrorClass, EventLog, LeaseFence, LogError, NewEvent,
    OffsetAdvance,
};
use crate::runtime::{CallError, Effects, Instance, InstanceSettings, RetryPolicy, Runtime};

/// Pause after a failed log operation before trying again.
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
    /// Changes when an operator's seek waits for some consumer of the plugin.
    pub seek: watch::Receiver<u64>,
    /// The lease this daemon works the partition under, when daemons share the log: every
    /// commit carries it, so none lands once another daemon took the partition.
    pub lease: Option<LeaseFence>,
    /// The committed offset as this consumer knows it (read at each round, moved by its
    /// own commits): every offset advance is fenced on it (`OffsetAdvance::from`).
    pub committed: AtomicU64,
    /// Who is live on a shared log: an attempt counted by a live daemon did not crash it.
    pub coordinator: Option<Arc<super::coordinator::Coordinator>>,
}

impl ConsumerCtx {
    /// Whether the process that counted an attempt still runs: this one, or a live
    /// member of the shared log.
    fn is_alive(&self, by: &str) -> bool {
        match &self.coordinator {
            Some(c) => c.is_live(by),
            None => by == super::incarnation(),
        }
    }

    /// Who this consumer says counted an attempt: its member id on a shared log, else
    /// the process.
    fn maker(&self) -> String {
        match &self.coordinator {
            Some(c) => c.id().to_owned(),
            None => super::incarnation().to_owned(),
        }
    }
}

/// How a consumer task ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// Asked to stop.
    Stopped,
    /// Gave up on something it cannot get past by waiting (the log refused
    /// a request the consumer itself made); the supervisor restarts it with
    /// backoff and shows the cause on the plugin.
    Failed(String),
    /// Another daemon took the partition (a commit was refused with `LeaseLost`).
    LeaseLost,
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
    /// The log failed (I/O, outcome unknown): resume from the committed
    /// offset after a pause.
    Log(LogError),
    /// What is stored moved under the consumer (another commit finished the
    /// event first): resume from the committed offset at once.
    Conflict(LogError),
    /// The log refused a request of the consumer's own bookkeeping; waiting
    /// does not help, so the task ends and the supervisor takes over.
    Refused(LogError),
    /// The blocking thread running a call died; the instance went with it.
    Worker(String),
    /// An operator's seek arrived while waiting for the breaker: go back to
    /// the top of the loop, where it is applied.
    Seek,
    /// Another daemon took the partition: nothing of this consumer will commit any more.
    LeaseLost,
}

impl From<LogError> for Stop {
    fn from(e: LogError) -> Self {
        if e.lease_lost() {
            return Stop::LeaseLost;
        }
        match e.class() {
            ErrorClass::Failed => Stop::Log(e),
            ErrorClass::Conflict => Stop::Conflict(e),
            ErrorClass::Refused => Stop::Refused(e),
        }
    }
}

pub(super) async fn run(mut ctx: ConsumerCtx) -> Ended {
    let mut careful = ctx.config.batch_size;
    let mut worker: Option<Worker> = None;
    let mut aside = aside::SetAside::default();
    loop {
        if *ctx.stop.borrow() {
            return Ended::Stopped;
        }
        let Err(stop) = step(&mut ctx, &mut worker, &mut careful, &mut aside).await else {
            continue;
        };
        if let Some(w) = &worker {
            w.overlay.discard();
        }
        let why = match stop {
            Stop::Requested => return Ended::Stopped,
            Stop::Seek => continue,
            Stop::LeaseLost => {
                tracing::info!(plugin = %ctx.shared.name, topic = %ctx.topic, partition = ctx.partition, "another daemon took the partition; this consumer stops with nothing committed since");
                return Ended::LeaseLost;
            }
            Stop::Refused(e) => return Ended::Failed(format!("the log refused a request: {e}")),
            Stop::Conflict(e) => {
                tracing::debug!(plugin = %ctx.shared.name, topic = %ctx.topic, partition = ctx.partition, "{e}; resuming from the committed offset");
                // Whatever was set aside may have been finished elsewhere.
                aside = aside::SetAside::default();
                continue;
            }
            Stop::Log(e) => format!("log error: {e}"),
            Stop::Worker(e) => format!("plugin call thread failed: {e}"),
        };
        tracing::warn!(plugin = %ctx.shared.name, topic = %ctx.topic, partition = ctx.partition, "{why}; resuming from the committed offset");
        if pause(&mut ctx.stop, LOG_ERROR_PAUSE).await.is_err() {
            return Ended::Stopped;
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

/// Waits for the breaker to admit a call, unless a stop or a seek comes
/// first (a paused plugin is where an operator seeks past a poison event).
async fn admit(ctx: &mut ConsumerCtx) -> Result<Ticket, Stop> {
    tokio::select! {
        t = ctx.shared.breaker.admit() => Ok(t),
        _ = ctx.stop.wait_for(|s| *s) => Err(Stop::Requested),
        _ = ctx.seek.changed() => Err(Stop::Seek),
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
        let overlay = Arc::new(Overlay::new(ctx.log.clone(), ctx.lease.is_some()));
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

/// The group's committed offset, registering the group at the partition's
/// start (through a commit, like every write of the dispatcher) the first
/// time, so retention keeps what it has not consumed.
async fn committed_or_register(ctx: &ConsumerCtx) -> Result<u64, Stop> {
    let group = &ctx.shared.name;
    if let Some(next) = ctx
        .log
        .committed_offset(group, &ctx.topic, ctx.partition)
        .await?
    {
        ctx.committed.store(next, Ordering::SeqCst);
        return Ok(next);
    }
    let register = OffsetAdvance {
        from: None,
        ..advance(ctx, 0)
    };
    match ctx
        .commit_log(ConsumerCommit {
            offset: Some(register),
            ..ctx.commit_for()
        })
        .await
    {
        Ok(_) => {
            ctx.committed.store(0, Ordering::SeqCst);
            Ok(0)
        }
        // Registered meanwhile (by an earlier generation of this consumer).
        Err(e) if e.class() == ErrorClass::Conflict && !e.lease_lost() => Err(Stop::Conflict(e)),
        Err(e) => Err(e.into()),
    }
}

/// One round: read from the committed offset and handle what is there.
async fn step(
    ctx: &mut ConsumerCtx,
    worker: &mut Option<Worker>,
    careful: &mut usize,
    aside: &mut aside::SetAside,
) -> Result<(), Stop> {
    ctx.seek.borrow_and_update();
    let next = committed_or_register(ctx).await?;
    // Between batches: the one place a seek may move the offset.
    if ctx
        .shared
        .seeks
        .apply(
            ctx.log.as_ref(),
            ctx.commit_for(),
            &ctx.topic,
            ctx.partition,
            next,
        )
        .await
    {
        return Ok(());
    }
    refresh(ctx, worker);
    let non_blocking = worker.as_ref().is_some_and(Worker::non_blocking);
    if non_blocking || aside.any_due() {
        // Set-aside retries survive a switch back to strict ordering: they finish first.
        aside.load(ctx).await?;
        if let Some((offset, at, number)) = aside.next_due()
            && at <= tokio::time::Instant::now()
            && let Some(w) = worker.take()
        {
            *worker = Some(aside::retry_due(ctx, w, aside, offset, number).await?);
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
            _ = ctx.seek.changed() => {}
            _ = tokio::time::sleep_until(retry_at) => {}
        }
        return Ok(());
    }
    let Some(w) = worker.take() else {
        return Ok(());
    };

    // Skip what the plugin does not subscribe to, up to the first match.
    let Some(first_match) = batch.iter().position(|e| w.filter.matches(&e.event.ty)) else {
        let last = batch.last().map_or(next, |e| e.position.offset + 1);
        *worker = Some(w);
        ctx.commit_log(ConsumerCommit {
            offset: Some(advance(ctx, last)),
            ..ctx.commit_for()
        })
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
    let ticket = match admit(ctx).await {
        Ok(ticket) => ticket,
        Err(stop) => {
            *worker = Some(w);
            return Err(stop);
        }
    };

    if *careful > 0 || ticket.is_probe() {
        *careful = careful.saturating_sub(1);
        let event = Arc::new(batch[first_match].clone());
        // Events before it (not subscribed) are skipped in the same commit.
        *worker = Some(careful::handle(ctx, w, aside, event, ticket).await?);
        return Ok(());
    }

    match batch::call(ctx, w, batch, ticket).await? {
        batch::Outcome::Done(w) => *worker = Some(w),
        batch::Outcome::Failed {
            worker: w,
            event,
            error,
            ticket,
        } => {
            let d = delivery::Delivery::first(event);
            *worker = Some(if w.non_blocking() {
                aside::after_failure(ctx, &w.deployment, aside, d, error, ticket).await?;
                w
            } else {
                retry::retry(ctx, w, d, error, ticket).await?
            });
        }
        batch::Outcome::Refused { worker: w, error } => {
            // Which event's effects were refused is not known: go through the
            // batch one event at a time, where a refusal parks its event.
            tracing::warn!(plugin = %ctx.shared.name, topic = %ctx.topic, partition = ctx.partition, "the log refused a batch's effects ({error}); handling its events one at a time");
            *careful = ctx.config.batch_size;
            *worker = Some(w);
        }
    }
    Ok(())
}

impl ConsumerCtx {
    /// An empty commit of this consumer: its group, fenced by its lease.
    fn commit_for(&self) -> ConsumerCommit {
        ConsumerCommit {
            group: self.shared.name.clone(),
            lease: self.lease.clone(),
            ..Default::default()
        }
    }
}

/// An advance to `next` from the committed offset as this consumer knows it.
fn advance(ctx: &ConsumerCtx, next: u64) -> OffsetAdvance {
    OffsetAdvance {
        topic: ctx.topic.clone(),
        partition: ctx.partition,
        next,
        from: Some(ctx.committed.load(Ordering::SeqCst)),
    }
}

impl ConsumerCtx {
    /// Commits `c` through the log, keeping the consumer's view of its committed offset.
    async fn commit_log(&self, c: ConsumerCommit) -> Result<CommitOutcome, LogError> {
        let next = c.offset.as_ref().map(|a| a.next);
        let outcome = self.log.commit(c).await?;
        if let Some(next) = next {
            self.committed.store(next, Ordering::SeqCst);
        }
        Ok(outcome)
    }
}

/// Commits the consumer's own bookkeeping; every error stops the round.
async fn commit(ctx: &ConsumerCtx, c: ConsumerCommit) -> Result<CommitOutcome, Stop> {
    Ok(ctx.commit_log(c).await?)
}

fn emits_of(effects: &mut Effects) -> Vec<NewEvent> {
    std::mem::take(&mut effects.emits)
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

/// The plugin's state lock, when it may use state: no other batch of the
/// plugin is between its first state read and its commit meanwhile.
async fn state_guard(
    ctx: &ConsumerCtx,
    uses_state: bool,
) -> Option<tokio::sync::MutexGuard<'_, ()>> {
    if uses_state {
        Some(ctx.shared.state_lock.lock().await)
    } else {
        None
    }
}

impl ConsumerCtx {
    fn emit(&self, e: DispatchEvent) {
        let _ = self.shared.events.send(e);
    }

    fn group(&self) -> &str {
        &self.shared.name
    }
}
