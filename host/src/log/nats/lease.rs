//! Members and partition leases on NATS: a subject per lease and per member in the log's
//! one stream, so that a consumer commit can carry its lease's fence in the same atomic
//! batch (a fenced re-publish of the lease record). A record's version is the stream
//! sequence of its last message.

use async_nats::jetstream::message::StreamMessage;
use serde::{Deserialize, Serialize};

use super::Shared;
use super::batch::{self, Batch, BatchError, Msg};
use super::read::{self, is_mark, seq_of};
use crate::log::LogError;
use crate::log::lease::{self, LeaseFence, LeaseKey, LeaseState, MemberState};

/// How often a renewal or release is decided again when its own commits moved the record.
const MAX_ROUNDS: usize = 20;

#[derive(Serialize, Deserialize)]
pub(super) struct LeaseRecord {
    pub(super) owner: Option<String>,
    pub(super) epoch: u64,
}

#[derive(Serialize, Deserialize)]
struct MemberRecord {
    groups: Vec<String>,
}

fn corrupt(subject: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Corrupt(format!("record on {subject}: {e}"))
}

fn decode_lease(msg: &StreamMessage) -> Result<LeaseRecord, LogError> {
    serde_json::from_slice(&msg.payload).map_err(|e| corrupt(&msg.subject, e))
}

fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

/// Publishes a one-message batch fenced on its subject; `Ok(false)` when the fence was stale.
async fn put(s: &Shared, subject: String, seen: u64, payload: Vec<u8>) -> Result<bool, LogError> {
    let mut batch = Batch::default();
    batch.fence(&subject, seen);
    batch.push(Msg::new(subject, payload));
    match batch::publish(&s.client, batch, s.max_batch).await {
        Ok(_) => Ok(true),
        Err(BatchError::Stale) => Ok(false),
        Err(BatchError::Failed(e)) => Err(e),
    }
}

/// The lease record of `key` and its version (0: never written).
pub(super) async fn current(
    s: &Shared,
    key: &LeaseKey,
) -> Result<(Option<LeaseRecord>, u64), LogError> {
    let last = read::last(&s.stream, &s.layout.lease(key)).await?;
    let version = seq_of(&last);
    Ok((last.as_ref().map(decode_lease).transpose()?, version))
}

/// Checks that `fence` still holds its lease and adds the fenced re-publish of the record to
/// `batch`: the commit in which it goes lands only if nobody took the lease meanwhile.
pub(super) async fn fence_commit(
    s: &Shared,
    fence: &LeaseFence,
    batch: &mut Batch,
) -> Result<Msg, LogError> {
    let (record, version) = current(s, &fence.key).await?;
    if !lease::holds(fence, record.as_ref().map(|r| (&r.owner, r.epoch))) {
        return Err(lease::lost(fence));
    }
    let subject = s.layout.lease(&fence.key);
    batch.fence(&subject, version);
    Ok(Msg::new(
        subject,
        encode(&LeaseRecord {
            owner: Some(fence.owner.clone()),
            epoch: fence.epoch,
        }),
    ))
}

pub(super) async fn heartbeat(s: &Shared, id: &str, groups: Vec<String>) -> Result<(), LogError> {
    unfenced(
        s,
        Msg::new(s.layout.member(id), encode(&MemberRecord { groups })),
    )
    .await
}

pub(super) async fn leave(s: &Shared, id: &str) -> Result<(), LogError> {
    unfenced(
        s,
        Msg::new(s.layout.member(id), Vec::new()).header(super::layout::MARK, 1),
    )
    .await
}

/// Publishes one message nothing depends on (a member's own record).
async fn unfenced(s: &Shared, msg: Msg) -> Result<(), LogError> {
    let mut batch = Batch::default();
    batch.push(msg);
    match batch::publish(&s.client, batch, s.max_batch).await {
        Ok(_) => Ok(()),
        // Unreachable without a fence; said as what it would mean.
        Err(BatchError::Stale) => Err(LogError::Invalid("an unfenced write was stale".into())),
        Err(BatchError::Failed(e)) => Err(e),
    }
}

pub(super) async fn members(s: &Shared) -> Result<Vec<MemberState>, LogError> {
    let prefix = s.layout.member("");
    let prefix = prefix.trim_end_matches(|c| c != '.');
    let mut out = Vec::new();
    for subject in read::subjects(&s.stream, &s.layout.members()).await? {
        let Some(msg) = read::last(&s.stream, &subject).await? else {
            continue;
        };
        if is_mark(&msg) {
            continue;
        }
        let record: MemberRecord =
            serde_json::from_slice(&msg.payload).map_err(|e| corrupt(&subject, e))?;
        let token = subject.strip_prefix(prefix).unwrap_or_default();
        out.push(MemberState {
            id: super::layout::untoken(token)?,
            groups: record.groups,
            version: msg.sequence,
        });
    }
    Ok(out)
}

pub(super) async fn leases(s: &Shared) -> Result<Vec<LeaseState>, LogError> {
    let mut out = Vec::new();
    for subject in read::subjects(&s.stream, &s.layout.leases()).await? {
        let Some(msg) = read::last(&s.stream, &subject).await? else {
            continue;
        };
        let record = decode_lease(&msg)?;
        out.push(LeaseState {
            key: s.layout.lease_key(&subject)?,
            owner: record.owner,
            epoch: record.epoch,
            version: msg.sequence,
        });
    }
    Ok(out)
}

pub(super) async fn acquire(
    s: &Shared,
    key: &LeaseKey,
    owner: &str,
    seen: u64,
) -> Result<LeaseFence, LogError> {
    let (record, version) = current(s, key).await?;
    if version != seen {
        return Err(LogError::LeaseLost(key.to_string()));
    }
    let fence = LeaseFence {
        key: key.clone(),
        owner: owner.to_owned(),
        epoch: record.map_or(0, |r| r.epoch) + 1,
    };
    let payload = encode(&LeaseRecord {
        owner: Some(owner.to_owned()),
        epoch: fence.epoch,
    });
    if put(s, s.layout.lease(key), version, payload).await? {
        Ok(fence)
    } else {
        Err(LogError::LeaseLost(key.to_string()))
    }
}

/// Re-publishes the record of a held lease with `owner` (`None`: released), fenced.
pub(super) async fn rewrite(
    s: &Shared,
    fence: &LeaseFence,
    owner: Option<String>,
) -> Result<(), LogError> {
    for round in 0..MAX_ROUNDS {
        super::write::lost_round(round).await;
        let (record, version) = current(s, &fence.key).await?;
        if !lease::holds(fence, record.as_ref().map(|r| (&r.owner, r.epoch))) {
            return Err(lease::lost(fence));
        }
        let payload = encode(&LeaseRecord {
            owner: owner.clone(),
            epoch: fence.epoch,
        });
        // Stale only when a commit of the holder moved the record in between: decide again.
        if put(s, s.layout.lease(&fence.key), version, payload).await? {
            return Ok(());
        }
    }
    Err(super::storage(format!(
        "the lease of {} moved {MAX_ROUNDS} times in a row while being written",
        fence.key
    )))
}
