//! Non-blocking ordering: a failed event is *set aside* — the offset moves
//! past it in the same commit that records its attempt and a set-aside entry
//! (state namespace `__evhost`, key `set-aside/PLUGIN/TOPIC/PARTITION/OFFSET`)
//! — and later events flow while it waits for its retries. The entry is the
//! retries' fence: each of their commits requires it, and the one that
//! finishes the event removes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::super::Deployment;
use super::super::breaker::Ticket;
use super::delivery::{
    self, Called, Delivery, HOST_NAMESPACE, Place, Verdict, aside_key, aside_prefix,
};
use super::{ConsumerCtx, Stop, Worker, admit, advance, retry_policy};
use crate::event::Position;
use crate::log::{AttemptUpdate, ConsumerCommit, ErrorClass, StateChange};
use crate::runtime::CallError;

/// The partition's failed events waiting for a retry, by offset, with when
/// and as which call number. Persisted as set-aside entries (index) plus the
/// events' attempt records, so a restart resumes them.
#[derive(Default)]
pub(super) struct SetAside {
    loaded: bool,
    due: BTreeMap<u64, (Instant, u32)>,
}

impl SetAside {
    pub async fn load(&mut self, ctx: &ConsumerCtx) -> Result<(), Stop> {
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
                self.due.insert(offset, (Instant::now(), 0));
            }
        }
        self.loaded = true;
        Ok(())
    }

    /// Whether anything is waiting (or may be, before the first load).
    pub fn any_due(&self) -> bool {
        !self.loaded || !self.due.is_empty()
    }

    pub fn next_due(&self) -> Option<(u64, Instant, u32)> {
        self.due
            .iter()
            .min_by_key(|(_, (at, _))| *at)
            .map(|(o, (at, n))| (*o, *at, *n))
    }
}

/// After a failed call: parks the event, or sets it aside (in line: the
/// offset moves past it in the same commit) for its next attempt.
pub(super) async fn after_failure(
    ctx: &ConsumerCtx,
    dep: &Deployment,
    aside: &mut SetAside,
    mut d: Delivery,
    error: CallError,
    mut ticket: Ticket,
) -> Result<(), Stop> {
    let offset = d.event.position.offset;
    match delivery::judge(ctx, dep, &mut d, &error, &mut ticket) {
        Verdict::Park { kind, message } => {
            aside.due.remove(&offset);
            delivery::park(ctx, dep, &d, kind, message).await
        }
        Verdict::Again { delay, record } => {
            let key = aside_key(ctx, offset);
            let (advance, requires_state) = match d.place {
                Place::InLine => (Some(advance(ctx, offset + 1)), None),
                Place::Aside => (None, Some(key.clone())),
            };
            let result = ctx
                .commit_log(ConsumerCommit {
                    offset: advance,
                    attempts: vec![AttemptUpdate {
                        position: d.event.position.clone(),
                        record: Some(record),
                    }],
                    state: vec![StateChange {
                        namespace: key.namespace,
                        key: key.key,
                        value: Some(Vec::new()),
                    }],
                    requires_state,
                    ..ctx.commit_for()
                })
                .await;
            match result {
                Ok(_) => {
                    aside
                        .due
                        .insert(offset, (Instant::now() + delay, d.number + 1));
                    Ok(())
                }
                Err(e) if e.class() == ErrorClass::Conflict && !e.lease_lost() => {
                    // Another commit finished it (or moved the offset past it).
                    aside.due.remove(&offset);
                    Err(Stop::Conflict(e))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Retries the set-aside event at `offset` as call number `number`.
pub(super) async fn retry_due(
    ctx: &mut ConsumerCtx,
    w: Worker,
    aside: &mut SetAside,
    offset: u64,
    number: u32,
) -> Result<Worker, Stop> {
    let position = Position {
        topic: ctx.topic.clone(),
        partition: ctx.partition,
        offset,
    };
    let record = ctx.log.attempts(ctx.group(), &position).await?;
    let found = ctx.log.read(&ctx.topic, ctx.partition, offset, 1).await?;
    let Some(event) = found
        .into_iter()
        .next()
        .filter(|e| e.position.offset == offset)
    else {
        tracing::warn!(plugin = %ctx.group(), topic = %ctx.topic, partition = ctx.partition, offset, "set-aside event no longer in the log (retention); dropping its retries");
        let key = aside_key(ctx, offset);
        aside.due.remove(&offset);
        super::commit(
            ctx,
            ConsumerCommit {
                attempts: vec![AttemptUpdate {
                    position,
                    record: None,
                }],
                state: vec![StateChange {
                    namespace: key.namespace.clone(),
                    key: key.key.clone(),
                    value: None,
                }],
                requires_state: Some(key),
                ..ctx.commit_for()
            },
        )
        .await?;
        return Ok(w);
    };
    let mut d = Delivery::resumed(Arc::new(event), Place::Aside, record.as_ref());
    // Failures so far, plus a call the host died in, if any.
    d.number = d.number.max(number);
    let policy = retry_policy(&w.deployment, &ctx.config.default_retry);
    if d.counted >= policy.max_attempts {
        aside.due.remove(&offset);
        delivery::park_poison_pill(ctx, &w.deployment, &d, record.as_ref()).await?;
        return Ok(w);
    }
    let ticket = admit(ctx).await?;
    delivery::pre_call(ctx, &d.event, record).await?;
    match delivery::call_and_commit(ctx, w, &d, ticket).await? {
        Called::Done(w) => {
            aside.due.remove(&offset);
            Ok(w)
        }
        Called::Failed(w, error, ticket) => {
            after_failure(ctx, &w.deployment, aside, d, error, ticket).await?;
            Ok(w)
        }
    }
}
