//! Publishing (`POST /v1/topics/{topic}/events`, `POST /v1/events`) and
//! event-sourcing streams (`POST`/`GET /v1/streams/{stream}/events`).
//!
//! A request is checked whole — CloudEvents attributes, schemas — before
//! anything reaches the log, and the log appends a request's events together
//! or not at all, so a bad event in a batch writes nothing. `201` is answered
//! only once the log reports the events durable.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::cloudevents::{self, stored_json};
use super::{ApiError, ApiResult, ApiState, Params, body, path_param};
use crate::event::{Event, validate_topic};
use crate::log::{Appended, ExpectedVersion, NewEvent};

/// Longest stream name (the log's own limit).
const MAX_STREAM: usize = 1024;

pub(super) async fn publish_topic(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let topic = path_param(path)?;
        validate_topic(&topic)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_topic", e))?;
        Params::parse(query.as_deref(), &[])?;
        let body = body(&state, bytes)?;
        publish(&state, Some(topic), &headers, &body).await
    }
    .await;
    answer(&state, result)
}

pub(super) async fn publish_derived(
    State(state): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        Params::parse(query.as_deref(), &[])?;
        let body = body(&state, bytes)?;
        publish(&state, None, &headers, &body).await
    }
    .await;
    answer(&state, result)
}

fn answer(state: &ApiState, result: ApiResult<Response>) -> Response {
    match result {
        Ok(r) => r,
        Err(e) => {
            state.metrics.publish_rejected(e.code);
            e.into_response()
        }
    }
}

/// Parses and checks the events of a request against the schema registry.
async fn checked_events(
    state: &ApiState,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Vec<Event>> {
    let events = cloudevents::parse_request(headers, body)?;
    for event in &events {
        state.schemas.check(event).await.map_err(|v| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "schema_violation",
                v.to_string(),
            )
            .with("path", v.path.clone())
            .with("schema_version", v.version.clone())
            .with("id", v.id.clone())
        })?;
    }
    Ok(events)
}

async fn publish(
    state: &ApiState,
    topic: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let events = checked_events(state, headers, body).await?;
    let new = events
        .into_iter()
        .map(|event| NewEvent {
            topic: topic.clone(),
            event,
        })
        .collect();
    let started = Instant::now();
    let appended = state.log.append(new).await?;
    record(state, &appended, started);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "events": appended.iter().map(appended_json).collect::<Vec<_>>() })),
    )
        .into_response())
}

fn record(state: &ApiState, appended: &[Appended], started: Instant) {
    let dups = appended.iter().filter(|a| a.duplicate).count() as u64;
    state
        .metrics
        .published(appended.len() as u64 - dups, dups, started.elapsed());
}

fn appended_json(a: &Appended) -> Value {
    let mut v = json!({
        "id": a.id,
        "topic": a.position.topic,
        "partition": a.position.partition,
        "offset": a.position.offset,
        "duplicate": a.duplicate,
    });
    if let Some(version) = a.stream_version {
        v["streamversion"] = version.into();
    }
    v
}

fn validate_stream(stream: &str) -> ApiResult<()> {
    if stream.is_empty() || stream.len() > MAX_STREAM {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_stream",
            format!("a stream name has 1 to {MAX_STREAM} bytes"),
        ));
    }
    if stream.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_stream",
            format!("stream name {stream:?} contains whitespace or control characters"),
        ));
    }
    Ok(())
}

/// `expectedVersion` from the query or `If-Match` (`"3"`, `3` or `*`); both must agree.
fn expected_version(params: &Params, headers: &HeaderMap) -> ApiResult<ExpectedVersion> {
    let parse = |what: &str, raw: &str| -> ApiResult<ExpectedVersion> {
        let v = raw.trim().trim_matches('"');
        if v == "*" || v.eq_ignore_ascii_case("any") {
            return Ok(ExpectedVersion::Any);
        }
        v.parse::<u64>().map(ExpectedVersion::Exact).map_err(|_| {
            ApiError::bad_request(format!(
                "{what} must be a stream version (0 for a new stream) or *, got {raw:?}"
            ))
        })
    };
    let from_query = params
        .str("expectedVersion")
        .map(|v| parse("query parameter `expectedVersion`", v))
        .transpose()?;
    let from_header = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::bad_request("If-Match is not valid ASCII"))?;
            Some(parse("If-Match", text)?)
        }
    };
    match (from_query, from_header) {
        (Some(q), Some(h)) if q != h => Err(ApiError::bad_request(
            "expectedVersion and If-Match disagree; send one of them",
        )),
        (q, h) => Ok(q.or(h).unwrap_or(ExpectedVersion::Any)),
    }
}

pub(super) async fn append_stream(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let stream = path_param(path)?;
        validate_stream(&stream)?;
        let params = Params::parse(query.as_deref(), &["expectedVersion"])?;
        let expected = expected_version(&params, &headers)?;
        let body = body(&state, bytes)?;
        let events = checked_events(&state, &headers, &body).await?;
        let new = events.into_iter().map(NewEvent::new).collect();
        let started = Instant::now();
        let appended = state.log.append_to_stream(&stream, expected, new).await?;
        record(&state, &appended, started);
        let version = appended
            .iter()
            .filter_map(|a| a.stream_version)
            .max()
            .unwrap_or(0);
        let resp = (
            StatusCode::CREATED,
            Json(json!({
                "stream": stream,
                "version": version,
                "events": appended.iter().map(appended_json).collect::<Vec<_>>(),
            })),
        )
            .into_response();
        Ok(with_version_etag(resp, version))
    }
    .await;
    answer(&state, result)
}

pub(super) async fn read_stream(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let stream = path_param(path)?;
    validate_stream(&stream)?;
    let params = Params::parse(query.as_deref(), &["from", "limit"])?;
    let from = params
        .get::<u64>("from", "a stream version (1 is the first event)")?
        .unwrap_or(1);
    let limit = params.limit(100, 1000)?;
    let version = state.log.stream_version(&stream).await?;
    if version == 0 {
        return Err(ApiError::not_found(
            "unknown_stream",
            format!("stream `{stream}` has no events"),
        ));
    }
    let events = state.log.read_stream(&stream, from, limit).await?;
    let resp = Json(json!({
        "stream": stream,
        "version": version,
        "events": events.iter().map(stored_json).collect::<Vec<_>>(),
    }))
    .into_response();
    Ok(with_version_etag(resp, version))
}

/// A stream's version as its ETag, so a client can append with `If-Match`.
fn with_version_etag(mut resp: Response, version: u64) -> Response {
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    resp
}
