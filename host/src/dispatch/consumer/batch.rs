//! The fast path: a batch's matching events are called in order on one
//! blocking thread, and the successful prefix — offset, emits, merged state
//! writes — is committed as one `ConsumerCommit`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::breaker::Ticket;
use super::{ConsumerCtx, Stop, Worker, advance, blocking, emits_of, state_guard};
use crate::event::StoredEvent;
use crate::log::{ConsumerCommit, ErrorClass, LogError};
use crate::runtime::CallError;

pub(super) enum Outcome {
    /// Every matching event was handled and committed.
    Done(Worker),
    /// The prefix before `event` is committed; `event` failed its first call.
    Failed {
        worker: Worker,
        event: Arc<StoredEvent>,
        error: CallError,
        ticket: Ticket,
    },
    /// The log refused the batch's effects as invalid; nothing is committed.
    Refused { worker: Worker, error: LogError },
}

pub(super) async fn call(
    ctx: &ConsumerCtx,
    w: Worker,
    batch: Vec<StoredEvent>,
    mut ticket: Ticket,
) -> Result<Outcome, Stop> {
    let guard = state_guard(ctx, w.uses_state()).await;
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
                    emits.extend(emits_of(&mut effects));
                    handled += 1;
                    next = event.position.offset + 1;
                }
                Err(e) => return (next, emits, handled, Some((event, e))),
            }
        }
        (next, emits, handled, None)
    })
    .await?;
    let group = ctx.group().to_owned();
    if next > start || handled > 0 {
        let c = ConsumerCommit {
            offset: Some(advance(ctx, next)),
            emits,
            state: w.overlay.take(&group),
            state_read: w.overlay.take_reads(&group),
            ..ctx.commit_for()
        };
        let result = ctx.commit_log(c).await;
        drop(guard);
        if let Err(error) = result {
            w.overlay.discard();
            if error.class() == ErrorClass::Refused {
                return Ok(Outcome::Refused { worker: w, error });
            }
            return Err(error.into());
        }
        ctx.shared.processed.fetch_add(handled, Ordering::Relaxed);
        if handled > 0 {
            ticket.record(true);
        }
    }
    Ok(match failure {
        None => Outcome::Done(w),
        Some((event, error)) => Outcome::Failed {
            worker: w,
            event,
            error,
            ticket,
        },
    })
}
