//! Failure paths that need the backend's fault injection.

use std::time::Duration;

use super::RedbLog;
use crate::event::Position;
use crate::log::encoding::tests::sample_event;
use crate::log::{
    ConsumerCommit, EventLog, LogConfig, LogError, NewEvent, OffsetAdvance, StateChange,
};

fn event(id: &str) -> crate::event::Event {
    crate::event::Event {
        id: id.into(),
        stream: None,
        streamversion: None,
        ..sample_event()
    }
}

#[test]
fn a_commit_failing_midway_leaves_neither_offset_nor_emits_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let config = LogConfig {
        max_linger: Duration::from_millis(100),
        ..LogConfig::default()
    };
    let log = RedbLog::open(&path, config.clone()).unwrap();
    log.append(vec![NewEvent::to_topic("orders", event("e0"))])
        .wait()
        .unwrap();

    // Every part of the commit is applied to the transaction, then the transaction fails
    // before it is durable; an append batched with it fails alike.
    log.fail_next_commit();
    let commit = log.commit(ConsumerCommit {
        group: "billing".into(),
        offset: Some(OffsetAdvance {
            topic: "orders".into(),
            partition: 0,
            next: 1,
            from: None,
        }),
        emits: vec![NewEvent::to_topic("invoices", event("inv-1"))],
        state: vec![StateChange {
            namespace: "billing".into(),
            key: "k".into(),
            value: Some(b"v".to_vec()),
        }],
        ..ConsumerCommit::default()
    });
    let neighbour = log.append(vec![NewEvent::to_topic("orders", event("e1"))]);
    assert!(matches!(commit.wait(), Err(LogError::Storage(_))));
    assert!(matches!(neighbour.wait(), Err(LogError::Storage(_))));
    assert_eq!(log.stats().failed_transactions, 1);

    let check = |log: &RedbLog| {
        assert_eq!(
            log.committed_offset("billing", "orders", 0).wait().unwrap(),
            None
        );
        assert_eq!(
            log.topic("invoices").wait().unwrap(),
            None,
            "no emit, no topic"
        );
        assert_eq!(log.state_get("billing", "k").wait().unwrap(), None);
        assert_eq!(log.read("orders", 0, 0, 10).wait().unwrap().len(), 1);
    };
    check(&log);
    drop(log);
    let log = RedbLog::open(&path, config).unwrap();
    check(&log);

    // The writer's caches were not advanced by the failed batch: the next event gets
    // offset 1, not 2.
    let ack = log
        .append(vec![NewEvent::to_topic("orders", event("e1"))])
        .wait()
        .unwrap();
    assert_eq!(
        ack[0].position,
        Position {
            topic: "orders".into(),
            partition: 0,
            offset: 1
        }
    );
    assert!(
        !ack[0].duplicate,
        "the failed batch's dedupe entry is gone too"
    );
}

#[test]
fn a_large_batch_is_split_into_bounded_chunks_and_reads_back_whole() {
    use ::redb::{ReadableDatabase, ReadableTableMetadata};

    let dir = tempfile::tempdir().unwrap();
    let log = RedbLog::open(dir.path().join("log.redb"), LogConfig::default()).unwrap();
    // Eleven events of ~900 KB in one append to one partition: more than one chunk's worth.
    let events: Vec<_> = (0..11)
        .map(|i| {
            let mut e = event(&format!("big-{i}"));
            e.subject = Some("one-subject".into());
            e.data = Some(vec![b'a' + i as u8; 900_000]);
            NewEvent::to_topic("blobs", e)
        })
        .collect();
    let acks = log.append(events).wait().unwrap();
    assert_eq!(
        acks.iter().map(|a| a.position.offset).collect::<Vec<_>>(),
        (0..11).collect::<Vec<_>>()
    );
    let chunks = {
        let txn = log.shared.db.begin_read().unwrap();
        txn.open_table(super::tables::CHUNKS)
            .unwrap()
            .len()
            .unwrap()
    };
    assert!(
        chunks >= 2,
        "11 × 900 KB are split into chunks of at most a few MiB, not one value: {chunks}"
    );
    let all = log.read("blobs", 0, 0, 100).wait().unwrap();
    assert_eq!(all.len(), 11);
    for (i, stored) in all.iter().enumerate() {
        assert_eq!(stored.position.offset, i as u64);
        assert_eq!(
            stored.event.data.as_deref().map(|d| d[0]),
            Some(b'a' + i as u8)
        );
    }
    // From inside a later chunk.
    let tail = log.read("blobs", 0, 7, 2).wait().unwrap();
    assert_eq!(
        tail.iter().map(|s| s.event.id.as_str()).collect::<Vec<_>>(),
        ["big-7", "big-8"]
    );
}
