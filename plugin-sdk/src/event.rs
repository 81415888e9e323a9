//! The delivered event: CloudEvents attributes, evhost extensions and log position.

use serde::de::DeserializeOwned;

use crate::SdkError;

/// One event as delivered to a handler, mirroring the WIT record `event`.
///
/// Every defaulted attribute is already filled in by the host (`id`, `time`,
/// `correlationid`), so handlers never re-derive them. Build one for tests with
/// [`TestEvent`](crate::testing::TestEvent).
///
/// ```
/// use evhost_sdk::testing::TestEvent;
///
/// let event = TestEvent::new("user.created").subject("u-1").build();
/// assert_eq!(event.ty, "user.created");
/// assert_eq!(event.topic, "user-events");
/// assert_eq!(event.correlationid, event.id);
/// assert_eq!(event.attempt, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Event {
    /// CloudEvents `id`: unique per `source`; the idempotency key.
    pub id: String,
    /// CloudEvents `source`: URI-reference of the producer.
    pub source: String,
    /// CloudEvents `specversion`; always `"1.0"`.
    pub specversion: String,
    /// CloudEvents `type`, e.g. `order.created`.
    pub ty: String,
    /// CloudEvents `subject`: the aggregate id; it chooses the partition.
    pub subject: Option<String>,
    /// CloudEvents `time`, RFC 3339.
    pub time: String,
    /// CloudEvents `datacontenttype`, e.g. `application/json`.
    pub datacontenttype: Option<String>,
    /// CloudEvents `dataschema`.
    pub dataschema: Option<String>,
    /// The payload bytes; JSON text for JSON content.
    pub data: Option<Vec<u8>>,
    /// Extension `correlationid`: the id of the first event of the flow.
    pub correlationid: String,
    /// Extension `causationid`: the id of the event whose handling emitted this one.
    pub causationid: Option<String>,
    /// Extension `actor`: who caused the event.
    pub actor: Option<String>,
    /// Other CloudEvents extension attributes, as name/value pairs.
    pub extensions: Vec<(String, String)>,
    /// The topic the event is stored in.
    pub topic: String,
    /// The partition within `topic`.
    pub partition: u32,
    /// The offset within the partition.
    pub offset: u64,
    /// The event-sourcing stream the event was appended to, if any.
    pub stream: Option<String>,
    /// The event's version within `stream`, if any.
    pub streamversion: Option<u64>,
    /// Which delivery of this event to this plugin this is, starting at 1.
    pub attempt: u32,
}

impl Event {
    /// Decodes the payload as JSON into `T`.
    ///
    /// Fails with [`SdkError::MissingData`] when the event has no payload and
    /// [`SdkError::Json`] when it does not decode; both become a *reject* when
    /// returned from a handler with `?`.
    ///
    /// ```
    /// use evhost_sdk::testing::TestEvent;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct User { email: String }
    ///
    /// let event = TestEvent::new("user.created")
    ///     .json(&serde_json::json!({"email": "ada@example.com"}))
    ///     .build();
    /// let user: User = event.data_json().unwrap();
    /// assert_eq!(user.email, "ada@example.com");
    /// ```
    pub fn data_json<T: DeserializeOwned>(&self) -> Result<T, SdkError> {
        let bytes = self.data.as_deref().ok_or(SdkError::MissingData)?;
        serde_json::from_slice(bytes).map_err(|source| SdkError::Json {
            context: format!("decoding the data of event {} ({})", self.id, self.ty),
            source,
        })
    }

    /// The payload as UTF-8 text.
    ///
    /// ```
    /// use evhost_sdk::testing::TestEvent;
    ///
    /// let event = TestEvent::new("note.added").text("hello").build();
    /// assert_eq!(event.data_text().unwrap(), "hello");
    /// assert!(TestEvent::new("note.added").build().data_text().is_err());
    /// ```
    pub fn data_text(&self) -> Result<&str, SdkError> {
        let bytes = self.data.as_deref().ok_or(SdkError::MissingData)?;
        std::str::from_utf8(bytes).map_err(SdkError::NotUtf8)
    }

    /// The raw payload bytes, if any.
    ///
    /// ```
    /// use evhost_sdk::testing::TestEvent;
    ///
    /// let event = TestEvent::new("blob.stored").bytes(vec![1, 2, 3], "application/octet-stream").build();
    /// assert_eq!(event.data_bytes(), Some(&[1u8, 2, 3][..]));
    /// ```
    pub fn data_bytes(&self) -> Option<&[u8]> {
        self.data.as_deref()
    }

    /// The value of the extension attribute `name`, if present.
    ///
    /// ```
    /// use evhost_sdk::testing::TestEvent;
    ///
    /// let event = TestEvent::new("user.created").extension("tenant", "acme").build();
    /// assert_eq!(event.extension("tenant"), Some("acme"));
    /// assert_eq!(event.extension("missing"), None);
    /// ```
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The topic an event type lands on when none is given, as the host derives it:
/// the first dot-separated segment plus `-events`.
///
/// ```
/// assert_eq!(evhost_sdk::topic_for_type("user.created"), "user-events");
/// assert_eq!(evhost_sdk::topic_for_type("order.payment.failed"), "order-events");
/// ```
pub fn topic_for_type(ty: &str) -> String {
    let head = ty.split('.').next().unwrap_or(ty);
    format!("{head}-events")
}
