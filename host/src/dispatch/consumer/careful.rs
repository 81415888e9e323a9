//! The careful path: one event at a time with its attempt persisted before
//! the call, so an event that takes the host down is counted and, at the
//! policy's maximum, parked as `host-error` instead of crash-looping. Every
//! consumer starts with `batch_size` events on this path, and every breaker
//! probe takes it.

use std::sync::{Arc, PoisonError};

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
    let record = ctx.log.attempts(ctx.group(), &event.position).await?;
    let survived = ctx
        .survived
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    // This consumer's own last call of the event returned and only its commit failed: that
    // attempt is recorded already and did not take the host down.
    let again = survived.is_some_and(|(position, attempts)| {
        position == event.position && record.as_ref().map(|r| r.attempts) == Some(attempts)
    });
    let d = if again {
        let mut d = Delivery::resumed(event, Place::InLine, record.as_ref());
        d.number -= 1;
        d.counted -= 1;
        d
    } else {
        Delivery::resumed(event, Place::InLine, record.as_ref())
    };
    let policy = retry_policy(&w.deployment, &ctx.config.default_retry);
    if !again && d.counted >= policy.max_attempts {
        // Every earlier attempt was recorded and none finished: the host went
        // down during each of them. (No call: the ticket goes back unused.)
        drop(ticket);
        delivery::park_poison_pill(ctx, &w.deployment, &d, record.as_ref()).await?;
        return Ok(w);
    }
    if !again {
        delivery::pre_call(ctx, &d.event, record).await?;
    }
    match delivery::call_and_commit(ctx, w, &d, ticket).await? {
        Called::Done(w) => Ok(w),
        Called::Failed(w, error, ticket) if w.non_blocking() => {
            aside::after_failure(ctx, &w.deployment, aside, d, error, ticket).await?;
            Ok(w)
        }
        Called::Failed(w, error, ticket) => retry::retry(ctx, w, d, error, ticket).await,
    }
}
