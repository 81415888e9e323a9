//! Strict ordering's retry path: the partition waits while its failed event
//! is retried with backoff, until it succeeds or is parked.

use super::super::breaker::Ticket;
use super::delivery::{self, Called, Delivery, Verdict};
use super::{ConsumerCtx, Stop, Worker, admit, commit, pause, refresh};
use crate::log::{AttemptUpdate, ConsumerCommit};
use crate::runtime::CallError;

pub(super) async fn retry(
    ctx: &mut ConsumerCtx,
    mut w: Worker,
    mut d: Delivery,
    mut error: CallError,
    mut ticket: Ticket,
) -> Result<Worker, Stop> {
    loop {
        match delivery::judge(ctx, &w.deployment, &mut d, &error, &mut ticket) {
            Verdict::Park { kind, message } => {
                delivery::park(ctx, &w.deployment, &d, kind, message).await?;
                return Ok(w);
            }
            Verdict::Again { delay, record } => {
                tracing::debug!(plugin = %ctx.group(), event_id = %d.event.event.id, delivery = d.number, "call failed, retrying in {delay:?}: {error}");
                commit(
                    ctx,
                    ConsumerCommit {
                        attempts: vec![AttemptUpdate {
                            position: d.event.position.clone(),
                            record: Some(record.clone()),
                        }],
                        ..ctx.commit_for()
                    },
                )
                .await?;
                drop(ticket);
                pause(&mut ctx.stop, delay).await?;
                ticket = admit(ctx).await?;
                delivery::pre_call(ctx, &d.event, Some(record)).await?;
            }
        }
        d.number += 1;
        // A new version deployed meanwhile gets the retry (it may be the fix).
        let mut slot = Some(w);
        refresh(ctx, &mut slot);
        w = slot.ok_or(Stop::Requested)?;
        match delivery::call_and_commit(ctx, w, &d, ticket).await? {
            Called::Done(done) => return Ok(done),
            Called::Failed(again, e, t) => {
                w = again;
                error = e;
                ticket = t;
            }
        }
    }
}
