//! Outbound HTTP for plugins: `wasi:http/outgoing-handler`, linked for every
//! plugin and served only through the operator's allowlist.
//!
//! wasmtime-wasi-http implements the WASI types; every request it would send
//! comes to [`OutboundHooks::send_request`] first, which checks the call's
//! state (inside `handle`, under the request cap), the allowlist, and the
//! resolved address (never the daemon's own listener unless an entry names it)
//! before any connection, then sends with the call's deadline and byte caps.
//! A refused request is an error to the guest (never a trap) that names the
//! grant and the sidecar; a refused *grant* also decides the call, as the
//! other grants do (`CallState::refuse`).
//!
//! Redirects are not followed: the host makes exactly the request the guest
//! built (wasmtime-wasi-http sends one HTTP/1 request per `handle`); a guest
//! that follows a `3xx` makes a new request, checked like any other.

mod body;
mod grant;
mod metrics;
mod send;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

pub use self::grant::{HttpGrant, HttpLimits, Target};
pub use self::metrics::{OutboundMetrics, RefusalReason};
pub(super) use self::send::OutboundHooks;

/// What all stores of a runtime share: the instruments and the daemon's own
/// address.
#[derive(Debug, Default)]
pub struct OutboundShared {
    pub metrics: OutboundMetrics,
    /// The daemon's API listener, once bound: requests to it are refused
    /// unless an allowlist entry names it.
    pub daemon: OnceLock<SocketAddr>,
}

/// What one call did with HTTP, shared with the request futures (which run
/// on tokio, outside the store).
#[derive(Debug)]
pub(super) struct CallTally {
    pub deadline: Instant,
    pub event_id: String,
    pub requests: u32,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// The first grant refused in this call (the message the guest got).
    pub refused: Option<String>,
    /// A request cut off by the call's own deadline: the call ends as a
    /// timeout naming it, whatever the guest made of the error.
    pub timed_out: Option<String>,
}

/// A call's tally behind a lock; never held across an await.
#[derive(Debug, Clone)]
pub(super) struct Tally(Arc<Mutex<CallTally>>);

impl Tally {
    fn new(deadline: Instant, event_id: String) -> Self {
        Tally(Arc::new(Mutex::new(CallTally {
            deadline,
            event_id,
            requests: 0,
            bytes_out: 0,
            bytes_in: 0,
            refused: None,
            timed_out: None,
        })))
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut CallTally) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What a call's outbound HTTP leaves for its outcome.
#[derive(Debug, Default)]
pub(super) struct CallEnd {
    pub refused: Option<String>,
    pub timed_out: Option<String>,
}
