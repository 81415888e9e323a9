//! A data directory written by the first release (log format 1: one row per event) opens
//! with this build: it is migrated in place at open and reads back identically.
//!
//! `fixtures/format1.redb` was written by the format-1 code (commit 997ef3b) with exactly the
//! content that `expected_*` below rebuild: deterministic events, a stream, an offset, state,
//! an attempt record and a dead letter, at fixed times.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use evhost::event::{Event, Position};
use evhost::log::*;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + secs)
}

/// The i-th event of the fixture, as the generator made it.
fn ev(i: u32, ty: &str, subject: Option<&str>) -> Event {
    let mut extensions = BTreeMap::new();
    if i.is_multiple_of(3) {
        extensions.insert("region".to_string(), format!("eu-{i}"));
    }
    Event {
        id: format!("evt-{i:04}"),
        source: "/fixture".into(),
        specversion: "1.0".into(),
        ty: ty.into(),
        subject: subject.map(Into::into),
        time: format!("2026-11-29T00:00:{:02}Z", i % 60),
        datacontenttype: i.is_multiple_of(2).then(|| "application/json".into()),
        dataschema: i.is_multiple_of(5).then(|| format!("urn:schema:{ty}:1")),
        data: i
            .is_multiple_of(2)
            .then(|| format!("{{\"n\":{i},\"text\":\"é ✓ {i}\"}}").into_bytes()),
        correlationid: format!("corr-{}", i / 4),
        causationid: (i > 0).then(|| format!("evt-{:04}", i - 1)),
        actor: (i % 4 == 1).then(|| "user:alice".into()),
        extensions,
        stream: None,
        streamversion: None,
    }
}

/// Every event of the `orders` topic, by partition, in offset order.
fn expected_orders() -> BTreeMap<u32, Vec<Event>> {
    let mut parts: BTreeMap<u32, Vec<Event>> = BTreeMap::new();
    let mut push = |e: Event| {
        let p = partition_for(partition_key(&e), 3);
        parts.entry(p).or_default().push(e);
    };
    for i in 0..24u32 {
        push(ev(i, "order.created", Some(&format!("order-{}", i % 7))));
    }
    for (n, i) in (200..203u32).enumerate() {
        let mut e = ev(i, "order.step", Some("order-42"));
        e.stream = Some("order-42".into());
        e.streamversion = Some(n as u64 + 1);
        push(e);
    }
    parts
}

fn open(dir: &std::path::Path) -> RedbLog {
    let config = LogConfig {
        clock: Clock::from_fn(|| at(10)),
        retention_interval: Duration::from_secs(3600),
        ..LogConfig::default()
    };
    RedbLog::open(dir.join("log.redb"), config).expect("a format-1 log opens")
}

fn check(log: &RedbLog) {
    let expected = expected_orders();
    let topics = log.topics().wait().unwrap();
    let names: Vec<_> = topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["orders", "users"]);
    for (p, events) in &expected {
        let read = log.read("orders", *p, 0, 1000).wait().unwrap();
        let got: Vec<_> = read.iter().map(|s| s.event.clone()).collect();
        assert_eq!(&got, events, "orders/{p} reads back identically");
        for (offset, stored) in read.iter().enumerate() {
            assert_eq!(stored.position.offset, offset as u64);
        }
        // Reading from the middle starts at that offset.
        let from = events.len() as u64 / 2;
        let tail = log.read("orders", *p, from, 1000).wait().unwrap();
        assert_eq!(tail.first().map(|s| s.position.offset), Some(from));
        let info = log.topic("orders").wait().unwrap().unwrap();
        assert_eq!(info.partitions[*p as usize].end, events.len() as u64);
    }
    let users: Vec<_> = log
        .read("users", 0, 0, 100)
        .wait()
        .unwrap()
        .into_iter()
        .map(|s| s.event)
        .collect();
    let expected_users: Vec<_> = (100..105u32).map(|i| ev(i, "user.created", None)).collect();
    assert_eq!(users[..5], expected_users[..], "the format-1 users events");

    let stream = log.read_stream("order-42", 1, 10).wait().unwrap();
    assert_eq!(
        stream
            .iter()
            .map(|s| s.event.id.as_str())
            .collect::<Vec<_>>(),
        ["evt-0200", "evt-0201", "evt-0202"]
    );
    assert_eq!(log.stream_version("order-42").wait().unwrap(), 3);

    assert_eq!(
        log.committed_offset("billing", "orders", 0).wait().unwrap(),
        Some(3)
    );
    assert_eq!(
        log.state_get("billing", "total").wait().unwrap().as_deref(),
        Some(&b"42"[..])
    );
    assert_eq!(
        log.state_get("billing", "binary").wait().unwrap(),
        Some(vec![0, 159, 146, 150])
    );
    let attempts = log
        .attempts(
            "billing",
            &Position {
                topic: "orders".into(),
                partition: 2,
                offset: 0,
            },
        )
        .wait()
        .unwrap()
        .expect("attempt record");
    assert_eq!(attempts.attempts, 2);
    assert_eq!(attempts.first_failure, Some(at(1)));
    assert_eq!(
        attempts.last_error.map(|f| (f.kind, f.message)),
        Some((FailureKind::Timeout, "timed out after 1s".into()))
    );
    let letters = log.dead_letters(None, None, 10).wait().unwrap();
    assert_eq!(letters.len(), 1);
    let dl = &letters[0].record;
    assert_eq!(dl.kind, FailureKind::Trap);
    assert_eq!(dl.plugin_version, "1.0.0 (load 3)");
    assert_eq!(dl.first_failure, at(3));
    assert_eq!(dl.event.position.partition, 1);
    assert_eq!(Some(&dl.event.event), expected[&1].first());
    // A file from before the dead-letter counts gets them at open.
    assert_eq!(
        log.dead_letter_counts().wait().unwrap(),
        BTreeMap::from([(dl.plugin.clone(), 1)])
    );
}

#[test]
fn a_format_1_log_is_migrated_at_open_and_reads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format1.redb"),
        dir.path().join("log.redb"),
    )
    .unwrap();
    let log = open(dir.path());
    check(&log);

    // It goes on where it stopped: offsets continue, dedupe still knows the old ids.
    let again = log
        .append(vec![NewEvent::to_topic(
            "users",
            ev(100, "user.created", None),
        )])
        .wait()
        .unwrap();
    assert!(
        again[0].duplicate,
        "an id stored by format 1 is still deduped"
    );
    let next = log
        .append(vec![NewEvent::to_topic(
            "users",
            ev(105, "user.created", None),
        )])
        .wait()
        .unwrap();
    assert_eq!(next[0].position.offset, 5);
    log.shutdown();
    drop(log);

    // Migrated once: the second open reads the new layout.
    let log = open(dir.path());
    check(&log);
    assert_eq!(log.read("users", 0, 0, 100).wait().unwrap().len(), 6);
}

#[test]
fn a_log_of_an_unknown_future_format_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        let log = RedbLog::open(&path, LogConfig::default()).unwrap();
        log.shutdown();
    }
    // What a later release would leave behind: its own layout number in `meta`.
    {
        let db = ::redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(::redb::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("format", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    match RedbLog::open(&path, LogConfig::default()) {
        Err(LogError::UnsupportedFormat { found: 99, .. }) => {}
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a future format opened"),
    }
}
