//! Write evhost event handlers in Rust.
//!
//! A handler is a plain function; one [`plugin!`] line turns the crate into an
//! evhost plugin — a Wasm component for the `evhost:plugin/plugin` world when
//! built with `--target wasm32-wasip2`, an ordinary library otherwise, so the
//! same handler runs in native `#[test]`s through [`testing::TestHost`].
//!
//! ```
//! use evhost_sdk::prelude::*;
//!
//! evhost_sdk::plugin!(name = "greeter", subscribe = [("user-events", "user.created")], handler = handle);
//!
//! #[derive(serde::Deserialize)]
//! struct User { email: String }
//!
//! fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
//!     let user: User = event.data_json()?;
//!     let greeting = cx.config_or("greeting", "Welcome");
//!     cx.emit(OutgoingEvent::new("mail.requested")
//!         .subject(user.email.as_str())
//!         .json(&serde_json::json!({"to": user.email, "text": greeting}))?)?;
//!     Ok(())
//! }
//!
//! fn main() {
//!     use evhost_sdk::testing::{TestEvent, TestHost};
//!     let mut host = TestHost::new().with_config("greeting", "Hi");
//!     host.deliver(handle, TestEvent::new("user.created").json(&serde_json::json!({"email": "a@b.c"})))
//!         .unwrap();
//!     assert_eq!(host.emitted()[0].ty, "mail.requested");
//!     assert_eq!(describe().name, "greeter");
//! }
//! ```
//!
//! Effects are transactional: the emits and state writes of one call are
//! committed together with the consumer offset when the handler returns
//! `Ok`, and not at all when it returns a [`HandlerError`] or traps (a panic
//! is a trap). [`Context::once`] builds idempotent handling on that.
//!
//! # Layout
//! - `event` — [`Event`], the delivered event, and [`topic_for_type`].
//! - `outgoing` — [`OutgoingEvent`], the builder for emitted events.
//! - `context` — [`Context`]: emit, state, config, log.
//! - `idempotency` — [`Context::once`] and friends over reserved state keys.
//! - `http` — [`Context::http`] (outbound HTTP with an `Idempotency-Key`),
//!   [`HttpRequest`], [`HttpResponse`] and its status mapping, [`HttpError`].
//! - `error` — [`HandlerError`] (retry / reject), [`SdkError`], [`ResultExt`].
//! - `info` — [`PluginInfo`], [`Subscription`], [`RetryPolicy`].
//! - `level` — [`Level`] of log lines.
//! - `macros` — [`plugin!`].
//! - `name` — the naming rule: [`NAME_RULE`], [`check_name`], [`suggest_name`].
//! - [`sidecar`] (native only) — a sidecar's `[grants]` and `[config]`, shared with the daemon.
//! - [`testing`] — the native harness: [`testing::TestHost`], [`testing::TestEvent`].
//! - `host` — the private seam between [`Context`] and its two hosts;
//!   `wasm` (Wasm only) implements it over the WIT imports generated in
//!   `bindings` (the crate's single `wit_bindgen::generate!`).

#![deny(missing_docs)]

// Lets generated code name this crate as `evhost_sdk` from inside it too.
extern crate self as evhost_sdk;

mod context;
mod error;
mod event;
mod host;
mod http;
mod idempotency;
mod info;
mod level;
mod macros;
mod name;
mod outgoing;
#[cfg(not(target_family = "wasm"))]
pub mod sidecar;
pub mod testing;

#[cfg(target_family = "wasm")]
#[doc(hidden)]
#[path = "bindings.rs"]
pub mod __bindings;
#[cfg(target_family = "wasm")]
mod wasm;
#[cfg(target_family = "wasm")]
mod wasm_http;

pub use context::{Context, RESERVED_PREFIX};
pub use error::{ErrorKind, HandlerError, ResultExt, SdkError};
pub use event::{Event, topic_for_type};
pub use http::{HttpError, HttpRequest, HttpResponse, IDEMPOTENCY_KEY};
pub use idempotency::DEFAULT_DEDUPE_WINDOW;
pub use info::{PluginInfo, RetryPolicy, Subscription};
pub use level::Level;
pub use name::{NAME_RULE, NameError, check_name, is_valid_name, suggest_name};
pub use outgoing::OutgoingEvent;

/// Everything a handler usually needs, in one `use`.
///
/// ```
/// use evhost_sdk::prelude::*;
///
/// fn handle(_event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
///     cx.emit(OutgoingEvent::new("ping.sent"))?;
///     Ok(())
/// }
/// # let _ = handle;
/// ```
pub mod prelude {
    pub use crate::{
        Context, ErrorKind, Event, HandlerError, HttpError, HttpRequest, HttpResponse, Level,
        OutgoingEvent, PluginInfo, ResultExt, RetryPolicy, SdkError, Subscription,
    };
}

/// Used by the code [`plugin!`] generates; not a stable interface.
#[doc(hidden)]
pub mod __private {
    /// The shape of a handler.
    pub type HandlerFn = for<'a, 'b, 'c> fn(
        &'a crate::Event,
        &'b mut crate::Context<'c>,
    ) -> Result<(), crate::HandlerError>;

    pub use crate::name::is_valid_name;

    #[cfg(target_family = "wasm")]
    pub use crate::wasm::{describe, handle};
}
