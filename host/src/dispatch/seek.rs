//! Consumer seek: an operator moves a plugin's offset on one partition. The
//! request waits in the plugin's mailbox until the partition's consumer takes
//! it between batches and applies it as a commit fenced by the offset it moves
//! from, so it never interleaves with a batch's commit.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::{DispatchError, Dispatcher};
use crate::log::{ConsumerCommit, LogError, OffsetAdvance};

/// How long a seek waits for its consumer to reach a batch boundary.
const SEEK_WAIT: Duration = Duration::from_secs(10);

/// A seek waiting for its consumer; the answer is the offset it moved from.
pub(super) struct PendingSeek {
    offset: u64,
    reply: oneshot::Sender<Result<u64, LogError>>,
}

/// A plugin's seeks by (topic, partition), and a signal that wakes idle consumers.
pub(super) struct Seeks {
    pending: Mutex<HashMap<(String, u32), PendingSeek>>,
    signal: watch::Sender<u64>,
}

impl Default for Seeks {
    fn default() -> Self {
        Seeks {
            pending: Mutex::default(),
            signal: watch::channel(0).0,
        }
    }
}

impl Seeks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), PendingSeek>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What a consumer waits on besides new events.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.signal.subscribe()
    }

    /// The consumer's side: applies the seek waiting for its partition, if
    /// any, as a commit fenced by `committed` (the offset it read just now)
    /// on top of `base` (the consumer's own empty commit: its group and, on a
    /// shared log, its lease). Returns whether it applied one.
    pub(super) async fn apply(
        &self,
        log: &dyn crate::log::EventLog,
        base: ConsumerCommit,
        topic: &str,
        partition: u32,
        committed: u64,
    ) -> bool {
        let Some(seek) = self.lock().remove(&(topic.to_owned(), partition)) else {
            return false;
        };
        let group = base.group.clone();
        let result = log
            .commit(ConsumerCommit {
                offset: Some(OffsetAdvance {
                    topic: topic.to_owned(),
                    partition,
                    next: seek.offset,
                    from: Some(committed),
                }),
                seek: true,
                ..base
            })
            .await
            .map(|_| committed);
        match &result {
            Ok(from) => {
                tracing::info!(plugin = %group, %topic, partition, from, to = seek.offset, "consumer offset moved by a seek")
            }
            Err(e) => tracing::warn!(plugin = %group, %topic, partition, "seek failed: {e}"),
        }
        let _ = seek.reply.send(result);
        true
    }
}

/// What a seek did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeked {
    /// The offset the plugin was at.
    pub previous: u64,
    /// The offset it consumes next.
    pub offset: u64,
}

pub(super) async fn seek(
    d: &Dispatcher,
    plugin: &str,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<Seeked, DispatchError> {
    let Some(handle) = d.plugin_current(plugin) else {
        return Err(DispatchError::UnknownPlugin(plugin.to_owned()));
    };
    let (current, shared) = (handle.current_compiled(), handle.shared().clone());
    let info = d
        .log
        .topic(topic)
        .await?
        .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
    let Some(part) = info.partitions.get(partition as usize) else {
        return Err(LogError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
            partitions: info.config.partitions,
        }
        .into());
    };
    if offset > part.end {
        return Err(DispatchError::OffsetBeyondEnd {
            topic: topic.to_owned(),
            partition,
            offset,
            end: part.end,
        });
    }
    if !current.matcher.topic_matches(topic) {
        return Err(DispatchError::NotSubscribed {
            plugin: plugin.to_owned(),
            topic: topic.to_owned(),
        });
    }
    if !handle.works(topic, partition) {
        return Err(DispatchError::NotWorkedHere {
            plugin: plugin.to_owned(),
            topic: topic.to_owned(),
            partition,
        });
    }
    let (reply, answer) = oneshot::channel();
    let key = (topic.to_owned(), partition);
    {
        let mut pending = shared.seeks.lock();
        if pending.contains_key(&key) {
            return Err(DispatchError::SeekInProgress {
                plugin: plugin.to_owned(),
                topic: topic.to_owned(),
                partition,
            });
        }
        pending.insert(key.clone(), PendingSeek { offset, reply });
    }
    shared.seeks.signal.send_modify(|n| *n = n.wrapping_add(1));
    let mut answer = answer;
    let result = match tokio::time::timeout(SEEK_WAIT, &mut answer).await {
        Ok(r) => r,
        Err(_) => {
            // Withdraw it, unless the consumer has taken it already: then it
            // is one commit away from its answer.
            if shared.seeks.lock().remove(&key).is_some() {
                return Err(DispatchError::SeekTimeout {
                    plugin: plugin.to_owned(),
                    topic: topic.to_owned(),
                    partition,
                    waited: SEEK_WAIT,
                });
            }
            answer.await
        }
    };
    let previous = result
        .map_err(|_| DispatchError::SeekTimeout {
            plugin: plugin.to_owned(),
            topic: topic.to_owned(),
            partition,
            waited: SEEK_WAIT,
        })?
        .map_err(DispatchError::Log)?;
    Ok(Seeked { previous, offset })
}
