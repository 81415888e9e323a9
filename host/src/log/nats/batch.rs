//! Atomic batch publish (nats-server 2.12+): the messages of one batch are stored together
//! or not at all, in one stream.
//!
//! Protocol: every message carries `Nats-Batch-Id` and `Nats-Batch-Sequence` (1..n); the last
//! one also `Nats-Batch-Commit: 1`. Message 1 is sent as a request (the server answers it
//! with an empty reply, or an error), the middle ones as plain core publishes (async-nats's
//! JetStream publish future fails on that empty reply), and the commit as a request answered
//! with the batch's ack `{"stream","seq","batch","count"}` or an error. A batch the server
//! never sees committed is never visible.
//!
//! Fences: a message may carry `Nats-Expected-Last-Subject-Sequence`; one stale value refuses
//! the whole batch (error 10071), which is how every check-then-write of the backend is made
//! atomic: it read a subject's last sequence, decided, and the batch only lands if that
//! subject did not move since.

use std::collections::HashMap;

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use serde::Deserialize;

use crate::log::{LogError, StorageFailure};

/// The most messages in one batch by default: the server's default
/// `jetstream { limits { batch { max_msgs } } }`.
pub(super) const MAX_BATCH: usize = 1000;

/// JetStream's error codes for a stale `Nats-Expected-Last-Subject-Sequence`: 10071
/// (with the sequence) from a single server, 10164 (without) as well, seen from R3 streams.
const WRONG_LAST_SEQUENCE: [u64; 2] = [10071, 10164];

/// A message of a batch.
pub(super) struct Msg {
    pub(super) subject: String,
    pub(super) headers: HeaderMap,
    pub(super) payload: Bytes,
}

impl Msg {
    pub(super) fn new(subject: String, payload: impl Into<Bytes>) -> Self {
        Self {
            subject,
            headers: HeaderMap::new(),
            payload: payload.into(),
        }
    }

    pub(super) fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.insert(name, value.to_string());
        self
    }
}

/// A batch being assembled: messages in order plus the fences, one per subject, put on the
/// first message of that subject (later ones in the same batch follow it).
#[derive(Default)]
pub(super) struct Batch {
    msgs: Vec<Msg>,
    fences: HashMap<String, u64>,
}

impl Batch {
    pub(super) fn push(&mut self, msg: Msg) {
        self.msgs.push(msg);
    }

    /// The batch lands only if `subject`'s last sequence is still `last` (0: no message).
    /// The first fence set for a subject wins. A fenced subject must get a message.
    pub(super) fn fence(&mut self, subject: &str, last: u64) {
        self.fences.entry(subject.to_owned()).or_insert(last);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }
}

/// How a batch failed.
pub(super) enum BatchError {
    /// A fence was stale (10071): nothing was written; re-read and decide again.
    Stale,
    /// Refused before its commit, or the server reported an error: nothing was written.
    Failed(LogError),
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: u64,
}

#[derive(Deserialize, Debug)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

fn storage(what: impl std::fmt::Display) -> LogError {
    LogError::Storage(StorageFailure::new("nats", Failure(what.to_string())))
}

fn unknown(what: impl std::fmt::Display) -> LogError {
    LogError::OutcomeUnknown(StorageFailure::new("nats", Failure(what.to_string())))
}

/// What the server answered to a committed batch.
pub(super) struct Ack {
    /// The stream sequence of the batch's last message.
    pub(super) last_seq: u64,
}

/// Publishes `batch` atomically; a batch of more than `max` messages is refused with
/// [`LogError::Invalid`] before anything is sent (never split: that would lose
/// all-or-nothing).
pub(super) async fn publish(client: &Client, batch: Batch, max: usize) -> Result<Ack, BatchError> {
    let Batch { msgs, mut fences } = batch;
    let n = msgs.len();
    if n == 0 {
        return Err(BatchError::Failed(LogError::Invalid(
            "an empty batch".into(),
        )));
    }
    if n > max {
        return Err(BatchError::Failed(LogError::Invalid(format!(
            "one write becomes {n} messages; a NATS atomic batch holds at most {max} \
             (an event takes 2, 3 in a stream; the server's limits.batch.max_msgs and \
             NatsConfig::max_batch_messages raise it)"
        ))));
    }
    if let Some(subject) = fences
        .keys()
        .find(|subject| !msgs.iter().any(|m| &m.subject == *subject))
    {
        return Err(BatchError::Failed(LogError::Invalid(format!(
            "a fence on `{subject}`, which the batch does not write"
        ))));
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    for (i, msg) in msgs.into_iter().enumerate() {
        let Msg {
            subject,
            mut headers,
            payload,
        } = msg;
        let seq = i + 1;
        headers.insert("Nats-Batch-Id", id.as_str());
        headers.insert("Nats-Batch-Sequence", seq.to_string());
        if let Some(last) = fences.remove(&subject) {
            headers.insert("Nats-Expected-Last-Subject-Sequence", last.to_string());
        }
        let commit = seq == n;
        if commit {
            headers.insert("Nats-Batch-Commit", "1");
        }
        if seq == 1 || commit {
            let reply = client
                .request_with_headers(subject, headers, payload)
                .await
                .map_err(|e| {
                    BatchError::Failed(if commit {
                        unknown(format!("batch commit: {e}"))
                    } else {
                        storage(format!("batch start: {e}"))
                    })
                })?;
            if reply.payload.is_empty() && !commit {
                continue;
            }
            let reply: Reply = serde_json::from_slice(&reply.payload)
                .map_err(|e| BatchError::Failed(unknown(format!("unreadable batch reply: {e}"))))?;
            if let Some(error) = reply.error {
                return Err(if WRONG_LAST_SEQUENCE.contains(&error.err_code) {
                    BatchError::Stale
                } else {
                    BatchError::Failed(storage(format!(
                        "batch refused ({}): {}",
                        error.err_code, error.description
                    )))
                });
            }
            if commit {
                if reply.count != n as u64 {
                    return Err(BatchError::Failed(unknown(format!(
                        "batch of {n} acknowledged with count {}",
                        reply.count
                    ))));
                }
                return Ok(Ack {
                    last_seq: reply.seq,
                });
            }
        } else {
            client
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| BatchError::Failed(storage(format!("batch publish: {e}"))))?;
        }
    }
    Err(BatchError::Failed(unknown("batch ended without a commit")))
}
