//! The event envelope: CloudEvents 1.0 attributes, the evhost extensions
//! (`correlationid`, `causationid`, `actor`) and the host's position fields.

use std::collections::BTreeMap;

/// The CloudEvents spec version every stored event carries.
pub const SPEC_VERSION: &str = "1.0";

/// An event as the host stores and delivers it: every defaulted attribute is
/// filled in (`id`, `time`, `correlationid`), so readers never re-derive them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub source: String,
    pub specversion: String,
    pub ty: String,
    pub subject: Option<String>,
    /// RFC 3339, UTC when the host assigned it.
    pub time: String,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    /// Payload bytes; JSON text for JSON content types.
    pub data: Option<Vec<u8>>,
    pub correlationid: String,
    pub causationid: Option<String>,
    pub actor: Option<String>,
    /// Other CloudEvents extension attributes, by name.
    pub extensions: BTreeMap<String, String>,
    /// Event-sourcing stream and version, for events appended to a stream.
    pub stream: Option<String>,
    pub streamversion: Option<u64>,
}

/// Where an event sits in the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// An event read back from the log, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub position: Position,
    pub event: Event,
}

/// The topic an event type lands on when none is given, as in the seed:
/// the first dot-separated segment plus `-events` (`user.created` → `user-events`).
pub fn topic_for_type(ty: &str) -> String {
    let head = ty.split('.').next().unwrap_or(ty);
    format!("{head}-events")
}

/// Checks a topic name: 1–249 characters of `[A-Za-z0-9._-]`, as Kafka allows,
/// so names map onto files, URLs and JetStream subjects without escaping.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err(format!(
            "topic name must be 1 to 249 characters, got {}",
            topic.len()
        ));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {topic:?} contains {c:?}; allowed are letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Attribute names with a meaning of their own, which an extension may not reuse.
const RESERVED_ATTRIBUTES: &[&str] = &[
    "id",
    "source",
    "specversion",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
    "correlationid",
    "causationid",
    "actor",
    "topic",
    "partition",
    "offset",
    "stream",
    "streamversion",
];

/// Checks a CloudEvents extension attribute name: lowercase letters and digits,
/// at most 20 characters (CloudEvents 1.0), and not a name evhost defines.
pub fn validate_extension_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 20
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(format!(
            "extension attribute name {name:?} must be 1 to 20 lowercase letters or digits"
        ));
    }
    if RESERVED_ATTRIBUTES.contains(&name) {
        return Err(format!("extension attribute name {name:?} is reserved"));
    }
    Ok(())
}

/// The current time as RFC 3339 in UTC, as the host stamps events.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

/// A fresh event id: a UUIDv7, so ids sort by creation time.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_is_derived_from_the_first_type_segment() {
        assert_eq!(topic_for_type("user.created"), "user-events");
        assert_eq!(topic_for_type("order.payment.failed"), "order-events");
        assert_eq!(topic_for_type("ping"), "ping-events");
    }
}
