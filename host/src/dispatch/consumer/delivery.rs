//! One event on its way through the careful, retry and set-aside paths, and
//! what every path does with it: call it, commit its effects, judge a
//! failure, park it.
//!
//! Every commit that ends an event's handling carries its fence: the offset
//! advance for an event in line (a second commit for the same event does not
//! advance it), the set-aside record for an event set aside. A commit refused
//! by a fence means another commit finished the event first: its effects are
//! dropped. A commit refused as invalid (an emit too large for the log, to an
//! unknown topic, ...) can never succeed: the event is parked at once as
//! `rejected` with the log's reason instead of being retried.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::super::breaker::Ticket;
use super::super::{Deployment, DispatchEvent, backoff};
use super::{ConsumerCtx, Stop, Worker, advance, blocking, emits_of, retry_policy, state_guard};
use crate::event::StoredEvent;
use crate::log::{
    AttemptRecord, AttemptUpdate, ConsumerCommit, DeadLetterRecord, ErrorClass,
    Failure as LogFailure, FailureKind, OffsetAdvance, StateChange, StateKey,
};
use crate::runtime::{CallError, Failure};

/// Namespace of the host's own bookkeeping in the state table; plugin names
/// cannot start with `_`, so it never meets a plugin's state.
pub(super) const HOST_NAMESPACE: &str = "__evhost";

/// Where a failed event waits for its next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// In the partition (strict ordering): its commit advances the offset.
    InLine,
    /// Set aside (non-blocking): the offset has moved on; its set-aside
    /// record is its fence, and the commit that finishes it removes it.
    Aside,
}

/// One event being handled outside the fast path.
#[derive(Clone)]
pub(super) struct Delivery {
    pub event: Arc<StoredEvent>,
    pub place: Place,
    /// The number of the next call (the handler sees it as `attempt`):
    /// every call counts, failed breaker probes included.
    pub number: u32,
    /// Failed calls that count against the retry policy (a failed probe says
    /// the plugin is down, not that this event is bad, so it does not).
    pub counted: u32,
    pub first_failure: Option<SystemTime>,
}

impl Delivery {
    /// An event that failed its first call in the fast path.
    pub fn first(event: Arc<StoredEvent>) -> Self {
        Delivery {
            event,
            place: Place::InLine,
            number: 1,
            counted: 0,
            first_failure: None,
        }
    }

    /// An event whose attempt record says `record` (failures so far, plus a
    /// call the host went down in, if any).
    pub fn resumed(event: Arc<StoredEvent>, place: Place, record: Option<&AttemptRecord>) -> Self {
        let done = record.map_or(0, |r| r.attempts);
        Delivery {
            event,
            place,
            number: done + 1,
            counted: done,
            first_failure: record.and_then(|r| r.first_failure),
        }
    }
}

pub(super) fn aside_prefix(ctx: &ConsumerCtx) -> String {
    format!("set-aside/{}/{}/{}/", ctx.group(), ctx.topic, ctx.partition)
}

pub(super) fn aside_key(ctx: &ConsumerCtx, offset: u64) -> StateKey {
    StateKey {
        namespace: HOST_NAMESPACE.to_owned(),
        key: format!("{}{offset:020}", aside_prefix(ctx)),
    }
}

/// What ends an event's handling: the offset advance (in line), or the
/// removal of its set-aside record, fenced by that record (aside).
pub(super) struct Finish {
    pub offset: Option<OffsetAdvance>,
    pub state: Vec<StateChange>,
    pub requires_state: Option<StateKey>,
}

pub(super) fn finish(ctx: &ConsumerCtx, d: &Delivery) -> Finish {
    match d.place {
        Place::InLine => Finish {
            offset: Some(advance(ctx, d.event.position.offset + 1)),
            state: Vec::new(),
            requires_state: None,
        },
        Place::Aside => {
            let key = aside_key(ctx, d.event.position.offset);
            Finish {
                offset: None,
                state: vec![StateChange {
                    namespace: key.namespace.clone(),
                    key: key.key.clone(),
                    value: None,
                }],
                requires_state: Some(key),
            }
        }
    }
}

/// The outcome of one call outside the fast path.
pub(super) enum Called {
    /// Handled (or finished by another commit, or parked because the log
    /// refused its effects): the event needs nothing more.
    Done(Worker),
    /// The call failed; the ticket is still to be recorded by the verdict.
    Failed(Worker, CallError, Ticket),
}

/// Calls the event and, on success, commits its effects with the end of its
/// handling and the clearing of its attempt record.
pub(super) async fn call_and_commit(
    ctx: &ConsumerCtx,
    w: Worker,
    d: &Delivery,
    mut ticket: Ticket,
) -> Result<Called, Stop> {
    let guard = state_guard(ctx, w.uses_state()).await;
    // Only this call's reads fence its commit.
    w.overlay.discard();
    let (event, number, shared) = (d.event.clone(), d.number, ctx.shared.clone());
    let (w, result) = blocking(w, move |w| w.call(&shared, &event, number)).await?;
    let mut effects = match result {
        Ok(effects) => effects,
        Err(error) => return Ok(Called::Failed(w, error, ticket)),
    };
    // The call itself was healthy, whatever the log makes of its effects.
    ticket.record(true);
    let Finish {
        offset,
        mut state,
        requires_state,
    } = finish(ctx, d);
    let group = ctx.group().to_owned();
    state.extend(
        std::mem::take(&mut effects.state)
            .into_iter()
            .map(|(key, value)| StateChange {
                namespace: group.clone(),
                key,
                value,
            }),
    );
    let c = ConsumerCommit {
        offset,
        emits: emits_of(&mut effects),
        state,
        attempts: vec![AttemptUpdate {
            position: d.event.position.clone(),
            record: None,
        }],
        requires_state,
        state_read: w.overlay.take_reads(&group),
        ..ctx.commit_for()
    };
    let result = ctx.commit_log(c).await;
    drop(guard);
    match result {
        Ok(_) => {
            ctx.shared.processed.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) if e.lease_lost() => return Err(Stop::LeaseLost),
        // What the call read moved under it: redo it on fresh state.
        Err(e) if e.state_moved() => return Err(Stop::Conflict(e)),
        Err(e) => match e.class() {
            ErrorClass::Failed => return Err(Stop::Log(e)),
            ErrorClass::Conflict if d.place == Place::InLine => {
                // The committed offset is not what this consumer read (another commit
                // finished the event, or the consumer's view was stale): drop the effects
                // and go on from the committed offset. (The pre-call record names this
                // process, so taking the event again is not counted as a crash.)
                tracing::info!(plugin = %group, event_id = %d.event.event.id, "the committed offset moved ({e}); this call's effects are dropped");
                return Err(Stop::Conflict(e));
            }
            ErrorClass::Conflict => {
                tracing::info!(plugin = %group, event_id = %d.event.event.id, "another commit finished the event first ({e}); this call's effects are dropped");
            }
            ErrorClass::Refused => {
                // This call is the attempt that settles it.
                let mut parked = d.clone();
                parked.counted += 1;
                let message = format!("the log refused the call's effects: {e}");
                park(ctx, &w.deployment, &parked, FailureKind::Rejected, message).await?;
            }
        },
    }
    Ok(Called::Done(w))
}

/// What to do with an event after a failed call.
pub(super) enum Verdict {
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
/// parking and another attempt; updates `d.counted` and `d.first_failure`.
pub(super) fn judge(
    ctx: &ConsumerCtx,
    dep: &Deployment,
    d: &mut Delivery,
    error: &CallError,
    ticket: &mut Ticket,
) -> Verdict {
    let now = SystemTime::now();
    let first = *d.first_failure.get_or_insert(now);
    let (kind, healthy) = kind_of(&error.failure);
    ctx.shared.failed.fetch_add(1, Ordering::Relaxed);
    ctx.shared.set_error(error.to_string());
    let probe = ticket.is_probe();
    ticket.record(healthy);
    if !probe || healthy {
        d.counted += 1;
    }
    let policy = retry_policy(dep, &ctx.config.default_retry);
    let rejected = matches!(error.failure, Failure::Rejected(_) | Failure::Refused(_));
    let verdict = if rejected || d.counted >= policy.max_attempts {
        let kind = if matches!(error.failure, Failure::Retry(_)) {
            FailureKind::RetriesExhausted
        } else {
            kind
        };
        let message = if rejected {
            error.failure.to_string()
        } else {
            format!("after {} attempt(s): {}", d.counted, error.failure)
        };
        Verdict::Park { kind, message }
    } else {
        let delay = backoff::delay_for_attempt(&policy, d.counted.max(1), fastrand::f64());
        // The guest's `retry-after` (a server's Retry-After): at least that
        // long, within the policy's cap.
        let delay = match (&error.failure, error.retry_after_ms) {
            (Failure::Retry(_), Some(ms)) => {
                delay.max(Duration::from_millis(u64::from(ms)).min(policy.max_backoff))
            }
            _ => delay,
        };
        // The failures so far; bumped again just before the next call (see
        // `pre_call`), so a host that dies during that call still counts it.
        let record = AttemptRecord {
            attempts: d.counted,
            first_failure: Some(first),
            last_failure: Some(now),
            last_error: Some(LogFailure {
                kind,
                message: error.failure.to_string(),
            }),
            started_by: None,
        };
        Verdict::Again { delay, record }
    };
    ctx.emit(DispatchEvent::CallFailed {
        plugin: ctx.group().to_owned(),
        position: d.event.position.clone(),
        event_id: d.event.event.id.clone(),
        attempt: d.number,
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

/// Counts the coming call in the event's attempt record before it is made,
/// so a call that takes the host down is counted (poison-pill protection).
pub(super) async fn pre_call(
    ctx: &ConsumerCtx,
    event: &StoredEvent,
    record: Option<AttemptRecord>,
) -> Result<(), Stop> {
    let record = record.unwrap_or(AttemptRecord {
        attempts: 0,
        first_failure: None,
        last_failure: None,
        last_error: None,
        started_by: None,
    });
    super::commit(
        ctx,
        ConsumerCommit {
            attempts: vec![AttemptUpdate {
                position: event.position.clone(),
                record: Some(AttemptRecord {
                    attempts: record.attempts + 1,
                    started_by: Some(ctx.maker()),
                    ..record
                }),
            }],
            ..ctx.commit_for()
        },
    )
    .await?;
    Ok(())
}

/// The dead-letter kind of a failure, and whether it is a health problem of
/// the plugin (a rejection is the handler deciding, not failing).
pub(in crate::dispatch) fn kind_of(f: &Failure) -> (FailureKind, bool) {
    match f {
        Failure::Rejected(_) => (FailureKind::Rejected, true),
        // A missing grant fails every event alike: the breaker should see it.
        Failure::Refused(_) => (FailureKind::Rejected, false),
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
pub(super) async fn park_poison_pill(
    ctx: &ConsumerCtx,
    dep: &Deployment,
    d: &Delivery,
    record: Option<&AttemptRecord>,
) -> Result<(), Stop> {
    let mut message = format!(
        "{} attempts made; the last ended with the host stopping during the call (a crash or kill)",
        d.counted
    );
    if let Some(last) = record.and_then(|r| r.last_error.as_ref()) {
        message.push_str(&format!("; last failure before that: {}", last.message));
    }
    park(ctx, dep, d, FailureKind::HostError, message).await
}

/// Parks the event: dead letter, the end of its handling and its attempt
/// record cleared, in one commit. A fence refusing it means another commit
/// finished the event first; nothing is parked then.
pub(super) async fn park(
    ctx: &ConsumerCtx,
    dep: &Deployment,
    d: &Delivery,
    kind: FailureKind,
    message: String,
) -> Result<(), Stop> {
    let group = ctx.group().to_owned();
    let Finish {
        offset,
        state,
        requires_state,
    } = finish(ctx, d);
    let now = SystemTime::now();
    let result = ctx
        .commit_log(ConsumerCommit {
            offset,
            state,
            requires_state,
            attempts: vec![AttemptUpdate {
                position: d.event.position.clone(),
                record: None,
            }],
            dead_letter: Some(DeadLetterRecord {
                event: (*d.event).clone(),
                plugin: group.clone(),
                plugin_version: dep.version_label(),
                plugin_digest: dep.plugin.digest.clone(),
                kind,
                message: message.clone(),
                attempts: d.counted,
                first_failure: d.first_failure.unwrap_or(now),
                last_failure: now,
            }),
            ..ctx.commit_for()
        })
        .await;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) if e.class() == ErrorClass::Conflict && !e.lease_lost() => {
            tracing::info!(plugin = %group, event_id = %d.event.event.id, "another commit finished the event first ({e}); not parking it");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    ctx.shared.dead_lettered.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(plugin = %group, event_id = %d.event.event.id, %kind, attempts = d.counted, "event parked in the dead-letter store: {message}");
    if let Some(id) = outcome.dead_letter {
        ctx.emit(DispatchEvent::Parked {
            plugin: group,
            position: d.event.position.clone(),
            event_id: d.event.event.id.clone(),
            dead_letter: id,
            kind,
            attempts: d.counted,
        });
    }
    Ok(())
}
