//! A body wrapper that counts a call's bytes against its cap and ends the
//! body at the request's deadline, so neither a large nor a trickling body
//! can outlast the call.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, WasiBody};

use super::{RefusalReason, Tally};
use crate::runtime::context::PluginScope;

/// Which cap a body counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The request body: `request-bytes`.
    Out,
    /// The response body: `response-bytes`.
    In,
}

/// Where a body's request stands: its call's tally and deadline.
pub struct Cutoff {
    pub tally: Tally,
    pub scope: Arc<PluginScope>,
    pub deadline: Instant,
    pub call_deadline: bool,
    pub what: String,
}

/// A metered body, before it has a body to wrap.
pub struct Metered {
    direction: Direction,
    limit: u64,
    cutoff: Cutoff,
}

struct MeteredBody {
    inner: WasiBody,
    meter: Metered,
    sleep: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl Metered {
    pub fn new(direction: Direction, limit: u64, cutoff: Cutoff) -> Self {
        Metered {
            direction,
            limit,
            cutoff,
        }
    }

    pub fn wrap(self, inner: WasiBody) -> WasiBody {
        let at = tokio::time::Instant::from_std(self.cutoff.deadline);
        MeteredBody {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(at)),
            meter: self,
            done: false,
        }
        .boxed_unsync()
    }

    /// Adds `n` bytes; `Err` once the call is over its cap.
    fn count(&self, n: usize) -> Result<(), Error> {
        let limit = self.limit;
        let over = self.cutoff.tally.with(|t| {
            let total = match self.direction {
                Direction::Out => &mut t.bytes_out,
                Direction::In => &mut t.bytes_in,
            };
            *total = total.saturating_add(n as u64);
            *total > limit
        });
        if !over {
            return Ok(());
        }
        let scope = &self.cutoff.scope;
        let (reason, error) = match self.direction {
            Direction::Out => (
                RefusalReason::RequestBytes,
                Error::HttpRequestBodySize(Some(limit)),
            ),
            Direction::In => (
                RefusalReason::ResponseBytes,
                Error::HttpResponseBodySize(Some(limit)),
            ),
        };
        scope.outbound.metrics.refused(&scope.name, reason);
        tracing::warn!(
            target: "evhost::plugin",
            plugin = %scope.name,
            reason = reason.label(),
            "{}: over the call's limit of {limit} {} bytes",
            self.cutoff.what,
            reason.label(),
        );
        Err(error)
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(e) = this.meter.count(data.len())
                {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    let c = &this.meter.cutoff;
                    super::send::note_timeout(&c.tally, c.call_deadline, &c.what);
                    Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
