//! CloudEvents over HTTP (the CloudEvents 1.0 HTTP protocol binding and JSON
//! event format): reading the three content modes into [`Event`]s with the
//! host's defaults filled in, and writing stored events back as JSON.
//!
//! - structured: `Content-Type: application/cloudevents+json`, body = one event;
//! - batch: `application/cloudevents-batch+json`, body = a JSON array of events;
//! - binary: any other content type; attributes in `ce-*` headers
//!   (percent-encoded), `Content-Type` = `datacontenttype`, body = `data`.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::event::{self, Event, StoredEvent};

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";
/// Longest `id`, `type`, `source`, ... accepted.
const MAX_ATTRIBUTE: usize = 4096;

/// Attributes the host sets; a producer may not.
const HOST_ATTRIBUTES: &[&str] = &["topic", "partition", "offset", "stream", "streamversion"];

/// Reads the events of a publish request, in order. Nothing is half-read: any
/// problem with any event fails the whole request.
pub fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Event>, ApiError> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Content-Type is not valid ASCII"))?
                .to_owned(),
        ),
    };
    let media = content_type.as_deref().map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        Some(STRUCTURED) => {
            let raw = parse_json(body)?;
            if !raw.get().starts_with('{') {
                return Err(ApiError::bad_request(
                    "a structured-mode body must be one JSON object (a CloudEvent); \
                     send arrays as application/cloudevents-batch+json",
                ));
            }
            Ok(vec![from_json(JsonEvent::parse(raw)?, None)?])
        }
        Some(BATCH) => {
            let raw = parse_json(body)?;
            if !raw.get().starts_with('[') {
                return Err(ApiError::bad_request(
                    "a batch-mode body must be a JSON array of CloudEvents",
                ));
            }
            let items: Vec<&RawValue> = serde_json::from_str(raw.get())
                .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
            if items.is_empty() {
                return Err(ApiError::bad_request("the batch holds no events"));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    if !item.get().starts_with('{') {
                        return Err(ApiError::bad_request(format!(
                            "batch event {i} is not a JSON object"
                        )));
                    }
                    from_json(JsonEvent::parse(item)?, Some(i))
                })
                .collect()
        }
        Some(m) if m.starts_with("application/cloudevents") => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("event format {m} is not supported; use {STRUCTURED}, {BATCH} or binary mode"),
        )),
        _ => {
            if !headers.contains_key("ce-specversion") {
                return Err(ApiError::bad_request(match &content_type {
                    None => format!(
                        "no Content-Type: send one event as {STRUCTURED}, several as {BATCH}, \
                         or use binary mode (ce-specversion, ce-type, ce-source headers)"
                    ),
                    Some(ct) => format!(
                        "Content-Type {ct} means binary mode, which needs the ce-specversion, \
                         ce-type and ce-source headers; to send a JSON CloudEvent use {STRUCTURED}"
                    ),
                }));
            }
            Ok(vec![from_binary(headers, content_type, body)?])
        }
    }
}

/// The body as validated JSON, not yet parsed into values (leading and trailing
/// whitespace trimmed, so its first byte tells the kind of value).
fn parse_json(body: &[u8]) -> Result<&RawValue, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    serde_json::from_slice::<&RawValue>(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// One CloudEvent's JSON object: its attributes as values, its `data` as the
/// producer's JSON text — stored as sent, never parsed into a tree and written
/// again (the costliest part of a publish). Like a JSON object, a repeated key
/// keeps its last value.
struct JsonEvent<'a> {
    attributes: BTreeMap<String, Value>,
    data: Option<&'a RawValue>,
}

impl<'a> JsonEvent<'a> {
    fn parse(raw: &'a RawValue) -> Result<Self, ApiError> {
        serde_json::from_str(raw.get())
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for JsonEvent<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Fields<'a> {
            type Value = JsonEvent<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object (a CloudEvent)")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<JsonEvent<'a>, M::Error> {
                let mut event = JsonEvent {
                    attributes: BTreeMap::new(),
                    data: None,
                };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "data" {
                        event.data = Some(map.next_value::<&'de RawValue>()?);
                    } else {
                        let value = map.next_value::<Value>()?;
                        event.attributes.insert(key, value);
                    }
                }
                Ok(event)
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData))
    }
}

fn is_json_media(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || media == "text/json" || media.ends_with("+json")
}

fn check_text(which: &str, name: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_ATTRIBUTE {
        return Err(ApiError::bad_request(format!(
            "{which}`{name}` is longer than {MAX_ATTRIBUTE} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{which}`{name}` contains control characters"
        )));
    }
    Ok(())
}

/// Collects attributes from either mode, then checks and completes them.
#[derive(Default)]
struct Attributes {
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    ty: Option<String>,
    subject: Option<String>,
    time: Option<String>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    correlationid: Option<String>,
    causationid: Option<String>,
    actor: Option<String>,
    extensions: BTreeMap<String, String>,
}

impl Attributes {
    /// `where_` prefixes messages: "" or "batch event 3: ".
    fn set(&mut self, where_: &str, name: &str, value: String) -> Result<(), ApiError> {
        if HOST_ATTRIBUTES.contains(&name) {
            return Err(ApiError::bad_request(format!(
                "{where_}attribute `{name}` is assigned by the host and may not be sent"
            )));
        }
        check_text(where_, name, &value)?;
        let slot = match name {
            "specversion" => &mut self.specversion,
            "id" => &mut self.id,
            "source" => &mut self.source,
            "type" => &mut self.ty,
            "subject" => &mut self.subject,
            "time" => &mut self.time,
            "datacontenttype" => &mut self.datacontenttype,
            "dataschema" => &mut self.dataschema,
            "correlationid" => &mut self.correlationid,
            "causationid" => &mut self.causationid,
            "actor" => &mut self.actor,
            _ => {
                event::validate_extension_name(name)
                    .map_err(|e| ApiError::bad_request(format!("{where_}{e}")))?;
                self.extensions.insert(name.to_owned(), value);
                return Ok(());
            }
        };
        *slot = Some(value);
        Ok(())
    }

    fn finish(self, where_: &str, data: Option<Vec<u8>>) -> Result<Event, ApiError> {
        let missing = |name: &str| {
            ApiError::bad_request(format!(
                "{where_}required CloudEvents attribute `{name}` is missing"
            ))
        };
        let specversion = self.specversion.ok_or_else(|| missing("specversion"))?;
        if specversion != event::SPEC_VERSION {
            return Err(ApiError::bad_request(format!(
                "{where_}specversion {specversion:?} is not supported; evhost speaks CloudEvents 1.0"
            )));
        }
        let source = self.source.ok_or_else(|| missing("source"))?;
        let ty = self.ty.ok_or_else(|| missing("type"))?;
        for (name, value) in [("source", &source), ("type", &ty)] {
            if value.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "{where_}attribute `{name}` must not be empty"
                )));
            }
        }
        for (name, value) in [
            ("id", &self.id),
            ("subject", &self.subject),
            ("correlationid", &self.correlationid),
        ] {
            if value.as_deref() == Some("") {
                return Err(ApiError::bad_request(format!(
                    "{where_}attribute `{name}` must not be empty (leave it out instead)"
                )));
            }
        }
        if let Some(t) = &self.time
            && time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .is_err()
        {
            return Err(ApiError::bad_request(format!(
                "{where_}attribute `time` {t:?} is not an RFC 3339 timestamp"
            )));
        }
        if let (Some(ct), Some(bytes)) = (&self.datacontenttype, &data)
            && is_json_media(ct)
            && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err()
        {
            return Err(ApiError::bad_request(format!(
                "{where_}data is not valid JSON, though its content type is {ct}"
            )));
        }
        let id = self.id.unwrap_or_else(event::new_event_id);
        Ok(Event {
            correlationid: self.correlationid.unwrap_or_else(|| id.clone()),
            id,
            source,
            specversion,
            ty,
            subject: self.subject,
            time: self.time.unwrap_or_else(event::now_rfc3339),
            datacontenttype: self.datacontenttype,
            dataschema: self.dataschema,
            data,
            causationid: self.causationid,
            actor: self.actor,
            extensions: self.extensions,
            stream: None,
            streamversion: None,
        })
    }
}

/// One event of the JSON format.
fn from_json(event: JsonEvent<'_>, index: Option<usize>) -> Result<Event, ApiError> {
    let where_ = index.map_or_else(String::new, |i| format!("batch event {i}: "));
    let mut attrs = Attributes::default();
    let data = event.data;
    let mut data_base64 = None;
    for (name, value) in event.attributes {
        match name.as_str() {
            "data_base64" => match value {
                Value::String(s) => data_base64 = Some(s),
                Value::Null => {}
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "{where_}`data_base64` must be a base64 string"
                    )));
                }
            },
            _ => {
                let text = match value {
                    Value::Null => continue,
                    Value::String(s) => s,
                    Value::Bool(b) if !is_core(&name) => b.to_string(),
                    Value::Number(n) if !is_core(&name) => n.to_string(),
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "{where_}attribute `{name}` must be a string{}, got {}",
                            if is_core(&name) {
                                ""
                            } else {
                                ", number or boolean"
                            },
                            kind(&other)
                        )));
                    }
                };
                attrs.set(&where_, &name, text)?;
            }
        }
    }
    let bytes = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "{where_}an event carries `data` or `data_base64`, not both"
            )));
        }
        (None, Some(b64)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| {
                    ApiError::bad_request(format!("{where_}`data_base64` is not valid base64: {e}"))
                })?,
        ),
        (None, None) => None,
        (Some(raw), None) if raw.get() == "null" => None,
        (Some(raw), None) => {
            let text_type = attrs
                .datacontenttype
                .as_deref()
                .is_some_and(|ct| !is_json_media(ct));
            if text_type && raw.get().starts_with('"') {
                // A non-JSON content type carries its data as a JSON string.
                let text: String = serde_json::from_str(raw.get())
                    .map_err(|e| ApiError::bad_request(format!("{where_}`data`: {e}")))?;
                Some(text.into_bytes())
            } else {
                if attrs.datacontenttype.is_none() {
                    attrs.datacontenttype = Some("application/json".into());
                }
                Some(raw.get().as_bytes().to_vec())
            }
        }
    };
    attrs.finish(&where_, bytes)
}

fn is_core(name: &str) -> bool {
    matches!(
        name,
        "specversion"
            | "id"
            | "source"
            | "type"
            | "subject"
            | "time"
            | "datacontenttype"
            | "dataschema"
            | "correlationid"
            | "causationid"
            | "actor"
    )
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One event in binary mode.
fn from_binary(
    headers: &HeaderMap,
    content_type: Option<String>,
    body: &[u8],
) -> Result<Event, ApiError> {
    let mut attrs = Attributes::default();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        if attr == "datacontenttype" {
            return Err(ApiError::bad_request(
                "in binary mode `datacontenttype` is the Content-Type header, not ce-datacontenttype",
            ));
        }
        if attr == "data" || attr == "data_base64" {
            return Err(ApiError::bad_request(format!(
                "in binary mode the body is the data; ce-{attr} is not allowed"
            )));
        }
        let raw = value
            .to_str()
            .map_err(|_| ApiError::bad_request(format!("header {name} is not visible ASCII")))?;
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| {
                ApiError::bad_request(format!("header {name} does not percent-decode to UTF-8"))
            })?;
        if attrs.extensions.contains_key(attr) {
            return Err(ApiError::bad_request(format!(
                "header {name} appears twice"
            )));
        }
        attrs.set("", attr, decoded.into_owned())?;
    }
    attrs.datacontenttype = content_type;
    let data = (!body.is_empty()).then(|| body.to_vec());
    attrs.finish("", data)
}

/// A stored event as the API shows it: the CloudEvents JSON format plus
/// `topic`, `partition`, `offset` (and `stream`, `streamversion`).
pub fn stored_json(stored: &StoredEvent) -> Value {
    let mut obj = event_json(&stored.event);
    obj.insert("topic".into(), stored.position.topic.clone().into());
    obj.insert("partition".into(), stored.position.partition.into());
    obj.insert("offset".into(), stored.position.offset.into());
    Value::Object(obj)
}

/// An event in the CloudEvents JSON format: JSON data inline, UTF-8 text data as a
/// string, anything else as `data_base64`.
pub fn event_json(e: &Event) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("specversion".into(), e.specversion.clone().into());
    obj.insert("id".into(), e.id.clone().into());
    obj.insert("source".into(), e.source.clone().into());
    obj.insert("type".into(), e.ty.clone().into());
    let opt = |obj: &mut Map<String, Value>, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            obj.insert(k.into(), v.clone().into());
        }
    };
    opt(&mut obj, "subject", &e.subject);
    obj.insert("time".into(), e.time.clone().into());
    opt(&mut obj, "datacontenttype", &e.datacontenttype);
    opt(&mut obj, "dataschema", &e.dataschema);
    obj.insert("correlationid".into(), e.correlationid.clone().into());
    opt(&mut obj, "causationid", &e.causationid);
    opt(&mut obj, "actor", &e.actor);
    for (k, v) in &e.extensions {
        obj.insert(k.clone(), v.clone().into());
    }
    opt(&mut obj, "stream", &e.stream);
    if let Some(v) = e.streamversion {
        obj.insert("streamversion".into(), v.into());
    }
    if let Some(data) = &e.data {
        let json_type = e.datacontenttype.as_deref().is_none_or(is_json_media);
        let parsed = if json_type {
            serde_json::from_slice::<Value>(data).ok()
        } else {
            None
        };
        match (parsed, std::str::from_utf8(data)) {
            (Some(v), _) => {
                obj.insert("data".into(), v);
            }
            (None, Ok(text)) if !json_type => {
                obj.insert("data".into(), text.into());
            }
            _ => {
                obj.insert(
                    "data_base64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(data)
                        .into(),
                );
            }
        }
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn structured(v: Value) -> Result<Vec<Event>, ApiError> {
        parse_request(
            &headers(&[("content-type", STRUCTURED)]),
            v.to_string().as_bytes(),
        )
    }

    #[test]
    fn structured_mode_fills_the_defaults() {
        let e = structured(
            json!({"specversion":"1.0","type":"user.created","source":"s","data":{"a":1}}),
        )
        .unwrap()
        .remove(0);
        assert_eq!(e.id.len(), 36, "a UUID");
        assert_eq!(e.correlationid, e.id);
        assert!(!e.time.is_empty());
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(e.data.as_deref(), Some(&b"{\"a\":1}"[..]));
    }

    #[test]
    fn extensions_are_kept_and_host_fields_refused() {
        let e = structured(
            json!({"specversion":"1.0","type":"t","source":"s","id":"1","traceparent":"x","n":5}),
        )
        .unwrap()
        .remove(0);
        assert_eq!(e.extensions["traceparent"], "x");
        assert_eq!(e.extensions["n"], "5");
        assert!(
            structured(json!({"specversion":"1.0","type":"t","source":"s","offset":3})).is_err()
        );
        assert!(
            structured(json!({"specversion":"1.0","type":"t","source":"s","Bad-Name":"x"}))
                .is_err()
        );
    }

    #[test]
    fn binary_mode_reads_percent_encoded_headers() {
        let h = headers(&[
            ("content-type", "text/plain"),
            ("ce-specversion", "1.0"),
            ("ce-type", "note.added"),
            ("ce-source", "https://x/y"),
            ("ce-subject", "caf%C3%A9"),
        ]);
        let e = parse_request(&h, b"hello").unwrap().remove(0);
        assert_eq!(e.subject.as_deref(), Some("café"));
        assert_eq!(e.datacontenttype.as_deref(), Some("text/plain"));
        let back = event_json(&e);
        assert_eq!(back["data"], "hello");
    }

    #[test]
    fn text_and_binary_data_round_trip() {
        let e = structured(json!({"specversion":"1.0","type":"t","source":"s","datacontenttype":"text/plain","data":"hi"}))
            .unwrap()
            .remove(0);
        assert_eq!(e.data.as_deref(), Some(&b"hi"[..]));
        let e =
            structured(json!({"specversion":"1.0","type":"t","source":"s","data_base64":"AAEC"}))
                .unwrap()
                .remove(0);
        assert_eq!(e.data.as_deref(), Some(&[0u8, 1, 2][..]));
        assert_eq!(event_json(&e)["data_base64"], "AAEC");
    }

    #[test]
    fn json_data_is_stored_as_sent_and_repeated_attributes_keep_the_last() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, BATCH.parse().unwrap());
        let body = br#"[{"specversion":"1.0","type":"t","source":"s","id":"a","id":"b",
            "data": {"z": 1,  "a": [true, null]}},
            {"specversion":"1.0","type":"t","source":"s","data":null}]"#;
        let events = parse_request(&headers, body).unwrap();
        assert_eq!(events[0].id, "b");
        assert_eq!(
            events[0].data.as_deref(),
            Some(&br#"{"z": 1,  "a": [true, null]}"#[..]),
            "the producer's JSON, not a re-serialisation"
        );
        assert_eq!(
            events[0].datacontenttype.as_deref(),
            Some("application/json")
        );
        assert_eq!(events[1].data, None);
        let not_objects = parse_request(
            &headers,
            br#"[{"specversion":"1.0","type":"t","source":"s"}, 7]"#,
        )
        .unwrap_err();
        assert!(
            not_objects
                .message
                .contains("batch event 1 is not a JSON object")
        );
    }
}
