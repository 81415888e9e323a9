//! What an operator changes besides plugins and dead letters: topics and their
//! retention, a plugin's consumer offsets (seek), and `/healthz`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, ApiState, Params, body, path_param};
use crate::log::{LogError, RetentionPolicy, TopicConfig, TopicInfo};

/// The most partitions a topic may have (the log's own bound).
const MAX_PARTITIONS: u32 = 4096;

/// Retention as the API takes and shows it: `null` (or absent) keeps everything.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionJson {
    max_age_seconds: Option<u64>,
    max_partition_bytes: Option<u64>,
}

impl RetentionJson {
    fn policy(&self, keep: &RetentionPolicy) -> ApiResult<RetentionPolicy> {
        if self.max_age_seconds == Some(0) || self.max_partition_bytes == Some(0) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_retention",
                "retention limits are positive; use null to keep everything",
            ));
        }
        Ok(RetentionPolicy {
            max_age: self.max_age_seconds.map(Duration::from_secs),
            max_partition_bytes: self.max_partition_bytes,
            delete_unconsumed: keep.delete_unconsumed,
        })
    }
}

/// `{"max_age_seconds","max_partition_bytes"}` of a policy.
pub(super) fn retention_json(r: &RetentionPolicy) -> Value {
    json!({
        "max_age_seconds": r.max_age.map(|d| d.as_secs()),
        "max_partition_bytes": r.max_partition_bytes,
    })
}

fn topic_json(t: &TopicInfo) -> Value {
    json!({
        "name": t.name,
        "partition_count": t.config.partitions,
        "retention": retention_json(&t.config.retention),
        "partitions": t.partitions.iter().enumerate().map(|(i, p)| json!({
            "partition": i,
            "start_offset": p.start,
            "end_offset": p.end,
        })).collect::<Vec<_>>(),
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; send JSON",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    partitions: u32,
    retention: Option<RetentionJson>,
}

/// `POST /v1/topics` `{"name","partitions","retention"?}`: 201 with the topic
/// when created; 200 when it exists with that partition count (its retention
/// is then updated if given); 409 with another count.
pub(super) async fn create_topic(
    State(state): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    Params::parse(query.as_deref(), &[])?;
    let req: CreateTopic = parse_json(&body(&state, bytes)?)?;
    crate::log::validate_topic_name(&req.name)?;
    if req.partitions == 0 || req.partitions > MAX_PARTITIONS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_partitions",
            format!(
                "a topic has 1 to {MAX_PARTITIONS} partitions, not {}",
                req.partitions
            ),
        ));
    }
    let existing = state.log.topic(&req.name).await?;
    if let Some(t) = &existing
        && t.config.partitions != req.partitions
    {
        return Err(LogError::TopicExists {
            name: req.name,
            partitions: t.config.partitions,
        }
        .into());
    }
    if let (Some(info), None) = (&existing, &req.retention) {
        return Ok((StatusCode::OK, Json(topic_json(info))).into_response());
    }
    let base = existing
        .as_ref()
        .map_or(&state.default_retention, |t| &t.config.retention);
    let retention = match &req.retention {
        Some(r) => r.policy(base)?,
        None => base.clone(),
    };
    let info = state
        .log
        .create_topic(
            &req.name,
            TopicConfig {
                partitions: req.partitions,
                retention,
            },
        )
        .await?;
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        tracing::info!(topic = %info.name, partitions = info.config.partitions, "topic created");
        StatusCode::CREATED
    };
    Ok((status, Json(topic_json(&info))).into_response())
}

/// `GET /v1/topics/{topic}`: one topic with its retention and partitions.
pub(super) async fn topic_get(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let topic = path_param(path)?;
    let info = state
        .log
        .topic(&topic)
        .await?
        .ok_or(LogError::UnknownTopic(topic))?;
    Ok(Json(topic_json(&info)))
}

/// `PUT /v1/topics/{topic}/retention` `{"max_age_seconds","max_partition_bytes"}`
/// (each a positive number or null): replaces the topic's retention; the
/// next retention pass applies it.
pub(super) async fn put_retention(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let topic = path_param(path)?;
    Params::parse(query.as_deref(), &[])?;
    let req: RetentionJson = parse_json(&body(&state, bytes)?)?;
    let info = state
        .log
        .topic(&topic)
        .await?
        .ok_or_else(|| LogError::UnknownTopic(topic.clone()))?;
    let retention = req.policy(&info.config.retention)?;
    let info = state
        .log
        .create_topic(
            &topic,
            TopicConfig {
                partitions: info.config.partitions,
                retention,
            },
        )
        .await?;
    tracing::info!(%topic, retention = ?info.config.retention, "topic retention changed");
    Ok(Json(topic_json(&info)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Seek {
    topic: String,
    partition: u32,
    offset: u64,
}

/// `POST /v1/plugins/{name}/offsets` `{"topic","partition","offset"}`: moves
/// the plugin's consumer there between batches; answers once committed.
pub(super) async fn seek(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let plugin = path_param(path)?;
    Params::parse(query.as_deref(), &[])?;
    let req: Seek = parse_json(&body(&state, bytes)?)?;
    let done = state
        .dispatcher
        .seek(&plugin, &req.topic, req.partition, req.offset)
        .await?;
    Ok(Json(json!({
        "plugin": plugin,
        "topic": req.topic,
        "partition": req.partition,
        "previous_offset": done.previous,
        "offset": done.offset,
    })))
}

/// `/healthz`: the log writer and the dispatcher. 200 with each component's
/// status, or 503 with the reason when the log refuses writes or a consumer
/// is down (ended unexpectedly, waiting for its restart).
pub(super) async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    let write_error = state.log.stats().write_error;
    let down = state.dispatcher.consumers_down();
    let log = match &write_error {
        None => json!({ "status": "ok" }),
        Some(e) => json!({ "status": "failing", "error": e }),
    };
    let dispatcher = if down.is_empty() {
        json!({ "status": "ok" })
    } else {
        json!({
            "status": "degraded",
            "consumers_down": down.iter().map(|(plugin, n, error)| json!({
                "plugin": plugin, "consumers": n, "error": error,
            })).collect::<Vec<_>>(),
        })
    };
    let mut reasons = Vec::new();
    if let Some(e) = &write_error {
        reasons.push(format!("the log refuses writes: {e}"));
    }
    for (plugin, n, error) in &down {
        reasons.push(format!(
            "{n} consumer(s) of plugin `{plugin}` down{}",
            error
                .as_deref()
                .map(|e| format!(" (last: {e})"))
                .unwrap_or_default()
        ));
    }
    if reasons.is_empty() {
        return Json(json!({ "status": "ok", "log": log, "dispatcher": dispatcher }))
            .into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "unavailable",
            "error": { "code": "unhealthy", "message": reasons.join("; ") },
            "log": log,
            "dispatcher": dispatcher,
        })),
    )
        .into_response()
}
