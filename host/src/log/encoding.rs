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

/// The record format this build writes (and the only one it reads so far).
pub(crate) const FORMAT: u8 = 1;

#[derive(Default)]
pub(crate) struct Enc {
    buf: Vec<u8>,
}

impl Enc {
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

    pub(crate) fn uint(&mut self) -> Result<u64, LogError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
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

/// A partition entry: `[format][append time, ms][event]`. The append time (host clock)
/// drives age retention.
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

/// Only the append time of a partition entry (retention scans with it).
pub(crate) fn event_record_append_ms(buf: &[u8]) -> Result<u64, LogError> {
    Dec::record(buf, "event record")?.uint()
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
    dec.end()?;
    Ok(AttemptRecord {
        attempts,
        first_failure,
        last_failure,
        last_error,
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
        assert_eq!(event_record_append_ms(&buf).unwrap(), 1_700_000_000_123);
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
            };
            assert_eq!(
                decode_attempts(&encode_attempts(&attempts)).unwrap(),
                attempts
            );
        }
    }
}
