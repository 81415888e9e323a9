//! Run handlers natively, in ordinary `#[test]`s, against an in-memory host.
//!
//! [`TestHost`] plays the daemon's part for one plugin: config, durable state,
//! the published events and the log. [`TestHost::deliver`] calls a handler
//! with the daemon's semantics — the call's emits and state writes are
//! committed when it returns `Ok` and discarded when it returns an error;
//! reads inside the call see its own writes; emitted events get the host's
//! defaults (`id`, `source`, `causationid`, inherited `correlationid` and
//! `actor`, derived `topic`). [`TestEvent`] builds the events to deliver.
//!
//! ```
//! use evhost_sdk::prelude::*;
//! use evhost_sdk::testing::{TestEvent, TestHost};
//!
//! fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
//!     let order: serde_json::Value = event.data_json()?;
//!     cx.emit(OutgoingEvent::new("invoice.requested").json(&order)?)?;
//!     Ok(())
//! }
//!
//! let mut host = TestHost::new();
//! let event = TestEvent::new("order.created").json(&serde_json::json!({"total": 3})).build();
//! host.deliver(handle, &event).unwrap();
//!
//! let invoice = &host.emitted()[0];
//! assert_eq!(invoice.ty, "invoice.requested");
//! assert_eq!(invoice.topic, "invoice-events");
//! assert_eq!(invoice.causationid.as_deref(), Some(event.id.as_str()));
//! assert_eq!(invoice.correlationid, event.correlationid);
//! ```

mod event;
mod host;

pub use event::TestEvent;
pub use host::{Delivery, LogLine, TestHost};

/// The `time` of [`TestEvent`]s and of events emitted in a [`TestHost`],
/// fixed so that tests are deterministic.
///
/// ```
/// use evhost_sdk::testing::{TEST_TIME, TestEvent};
/// assert_eq!(TestEvent::new("a.b").build().time, TEST_TIME);
/// ```
pub const TEST_TIME: &str = "2025-01-01T00:00:00Z";

/// Shared by built and emitted events so that no two ids of a test run collide.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A UUIDv7-shaped id from a process-wide counter: unique within the test run
/// and easy to read in assertion failures.
fn next_test_id() -> String {
    let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("00000000-0000-7000-8000-{n:012x}")
}
