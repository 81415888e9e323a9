//! Events a handler asks the host to publish.

use serde::Serialize;

use crate::SdkError;

/// An event to publish with [`Context::emit`](crate::Context::emit), mirroring
/// the WIT record `outgoing-event`.
///
/// Only the type is required. The host fills in `id` (UUIDv7), `time`,
/// `source` (`evhost://plugin/NAME`), `correlationid` (inherited from the
/// handled event), `causationid` (the handled event's id), `topic` (derived
/// from the type) and `actor` (inherited).
///
/// ```
/// use evhost_sdk::OutgoingEvent;
///
/// let event = OutgoingEvent::new("order.created")
///     .subject("o-1")
///     .extension("tenant", "acme")
///     .json(&serde_json::json!({"total": 42}))
///     .unwrap();
/// assert_eq!(event.ty(), "order.created");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    pub(crate) ty: String,
    pub(crate) subject: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) topic: Option<String>,
    pub(crate) datacontenttype: Option<String>,
    pub(crate) dataschema: Option<String>,
    pub(crate) data: Option<Vec<u8>>,
    pub(crate) actor: Option<String>,
    pub(crate) extensions: Vec<(String, String)>,
}

impl OutgoingEvent {
    /// An event of type `ty` with no payload.
    ///
    /// ```
    /// let event = evhost_sdk::OutgoingEvent::new("user.welcomed");
    /// assert_eq!(event.ty(), "user.welcomed");
    /// ```
    pub fn new(ty: impl Into<String>) -> Self {
        Self {
            ty: ty.into(),
            subject: None,
            id: None,
            topic: None,
            datacontenttype: None,
            dataschema: None,
            data: None,
            actor: None,
            extensions: Vec::new(),
        }
    }

    /// The CloudEvents `type`.
    ///
    /// ```
    /// assert_eq!(evhost_sdk::OutgoingEvent::new("a.b").ty(), "a.b");
    /// ```
    pub fn ty(&self) -> &str {
        &self.ty
    }

    /// Sets `subject`, the partition key: events with the same subject stay in order.
    ///
    /// ```
    /// let event = evhost_sdk::OutgoingEvent::new("order.shipped").subject("o-1");
    /// # let _ = event;
    /// ```
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets an explicit `id`. A deterministic id (e.g. derived from the handled
    /// event's id) lets the host deduplicate the emit if it is ever repeated.
    ///
    /// ```
    /// let event = evhost_sdk::OutgoingEvent::new("order.shipped").id("o-1-shipped");
    /// # let _ = event;
    /// ```
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Publishes to `topic` instead of the one derived from the type.
    ///
    /// ```
    /// let event = evhost_sdk::OutgoingEvent::new("order.shipped").topic("shipping");
    /// # let _ = event;
    /// ```
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Sets `dataschema`.
    ///
    /// ```
    /// let event = evhost_sdk::OutgoingEvent::new("order.shipped")
    ///     .dataschema("https://example.com/schemas/order-shipped.json");
    /// # let _ = event;
    /// ```
    pub fn dataschema(mut self, schema: impl Into<String>) -> Self {
        self.dataschema = Some(schema.into());
        self
    }

    /// Sets the `actor` extension (by default inherited from the handled event).
    ///
    /// ```
    /// let event = evhost_sdk::OutgoingEvent::new("order.shipped").actor("warehouse-bot");
    /// # let _ = event;
    /// ```
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Adds a CloudEvents extension attribute.
    ///
    /// ```
    /// let event = evhost_sdk::OutgoingEvent::new("order.shipped").extension("tenant", "acme");
    /// # let _ = event;
    /// ```
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extensions.push((name.into(), value.into()));
        self
    }

    /// Sets the payload to `value` encoded as JSON (`application/json`).
    ///
    /// ```
    /// # fn main() -> Result<(), evhost_sdk::SdkError> {
    /// let event = evhost_sdk::OutgoingEvent::new("order.created")
    ///     .json(&serde_json::json!({"id": "o-1"}))?;
    /// # let _ = event;
    /// # Ok(())
    /// # }
    /// ```
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, SdkError> {
        let bytes = serde_json::to_vec(value).map_err(|source| SdkError::Json {
            context: format!("encoding the data of emitted event {}", self.ty),
            source,
        })?;
        self.data = Some(bytes);
        self.datacontenttype = Some("application/json".to_owned());
        Ok(self)
    }

    /// Sets the payload to UTF-8 text (`text/plain; charset=utf-8`).
    ///
    /// ```
    /// let event = evhost_sdk::OutgoingEvent::new("note.added").text("hello");
    /// # let _ = event;
    /// ```
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.data = Some(text.into().into_bytes());
        self.datacontenttype = Some("text/plain; charset=utf-8".to_owned());
        self
    }

    /// Sets the payload to raw bytes with the given content type.
    ///
    /// ```
    /// let event = evhost_sdk::OutgoingEvent::new("blob.stored")
    ///     .bytes(vec![0xde, 0xad], "application/octet-stream");
    /// # let _ = event;
    /// ```
    pub fn bytes(mut self, data: impl Into<Vec<u8>>, content_type: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self.datacontenttype = Some(content_type.into());
        self
    }
}
