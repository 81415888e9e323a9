//! Topics: the list with partition extents, reads from an offset, and the live
//! tail as server-sent events (`?follow=true`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::cloudevents::stored_json;
use super::{ApiError, ApiResult, ApiState, Params, path_param};
use crate::event::StoredEvent;
use crate::log::{EventLog, LogError};

pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<serde_json::Value>> {
    Params::parse(query.as_deref(), &[])?;
    let topics = state.log.topics().await?;
    Ok(Json(json!({
        "topics": topics.iter().map(|t| json!({
            "name": t.name,
            "partition_count": t.config.partitions,
            "retention": super::operator::retention_json(&t.config.retention),
            "partitions": t.partitions.iter().enumerate().map(|(i, p)| json!({
                "partition": i,
                "start_offset": p.start,
                "end_offset": p.end,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })))
}

pub(super) async fn read(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let topic = path_param(path)?;
    let params = Params::parse(query.as_deref(), &["partition", "from", "limit", "follow"])?;
    let partition = params.get::<u32>("partition", "a partition number")?;
    let from = params.get::<u64>("from", "an offset")?;
    let follow = params.bool("follow")?;
    let info = state
        .log
        .topic(&topic)
        .await?
        .ok_or_else(|| ApiError::from(LogError::UnknownTopic(topic.clone())))?;
    let count = info.config.partitions;
    if let Some(p) = partition
        && p >= count
    {
        return Err(LogError::UnknownPartition {
            topic,
            partition: p,
            partitions: count,
        }
        .into());
    }
    if follow {
        if params.str("limit").is_some() {
            return Err(ApiError::bad_request(
                "`limit` does not apply to follow=true",
            ));
        }
        let partitions = match partition {
            Some(p) => vec![p],
            None => (0..count).collect(),
        };
        return Ok(tail(&state, topic, partitions, from).into_response());
    }
    let limit = params.limit(100, 1000)?;
    let partition = partition.unwrap_or(0);
    let from = from.unwrap_or(0);
    let events = state.log.read(&topic, partition, from, limit).await?;
    let next = events
        .last()
        .map_or(from.max(info.partitions[partition as usize].start), |e| {
            e.position.offset + 1
        });
    Ok(Json(json!({
        "topic": topic,
        "partition": partition,
        "events": events.iter().map(stored_json).collect::<Vec<_>>(),
        "next_offset": next,
    }))
    .into_response())
}

/// The live tail: one task per partition feeds the response stream. `from` (or the
/// current end, when absent) is where each partition starts. The stream ends when the
/// client goes away, the log closes, or shutdown begins.
fn tail(
    state: &ApiState,
    topic: String,
    partitions: Vec<u32>,
    from: Option<u64>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>> + use<>> {
    let (tx, rx) = mpsc::channel::<StoredEvent>(256);
    for partition in partitions {
        tokio::spawn(tail_partition(
            state.log.clone(),
            topic.clone(),
            partition,
            from,
            tx.clone(),
            state.shutdown.clone(),
        ));
    }
    drop(tx);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let stored = rx.recv().await?;
        let event = SseEvent::default()
            .id(format!(
                "{}:{}",
                stored.position.partition, stored.position.offset
            ))
            .data(stored_json(&stored).to_string());
        Some((Ok(event), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn tail_partition(
    log: Arc<dyn EventLog>,
    topic: String,
    partition: u32,
    from: Option<u64>,
    tx: mpsc::Sender<StoredEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(watch) = log.watch(&topic, partition).await else {
        return;
    };
    let mut next = from.unwrap_or_else(|| watch.end());
    loop {
        if *shutdown.borrow() {
            return;
        }
        let batch = match log.read(&topic, partition, next, 256).await {
            Ok(batch) => batch,
            Err(_) => return,
        };
        if batch.is_empty() {
            tokio::select! {
                r = watch.wait_past(next) => if r.is_err() { return },
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
            continue;
        }
        for stored in batch {
            next = stored.position.offset + 1;
            if tx.send(stored).await.is_err() {
                return;
            }
        }
    }
}
