//! The on-disk encoding: compact, hand-rolled binary, independent of any serde shape the
//! HTTP API gives the same types (renaming a JSON field must never change the file format).
//!
//! Every record starts with a format byte ([`FORMAT`]); a reader refuses a byte it does not
//! know. Integers are LEB128 varints, strings and byte strings are length-prefixed, options
//! carry a 0/1 tag, times are nanoseconds since the Unix epoch.
//! Evolving the format: add a new format byte and keep decoding the old ones.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::event::{Event, Position, StoredEvent};

use super::{
    AttemptRecord, DeadLetterRecord, Failure, FailureKind, LogError, RetentionPolicy, TopicConfig,
};

/// The format byte of every record but chunks (the only one they have had so far).
pub(crate) const FORMAT: u8 = 1;

/// The format byte of a chunk: the events one transaction appended to one partition.
pub(crate) const CHUNK_FORMAT: u8 = 2;

#[derive(Default)]
pub(crate) struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    /// A buffer for bytes that go inside a record (no format byte of their own).
    pub(crate) fn raw(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn record() -> Self {
        let mut enc = Self {
            buf: Vec::with_capacity(128),
        };
        enc.buf.push(FORMAT);
        enc
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn uint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.uint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    pub(crate) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub(crate) fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    pub(crate) fn opt_uint(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(n) => {
                self.u8(1);
                self.uint(n);
            }
        }
    }

    pub(crate) fn time(&mut self, t: SystemTime) {
        self.uint(nanos_since_epoch(t));
    }

    pub(crate) fn opt_time(&mut self, t: Option<SystemTime>) {
        self.opt_uint(t.map(nanos_since_epoch));
    }

    pub(crate) fn event(&mut self, e: &Event) {
        self.str(&e.id);
        self.str(&e.source);
        self.str(&e.specversion);
        self.str(&e.ty);
        self.opt_str(e.subject.as_deref());
        self.str(&e.time);
        self.opt_str(e.datacontenttype.as_deref());
        self.opt_str(e.dataschema.as_deref());
        match &e.data {
            None => self.u8(0),
            Some(d) => {
                self.u8(1);
                self.bytes(d);
            }
        }
        self.str(&e.correlationid);
        self.opt_str(e.causationid.as_deref());
        self.opt_str(e.actor.as_deref());
        self.uint(e.extensions.len() as u64);
        for (k, v) in &e.extensions {
            self.str(k);
            self.str(v);
        }
        self.opt_str(e.stream.as_deref());
        self.opt_uint(e.streamversion);
    }

    pub(crate) fn position(&mut self, p: &Position) {
        self.str(&p.topic);
        self.uint(u64::from(p.partition));
        self.uint(p.offset);
    }

    pub(crate) fn stored(&mut self, s: &StoredEvent) {
        self.position(&s.position);
        self.event(&s.event);
    }
}

pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Dec<'a> {
    /// Starts decoding a record, checking its format byte.
    pub(crate) fn record(buf: &'a [u8], what: &'static str) -> Result<Self, LogError> {
        let mut dec = Self { buf, pos: 0, what };
        let format = dec.u8()?;
        if format != FORMAT {
            return Err(LogError::UnsupportedFormat {
                found: u64::from(format),
                supported: u64::from(FORMAT),
            });
        }
        Ok(dec)
    }

    fn corrupt(&self, why: &str) -> LogError {
        LogError::Corrupt(format!("{} at byte {}: {why}", self.what, self.pos))
    }

    /// Whether every byte was consumed.
    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Fails unless every byte was consumed (trailing garbage is damage, not slack).
    pub(crate) fn end(&self) -> Result<(), LogError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.corrupt("trailing bytes"))
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, LogError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.corrupt("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    /// A LEB128 varint in its shortest form, the only one `Enc::uint` writes: a value has
    /// one encoding, so a record decodes and re-encodes to the same bytes.
    pub(crate) fn uint(&mut self) -> Result<u64, LogError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte holds bit 63 only; more would be silently shifted out.
            if shift == 63 && bits > 1 {
                return Err(self.corrupt("varint overflows u64"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(self.corrupt("varint not in its shortest form"));
                }
                return Ok(v);
            }
        }
        Err(self.corrupt("varint too long"))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, LogError> {
        let v = self.uint()?;
        u32::try_from(v).map_err(|_| self.corrupt("u32 out of range"))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], LogError> {
        let len = usize::try_from(self.uint()?).map_err(|_| self.corrupt("length"))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| self.corrupt("truncated"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, LogError> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| self.corrupt("invalid UTF-8"))
    }

    pub(crate) fn string(&mut self) -> Result<String, LogError> {
        self.str().map(str::to_owned)
    }

    fn flag(&mut self) -> Result<bool, LogError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.corrupt("bad option tag")),
        }
    }

    pub(crate) fn opt_string(&mut self) -> Result<Option<String>, LogError> {
        if self.flag()? {
            self.string().map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn opt_uint(&mut self) -> Result<Option<u64>, LogError> {
        if self.flag()? {
            self.uint().map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn time(&mut self) -> Result<SystemTime, LogError> {
        Ok(UNIX_EPOCH + Duration::from_nanos(self.uint()?))
    }

    pub(crate) fn opt_time(&mut self) -> Result<Option<SystemTime>, LogError> {
        Ok(self
            .opt_uint()?
            .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos)))
    }

    pub(crate) fn event(&mut self) -> Result<Event, LogError> {
        let id = self.string()?;
        let source = self.string()?;
        let specversion = self.string()?;
        let ty = self.string()?;
        let subject = self.opt_string()?;
        let time = self.string()?;
        let datacontenttype = self.opt_string()?;
        let dataschema = self.opt_string()?;
        let data = if self.flag()? {
            Some(self.bytes()?.to_vec())
        } else {
            None
        };
        let correlationid = self.string()?;
        let causationid = self.opt_string()?;
        let actor = self.opt_string()?;
        let count = self.uint()?;
        let mut extensions = BTreeMap::new();
        for _ in 0..count {
            let k = self.string()?;
            let v = self.string()?;
            // Written in map order: a repeated key would silently drop a value, a key out of
            // order is a second encoding of the same event.
            if extensions
                .last_key_value()
                .is_some_and(|(last, _)| *last >= k)
            {
                return Err(self.corrupt("extension keys not in increasing order"));
            }
            extensions.insert(k, v);
        }
        let stream = self.opt_string()?;
        let streamversion = self.opt_uint()?;
        Ok(Event {
            id,
            source,
            specversion,
            ty,
            subject,
            time,
            datacontenttype,
            dataschema,
            data,
            correlationid,
            causationid,
            actor,
            extensions,
            stream,
            streamversion,
        })
    }

    pub(crate) fn position(&mut self) -> Result<Position, LogError> {
        Ok(Position {
            topic: self.string()?,
            partition: self.u32()?,
            offset: self.uint()?,
        })
    }

    pub(crate) fn stored(&mut self) -> Result<StoredEvent, LogError> {
        Ok(StoredEvent {
            position: self.position()?,
            event: self.event()?,
        })
    }
}

pub(crate) fn nanos_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A partition entry of format 1: `[format][append time, ms][event]`. Written only by
/// format-1 files (now by tests that make one, and the fuzz round trip); its length is what
/// size limits count (`event_record_len`).
pub(crate) fn encode_event_record(append_ms: u64, event: &Event) -> Vec<u8> {
    let mut enc = Enc::record();
    enc.uint(append_ms);
    enc.event(event);
    enc.finish()
}

pub(crate) fn decode_event_record(buf: &[u8]) -> Result<(u64, Event), LogError> {
    let mut dec = Dec::record(buf, "event record")?;
    let append_ms = dec.uint()?;
    let event = dec.event()?;
    dec.end()?;
    Ok((append_ms, event))
}

/// An event's own bytes, as a chunk holds them (no format byte, no time).
pub(crate) fn encode_event_body(event: &Event) -> Vec<u8> {
    let mut enc = Enc::raw(
        64 + event.id.len()
            + event.source.len()
            + event.ty.len()
            + event.data.as_ref().map_or(0, Vec::len),
    );
    enc.event(event);
    enc.finish()
}

pub(crate) fn decode_event_body(body: &[u8]) -> Result<Event, LogError> {
    let mut dec = Dec {
        buf: body,
        pos: 0,
        what: "event",
    };
    let event = dec.event()?;
    dec.end()?;
    Ok(event)
}

/// The id of an event body, without decoding the rest.
pub(crate) fn event_body_id(body: &[u8]) -> Result<&str, LogError> {
    Dec {
        buf: body,
        pos: 0,
        what: "event",
    }
    .str()
}

fn uint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// The size an event counts as for `max_event_bytes` and retention by bytes: its stand-alone
/// record (`encode_event_record`), whatever the layout it is stored in, so limits mean the
/// same on every backend and across format versions.
pub(crate) fn event_record_len(append_ms: u64, body_len: usize) -> usize {
    1 + uint_len(append_ms) + body_len
}

/// A chunk being built: `[2][append time, ms][count]` then, per event, `[length][event]`.
/// Reads by offset skip whole events by their length without decoding them.
#[derive(Debug, Default)]
pub(crate) struct ChunkBuilder {
    count: u64,
    body: Vec<u8>,
}

impl ChunkBuilder {
    pub(crate) fn push(&mut self, event_body: &[u8]) {
        let mut enc = Enc {
            buf: std::mem::take(&mut self.body),
        };
        enc.bytes(event_body);
        self.body = enc.buf;
        self.count += 1;
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Bytes of the events so far (their length prefixes included).
    pub(crate) fn len(&self) -> usize {
        self.body.len()
    }

    /// The `i`-th event's body, from the events pushed so far.
    pub(crate) fn body(&self, i: u64) -> Result<Option<&[u8]>, LogError> {
        let mut dec = Dec {
            buf: &self.body,
            pos: 0,
            what: "chunk",
        };
        for _ in 0..i {
            dec.bytes()?;
        }
        if i >= self.count {
            return Ok(None);
        }
        dec.bytes().map(Some)
    }

    pub(crate) fn finish(&self, append_ms: u64) -> Vec<u8> {
        let mut enc = Enc::raw(24 + self.body.len());
        enc.u8(CHUNK_FORMAT);
        enc.uint(append_ms);
        enc.uint(self.count);
        enc.buf.extend_from_slice(&self.body);
        enc.finish()
    }
}

/// A stored chunk, read event by event.
pub(crate) struct Chunk<'a> {
    dec: Dec<'a>,
    pub(crate) append_ms: u64,
    pub(crate) count: u64,
    left: u64,
}

impl<'a> Chunk<'a> {
    pub(crate) fn open(buf: &'a [u8]) -> Result<Self, LogError> {
        let mut dec = Dec {
            buf,
            pos: 0,
            what: "chunk",
        };
        let format = dec.u8()?;
        if format != CHUNK_FORMAT {
            return Err(LogError::UnsupportedFormat {
                found: u64::from(format),
                supported: u64::from(CHUNK_FORMAT),
            });
        }
        let append_ms = dec.uint()?;
        let count = dec.uint()?;
        Ok(Self {
            dec,
            append_ms,
            count,
            left: count,
        })
    }

    /// The next event's body, `None` after the last; a chunk with bytes after its last event
    /// is corrupt.
    pub(crate) fn next_body(&mut self) -> Result<Option<&'a [u8]>, LogError> {
        if self.left == 0 {
            self.dec.end()?;
            return Ok(None);
        }
        self.left -= 1;
        self.dec.bytes().map(Some)
    }
}

/// A stream entry: the event with the position it got in its topic.
pub(crate) fn encode_stored(stored: &StoredEvent) -> Vec<u8> {
    let mut enc = Enc::record();
    enc.stored(stored);
    enc.finish()
}

pub(crate) fn decode_stored(buf: &[u8]) -> Result<StoredEvent, LogError> {
    let mut dec = Dec::record(buf, "stream entry")?;
    let stored = dec.stored()?;
    dec.end()?;
    Ok(stored)
}

pub(crate) fn encode_topic_config(enc: &mut Enc, config: &TopicConfig) {
    enc.uint(u64::from(config.partitions));
    enc.opt_uint(config.retention.max_age.map(|d| d.as_millis() as u64));
    enc.opt_uint(config.retention.max_partition_bytes);
    enc.u8(u8::from(config.retention.delete_unconsumed));
}

pub(crate) fn decode_topic_config(dec: &mut Dec<'_>) -> Result<TopicConfig, LogError> {
    Ok(TopicConfig {
        partitions: dec.u32()?,
        retention: RetentionPolicy {
            max_age: dec.opt_uint()?.map(Duration::from_millis),
            max_partition_bytes: dec.opt_uint()?,
            delete_unconsumed: dec.flag()?,
        },
    })
}

fn kind_code(kind: FailureKind) -> u8 {
    match kind {
        FailureKind::Rejected => 1,
        FailureKind::Trap => 2,
        FailureKind::Timeout => 3,
        FailureKind::OutOfMemory => 4,
        FailureKind::RetriesExhausted => 5,
        FailureKind::HostError => 6,
    }
}

fn kind_from_code(dec: &Dec<'_>, code: u8) -> Result<FailureKind, LogError> {
    FailureKind::ALL
        .into_iter()
        .find(|k| kind_code(*k) == code)
        .ok_or_else(|| dec.corrupt("unknown failure kind"))
}

pub(crate) fn encode_attempts(record: &AttemptRecord) -> Vec<u8> {
    let mut enc = Enc::record();
    enc.uint(u64::from(record.attempts));
    enc.opt_time(record.first_failure);
    enc.opt_time(record.last_failure);
    match &record.last_error {
        None => enc.u8(0),
        Some(failure) => {
            enc.u8(kind_code(failure.kind));
            enc.str(&failure.message);
        }
    }
    // Appended last and only when set: records written before it existed decode as `None`.
    if let Some(by) = &record.started_by {
        enc.str(by);
    }
    enc.finish()
}

pub(crate) fn decode_attempts(buf: &[u8]) -> Result<AttemptRecord, LogError> {
    let mut dec = Dec::record(buf, "attempt record")?;
    let attempts = dec.u32()?;
    let first_failure = dec.opt_time()?;
    let last_failure = dec.opt_time()?;
    let last_error = match dec.u8()? {
        0 => None,
        code => Some(Failure {
            kind: kind_from_code(&dec, code)?,
            message: dec.string()?,
        }),
    };
    let started_by = if dec.at_end() {
        None
    } else {
        Some(dec.string()?)
    };
    dec.end()?;
    Ok(AttemptRecord {
        attempts,
        first_failure,
        last_failure,
        last_error,
        started_by,
    })
}

/// A dead letter: `[format][group][record]` (its id is the key).
pub(crate) fn encode_dead_letter(group: &str, record: &DeadLetterRecord) -> Vec<u8> {
    let mut enc = Enc::record();
    enc.str(group);
    enc.stored(&record.event);
    enc.str(&record.plugin);
    enc.str(&record.plugin_version);
    enc.str(&record.plugin_digest);
    enc.u8(kind_code(record.kind));
    enc.str(&record.message);
    enc.uint(u64::from(record.attempts));
    enc.time(record.first_failure);
    enc.time(record.last_failure);
    enc.finish()
}

pub(crate) fn decode_dead_letter(buf: &[u8]) -> Result<(String, DeadLetterRecord), LogError> {
    let mut dec = Dec::record(buf, "dead letter")?;
    let group = dec.string()?;
    let event = dec.stored()?;
    let plugin = dec.string()?;
    let plugin_version = dec.string()?;
    let plugin_digest = dec.string()?;
    let code = dec.u8()?;
    let kind = kind_from_code(&dec, code)?;
    let record = DeadLetterRecord {
        event,
        plugin,
        plugin_version,
        plugin_digest,
        kind,
        message: dec.string()?,
        attempts: dec.u32()?,
        first_failure: dec.time()?,
        last_failure: dec.time()?,
    };
    dec.end()?;
    Ok((group, record))
}

/// For the fuzz targets in `fuzz/` only (re-exported as `log::fuzzing`, not an API): runs
/// every decoder of this file on `bytes` and discards what they decode. The format is
/// canonical — one value, one encoding — so whatever decodes must re-encode to `bytes`;
/// `Err` names the record whose re-encoding differs. Never panics.
pub fn decode_all(bytes: &[u8]) -> Result<(), &'static str> {
    let same = |what: &'static str, encoded: Vec<u8>| {
        if encoded == bytes { Ok(()) } else { Err(what) }
    };
    if let Ok((append_ms, event)) = decode_event_record(bytes) {
        same("event record", encode_event_record(append_ms, &event))?;
    }
    let body = decode_event_body(bytes);
    if let Ok(event) = &body {
        same("event body", encode_event_body(event))?;
    }
    if let (Ok(id), Ok(event)) = (event_body_id(bytes), &body)
        && id != event.id
    {
        return Err("event body id");
    }
    if let Ok(mut chunk) = Chunk::open(bytes) {
        let append_ms = chunk.append_ms;
        let mut rebuilt = ChunkBuilder::default();
        let complete = loop {
            match chunk.next_body() {
                Ok(Some(body)) => {
                    let _ = decode_event_body(body);
                    let _ = event_body_id(body);
                    rebuilt.push(body);
                }
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        if complete {
            same("chunk", rebuilt.finish(append_ms))?;
        }
    }
    if let Ok(record) = decode_attempts(bytes) {
        same("attempt record", encode_attempts(&record))?;
    }
    if let Ok((group, record)) = decode_dead_letter(bytes) {
        same("dead letter", encode_dead_letter(&group, &record))?;
    }
    if let Ok(stored) = decode_stored(bytes) {
        same("stream entry", encode_stored(&stored))?;
    }
    // The topic record as `log/redb/tables.rs` (`TopicMeta`) reads it: `[format][id][config]`.
    let topic = Dec::record(bytes, "topic").and_then(|mut dec| {
        let id = dec.u32()?;
        let config = decode_topic_config(&mut dec)?;
        dec.end()?;
        Ok((id, config))
    });
    if let Ok((id, config)) = topic {
        let mut enc = Enc::record();
        enc.uint(u64::from(id));
        encode_topic_config(&mut enc, &config);
        same("topic", enc.finish())?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_event() -> Event {
        Event {
            id: "01J-evt".into(),
            source: "/orders".into(),
            specversion: "1.0".into(),
            ty: "order.created".into(),
            subject: Some("order-7".into()),
            time: "2026-11-02T10:00:00Z".into(),
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            data: Some(br#"{"total":12}"#.to_vec()),
            correlationid: "01J-evt".into(),
            causationid: None,
            actor: Some("alice".into()),
            extensions: BTreeMap::from([("traceparent".into(), "00-ab-cd-01".into())]),
            stream: Some("order-7".into()),
            streamversion: Some(3),
        }
    }

    #[test]
    fn event_records_round_trip() {
        let event = sample_event();
        let buf = encode_event_record(1_700_000_000_123, &event);
        assert_eq!(buf[0], FORMAT);
        assert_eq!(
            buf.len(),
            event_record_len(1_700_000_000_123, encode_event_body(&event).len())
        );
        assert_eq!(
            decode_event_record(&buf).unwrap(),
            (1_700_000_000_123, event.clone())
        );
        let bare = Event {
            subject: None,
            datacontenttype: None,
            data: None,
            actor: None,
            extensions: BTreeMap::new(),
            stream: None,
            streamversion: None,
            ..event
        };
        let buf = encode_event_record(0, &bare);
        assert_eq!(decode_event_record(&buf).unwrap().1, bare);
    }

    #[test]
    fn the_encoding_is_compact_binary() {
        let mut event = sample_event();
        event.data = Some(vec![b'x'; 256]);
        let buf = encode_event_record(1_700_000_000_123, &event);
        let json_ish: usize = [
            &event.id,
            &event.source,
            &event.ty,
            &event.time,
            &event.correlationid,
        ]
        .iter()
        .map(|s| s.len())
        .sum::<usize>()
            + 256;
        // Only length prefixes and tags on top of the raw field bytes: no field names.
        assert!(buf.len() < json_ish + 120, "{} bytes", buf.len());
    }

    #[test]
    fn unknown_format_truncation_and_trailing_bytes_are_refused() {
        let mut buf = encode_event_record(5, &sample_event());
        let mut future = buf.clone();
        future[0] = FORMAT + 1;
        assert!(matches!(
            decode_event_record(&future),
            Err(LogError::UnsupportedFormat { found: 2, .. })
        ));
        for cut in 1..buf.len() {
            assert!(
                matches!(decode_event_record(&buf[..cut]), Err(LogError::Corrupt(_))),
                "cut at {cut}"
            );
        }
        buf.push(0);
        assert!(matches!(
            decode_event_record(&buf),
            Err(LogError::Corrupt(_))
        ));
    }

    #[test]
    fn an_attempt_records_maker_is_kept_and_older_records_read_without_one() {
        let without = AttemptRecord {
            attempts: 2,
            first_failure: None,
            last_failure: None,
            last_error: None,
            started_by: None,
        };
        let with = AttemptRecord {
            started_by: Some("host-42-abc".into()),
            ..without.clone()
        };
        assert_eq!(decode_attempts(&encode_attempts(&with)).unwrap(), with);
        // A record without a maker is encoded as before the field existed.
        let old = encode_attempts(&without);
        assert_eq!(decode_attempts(&old).unwrap(), without);
        assert!(encode_attempts(&with).starts_with(&old[..old.len()]));
    }

    #[test]
    fn dead_letters_and_attempts_round_trip() {
        let t1 = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let t2 = t1 + Duration::from_millis(1500);
        for kind in FailureKind::ALL {
            let record = DeadLetterRecord {
                event: StoredEvent {
                    position: Position {
                        topic: "order-events".into(),
                        partition: 3,
                        offset: 99,
                    },
                    event: sample_event(),
                },
                plugin: "billing".into(),
                plugin_version: "1.2.0".into(),
                plugin_digest: "sha256:abc".into(),
                kind,
                message: "boom".into(),
                attempts: 5,
                first_failure: t1,
                last_failure: t2,
            };
            let buf = encode_dead_letter("billing", &record);
            assert_eq!(
                decode_dead_letter(&buf).unwrap(),
                ("billing".into(), record)
            );
            let attempts = AttemptRecord {
                attempts: 2,
                first_failure: Some(t1),
                last_failure: None,
                last_error: Some(Failure {
                    kind,
                    message: "nope".into(),
                }),
                started_by: None,
            };
            assert_eq!(
                decode_attempts(&encode_attempts(&attempts)).unwrap(),
                attempts
            );
        }
    }

    fn golden_chunk() -> Vec<u8> {
        let mut chunk = ChunkBuilder::default();
        let mut second = sample_event();
        second.id = "01J-evt2".into();
        second.data = None;
        chunk.push(&encode_event_body(&sample_event()));
        chunk.push(&encode_event_body(&second));
        chunk.finish(1_700_000_000_123)
    }

    /// Golden bytes: the stored encoding may only change with a new format byte (and a
    /// migration); an accidental change of any record fails here.
    #[test]
    fn golden_bytes_pin_every_record_encoding() {
        let event = sample_event();
        let t1 = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let golden = |name: &str, bytes: Vec<u8>, hex_: &str| {
            assert_eq!(hex::encode(&bytes), hex_, "the {name} encoding changed");
        };
        const EVENT: &str = "0730314a2d657674072f6f726465727303312e300d6f726465722e6372656174656401076f726465722d3714323032362d31312d30325431303a30303a30305a01106170706c69636174696f6e2f6a736f6e00010c7b22746f74616c223a31327d0730314a2d657674000105616c696365010b7472616365706172656e740b30302d61622d63642d303101076f726465722d370103";
        golden(
            "format-1 event record",
            encode_event_record(1_700_000_000_123, &event),
            &format!("01fbd095ffbc31{EVENT}"),
        );
        golden("event body", encode_event_body(&event), EVENT);
        golden(
            "chunk",
            golden_chunk(),
            concat!(
                "02fbd095ffbc310295010730314a2d657674072f6f726465727303312e300d6f726465722e",
                "6372656174656401076f726465722d3714323032362d31312d30325431303a30303a30305a01",
                "106170706c69636174696f6e2f6a736f6e00010c7b22746f74616c223a31327d0730314a2d65",
                "7674000105616c696365010b7472616365706172656e740b30302d61622d63642d303101076f",
                "726465722d37010389010830314a2d65767432072f6f726465727303312e300d6f726465722e",
                "6372656174656401076f726465722d3714323032362d31312d30325431303a30303a30305a01",
                "106170706c69636174696f6e2f6a736f6e00000730314a2d657674000105616c696365010b74",
                "72616365706172656e740b30302d61622d63642d303101076f726465722d370103",
            ),
        );
        let attempts = AttemptRecord {
            attempts: 2,
            first_failure: Some(t1),
            last_failure: None,
            last_error: Some(Failure {
                kind: FailureKind::Timeout,
                message: "nope".into(),
            }),
            started_by: None,
        };
        golden(
            "attempt record",
            encode_attempts(&attempts),
            "010201959a97ece39fe7cb170003046e6f7065",
        );
        let stored = StoredEvent {
            position: Position {
                topic: "order-events".into(),
                partition: 3,
                offset: 99,
            },
            event: event.clone(),
        };
        golden(
            "stream entry",
            encode_stored(&stored),
            &format!("010c6f726465722d6576656e74730363{}", EVENT),
        );
        let letter = DeadLetterRecord {
            event: stored,
            plugin: "billing".into(),
            plugin_version: "1.2.0".into(),
            plugin_digest: "sha256:abc".into(),
            kind: FailureKind::Trap,
            message: "boom".into(),
            attempts: 5,
            first_failure: t1,
            last_failure: t1 + Duration::from_millis(1500),
        };
        golden(
            "dead letter",
            encode_dead_letter("billing", &letter),
            &format!(
                "010762696c6c696e670c6f726465722d6576656e74730363{EVENT}{}",
                "0762696c6c696e6705312e322e300a7368613235363a6162630204626f6f6d05959a97ece39fe7cb1795f8b7b7e99fe7cb17"
            ),
        );
        let mut enc = Enc::record();
        encode_topic_config(
            &mut enc,
            &TopicConfig {
                partitions: 4,
                retention: RetentionPolicy {
                    max_age: Some(Duration::from_secs(3600)),
                    max_partition_bytes: Some(1 << 20),
                    delete_unconsumed: true,
                },
            },
        );
        golden("topic config", enc.finish(), "01040180dddb010180804001");
    }

    fn varint(bytes: &[u8]) -> Result<u64, LogError> {
        let mut dec = Dec {
            buf: bytes,
            pos: 0,
            what: "test",
        };
        let v = dec.uint()?;
        dec.end()?;
        Ok(v)
    }

    /// A value has one encoding: overlong forms (which the fuzz round trip would flag) and a
    /// tenth byte whose bits would be shifted out are refused, so a decoded record re-encodes
    /// to its bytes.
    #[test]
    fn varints_are_read_only_in_their_shortest_form() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut enc = Enc::default();
            enc.uint(v);
            assert_eq!(varint(&enc.finish()).unwrap(), v);
        }
        for bytes in [
            &[0x80, 0x00][..],
            &[0xff, 0x00],
            &[0x81, 0x80, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
            // u64::MAX with a bit 64 too many.
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02],
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x81, 0x00,
            ],
        ] {
            assert!(
                matches!(varint(bytes), Err(LogError::Corrupt(_))),
                "{bytes:02x?}"
            );
        }
        // What `log_records` found within seconds with the shortest-form check taken out: an
        // attempt record whose count 120 is written 0xf8 0x00 (0x78 is its shortest form).
        let overlong = [0x01, 0xf8, 0x00, 0x01, 0x00, 0x01, 0xf8, 0x00, 0x01, 0x00];
        assert!(matches!(
            decode_attempts(&overlong),
            Err(LogError::Corrupt(_))
        ));
        assert_eq!(decode_all(&overlong), Ok(()));
        // An overlong length inside a real record.
        let buf = encode_event_record(5, &sample_event());
        let mut overlong = vec![buf[0], 0x85, 0x00];
        overlong.extend_from_slice(&buf[2..]);
        assert!(matches!(
            decode_event_record(&overlong),
            Err(LogError::Corrupt(_))
        ));
    }

    /// Extensions are written in key order; a repeated key (which would drop a value) or keys
    /// out of order (a second encoding of the same event) are damage.
    #[test]
    fn extension_keys_must_be_increasing() {
        let bare = Event {
            extensions: BTreeMap::new(),
            stream: None,
            streamversion: None,
            ..sample_event()
        };
        let with = |pairs: &[(&str, &str)]| {
            let mut body = encode_event_body(&bare);
            assert!(body.ends_with(&[0, 0, 0]));
            body.truncate(body.len() - 3);
            let mut enc = Enc { buf: body };
            enc.uint(pairs.len() as u64);
            for (k, v) in pairs {
                enc.str(k);
                enc.str(v);
            }
            enc.u8(0);
            enc.u8(0);
            enc.finish()
        };
        let ok = decode_event_body(&with(&[("a", "1"), ("b", "2")])).unwrap();
        assert_eq!(ok.extensions.len(), 2);
        for pairs in [&[("b", "2"), ("a", "1")][..], &[("a", "1"), ("a", "2")]] {
            assert!(
                matches!(decode_event_body(&with(pairs)), Err(LogError::Corrupt(_))),
                "{pairs:?}"
            );
        }
    }

    /// The golden records decode and re-encode to themselves through the fuzz hook.
    #[test]
    fn every_seed_record_passes_the_fuzz_round_trip() {
        for (name, bytes) in seed_records() {
            assert_eq!(decode_all(&bytes), Ok(()), "{name}");
        }
        assert_eq!(decode_all(&[]), Ok(()));
    }

    /// Valid records of every kind, the starting corpus of the `log_records` fuzz target.
    fn seed_records() -> Vec<(&'static str, Vec<u8>)> {
        let t1 = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let stored = StoredEvent {
            position: Position {
                topic: "order-events".into(),
                partition: 3,
                offset: 99,
            },
            event: sample_event(),
        };
        let letter = DeadLetterRecord {
            event: stored.clone(),
            plugin: "billing".into(),
            plugin_version: "1.2.0".into(),
            plugin_digest: "sha256:abc".into(),
            kind: FailureKind::Trap,
            message: "boom".into(),
            attempts: 5,
            first_failure: t1,
            last_failure: t1 + Duration::from_millis(1500),
        };
        let attempts = AttemptRecord {
            attempts: 2,
            first_failure: Some(t1),
            last_failure: None,
            last_error: Some(Failure {
                kind: FailureKind::Timeout,
                message: "nope".into(),
            }),
            started_by: None,
        };
        let mut topic = Enc::record();
        topic.uint(7);
        encode_topic_config(
            &mut topic,
            &TopicConfig {
                partitions: 4,
                retention: RetentionPolicy {
                    max_age: Some(Duration::from_secs(3600)),
                    max_partition_bytes: Some(1 << 20),
                    delete_unconsumed: true,
                },
            },
        );
        vec![
            (
                "event-record",
                encode_event_record(1_700_000_000_123, &sample_event()),
            ),
            ("event-body", encode_event_body(&sample_event())),
            ("chunk", golden_chunk()),
            ("empty-chunk", ChunkBuilder::default().finish(0)),
            ("attempts", encode_attempts(&attempts)),
            ("dead-letter", encode_dead_letter("billing", &letter)),
            ("stream-entry", encode_stored(&stored)),
            ("topic", topic.finish()),
        ]
    }

    /// The seed corpus of the `log_records` fuzz target is what the encoders write now: a
    /// format change that forgets the seeds fails here. `EVHOST_WRITE_FUZZ_SEEDS=1` rewrites
    /// them (then this test checks the files it just wrote).
    #[test]
    fn the_fuzz_seed_corpus_is_what_the_encoders_write() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/log_records");
        let rewrite = std::env::var_os("EVHOST_WRITE_FUZZ_SEEDS").is_some();
        for (name, bytes) in seed_records() {
            let path = dir.join(format!("seed-{name}"));
            if rewrite {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let stored =
                std::fs::read(&path).unwrap_or_else(|e| panic!("seed {}: {e}", path.display()));
            assert_eq!(stored, bytes, "seed {name} is stale");
        }
    }

    #[test]
    fn chunks_read_back_event_by_event_and_refuse_damage() {
        let buf = golden_chunk();
        let mut chunk = Chunk::open(&buf).unwrap();
        assert_eq!((chunk.append_ms, chunk.count), (1_700_000_000_123, 2));
        let first = decode_event_body(chunk.next_body().unwrap().unwrap()).unwrap();
        assert_eq!(first, sample_event());
        let second = chunk.next_body().unwrap().unwrap();
        assert_eq!(event_body_id(second).unwrap(), "01J-evt2");
        assert_eq!(chunk.next_body().unwrap(), None);
        for cut in 1..buf.len() {
            let mut chunk = match Chunk::open(&buf[..cut]) {
                Ok(chunk) => chunk,
                Err(_) => continue,
            };
            let mut damaged = false;
            loop {
                match chunk.next_body() {
                    Ok(Some(body)) => damaged |= decode_event_body(body).is_err(),
                    Ok(None) => break,
                    Err(_) => {
                        damaged = true;
                        break;
                    }
                }
            }
            assert!(damaged, "a chunk cut at {cut} is noticed");
        }
        let mut longer = buf.clone();
        longer.push(0);
        let mut chunk = Chunk::open(&longer).unwrap();
        chunk.next_body().unwrap();
        chunk.next_body().unwrap();
        assert!(matches!(chunk.next_body(), Err(LogError::Corrupt(_))));
        let mut future = buf;
        future[0] = CHUNK_FORMAT + 1;
        assert!(matches!(
            Chunk::open(&future),
            Err(LogError::UnsupportedFormat { found: 3, .. })
        ));
    }
}
