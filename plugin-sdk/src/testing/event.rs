use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::{TEST_TIME, next_test_id};
use crate::{Event, topic_for_type};

/// Offsets of built events, process-wide so that they only grow.
static NEXT_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Builds an [`Event`] as the host would deliver it, with defaults for
/// everything not set: a fresh UUIDv7-shaped `id`, `source`
/// `"evhost://test"`, `time` [`TEST_TIME`], `correlationid` = `id`, topic
/// derived from the type (`user.created` → `user-events`), partition 0, a
/// fresh increasing offset and attempt 1.
///
/// ```
/// use evhost_sdk::testing::TestEvent;
///
/// let event = TestEvent::new("user.created")
///     .subject("u-1")
///     .json(&serde_json::json!({"email": "ada@example.com"}))
///     .build();
/// assert_eq!(event.topic, "user-events");
/// assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
/// let next = TestEvent::new("user.created").build();
/// assert!(next.offset > event.offset);
/// assert_ne!(next.id, event.id);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a TestEvent does nothing until built or delivered"]
pub struct TestEvent {
    event: Event,
    id_set: bool,
    correlation_set: bool,
    topic_set: bool,
    offset_set: bool,
}

impl TestEvent {
    /// An event of type `ty` with every other attribute defaulted.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("order.created").build();
    /// assert_eq!(event.specversion, "1.0");
    /// ```
    pub fn new(ty: impl Into<String>) -> Self {
        Self {
            event: Event {
                ty: ty.into(),
                source: "evhost://test".to_owned(),
                specversion: "1.0".to_owned(),
                time: TEST_TIME.to_owned(),
                attempt: 1,
                ..Event::default()
            },
            id_set: false,
            correlation_set: false,
            topic_set: false,
            offset_set: false,
        }
    }

    /// Sets `id` (and, unless set explicitly, `correlationid`).
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").id("e-1").build();
    /// assert_eq!((event.id.as_str(), event.correlationid.as_str()), ("e-1", "e-1"));
    /// ```
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.event.id = id.into();
        self.id_set = true;
        self
    }

    /// Sets `source`.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").source("urn:shop").build();
    /// assert_eq!(event.source, "urn:shop");
    /// ```
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.event.source = source.into();
        self
    }

    /// Sets `subject`.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").subject("u-1").build();
    /// assert_eq!(event.subject.as_deref(), Some("u-1"));
    /// ```
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.event.subject = Some(subject.into());
        self
    }

    /// Sets `time` (RFC 3339).
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").time("2030-05-01T12:00:00Z").build();
    /// assert_eq!(event.time, "2030-05-01T12:00:00Z");
    /// ```
    pub fn time(mut self, time: impl Into<String>) -> Self {
        self.event.time = time.into();
        self
    }

    /// Sets `topic` instead of deriving it from the type.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").topic("misc").build();
    /// assert_eq!(event.topic, "misc");
    /// ```
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.event.topic = topic.into();
        self.topic_set = true;
        self
    }

    /// Sets `partition`.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").partition(3).build();
    /// assert_eq!(event.partition, 3);
    /// ```
    pub fn partition(mut self, partition: u32) -> Self {
        self.event.partition = partition;
        self
    }

    /// Sets `offset` instead of taking the next one.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").offset(41).build();
    /// assert_eq!(event.offset, 41);
    /// ```
    pub fn offset(mut self, offset: u64) -> Self {
        self.event.offset = offset;
        self.offset_set = true;
        self
    }

    /// Sets the delivery `attempt` (1 for the first delivery).
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").attempt(3).build();
    /// assert_eq!(event.attempt, 3);
    /// ```
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.event.attempt = attempt;
        self
    }

    /// Sets `correlationid` (by default the event's own id).
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").correlationid("flow-1").build();
    /// assert_eq!(event.correlationid, "flow-1");
    /// ```
    pub fn correlationid(mut self, id: impl Into<String>) -> Self {
        self.event.correlationid = id.into();
        self.correlation_set = true;
        self
    }

    /// Sets `causationid`.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").causationid("e-0").build();
    /// assert_eq!(event.causationid.as_deref(), Some("e-0"));
    /// ```
    pub fn causationid(mut self, id: impl Into<String>) -> Self {
        self.event.causationid = Some(id.into());
        self
    }

    /// Sets the `actor` extension.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").actor("ada").build();
    /// assert_eq!(event.actor.as_deref(), Some("ada"));
    /// ```
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.event.actor = Some(actor.into());
        self
    }

    /// Adds an extension attribute.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").extension("tenant", "acme").build();
    /// assert_eq!(event.extension("tenant"), Some("acme"));
    /// ```
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.event.extensions.push((name.into(), value.into()));
        self
    }

    /// Sets `dataschema`.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").dataschema("urn:schema:1").build();
    /// assert_eq!(event.dataschema.as_deref(), Some("urn:schema:1"));
    /// ```
    pub fn dataschema(mut self, schema: impl Into<String>) -> Self {
        self.event.dataschema = Some(schema.into());
        self
    }

    /// Sets the event-sourcing `stream` and `streamversion`.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").stream("order-1", 4).build();
    /// assert_eq!(event.streamversion, Some(4));
    /// ```
    pub fn stream(mut self, stream: impl Into<String>, version: u64) -> Self {
        self.event.stream = Some(stream.into());
        self.event.streamversion = Some(version);
        self
    }

    /// Sets the payload to `value` as JSON (`application/json`).
    ///
    /// # Panics
    /// If `value` does not serialize to JSON (e.g. a map with non-string keys).
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").json(&[1, 2]).build();
    /// assert_eq!(event.data_json::<Vec<i32>>().unwrap(), vec![1, 2]);
    /// ```
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        let bytes = serde_json::to_vec(value).expect("TestEvent::json: value must serialize");
        self.event.data = Some(bytes);
        self.event.datacontenttype = Some("application/json".to_owned());
        self
    }

    /// Sets the payload to UTF-8 text (`text/plain; charset=utf-8`).
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").text("hi").build();
    /// assert_eq!(event.data_text().unwrap(), "hi");
    /// ```
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.event.data = Some(text.into().into_bytes());
        self.event.datacontenttype = Some("text/plain; charset=utf-8".to_owned());
        self
    }

    /// Sets the payload to raw bytes with the given content type.
    ///
    /// ```
    /// let event = evhost_sdk::testing::TestEvent::new("a.b").bytes(vec![0], "application/octet-stream").build();
    /// assert_eq!(event.data_bytes(), Some(&[0u8][..]));
    /// ```
    pub fn bytes(mut self, data: impl Into<Vec<u8>>, content_type: impl Into<String>) -> Self {
        self.event.data = Some(data.into());
        self.event.datacontenttype = Some(content_type.into());
        self
    }

    /// The finished event.
    ///
    /// ```
    /// let event: evhost_sdk::Event = evhost_sdk::testing::TestEvent::new("a.b").build();
    /// assert_eq!(event.topic, "a-events");
    /// ```
    pub fn build(self) -> Event {
        let mut event = self.event;
        if !self.id_set {
            event.id = next_test_id();
        }
        if !self.correlation_set {
            event.correlationid = event.id.clone();
        }
        if !self.topic_set {
            event.topic = topic_for_type(&event.ty);
        }
        if !self.offset_set {
            event.offset = NEXT_OFFSET.fetch_add(1, Ordering::Relaxed);
        }
        event
    }
}

impl From<TestEvent> for Event {
    fn from(builder: TestEvent) -> Self {
        builder.build()
    }
}

impl From<&Event> for Event {
    fn from(event: &Event) -> Self {
        event.clone()
    }
}
