//! What a handler can do besides reading its event: emit, state, config, log.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::host::Host;
use crate::{Level, OutgoingEvent, SdkError};

/// State keys starting with this prefix belong to the SDK (the idempotency
/// records of [`Context::once`]). [`Context::state_keys`] hides them unless the
/// prefix asked for starts with it; do not write under it yourself.
///
/// ```
/// assert_eq!(evhost_sdk::RESERVED_PREFIX, "__evhost/");
/// ```
pub const RESERVED_PREFIX: &str = "__evhost/";

/// The handler's connection to the host for the duration of one call.
///
/// Everything a call emits or writes is buffered by the host and committed
/// atomically with the consumer offset when the handler returns `Ok`; when it
/// returns an error or traps, none of it is. Reads inside a call see the
/// call's own writes. Log lines are not transactional: they are written at once.
///
/// ```
/// use evhost_sdk::prelude::*;
/// use evhost_sdk::testing::{TestEvent, TestHost};
///
/// fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
///     let seen: u64 = cx.state_get("seen")?.unwrap_or(0);
///     cx.state_set("seen", &(seen + 1))?;
///     cx.emit(OutgoingEvent::new("audit.recorded").subject(&event.id))?;
///     cx.info("recorded");
///     Ok(())
/// }
///
/// let mut host = TestHost::new();
/// host.deliver(handle, TestEvent::new("user.created")).unwrap();
/// assert_eq!(host.state_json::<u64>("seen"), Some(1));
/// assert_eq!(host.emitted().len(), 1);
/// ```
pub struct Context<'h> {
    pub(crate) host: &'h mut dyn Host,
    pub(crate) dedupe_window: u64,
    /// Requests sent through [`Context::http`] in this call: numbers the
    /// derived idempotency keys.
    pub(crate) http_sent: u32,
}

impl<'h> Context<'h> {
    pub(crate) fn new(host: &'h mut dyn Host) -> Self {
        Self {
            host,
            dedupe_window: crate::DEFAULT_DEDUPE_WINDOW,
            http_sent: 0,
        }
    }

    /// Queues `event` for publication when the call succeeds and returns the id
    /// it will carry. The host sets `causationid` to the handled event's id and
    /// inherits its `correlationid`.
    ///
    /// ```
    /// use evhost_sdk::prelude::*;
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new();
    /// let event = TestEvent::new("order.placed").build();
    /// host.deliver(|_, cx| {
    ///     let id = cx.emit(OutgoingEvent::new("invoice.requested").subject("o-1"))?;
    ///     assert!(!id.is_empty());
    ///     Ok(())
    /// }, &event).unwrap();
    /// assert_eq!(host.emitted()[0].causationid.as_deref(), Some(event.id.as_str()));
    /// ```
    pub fn emit(&mut self, event: OutgoingEvent) -> Result<String, SdkError> {
        self.host.emit(event).map_err(SdkError::Emit)
    }

    /// Reads the JSON value stored under `key`.
    ///
    /// ```
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new().with_state("limit", &10);
    /// host.deliver(|_, cx| {
    ///     assert_eq!(cx.state_get::<u32>("limit")?, Some(10));
    ///     assert_eq!(cx.state_get::<u32>("other")?, None);
    ///     Ok(())
    /// }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn state_get<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, SdkError> {
        match self.state_get_bytes(key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| SdkError::Json {
                        context: format!("decoding state key `{key}`"),
                        source,
                    })
            }
        }
    }

    /// Stores `value` as JSON under `key`.
    ///
    /// ```
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new();
    /// host.deliver(|_, cx| {
    ///     cx.state_set("user/u-1", &serde_json::json!({"name": "Ada"}))?;
    ///     Ok(())
    /// }, TestEvent::new("user.created")).unwrap();
    /// assert_eq!(host.state_json::<serde_json::Value>("user/u-1").unwrap()["name"], "Ada");
    /// ```
    pub fn state_set<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<(), SdkError> {
        let bytes = serde_json::to_vec(value).map_err(|source| SdkError::Json {
            context: format!("encoding state key `{key}`"),
            source,
        })?;
        self.state_set_bytes(key, &bytes)
    }

    /// Reads the raw bytes stored under `key`.
    ///
    /// ```
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new().with_state_bytes("blob", b"\x01\x02");
    /// host.deliver(|_, cx| {
    ///     assert_eq!(cx.state_get_bytes("blob")?, Some(vec![1, 2]));
    ///     Ok(())
    /// }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn state_get_bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>, SdkError> {
        self.host.state_get(key).map_err(SdkError::State)
    }

    /// Stores raw bytes under `key`.
    ///
    /// ```
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new();
    /// host.deliver(|_, cx| Ok(cx.state_set_bytes("blob", &[7, 7])?), TestEvent::new("x.y")).unwrap();
    /// assert_eq!(host.state_bytes("blob"), Some(&[7u8, 7][..]));
    /// ```
    pub fn state_set_bytes(&mut self, key: &str, value: &[u8]) -> Result<(), SdkError> {
        self.host.state_set(key, value).map_err(SdkError::State)
    }

    /// Removes `key`; removing a missing key is not an error.
    ///
    /// ```
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new().with_state("k", &1);
    /// host.deliver(|_, cx| Ok(cx.state_delete("k")?), TestEvent::new("x.y")).unwrap();
    /// assert_eq!(host.state_json::<i32>("k"), None);
    /// ```
    pub fn state_delete(&mut self, key: &str) -> Result<(), SdkError> {
        self.host.state_delete(key).map_err(SdkError::State)
    }

    /// Keys starting with `prefix`, in ascending byte order. Keys under
    /// [`RESERVED_PREFIX`] are left out unless `prefix` itself starts with it.
    ///
    /// ```
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new().with_state("user/b", &1).with_state("user/a", &2).with_state("order/x", &3);
    /// host.deliver(|_, cx| {
    ///     assert_eq!(cx.state_keys("user/")?, vec!["user/a", "user/b"]);
    ///     Ok(())
    /// }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn state_keys(&mut self, prefix: &str) -> Result<Vec<String>, SdkError> {
        let mut keys = self.host.state_keys(prefix).map_err(SdkError::State)?;
        if !prefix.starts_with(RESERVED_PREFIX) {
            keys.retain(|key| !key.starts_with(RESERVED_PREFIX));
        }
        Ok(keys)
    }

    /// The operator's setting `key` from the sidecar's `[config]`, if set.
    ///
    /// ```
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new().with_config("greeting", "Hello");
    /// host.deliver(|_, cx| {
    ///     assert_eq!(cx.config("greeting").as_deref(), Some("Hello"));
    ///     assert_eq!(cx.config("missing"), None);
    ///     Ok(())
    /// }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn config(&mut self, key: &str) -> Option<String> {
        self.host.config(key)
    }

    /// The setting `key`, or `default` when the operator did not set it.
    ///
    /// ```
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new();
    /// host.deliver(|_, cx| {
    ///     assert_eq!(cx.config_or("greeting", "Welcome"), "Welcome");
    ///     Ok(())
    /// }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn config_or(&mut self, key: &str, default: &str) -> String {
        self.config(key).unwrap_or_else(|| default.to_owned())
    }

    /// All settings as key/value pairs, sorted by key.
    ///
    /// ```
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new().with_config("b", "2").with_config("a", "1");
    /// host.deliver(|_, cx| {
    ///     assert_eq!(cx.config_entries(), vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
    ///     Ok(())
    /// }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn config_entries(&mut self) -> Vec<(String, String)> {
        self.host.config_entries()
    }

    /// Writes a log line with structured fields. The host tags it with the
    /// plugin name and the event being handled.
    ///
    /// ```
    /// use evhost_sdk::Level;
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new();
    /// host.deliver(|event, cx| {
    ///     cx.log(Level::Warn, "slow downstream", &[("event", &event.id), ("ms", "950")]);
    ///     Ok(())
    /// }, TestEvent::new("x.y")).unwrap();
    /// assert_eq!(host.logs()[0].fields[1], ("ms".to_string(), "950".to_string()));
    /// ```
    pub fn log(&mut self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.host.log(level, message, fields);
    }

    /// Logs `message` at [`Level::Trace`].
    ///
    /// ```
    /// # use evhost_sdk::testing::{TestEvent, TestHost};
    /// # let mut host = TestHost::new();
    /// host.deliver(|_, cx| { cx.trace("entering"); Ok(()) }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn trace(&mut self, message: &str) {
        self.log(Level::Trace, message, &[]);
    }

    /// Logs `message` at [`Level::Debug`].
    ///
    /// ```
    /// # use evhost_sdk::testing::{TestEvent, TestHost};
    /// # let mut host = TestHost::new();
    /// host.deliver(|_, cx| { cx.debug("details"); Ok(()) }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn debug(&mut self, message: &str) {
        self.log(Level::Debug, message, &[]);
    }

    /// Logs `message` at [`Level::Info`].
    ///
    /// ```
    /// # use evhost_sdk::testing::{TestEvent, TestHost};
    /// # let mut host = TestHost::new();
    /// host.deliver(|_, cx| { cx.info("hello"); Ok(()) }, TestEvent::new("x.y")).unwrap();
    /// assert_eq!(host.logs()[0].message, "hello");
    /// ```
    pub fn info(&mut self, message: &str) {
        self.log(Level::Info, message, &[]);
    }

    /// Logs `message` at [`Level::Warn`].
    ///
    /// ```
    /// # use evhost_sdk::testing::{TestEvent, TestHost};
    /// # let mut host = TestHost::new();
    /// host.deliver(|_, cx| { cx.warn("odd"); Ok(()) }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn warn(&mut self, message: &str) {
        self.log(Level::Warn, message, &[]);
    }

    /// Logs `message` at [`Level::Error`].
    ///
    /// ```
    /// # use evhost_sdk::testing::{TestEvent, TestHost};
    /// # let mut host = TestHost::new();
    /// host.deliver(|_, cx| { cx.error("broken"); Ok(()) }, TestEvent::new("x.y")).unwrap();
    /// ```
    pub fn error(&mut self, message: &str) {
        self.log(Level::Error, message, &[]);
    }
}
