//! Retention on NATS: deleting partition prefixes by purging their subject below a
//! sequence, and expiring dedupe markers.
//!
//! A partition whose every event goes first gets an end marker (a message with `Evh-Mark`
//! and the next offset), published fenced on the partition's last sequence so that no
//! concurrent append is lost under it; the purge then keeps the marker, so the partition's
//! next offset survives, as the contract wants.

use std::time::Duration;

use super::batch::{Batch, Msg};
use super::layout;
use super::read::{self, header_u64, is_mark};
use super::{Shared, WeakShared, storage};
use crate::log::{LogError, RetentionReport, rules};

/// Runs a retention pass every `retention_interval` while the log lives.
pub(super) fn spawn_background(handle: &tokio::runtime::Handle, shared: WeakShared) {
    let Some(interval) = shared.upgrade().map(|s| s.config.retention_interval) else {
        return;
    };
    let interval = interval.max(Duration::from_millis(1));
    handle.spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(s) = shared.upgrade() else {
                return;
            };
            if s.check_open().is_err() {
                return;
            }
            match run(&s).await {
                Ok(report) if report.events_deleted > 0 => tracing::debug!(
                    events = report.events_deleted,
                    bytes = report.bytes_deleted,
                    "retention deleted events"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "NATS retention pass failed"),
            }
        }
    });
}

async fn purge_below(s: &Shared, subject: &str, seq: u64) -> Result<(), LogError> {
    s.stream
        .purge()
        .filter(subject)
        .sequence(seq)
        .await
        .map_err(|e| storage(format!("purge of {subject}: {e}")))?;
    Ok(())
}

/// One pass over every topic with a policy, then dedupe expiry. Passes of one log (the
/// background one and `enforce_retention`) run one at a time.
pub(super) async fn run(s: &Shared) -> Result<RetentionReport, LogError> {
    let _one_at_a_time = s.retention.lock().await;
    let mut report = RetentionReport::default();
    let now_ms = s.now_ms();
    let topics = super::records::topics(s).await?;
    for topic in &topics {
        let policy = &topic.config.retention;
        if policy.is_unbounded() {
            continue;
        }
        let max_age_ms = policy.max_age.map(|age| age.as_millis() as u64);
        for partition in 0..topic.config.partitions {
            // The slowest group's committed offset; a group that never committed holds
            // nothing back.
            let floor = if policy.delete_unconsumed {
                u64::MAX
            } else {
                let mut floor = u64::MAX;
                for subject in
                    read::subjects(&s.stream, &s.layout.offsets_of(&topic.name, partition)).await?
                {
                    if let Some(msg) = read::last(&s.stream, &subject).await?
                        && let Some(next) = std::str::from_utf8(&msg.payload)
                            .ok()
                            .and_then(|v| v.parse::<u64>().ok())
                    {
                        floor = floor.min(next);
                    }
                }
                floor
            };
            let subject = s.layout.events(&topic.name, partition);
            let Some(last) = read::last(&s.stream, &subject).await? else {
                continue;
            };
            let info = read::partition_info(&s.stream, &s.layout, &topic.name, partition).await?;
            let mut bytes = info.bytes;
            let Some(first) = read::next(&s.stream, &subject, 1).await? else {
                continue;
            };
            // Walk from the oldest event while the policy says it goes.
            let mut cut = None;
            let mut msg = Some(first);
            let (mut deleted, mut deleted_bytes) = (0u64, 0u64);
            while let Some(m) = msg {
                if !is_mark(&m) {
                    let offset = header_u64(&m, layout::OFFSET)?;
                    if offset >= floor {
                        break;
                    }
                    let too_old = max_age_ms.is_some_and(|max| {
                        header_u64(&m, layout::APPEND_MS)
                            .is_ok_and(|at| now_ms.saturating_sub(at) > max)
                    });
                    let too_big = policy.max_partition_bytes.is_some_and(|max| bytes > max);
                    if !(too_old || too_big) {
                        break;
                    }
                    let size = header_u64(&m, layout::SIZE)?;
                    bytes = bytes.saturating_sub(size);
                    deleted += 1;
                    deleted_bytes += size;
                    // Only events mark the cut: a marker that is the last message keeps
                    // the partition's end and must stay.
                    cut = Some(m.sequence);
                }
                msg = if m.sequence >= last.sequence {
                    None
                } else {
                    read::next(&s.stream, &subject, m.sequence + 1).await?
                };
            }
            let Some(cut) = cut else {
                continue;
            };
            if deleted == 0 {
                continue;
            }
            if cut >= last.sequence && !is_mark(&last) {
                // Everything goes: keep the end in a marker, fenced on the last event.
                let mut batch = Batch::default();
                batch.fence(&subject, last.sequence);
                batch.push(
                    Msg::new(subject.clone(), Vec::new())
                        .header(layout::MARK, 1)
                        .header(layout::OFFSET, info.end)
                        .header(layout::SIZE, 0)
                        .header(layout::TOTAL, read::total_of(&Some(last.clone()))?),
                );
                match super::batch::publish(&s.client, batch, s.max_batch).await {
                    Ok(ack) => purge_below(s, &subject, ack.last_seq).await?,
                    // An append came in between: leave this partition to the next pass.
                    Err(super::batch::BatchError::Stale) => continue,
                    Err(super::batch::BatchError::Failed(e)) => return Err(e),
                }
            } else {
                purge_below(s, &subject, cut + 1).await?;
            }
            report.events_deleted += deleted;
            report.bytes_deleted += deleted_bytes;
        }
    }
    report.dedupe_entries_expired = expire_dedupe(s, &topics, now_ms).await?;
    compact(s).await?;
    Ok(report)
}

/// Keeps only the last message of every subject whose last message is all that counts
/// (offsets, state, attempts, dead letters, topic configs, counters): each write appends one,
/// so without this an offset subject would grow by a message per commit. A fence reads the
/// last message's sequence, which the purge keeps, so no write in flight is disturbed.
async fn compact(s: &Shared) -> Result<(), LogError> {
    // Subject by subject: a purge with a wildcard filter and `keep` keeps that many
    // messages in all, not per subject.
    for filter in s.layout.last_value_subjects() {
        for (subject, count) in read::subject_counts(&s.stream, &filter).await? {
            if count > 1 {
                s.stream
                    .purge()
                    .filter(subject.as_str())
                    .keep(1)
                    .await
                    .map_err(|e| storage(format!("compaction of {subject}: {e}")))?;
            }
        }
    }
    Ok(())
}

/// Purges dedupe markers older than the window. A topic's markers are appended in time
/// order, so the expired ones are a prefix of `evh.<p>.id.<topic>.*`: read in batches up to
/// the first one still inside the window, then purge everything before it in one call. The
/// cost follows what expires, not how many ids the topic holds, and a marker appended
/// meanwhile (a later sequence) always stays.
async fn expire_dedupe(
    s: &Shared,
    topics: &[crate::log::TopicInfo],
    now_ms: u64,
) -> Result<u64, LogError> {
    const BATCH: usize = 256;
    let mut expired = 0;
    for topic in topics {
        let filter = s.layout.dedupes(&topic.name);
        let (mut from, mut gone) = (1, 0u64);
        'scan: loop {
            let batch = read::get_batch(s, &filter, from, BATCH).await?;
            let full = batch.len() == BATCH;
            for m in batch {
                let at = header_u64(&m, layout::APPEND_MS)?;
                if rules::within_dedupe_window(now_ms, at, &s.config) {
                    break 'scan;
                }
                gone += 1;
                from = m.sequence + 1;
            }
            if !full {
                break;
            }
        }
        if gone > 0 {
            purge_below(s, &filter, from).await?;
            expired += gone;
        }
    }
    Ok(expired)
}
