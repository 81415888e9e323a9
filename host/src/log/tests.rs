//! Unit tests of the log that need what only the crate can reach (a backend's fault
//! injection); the contract itself is tested in `tests/log_api.rs`, on every backend.

use super::encoding::tests::sample_event;
use super::{
    ConsumerCommit, ErrorClass, EventLog, LogConfig, LogError, NewEvent, OffsetAdvance, RedbLog,
};

#[test]
fn a_storage_failure_is_classed_failed_and_trying_again_can_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let log = RedbLog::open(dir.path().join("log.redb"), LogConfig::default()).unwrap();
    let event = crate::event::Event {
        id: "e0".into(),
        stream: None,
        streamversion: None,
        ..sample_event()
    };
    log.append(vec![NewEvent::to_topic("orders", event)])
        .wait()
        .unwrap();
    let commit = ConsumerCommit {
        group: "billing".into(),
        offset: Some(OffsetAdvance {
            topic: "orders".into(),
            partition: 0,
            next: 1,
            from: None,
        }),
        ..ConsumerCommit::default()
    };

    log.fail_next_commit();
    let failed = log.commit(commit.clone()).wait();
    assert!(matches!(failed, Err(LogError::Storage(_))), "{failed:?}");
    assert_eq!(failed.unwrap_err().class(), ErrorClass::Failed);
    assert_eq!(
        log.committed_offset("billing", "orders", 0).wait().unwrap(),
        None
    );

    // Unlike a refusal or a conflict, the same request may succeed later.
    log.commit(commit).wait().unwrap();
    assert_eq!(
        log.committed_offset("billing", "orders", 0).wait().unwrap(),
        Some(1)
    );
}
