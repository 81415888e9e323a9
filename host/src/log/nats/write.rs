//! Every write: read the subjects it depends on, run the shared checks, publish one atomic
//! batch fenced on those subjects; on a stale fence (someone wrote in between) decide again.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use futures_util::future::try_join_all;

use super::batch::{self, Batch, BatchError, Msg};
use super::layout;
use super::read::{self, header_u64, is_mark, seq_of};
use super::records::{committed, dead_letter, entry, event_at};
use super::{Shared, storage};
use crate::event::{Position, StoredEvent};
use crate::log::encoding::{
    Enc, encode_attempts, encode_dead_letter, encode_stored, encode_topic_config,
};
use crate::log::rules::{self, Planned};
use crate::log::{
    Appended, CommitOutcome, ConsumerCommit, DeadLetterId, ExpectedVersion, LogError, NewEvent,
    StateKey, TopicConfig, TopicInfo, partition_for, partition_key,
};

/// How often a write is decided again after losing a race on a fence before giving up.
const MAX_ROUNDS: usize = 200;

/// What one round of a write read, so each subject is read once per round.
#[derive(Default)]
pub(super) struct View {
    topics: HashMap<String, (Option<TopicConfig>, u64)>,
    /// (topic, partition) → (end, byte total, last sequence).
    partitions: HashMap<(String, u32), (u64, u64, u64)>,
    /// Events planned in this round: (topic, id) → (partition, offset).
    planned_ids: HashMap<(String, String), (u32, u64)>,
    moved: Vec<((String, u32), u64)>,
    events: u64,
    duplicates: u64,
}

impl View {
    async fn topic(&mut self, s: &Shared, topic: &str) -> Result<Option<TopicConfig>, LogError> {
        if let Some((config, _)) = self.topics.get(topic) {
            return Ok(config.clone());
        }
        let (config, seq) = read::topic_config(&s.stream, &s.layout, topic).await?;
        self.topics.insert(topic.to_owned(), (config.clone(), seq));
        Ok(config)
    }

    /// The partition count of an existing topic and a check that `partition` is in it.
    pub(super) async fn locate(
        &mut self,
        s: &Shared,
        topic: &str,
        partition: u32,
    ) -> Result<(), LogError> {
        let config = self.topic(s, topic).await?;
        rules::locate(topic, config.map(|c| c.partitions), partition)
    }

    async fn partition(
        &mut self,
        s: &Shared,
        topic: &str,
        partition: u32,
    ) -> Result<(u64, u64, u64), LogError> {
        let key = (topic.to_owned(), partition);
        if let Some(p) = self.partitions.get(&key) {
            return Ok(*p);
        }
        let last = read::last(&s.stream, &s.layout.events(topic, partition)).await?;
        let p = (read::end_of(&last)?, read::total_of(&last)?, seq_of(&last));
        self.partitions.insert(key, p);
        Ok(p)
    }
}

/// Publishes a round's batch; `Ok(None)` means a fence was stale and the write must be
/// decided again.
async fn publish(s: &Shared, batch: Batch, view: &View) -> Result<Option<()>, LogError> {
    if batch.is_empty() {
        // Nothing to write (every event a duplicate): no transaction, but the duplicates count.
        s.count(|c| c.duplicates += view.duplicates);
        return Ok(Some(()));
    }
    let started = Instant::now();
    match batch::publish(&s.client, batch, s.max_batch).await {
        Ok(_ack) => {
            s.count(|c| {
                c.transactions += 1;
                c.events_appended += view.events;
                c.duplicates += view.duplicates;
            });
            s.transaction_events.observe(view.events as f64);
            s.transaction_seconds.observe_duration(started.elapsed());
            s.advanced(&view.moved);
            Ok(Some(()))
        }
        Err(BatchError::Stale) => Ok(None),
        Err(BatchError::Failed(e)) => {
            s.count(|c| c.failed_transactions += 1);
            Err(e)
        }
    }
}

/// Before round `round` of a write: nothing the first two times (a race with another
/// writer is decided at once), then a growing pause — a replica that lags (R3 reads go to
/// any replica) needs milliseconds to catch up, not 200 immediate re-reads.
pub(super) async fn lost_round(round: usize) {
    if round >= 2 {
        let ms = (round as u64 - 1).min(20);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

fn lost_races() -> LogError {
    storage(format!(
        "a write lost {MAX_ROUNDS} races in a row against concurrent writers"
    ))
}

/// Checks events and adds them to `batch`: topics created as needed, duplicates answered
/// with the original position, offsets assigned after each partition's last one (fenced).
async fn plan_events(
    s: &Shared,
    view: &mut View,
    batch: &mut Batch,
    events: Vec<NewEvent>,
    stream: Option<(&str, u64)>,
    now_ms: u64,
) -> Result<Vec<Appended>, LogError> {
    for new in &events {
        view.topic(s, &new.topic()).await?;
    }
    let topics = &view.topics;
    let planned = rules::plan(events, stream, now_ms, &s.config, |t| {
        topics.get(t).is_some_and(|(c, _)| c.is_some())
    })?;
    // Every id's dedupe marker, read concurrently.
    let markers = try_join_all(planned.iter().map(|p| {
        let subject = s.layout.dedupe(&p.topic, &p.event.id);
        async move {
            let last = read::last(&s.stream, &subject).await?;
            Ok::<_, LogError>((subject, last))
        }
    }))
    .await?;
    let mut out = Vec::with_capacity(planned.len());
    for (
        Planned {
            topic,
            event,
            body,
            size,
        },
        (marker_subject, marker),
    ) in planned.into_iter().zip(markers)
    {
        let config = match view.topic(s, &topic).await? {
            Some(config) => config,
            None => {
                let config = rules::auto_topic_config(&s.config);
                let subject = s.layout.topic(&topic);
                batch.fence(&subject, 0);
                batch.push(Msg::new(subject, topic_config_bytes(&config)));
                view.topics.insert(topic.clone(), (Some(config.clone()), 0));
                config
            }
        };
        let id_key = (topic.clone(), event.id.clone());
        let duplicate = match view.planned_ids.get(&id_key) {
            Some(at) => Some(*at),
            None => match &marker {
                Some(m)
                    if !is_mark(m)
                        && rules::within_dedupe_window(
                            now_ms,
                            header_u64(m, layout::APPEND_MS)?,
                            &s.config,
                        ) =>
                {
                    let partition = u32::try_from(header_u64(m, layout::PARTITION)?)
                        .map_err(|_| LogError::Corrupt("partition out of range".into()))?;
                    Some((partition, header_u64(m, layout::OFFSET)?))
                }
                _ => None,
            },
        };
        if let Some((partition, offset)) = duplicate {
            view.duplicates += 1;
            out.push(Appended {
                id: event.id,
                position: Position {
                    topic,
                    partition,
                    offset,
                },
                stream_version: None,
                duplicate: true,
            });
            continue;
        }
        let partition = partition_for(partition_key(&event), config.partitions);
        let (end, total, last_seq) = view.partition(s, &topic, partition).await?;
        let subject = s.layout.events(&topic, partition);
        batch.fence(&subject, last_seq);
        let offset = end;
        let total = total + size as u64;
        view.partitions
            .insert((topic.clone(), partition), (end + 1, total, last_seq));
        view.moved.retain(|(k, _)| *k != (topic.clone(), partition));
        view.moved.push(((topic.clone(), partition), end + 1));
        view.planned_ids.insert(id_key, (partition, offset));
        view.events += 1;
        batch.push(
            Msg::new(subject, body)
                .header(layout::OFFSET, offset)
                .header(layout::APPEND_MS, now_ms)
                .header(layout::SIZE, size)
                .header(layout::TOTAL, total),
        );
        batch.fence(&marker_subject, seq_of(&marker));
        batch.push(
            Msg::new(marker_subject, Vec::new())
                .header(layout::PARTITION, partition)
                .header(layout::OFFSET, offset)
                .header(layout::APPEND_MS, now_ms),
        );
        let position = Position {
            topic,
            partition,
            offset,
        };
        if let Some(stream) = event.stream.clone() {
            let version = event.streamversion.unwrap_or_default();
            let stored = StoredEvent {
                position: position.clone(),
                event: event.clone(),
            };
            batch.push(
                Msg::new(s.layout.stream(&stream), encode_stored(&stored))
                    .header(layout::VERSION, version),
            );
        }
        out.push(Appended {
            id: event.id,
            position,
            stream_version: event.streamversion,
            duplicate: false,
        });
    }
    Ok(out)
}

fn topic_config_bytes(config: &TopicConfig) -> Vec<u8> {
    let mut enc = Enc::record();
    encode_topic_config(&mut enc, config);
    enc.finish()
}

pub(super) async fn create_topic(
    s: &Shared,
    name: &str,
    config: TopicConfig,
) -> Result<TopicInfo, LogError> {
    rules::check_topic_config(name, &config)?;
    for round in 0..MAX_ROUNDS {
        lost_round(round).await;
        let (existing, seq) = read::topic_config(&s.stream, &s.layout, name).await?;
        if let Some(existing) = &existing
            && existing.partitions != config.partitions
        {
            return Err(LogError::TopicExists {
                name: name.to_owned(),
                partitions: existing.partitions,
            });
        }
        let mut batch = Batch::default();
        let subject = s.layout.topic(name);
        batch.fence(&subject, seq);
        batch.push(Msg::new(subject, topic_config_bytes(&config)));
        if publish(s, batch, &View::default()).await?.is_some() {
            return read::topic_info(&s.stream, &s.layout, name, config).await;
        }
    }
    Err(lost_races())
}

pub(super) async fn append(s: &Shared, events: Vec<NewEvent>) -> Result<Vec<Appended>, LogError> {
    for round in 0..MAX_ROUNDS {
        lost_round(round).await;
        let now_ms = s.now_ms();
        let mut view = View::default();
        let mut batch = Batch::default();
        let out = plan_events(s, &mut view, &mut batch, events.clone(), None, now_ms).await?;
        if publish(s, batch, &view).await?.is_some() {
            return Ok(out);
        }
    }
    Err(lost_races())
}

pub(super) async fn append_to_stream(
    s: &Shared,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<Vec<Appended>, LogError> {
    rules::check_stream_name(stream)?;
    let subject = s.layout.stream(stream);
    for round in 0..MAX_ROUNDS {
        lost_round(round).await;
        let now_ms = s.now_ms();
        let last = read::last(&s.stream, &subject).await?;
        let current = match &last {
            Some(msg) => header_u64(msg, layout::VERSION)?,
            None => 0,
        };
        // A retry of an append that already went through: answer the originals.
        let mut originals = Vec::new();
        let mut seen = BTreeSet::new();
        for new in &events {
            let topic = new.topic().into_owned();
            if !seen.insert((topic.clone(), new.event.id.clone())) {
                return Err(LogError::Invalid(format!(
                    "event id `{}` appears twice in one stream append",
                    new.event.id
                )));
            }
            let marker = read::last(&s.stream, &s.layout.dedupe(&topic, &new.event.id)).await?;
            let Some(marker) = marker.filter(|m| !is_mark(m)) else {
                continue;
            };
            if !rules::within_dedupe_window(
                now_ms,
                header_u64(&marker, layout::APPEND_MS)?,
                &s.config,
            ) {
                continue;
            }
            let partition = u32::try_from(header_u64(&marker, layout::PARTITION)?)
                .map_err(|_| LogError::Corrupt("partition out of range".into()))?;
            let offset = header_u64(&marker, layout::OFFSET)?;
            let stream_version = event_at(s, &topic, partition, offset)
                .await?
                .and_then(|e| e.event.streamversion);
            originals.push(Appended {
                id: new.event.id.clone(),
                position: Position {
                    topic,
                    partition,
                    offset,
                },
                stream_version,
                duplicate: true,
            });
        }
        if !originals.is_empty() {
            if originals.len() == events.len() {
                let n = originals.len() as u64;
                s.count(|c| c.duplicates += n);
                return Ok(originals);
            }
            return Err(LogError::Invalid(format!(
                "{} of the {} event ids are already stored; a stream append is retried whole",
                originals.len(),
                events.len()
            )));
        }
        if let ExpectedVersion::Exact(expected) = expected
            && expected != current
        {
            return Err(LogError::VersionConflict {
                stream: stream.to_owned(),
                expected,
                current,
            });
        }
        let mut view = View::default();
        let mut batch = Batch::default();
        batch.fence(&subject, seq_of(&last));
        let out = plan_events(
            s,
            &mut view,
            &mut batch,
            events.clone(),
            Some((stream, current + 1)),
            now_ms,
        )
        .await?;
        if publish(s, batch, &view).await?.is_some() {
            return Ok(out);
        }
    }
    Err(lost_races())
}

fn tombstone(subject: String) -> Msg {
    Msg::new(subject, Vec::new()).header(layout::MARK, 1)
}

pub(super) async fn commit(s: &Shared, commit: ConsumerCommit) -> Result<CommitOutcome, LogError> {
    if commit.group.is_empty() {
        return Err(LogError::Invalid("a consumer commit needs a group".into()));
    }
    for round in 0..MAX_ROUNDS {
        lost_round(round).await;
        if let Some(outcome) = commit_round(s, commit.clone()).await? {
            return Ok(outcome);
        }
    }
    Err(lost_races())
}

/// One attempt at a commit: `Ok(None)` when a fence was stale.
async fn commit_round(
    s: &Shared,
    commit: ConsumerCommit,
) -> Result<Option<CommitOutcome>, LogError> {
    let ConsumerCommit {
        group,
        offset,
        emits,
        state,
        attempts,
        dead_letter,
        resolve_dead_letter,
        requires_state,
        lease,
        state_read,
    } = commit;
    let now_ms = s.now_ms();
    let mut view = View::default();
    let mut batch = Batch::default();
    // The lease first: a commit of a daemon that lost its partition is refused before
    // anything else is looked at.
    let lease_msg = match &lease {
        Some(fence) => Some(super::lease::fence_commit(s, fence, &mut batch).await?),
        None => None,
    };
    // Decide everything first, in the order of the other backends (the first failing check
    // names the error): the fences ...
    let mut resolve = None;
    if let Some(id) = resolve_dead_letter {
        let subject = s.layout.dead_letter(id.0);
        let (live, seq) = entry(s, &subject).await?;
        if live.is_none() {
            return Err(LogError::DeadLetterGone(id));
        }
        resolve = Some((subject, seq));
    }
    let mut required = None;
    if let Some(StateKey { namespace, key }) = requires_state {
        let subject = s.layout.state(&namespace, &key);
        let (live, seq) = entry(s, &subject).await?;
        let Some(live) = live else {
            return Err(LogError::StateEntryGone { namespace, key });
        };
        required = Some((subject, seq, live.payload));
    }
    // What the call read must be as it saw it; each read entry is fenced where it stands,
    // and re-published unchanged unless the commit writes it (a fence needs a message).
    let mut reads = Vec::new();
    for read in state_read {
        let subject = s.layout.state(&read.namespace, &read.key);
        let (live, seq) = entry(s, &subject).await?;
        if live.as_ref().map(|m| m.payload.as_ref()) != read.value.as_deref() {
            return Err(LogError::StateMoved {
                namespace: read.namespace,
                key: read.key,
            });
        }
        reads.push((subject, seq, live.map(|m| m.payload)));
    }
    // ... the offset, the attempts' positions, the state keys, the emits ...
    let mut offset_msg = None;
    if let Some(advance) = &offset {
        view.locate(s, &advance.topic, advance.partition).await?;
        let (end, _, _) = view.partition(s, &advance.topic, advance.partition).await?;
        let (current, seq) = committed(s, &group, &advance.topic, advance.partition).await?;
        rules::check_offset_advance(&group, advance, current, end)?;
        let subject = s.layout.offset(&group, &advance.topic, advance.partition);
        batch.fence(&subject, seq);
        offset_msg = Some(Msg::new(subject, advance.next.to_string()));
    }
    for update in &attempts {
        let p = &update.position;
        view.locate(s, &p.topic, p.partition).await?;
    }
    rules::check_state_changes(&state)?;
    // The fences go on the first message of their subjects, so set them before any message.
    if let Some((subject, seq)) = &resolve {
        batch.fence(subject, *seq);
    }
    if let Some((subject, seq, _)) = &required {
        batch.fence(subject, *seq);
    }
    for (subject, seq, _) in &reads {
        batch.fence(subject, *seq);
    }
    let mut counter = None;
    if dead_letter.is_some() {
        let subject = s.layout.dead_letter_counter();
        let last = read::last(&s.stream, &subject).await?;
        let next = match &last {
            Some(msg) => std::str::from_utf8(&msg.payload)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    LogError::Corrupt("a dead-letter counter that is not a number".into())
                })?,
            None => 0,
        };
        batch.fence(&subject, seq_of(&last));
        counter = Some((subject, next));
    }
    let emitted = plan_events(s, &mut view, &mut batch, emits, None, now_ms).await?;

    // ... then write; nothing can refuse the commit any more but a stale fence.
    if let Some(msg) = lease_msg {
        batch.push(msg);
    }
    if let Some(msg) = offset_msg {
        batch.push(msg);
    }
    let mut wrote_required = false;
    let mut written = BTreeSet::new();
    for change in state {
        let subject = s.layout.state(&change.namespace, &change.key);
        if required.as_ref().is_some_and(|(r, _, _)| *r == subject) {
            wrote_required = true;
        }
        written.insert(subject.clone());
        batch.push(match change.value {
            Some(value) => Msg::new(subject, value),
            None => tombstone(subject),
        });
    }
    if let Some((subject, _, value)) = required
        && !wrote_required
    {
        // The fence needs a message on its subject: the entry, unchanged.
        written.insert(subject.clone());
        batch.push(Msg::new(subject, value));
    }
    for (subject, _, value) in reads {
        if written.insert(subject.clone()) {
            batch.push(match value {
                Some(value) => Msg::new(subject, value),
                None => tombstone(subject),
            });
        }
    }
    for update in attempts {
        let p = &update.position;
        let subject = s.layout.attempts(&group, &p.topic, p.partition, p.offset);
        batch.push(match update.record {
            Some(record) => Msg::new(subject, encode_attempts(&record)),
            None => tombstone(subject),
        });
    }
    let mut parked = None;
    if let (Some(record), Some((subject, next))) = (dead_letter, counter) {
        batch.push(Msg::new(subject, (next + 1).to_string()));
        batch.push(Msg::new(
            s.layout.dead_letter(next),
            encode_dead_letter(&group, &record),
        ));
        parked = Some(DeadLetterId(next));
    }
    if let Some((subject, _)) = resolve {
        batch.push(tombstone(subject));
    }
    Ok(publish(s, batch, &view).await?.map(|()| CommitOutcome {
        emitted,
        dead_letter: parked,
    }))
}

pub(super) async fn set_offset(
    s: &Shared,
    group: &str,
    topic: &str,
    partition: u32,
    next: u64,
) -> Result<(), LogError> {
    if group.is_empty() {
        return Err(LogError::Invalid("an offset needs a group".into()));
    }
    let mut view = View::default();
    view.locate(s, topic, partition).await?;
    let (end, _, _) = view.partition(s, topic, partition).await?;
    rules::check_offset_within(topic, partition, next, end)?;
    let mut batch = Batch::default();
    batch.push(Msg::new(
        s.layout.offset(group, topic, partition),
        next.to_string(),
    ));
    publish(s, batch, &view).await?;
    Ok(())
}

pub(super) async fn delete_dead_letter(s: &Shared, id: DeadLetterId) -> Result<bool, LogError> {
    for round in 0..MAX_ROUNDS {
        lost_round(round).await;
        let Some((_, seq)) = dead_letter(s, id).await? else {
            return Ok(false);
        };
        let subject = s.layout.dead_letter(id.0);
        let mut batch = Batch::default();
        batch.fence(&subject, seq);
        batch.push(tombstone(subject));
        if publish(s, batch, &View::default()).await?.is_some() {
            return Ok(true);
        }
    }
    Err(lost_races())
}
