//! Outbound HTTP: [`Context::http`] with an `Idempotency-Key` by default, and
//! [`HttpResponse::error_for_status`], which maps status classes to retry or
//! reject.
//!
//! A request is a side effect outside the log's transaction: a call that
//! fails after it (or is retried for any reason) makes it again. The key
//! lets the server recognise the repeat: it derives from the event id and the
//! request's position in the call, never from the attempt, so every delivery
//! of one event sends the same keys.
//!
//! The operator must grant the URL (`[grants] http = [...]` in the sidecar);
//! a refused request is an [`HttpError`] that [`is_refused`](HttpError::is_refused).

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Context, Event, HandlerError, SdkError};

/// The header [`Context::http`] adds unless the request sets its own key.
///
/// ```
/// assert_eq!(evhost_sdk::IDEMPOTENCY_KEY, "Idempotency-Key");
/// ```
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// An outbound request, built by method.
///
/// ```
/// use evhost_sdk::HttpRequest;
///
/// let req = HttpRequest::post("http://127.0.0.1:9000/charge")
///     .header("accept", "application/json")
///     .json(&serde_json::json!({"amount": 12}))
///     .unwrap();
/// assert_eq!(req.method, "POST");
/// assert_eq!(req.header_value("content-type"), Some("application/json"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `http://host[:port]/path?query` or `https://...`.
    pub url: String,
    /// Name/value pairs, in order.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    key: KeyChoice,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyChoice {
    Derived,
    Given(String),
    None,
}

impl HttpRequest {
    /// A request with `method` to `url`.
    ///
    /// ```
    /// let req = evhost_sdk::HttpRequest::new("PUT", "https://api.example.com/v1/x");
    /// assert_eq!(req.method, "PUT");
    /// ```
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        HttpRequest {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            key: KeyChoice::Derived,
        }
    }

    /// A `GET`.
    ///
    /// ```
    /// assert_eq!(evhost_sdk::HttpRequest::get("http://h/").method, "GET");
    /// ```
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST`.
    ///
    /// ```
    /// assert_eq!(evhost_sdk::HttpRequest::post("http://h/").method, "POST");
    /// ```
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    ///
    /// ```
    /// let req = evhost_sdk::HttpRequest::get("http://h/").header("x-a", "1");
    /// assert_eq!(req.header_value("X-A"), Some("1"));
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    ///
    /// ```
    /// let req = evhost_sdk::HttpRequest::post("http://h/").body("hi");
    /// assert_eq!(req.body.as_deref(), Some(&b"hi"[..]));
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    ///
    /// ```
    /// let req = evhost_sdk::HttpRequest::post("http://h/").json(&[1, 2]).unwrap();
    /// assert_eq!(req.body.as_deref(), Some(&b"[1,2]"[..]));
    /// ```
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, SdkError> {
        let body = serde_json::to_vec(value).map_err(|source| SdkError::Json {
            context: "encoding the request body".into(),
            source,
        })?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sends `key` as the `Idempotency-Key` instead of the derived one.
    ///
    /// ```
    /// let req = evhost_sdk::HttpRequest::post("http://h/").idempotency_key("order-7");
    /// # let _ = req;
    /// ```
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.key = KeyChoice::Given(key.into());
        self
    }

    /// Sends no `Idempotency-Key` (for requests that are safe to repeat).
    ///
    /// ```
    /// let req = evhost_sdk::HttpRequest::get("http://h/").without_idempotency_key();
    /// # let _ = req;
    /// ```
    pub fn without_idempotency_key(mut self) -> Self {
        self.key = KeyChoice::None;
        self
    }

    /// The first value of header `name` (case-insensitive).
    ///
    /// ```
    /// let req = evhost_sdk::HttpRequest::get("http://h/").header("A", "1");
    /// assert_eq!(req.header_value("a"), Some("1"));
    /// ```
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

/// A response: status, headers and the whole body.
///
/// ```
/// use evhost_sdk::HttpResponse;
///
/// let res = HttpResponse::new(200).header("content-type", "application/json").body(r#"{"ok":true}"#);
/// let v: serde_json::Value = res.json().unwrap();
/// assert_eq!(v["ok"], true);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Name/value pairs, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// An empty response with `status` (for tests).
    ///
    /// ```
    /// assert_eq!(evhost_sdk::HttpResponse::new(204).status, 204);
    /// ```
    pub fn new(status: u16) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (for tests).
    ///
    /// ```
    /// let res = evhost_sdk::HttpResponse::new(429).header("Retry-After", "3");
    /// assert_eq!(res.header_value("retry-after"), Some("3"));
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body (for tests).
    ///
    /// ```
    /// let res = evhost_sdk::HttpResponse::new(200).body("ok");
    /// assert_eq!(res.body, b"ok");
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of header `name` (case-insensitive).
    ///
    /// ```
    /// let res = evhost_sdk::HttpResponse::new(200).header("ETag", "x");
    /// assert_eq!(res.header_value("etag"), Some("x"));
    /// ```
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// The body as JSON.
    ///
    /// ```
    /// let res = evhost_sdk::HttpResponse::new(200).body("[1]");
    /// assert_eq!(res.json::<Vec<u8>>().unwrap(), [1]);
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, SdkError> {
        serde_json::from_slice(&self.body).map_err(|source| SdkError::Json {
            context: format!("decoding the HTTP {} response body", self.status),
            source,
        })
    }

    /// `Retry-After` in seconds, if the response has one (an HTTP date is
    /// not read: the retry policy's backoff applies then).
    ///
    /// ```
    /// use std::time::Duration;
    /// let res = evhost_sdk::HttpResponse::new(429).header("Retry-After", "2");
    /// assert_eq!(res.retry_after(), Some(Duration::from_secs(2)));
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        self.header_value("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    }

    /// The response, or the handler error its status calls for: `5xx` and
    /// `429` are transient (**retry**; a `429`'s `Retry-After` becomes the
    /// retry's delay, see [`HandlerError::after`]), any other `4xx` is
    /// permanent (**reject**). `1xx`–`3xx` pass (redirects are not followed).
    ///
    /// ```
    /// use std::time::Duration;
    /// use evhost_sdk::HttpResponse;
    ///
    /// assert!(HttpResponse::new(201).error_for_status().is_ok());
    /// assert!(HttpResponse::new(503).error_for_status().unwrap_err().is_retry());
    /// assert!(HttpResponse::new(404).error_for_status().unwrap_err().is_reject());
    /// let busy = HttpResponse::new(429).header("Retry-After", "5").error_for_status().unwrap_err();
    /// assert_eq!(busy.retry_after(), Some(Duration::from_secs(5)));
    /// ```
    pub fn error_for_status(self) -> Result<Self, HandlerError> {
        let text = String::from_utf8_lossy(&self.body);
        let excerpt: String = text.chars().take(200).collect();
        let message = format!("HTTP {}: {}", self.status, excerpt.trim());
        match self.status {
            429 => {
                let err = HandlerError::retry(message);
                Err(match self.retry_after() {
                    Some(delay) => err.after(delay),
                    None => err,
                })
            }
            500..=599 => Err(HandlerError::retry(message)),
            400..=499 => Err(HandlerError::reject(message)),
            _ => Ok(self),
        }
    }
}

/// A request that got no response: refused by the host (not granted, over a
/// limit) or failed on the way (DNS, connect, timeout).
///
/// With `?` it becomes a [`HandlerError`]: a refusal is a **reject** (the
/// operator must change the grant), a failure a **retry**.
///
/// ```
/// use evhost_sdk::{HandlerError, HttpError};
///
/// let err: HandlerError = HttpError::failed("connection refused").into();
/// assert!(err.is_retry());
/// let err: HandlerError = HttpError::refused("no http grant").into();
/// assert!(err.is_reject());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    message: String,
    refused: bool,
}

impl HttpError {
    /// The request failed on the way (for tests and hosts).
    ///
    /// ```
    /// assert!(!evhost_sdk::HttpError::failed("timeout").is_refused());
    /// ```
    pub fn failed(message: impl Into<String>) -> Self {
        HttpError {
            message: message.into(),
            refused: false,
        }
    }

    /// The host refused the request (for tests and hosts).
    ///
    /// ```
    /// assert!(evhost_sdk::HttpError::refused("not granted").is_refused());
    /// ```
    pub fn refused(message: impl Into<String>) -> Self {
        HttpError {
            message: message.into(),
            refused: true,
        }
    }

    /// Whether the host refused it (a grant or a limit), rather than the network.
    ///
    /// ```
    /// assert!(evhost_sdk::HttpError::refused("x").is_refused());
    /// ```
    pub fn is_refused(&self) -> bool {
        self.refused
    }

    /// The host's message.
    ///
    /// ```
    /// assert_eq!(evhost_sdk::HttpError::failed("dns").message(), "dns");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.refused { "refused" } else { "failed" };
        write!(f, "HTTP request {what}: {}", self.message)
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for HandlerError {
    fn from(err: HttpError) -> Self {
        if err.refused {
            HandlerError::reject(err.to_string())
        } else {
            HandlerError::retry(err.to_string())
        }
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl<'h> Context<'h> {
    /// Sends `request` (the operator must grant its URL) and returns the
    /// response, whatever its status; see [`HttpResponse::error_for_status`].
    ///
    /// Adds `Idempotency-Key`: the event's id for the call's first request,
    /// `ID/2`, `ID/3`, ... for later ones — the same on every attempt, so a
    /// server that dedupes by key applies a retried request once.
    ///
    /// ```
    /// use evhost_sdk::prelude::*;
    /// use evhost_sdk::{HttpRequest, HttpResponse};
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// fn handle(event: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    ///     let res = cx.http(event, HttpRequest::post("http://pay/charge").body("{}"))?.error_for_status()?;
    ///     cx.info(&format!("charged: {}", res.status));
    ///     Ok(())
    /// }
    ///
    /// let mut host = TestHost::new().with_http(|_| Ok(HttpResponse::new(200)));
    /// let event = TestEvent::new("payment.requested").id("e-1").build();
    /// host.deliver(handle, &event).unwrap();
    /// host.deliver(handle, &event).unwrap();
    /// let keys: Vec<_> = host.http_requests().iter().map(|r| r.header_value("idempotency-key")).collect();
    /// assert_eq!(keys, [Some("e-1"), Some("e-1")]);
    /// ```
    pub fn http(&mut self, event: &Event, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.http_sent += 1;
        let key = match &request.key {
            KeyChoice::None => None,
            KeyChoice::Given(key) => Some(key.clone()),
            KeyChoice::Derived if self.http_sent == 1 => Some(event.id.clone()),
            KeyChoice::Derived => Some(format!("{}/{}", event.id, self.http_sent)),
        };
        let mut request = request;
        if let Some(key) = key
            && request.header_value(IDEMPOTENCY_KEY).is_none()
        {
            request.headers.push((IDEMPOTENCY_KEY.to_owned(), key));
        }
        #[cfg(target_family = "wasm")]
        return crate::wasm_http::send(&request);
        #[cfg(not(target_family = "wasm"))]
        self.host.http(&request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestEvent, TestHost};

    #[test]
    fn later_requests_of_a_call_get_numbered_keys_and_a_given_key_wins() {
        let mut host = TestHost::new().with_http(|_| Ok(HttpResponse::new(200)));
        let event = TestEvent::new("a.b").id("e-9").build();
        host.deliver(
            |e, cx| {
                cx.http(e, HttpRequest::get("http://h/1"))?;
                cx.http(e, HttpRequest::get("http://h/2"))?;
                cx.http(e, HttpRequest::get("http://h/3").idempotency_key("mine"))?;
                cx.http(e, HttpRequest::get("http://h/4").without_idempotency_key())?;
                Ok(())
            },
            &event,
        )
        .unwrap();
        let keys: Vec<Option<&str>> = host
            .http_requests()
            .iter()
            .map(|r| r.header_value(IDEMPOTENCY_KEY))
            .collect();
        assert_eq!(keys, [Some("e-9"), Some("e-9/2"), Some("mine"), None]);
    }

    #[test]
    fn statuses_map_to_retry_or_reject() {
        for (status, retry) in [
            (500, true),
            (503, true),
            (429, true),
            (400, false),
            (409, false),
        ] {
            let err = HttpResponse::new(status).error_for_status().unwrap_err();
            assert_eq!(err.is_retry(), retry, "{status}");
            assert_eq!(err.retry_after(), None);
        }
        for status in [200, 204, 302] {
            assert!(HttpResponse::new(status).error_for_status().is_ok());
        }
    }
}
