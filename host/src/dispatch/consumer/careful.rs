//! The careful path: one event at a time with its attempt persisted before
//! the call, so an event that takes the host down is counted and, at the
//! policy's maximum, parked as `host-error` instead of crash-looping. Every
//! consumer starts with `batch_size` events on this path, and every breaker
//! probe takes it.

use std::sync::Arc;

use super::super::breaker::Ticket;
use super::aside::{self, SetAside};
use super::delivery::{self, Called, Delivery, Place};
use super::{ConsumerCtx, Stop, Worker, retry, retry_policy};
use crate::event::StoredEvent;

pub(super) async fn handle(
    ctx: &mut ConsumerCtx,
    w: Worker,
    aside: &mut SetAside,
    event: Arc<StoredEvent>,
    ticket: Ticket,
) -> Result<Worker, Stop> {
    let mut record = ctx.log.attempts(ctx.group(), &event.position).await?;
    // The last counted attempt was made by a process that still runs (this one after a
    // log error or a stale view, another daemon that lost the lease): its call did not take
    // a host down, so it is taken again, not counted again.
    let again = record
        .as_ref()
        .and_then(|r| r.started_by.as_deref())
        .is_some_and(|by| ctx.is_alive(by));
    if again && let Some(r) = record.as_mut() {
        r.attempts = r.attempts.saturating_sub(1);
    }
    let d = Delivery::resumed(event, Place::InLine, record.as_ref());
    let policy = retry_policy(&w.deployment, &ctx.config.default_retry);
    if d.counted >= policy.max_attempts {
        // Every earlier attempt was recorded and none finished: the host went
        // down during each of them. (No call: the ticket goes back unused.)
        drop(ticket);
        delivery::park_poison_pill(ctx, &w.deployment, &d, record.as_ref()).await?;
        return Ok(w);
    }
    delivery::pre_call(ctx, &d.event, record).await?;
    match delivery::call_and_commit(ctx, w, &d, ticket).await? {
        Called::Done(w) => Ok(w),
        Called::Failed(w, error, ticket) if w.non_blocking() => {
            aside::after_failure(ctx, &w.deployment, aside, d, error, ticket).await?;
            Ok(w)
        }
        Called::Failed(w, error, ticket) => retry::retry(ctx, w, d, error, ticket).await,
    }
}
