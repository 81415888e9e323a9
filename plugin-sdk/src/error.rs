//! Handler failures (what the host sees) and SDK failures (what a helper reports).

use std::fmt;

/// Why a handler failed, mirroring the WIT variant `handler-error`.
///
/// A *retry* is transient: the host calls again with backoff until the retry
/// policy's attempts run out. A *reject* is permanent: the event goes straight
/// to the dead-letter store. Either way nothing the call emitted or wrote is
/// committed.
///
/// `?` converts [`SdkError`] (see its docs for which kind each case becomes)
/// and `serde_json::Error` (a reject). For anything else use
/// [`ResultExt::or_retry`] / [`ResultExt::or_reject`] or the constructors.
///
/// ```
/// use evhost_sdk::{ErrorKind, HandlerError};
///
/// let err = HandlerError::retry("payment service unavailable");
/// assert_eq!(err.kind(), ErrorKind::Retry);
/// assert_eq!(err.message(), "payment service unavailable");
/// assert_eq!(err.to_string(), "retry: payment service unavailable");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    kind: ErrorKind,
    message: String,
    /// The least delay before the next attempt, for a retry.
    retry_after: Option<std::time::Duration>,
}

/// Whether a [`HandlerError`] asks for another attempt.
///
/// ```
/// use evhost_sdk::{ErrorKind, HandlerError};
/// assert_eq!(HandlerError::reject("bad").kind(), ErrorKind::Reject);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Transient: call again later with backoff.
    Retry,
    /// Permanent: park the event in the dead-letter store at once.
    Reject,
}

impl HandlerError {
    /// A transient failure: the host calls again after a backoff.
    ///
    /// ```
    /// let err = evhost_sdk::HandlerError::retry("timeout");
    /// assert!(err.is_retry());
    /// ```
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retry,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A permanent failure: the event is dead-lettered without further attempts.
    ///
    /// ```
    /// let err = evhost_sdk::HandlerError::reject("missing email");
    /// assert!(err.is_reject());
    /// ```
    pub fn reject(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Reject,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Asks the host to wait at least `delay` before the next attempt (e.g. a
    /// `429`'s `Retry-After`), instead of the retry policy's backoff when that
    /// is shorter; never longer than the policy's `max-backoff`. Only a retry
    /// carries it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = evhost_sdk::HandlerError::retry("rate limited").after(Duration::from_secs(3));
    /// assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    /// assert_eq!(evhost_sdk::HandlerError::reject("no").after(Duration::from_secs(3)).retry_after(), None);
    /// ```
    pub fn after(mut self, delay: std::time::Duration) -> Self {
        if self.kind == ErrorKind::Retry {
            self.retry_after = Some(delay);
        }
        self
    }

    /// The delay set with [`after`](Self::after), if any.
    ///
    /// ```
    /// assert_eq!(evhost_sdk::HandlerError::retry("x").retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    /// Whether this is a retry or a reject.
    ///
    /// ```
    /// use evhost_sdk::{ErrorKind, HandlerError};
    /// assert_eq!(HandlerError::retry("x").kind(), ErrorKind::Retry);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, as the operator will see it in the dead-letter store.
    ///
    /// ```
    /// assert_eq!(evhost_sdk::HandlerError::reject("no").message(), "no");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True for [`ErrorKind::Retry`].
    ///
    /// ```
    /// assert!(evhost_sdk::HandlerError::retry("x").is_retry());
    /// ```
    pub fn is_retry(&self) -> bool {
        self.kind == ErrorKind::Retry
    }

    /// True for [`ErrorKind::Reject`].
    ///
    /// ```
    /// assert!(evhost_sdk::HandlerError::reject("x").is_reject());
    /// ```
    pub fn is_reject(&self) -> bool {
        self.kind == ErrorKind::Reject
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Retry => "retry",
            ErrorKind::Reject => "reject",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for HandlerError {}

/// A failure reported by an SDK helper: decoding data, encoding state, or a
/// host call the host refused.
///
/// With `?` in a handler it becomes a [`HandlerError`]: a failing *state*
/// call becomes a **retry** (the store may recover); everything else is
/// deterministic and becomes a **reject** (missing or malformed data, a value
/// that does not (de)serialize, an emit the host refused as invalid or not
/// granted — an operator can fix the grant and replay the dead letter).
///
/// ```
/// use evhost_sdk::{HandlerError, SdkError};
///
/// let err: HandlerError = SdkError::MissingData.into();
/// assert!(err.is_reject());
/// let err: HandlerError = SdkError::State("disk full".into()).into();
/// assert!(err.is_retry());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SdkError {
    /// The event carries no payload.
    MissingData,
    /// The payload is not UTF-8 text.
    NotUtf8(std::str::Utf8Error),
    /// A value did not encode to or decode from JSON; `context` says which.
    Json {
        /// What was being encoded or decoded.
        context: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The host refused an emit (invalid event, or its type is not granted).
    Emit(String),
    /// The host's state store failed (or the plugin lacks the `state` grant).
    State(String),
}

impl fmt::Display for SdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdkError::MissingData => f.write_str("the event has no data"),
            SdkError::NotUtf8(err) => write!(f, "the event data is not UTF-8: {err}"),
            SdkError::Json { context, source } => write!(f, "{context}: {source}"),
            SdkError::Emit(msg) => write!(f, "emit refused: {msg}"),
            SdkError::State(msg) => write!(f, "state store failed: {msg}"),
        }
    }
}

impl std::error::Error for SdkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SdkError::NotUtf8(err) => Some(err),
            SdkError::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<SdkError> for HandlerError {
    fn from(err: SdkError) -> Self {
        match err {
            SdkError::State(_) => HandlerError::retry(err.to_string()),
            _ => HandlerError::reject(err.to_string()),
        }
    }
}

/// Malformed JSON is permanent: a reject.
impl From<serde_json::Error> for HandlerError {
    fn from(err: serde_json::Error) -> Self {
        HandlerError::reject(err.to_string())
    }
}

/// Turns any `Result` whose error displays into a handler result of the chosen kind.
///
/// ```
/// use evhost_sdk::prelude::*;
///
/// let parsed: Result<u32, HandlerError> = "12x".parse::<u32>().or_reject();
/// assert!(parsed.unwrap_err().is_reject());
/// ```
pub trait ResultExt<T> {
    /// Maps the error to [`HandlerError::retry`] with its `Display` text.
    ///
    /// ```
    /// use evhost_sdk::ResultExt;
    /// let r: Result<(), &str> = Err("busy");
    /// assert!(r.or_retry().unwrap_err().is_retry());
    /// ```
    fn or_retry(self) -> Result<T, HandlerError>;

    /// Maps the error to [`HandlerError::reject`] with its `Display` text.
    ///
    /// ```
    /// use evhost_sdk::ResultExt;
    /// let r: Result<(), &str> = Err("bad input");
    /// assert_eq!(r.or_reject().unwrap_err().message(), "bad input");
    /// ```
    fn or_reject(self) -> Result<T, HandlerError>;
}

impl<T, E: fmt::Display> ResultExt<T> for Result<T, E> {
    fn or_retry(self) -> Result<T, HandlerError> {
        self.map_err(|err| HandlerError::retry(err.to_string()))
    }

    fn or_reject(self) -> Result<T, HandlerError> {
        self.map_err(|err| HandlerError::reject(err.to_string()))
    }
}
